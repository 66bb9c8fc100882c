//! The local end of `skiff pod exec -t`: this terminal in raw mode while the command runs on
//! the container's pty, bytes copied both ways, and window size changes (SIGWINCH) passed on
//! to the pty. The terminal's settings come back when the command ends.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use rustix::termios::{self, OptionalActions, Termios};
use skiff_runtime::container::{ExecProcess, resize_tty};

/// This terminal in raw mode until dropped; nothing when stdin is not a terminal.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// Runs the session of a tty exec; the command's exit code.
pub fn run(mut process: ExecProcess, stdin: bool) -> Result<i32> {
    let master = process.take_tty().context("the exec has no terminal")?;
    let raw = RawMode::enter();
    pass_size(&master);
    let mut from = std::fs::File::from(master.try_clone()?);
    let output = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut buf = [0u8; 8192];
        // Reading the master fails (EIO) once the command and all it started are gone.
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
    });
    if stdin {
        let mut to = std::fs::File::from(master.try_clone()?);
        // Left blocked on this terminal when the command ends; the process exits then.
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = std::io::stdin().read(&mut buf) {
                if n == 0 {
                    let _ = to.write_all(&[4]); // end of input on a terminal is ^D
                    break;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let resizer = master.try_clone()?;
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut changes) = signal(SignalKind::window_change()) else {
                return;
            };
            while changes.recv().await.is_some() {
                pass_size(&resizer);
            }
        });
    });
    let code = process.wait().context("waiting for the command")?;
    let _ = output.join();
    drop(raw);
    Ok(code)
}

/// This terminal's size to the container's.
fn pass_size(master: &OwnedFd) {
    if let Ok(size) = termios::tcgetwinsize(std::io::stdout()) {
        let _ = resize_tty(master.as_fd(), size.ws_col, size.ws_row);
    }
}
