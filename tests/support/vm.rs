//! Running the QEMU runners of `vagrant/qemu/` from a test: a script in its own process
//! group whose output is collected as it comes, and which is ended with everything it
//! started (bash, timeout, QEMU) when the test is done or fails.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

/// `vagrant/qemu/NAME` in this repository.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("vagrant/qemu")
        .join(name)
}

/// A runner script in its own process group. Its stdout is read line by line (`wait_line`)
/// and kept; its stderr is kept. Dropping it ends the whole group: SIGTERM, so the script
/// removes its guests and temp dir, then SIGKILL.
pub struct Runner {
    child: Child,
    pgid: Pid,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout: Option<JoinHandle<String>>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl Runner {
    pub fn spawn(mut cmd: Command) -> Runner {
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a vagrant/qemu runner");
        let pgid = Pid::from_raw(child.id() as i32).expect("a positive pid");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().map(|out| {
            std::thread::spawn(move || {
                let mut all = String::new();
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    all.push_str(&line);
                    all.push('\n');
                    let _ = tx.send(line);
                }
                all
            })
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_thread = child.stderr.take().map(|mut err| {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    stderr
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&text);
                }
            })
        });
        Runner {
            stdin: child.stdin.take(),
            child,
            pgid,
            lines,
            stdout,
            stderr,
            stderr_thread,
        }
    }

    /// The first stdout line for which `want` holds, within `timeout`; `None` if the
    /// script ended or the time ran out first.
    pub fn wait_line(&self, timeout: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return Some(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// What the script wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Closes the script's stdin and waits up to `timeout` for it to end; returns its exit
    /// code (`None`: it was killed) and its whole stdout and stderr.
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, String, String) {
        self.stdin.take();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the runner") {
                break Some(status);
            }
            if Instant::now() > deadline {
                self.end_group();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        if let Some(h) = self.stderr_thread.take() {
            let _ = h.join();
        }
        let stderr = self.stderr();
        match status {
            Some(s) => (s.code(), stdout, stderr),
            None => {
                panic!("the runner did not finish in {timeout:?}; killed it\n{stdout}\n{stderr}")
            }
        }
    }

    /// Ends every process of the runner's group: SIGTERM, up to 10 s, then SIGKILL.
    fn end_group(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = kill_process_group(self.pgid, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // The runner's trap ends QEMU before the runner exits; once the leader is reaped
            // its id is not ours to signal any more.
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill_process_group(self.pgid, Signal::KILL);
        let _ = self.child.wait();
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stdin.take();
        self.end_group();
    }
}
