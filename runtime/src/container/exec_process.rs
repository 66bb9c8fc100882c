//! The daemon's side of an exec: spawns the helper (`exec.rs`) with a control socket on its
//! fd 3, waits until the command has exec'd (or says why it could not), and hands the caller
//! an [`ExecProcess`]: the command's pipes or its pty master, its exit code, and an end that
//! kills it. Dropping the handle (or the daemon dying) closes the control socket, and the
//! helper SIGKILLs the command's process group: a session that ends leaves no process.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags, SocketType,
};

use super::ContainerError;
use super::exec::{CONTROL_FD, EXEC_ARG0, ExecSpec};

/// How long the helper may take to join the container and exec the command.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A command running in a container (see the module docs).
#[derive(Debug)]
pub struct ExecProcess {
    /// The helper; `None` only once a dropped handle has passed it to its reaper thread.
    child: Option<Child>,
    control: Option<OwnedFd>,
    tty: Option<OwnedFd>,
    code: Option<i32>,
}

/// Spawns the helper for `spec` in the container whose state is in `state_dir` and waits
/// until the command runs. `stdio` are the helper's (and so the command's, without a tty).
pub(super) fn spawn(
    setup_binary: &Path,
    state_dir: &Path,
    id: &str,
    spec: &ExecSpec,
    stdio: [Stdio; 3],
) -> Result<ExecProcess, ContainerError> {
    let io = |op: &'static str| {
        let path = state_dir.to_path_buf();
        move |source| ContainerError::Io { path, op, source }
    };
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| io("socketpair for exec")(e.into()))?;
    let [stdin, stdout, stderr] = stdio;
    let mut command = Command::new(setup_binary);
    command
        .arg0(EXEC_ARG0)
        .arg(state_dir)
        .arg(serde_json::to_string(spec).unwrap_or_default())
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    let raw = theirs.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl/dup2
    // (async-signal-safe) on fd numbers; `theirs` stays open in the parent until spawn returns.
    unsafe { command.pre_exec(move || super::sys::place_fd(raw, CONTROL_FD)) };
    let child = command.spawn().map_err(io("spawn exec"))?;
    drop(theirs);
    let mut process = ExecProcess {
        child: Some(child),
        control: Some(ours),
        tty: None,
        code: None,
    };
    match process.await_start(Instant::now() + START_TIMEOUT) {
        Ok(()) => Ok(process),
        Err(message) => Err(ContainerError::ExecFailed {
            id: id.into(),
            message,
        }),
    }
}

impl ExecProcess {
    /// Reads the helper's reports until the command runs: Err(why) when it cannot.
    fn await_start(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            let Some(control) = &self.control else {
                return Err("exec ended".into());
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("the command did not start in time".into());
            }
            let timeout = rustix::event::Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let mut fds = [PollFd::new(control, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(format!("waiting for exec: {e}")),
            }
            let (message, fd) = recv_message(control).map_err(|e| format!("exec: {e}"))?;
            match message.as_str() {
                "started" => return Ok(()),
                "tty" => self.tty = fd,
                "" => {
                    let status = self
                        .wait()
                        .map_or_else(|e| e.to_string(), |c| c.to_string());
                    return Err(format!("the exec helper ended (exit {status})"));
                }
                other => {
                    let why = other.strip_prefix("error: ").unwrap_or(other);
                    return Err(why.to_string());
                }
            }
        }
    }

    /// The command's stdin, when it was given `Stdio::piped()`.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.as_mut()?.stdin.take()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.as_mut()?.stderr.take()
    }

    /// The pty master (tty mode): the command's terminal, both ways.
    pub fn take_tty(&mut self) -> Option<OwnedFd> {
        self.tty.take()
    }

    /// The helper's PID (on the host); it ends when the command does, with its code.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// A pidfd of the helper: readable once the command has ended.
    pub fn pidfd(&self) -> std::io::Result<OwnedFd> {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32)
            .ok_or_else(|| std::io::Error::other("no helper pid"))?;
        Ok(rustix::process::pidfd_open(
            pid,
            rustix::process::PidfdFlags::empty(),
        )?)
    }

    /// The exit code if the command has ended (128 + signal when killed).
    pub fn try_wait(&mut self) -> std::io::Result<Option<i32>> {
        if self.code.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.code = child.try_wait()?.map(code_of);
        }
        Ok(self.code)
    }

    /// Waits for the command's end; its exit code.
    pub fn wait(&mut self) -> std::io::Result<i32> {
        if let Some(code) = self.code {
            return Ok(code);
        }
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the exec was dropped"))?;
        let code = code_of(child.wait()?);
        self.code = Some(code);
        Ok(code)
    }

    /// Ends the session: the command and its process group are killed (SIGKILL) by the
    /// helper. [`ExecProcess::wait`] then returns promptly.
    pub fn kill(&mut self) {
        self.control = None;
    }
}

impl Drop for ExecProcess {
    /// Kills what still runs and reaps the helper (on a short-lived thread if it has not
    /// ended yet; it does within milliseconds of the kill).
    fn drop(&mut self) {
        self.kill();
        if matches!(self.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        // The pipes to the command go now, so nothing blocks the helper's end.
        self.tty = None;
        if let Some(mut child) = self.child.take() {
            drop((child.stdin.take(), child.stdout.take(), child.stderr.take()));
            let _ = std::thread::Builder::new()
                .name("skiff-exec-reap".into())
                .spawn(move || child.wait());
        }
    }
}

fn code_of(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(126)
}

/// One control message and the fd it carries, if any. End of file is an empty message.
fn recv_message(control: &OwnedFd) -> std::io::Result<(String, Option<OwnedFd>)> {
    let mut buf = [0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        control,
        &mut [IoSliceMut::new(&mut buf)],
        &mut ancillary,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for f in fds {
                fd.get_or_insert(f);
            }
        }
    }
    let text = String::from_utf8_lossy(&buf[..received.bytes]).into_owned();
    Ok((text, fd))
}

/// Sets a terminal's size (`TIOCSWINSZ` on a pty master): the process on it gets SIGWINCH.
pub fn resize_tty(tty: BorrowedFd<'_>, width: u16, height: u16) -> std::io::Result<()> {
    let size = rustix::termios::Winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(tty.as_fd(), size)?)
}
