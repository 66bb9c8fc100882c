//! Running another process in a live container (`kubectl exec`), the helper's side: the skiff
//! binary re-executed as `skiff-container-exec STATE_DIR EXEC_JSON`, single-threaded, joins
//! the container's cgroup and namespaces (taken from its PID 1), forks the process inside the
//! PID namespace with the container's identity and capabilities, and exits with its exit code.
//!
//! The process is the leader of its own process group (of its own session with a tty).
//! stdin, stdout and stderr are the helper's own (pipes the daemon made, or the caller's
//! terminal) unless a tty is asked for: then the helper opens a pty pair from the container's
//! devpts, makes the slave the process's controlling terminal and hands the master to the
//! daemon. The daemon's side is `exec_process.rs`; they talk over fd 3, a `SOCK_SEQPACKET`
//! socket ([`CONTROL_FD`]):
//!
//! ```text
//! helper → daemon   "tty" + SCM_RIGHTS(master)   (tty mode, first)
//!                   "started"                    the command exec'd
//!                   "error: <why>"               it could not start (nothing else follows)
//! daemon → helper   (nothing; closing the socket ends the session: the helper SIGKILLs the
//!                   process group and exits — also when the daemon itself dies)
//! ```

use std::ffi::OsString;
use std::io::{IoSlice, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::OFlags;
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use rustix::pty::OpenptFlags;
use serde::{Deserialize, Serialize};

use super::plan::SetupPlan;
use super::setup::{apply_process, exec_args, io_err, open_path, report};
use super::spec::ProcessSpec;
use super::state::InitProcess;
use super::sys::{self, SysResult};

/// argv[0] that makes a skiff binary run as an exec into a container.
pub const EXEC_ARG0: &str = "skiff-container-exec";

/// The helper's control socket (see the module docs).
pub(super) const CONTROL_FD: RawFd = 3;

/// What to run in the container; unset fields come from the container's own process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub args: Vec<String>,
    /// Extra `KEY=value` entries over the container's environment.
    pub env: Vec<String>,
    /// A pty as the process's controlling terminal, stdin, stdout and stderr (stdout and
    /// stderr are then one stream, as on any terminal); the daemon gets the master.
    #[serde(default)]
    pub tty: bool,
}

/// The namespaces an exec joins, in order: the PID namespace last among those that apply to
/// children only, the mount namespace after every path has been opened.
const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

/// Signals the helper takes: SIGCHLD for the end of the process, the others are passed on
/// to its process group.
const SIGNALS: &[libc::c_int] = &[
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
];

pub(super) fn run(mut args: impl Iterator<Item = OsString>) -> ! {
    let control = sys::inherited_fd(CONTROL_FD);
    if let Some(c) = &control {
        // The exec'd command must not inherit it.
        let _ = sys::set_cloexec(c.as_raw_fd());
    }
    let (Some(state_dir), Some(spec)) = (args.next(), args.next()) else {
        report("error: usage: skiff-container-exec STATE_DIR EXEC_JSON");
        sys::exit(126);
    };
    match exec(
        Path::new(&state_dir),
        &spec.to_string_lossy(),
        control.as_ref(),
    ) {
        Ok(code) => sys::exit(code),
        Err(e) => {
            match &control {
                Some(c) => send(c, format!("error: {e}").as_bytes(), None),
                None => eprintln!("skiff: exec: {e}"),
            }
            sys::exit(126)
        }
    }
}

fn exec(state_dir: &Path, spec: &str, control: Option<&OwnedFd>) -> SysResult<i32> {
    let invalid = |what: &Path, e: String| io_err("parse", what, std::io::Error::other(e));
    let spec: ExecSpec =
        serde_json::from_str(spec).map_err(|e| invalid(Path::new("exec spec"), e.to_string()))?;
    let plan_path = state_dir.join("setup.json");
    let plan_bytes = std::fs::read(&plan_path).map_err(|e| io_err("read", &plan_path, e))?;
    let plan: SetupPlan =
        serde_json::from_slice(&plan_bytes).map_err(|e| invalid(&plan_path, e.to_string()))?;
    let pid_path = state_dir.join("pid");
    let init = std::fs::read_to_string(&pid_path)
        .ok()
        .and_then(|t| InitProcess::parse(&t))
        .filter(InitProcess::is_alive)
        .ok_or_else(|| invalid(&pid_path, "the container is not running".into()))?;

    // Open every namespace first: once in the mount namespace, /proc is the container's.
    let ns: Vec<(PathBuf, _, libc::c_int)> = NAMESPACES
        .iter()
        .map(|(name, flag)| {
            let path = PathBuf::from(format!("/proc/{}/ns/{name}", init.pid));
            open_path(&path, OFlags::RDONLY).map(|fd| (path, fd, *flag))
        })
        .collect::<SysResult<_>>()?;
    let pid = std::process::id().to_string();
    for procs in &plan.cgroup_procs {
        std::fs::write(procs, &pid).map_err(|e| io_err("join cgroup", procs, e))?;
    }
    for (path, fd, flag) in &ns {
        sys::setns(fd, *flag, path)?;
    }
    let process = exec_process(&plan.process, &spec);
    // The container's own devpts: `tty` inside names /dev/pts/N as it should.
    let pty = if spec.tty { Some(open_pty()?) } else { None };
    let (err_r, err_w) = sys::pipe()?;
    let signals = sys::signalfd(SIGNALS)?;
    let child = match sys::fork()? {
        0 => child(&process, pty.as_ref().map(|(_, slave)| slave), &err_w),
        child => child,
    };
    drop(err_w);
    if let Some((master, slave)) = pty {
        drop(slave);
        if let Some(c) = control {
            send(c, b"tty", Some(&master));
        }
    }
    let mut message = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut message);
    if let Some(c) = control {
        let line = match message.trim() {
            "" => "started".to_string(),
            why => format!("error: {why}"),
        };
        send(c, line.as_bytes(), None);
    }
    Ok(supervise(child, &signals, control))
}

/// The container's process with the request's argv and extra environment.
fn exec_process(base: &ProcessSpec, spec: &ExecSpec) -> ProcessSpec {
    let mut process = base.clone();
    process.args = spec.args.clone();
    let mut extra = split_env(&spec.env);
    if spec.tty && !process.env.iter().any(|e| e.starts_with("TERM=")) {
        // As containerd does for a tty exec.
        extra.insert(0, ("TERM".into(), "xterm".into()));
    }
    process.env = super::process::merge_env(&process.env, &extra);
    process
}

/// A pty pair from `/dev/ptmx` (the container's, once in its mount namespace): the master,
/// and the slave opened through it (`TIOCGPTPEER`, no path lookup).
pub(super) fn open_pty() -> SysResult<(OwnedFd, OwnedFd)> {
    let err = |call, e: rustix::io::Errno| io_err(call, Path::new("/dev/ptmx"), e.into());
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags).map_err(|e| err("open", e))?;
    rustix::pty::unlockpt(&master).map_err(|e| err("unlockpt", e))?;
    let slave =
        rustix::pty::ioctl_tiocgptpeer(&master, flags).map_err(|e| err("TIOCGPTPEER", e))?;
    Ok((master, slave))
}

/// The forked process: never returns. Why it could not exec goes to `err` (close-on-exec,
/// so a successful exec closes it with nothing written).
fn child(process: &ProcessSpec, tty: Option<&OwnedFd>, err: &OwnedFd) -> ! {
    sys::reset_signals();
    let result = (|| -> SysResult<()> {
        match tty {
            Some(slave) => {
                sys::setsid()?;
                rustix::process::ioctl_tiocsctty(slave)
                    .map_err(|e| io_err("TIOCSCTTY", Path::new("pty"), e.into()))?;
                for target in 0..=2 {
                    sys::dup2(slave.as_raw_fd(), target)?;
                }
            }
            None => sys::setpgid_self()?,
        }
        apply_process(process)?;
        let (path, args, env) = exec_args(process)?;
        Err(sys::execve(&path, &args, &env))
    })();
    let message = match result {
        Err(e) => e.to_string(),
        Ok(()) => "exec returned".to_string(),
    };
    let _ = rustix::io::write(err, message.as_bytes());
    let not_found = message.contains("not found") || message.contains("No such file");
    sys::exit(if not_found { 127 } else { 126 })
}

/// Waits for the process, passing signals on to its group; when the daemon's end of the
/// control socket closes, the whole group is killed. Returns the exit code (128 + signal
/// when killed).
fn supervise(child: libc::pid_t, signals: &OwnedFd, control: Option<&OwnedFd>) -> i32 {
    let mut watching = control;
    loop {
        let mut fds = vec![PollFd::new(signals, PollFlags::IN)];
        if let Some(c) = watching {
            fds.push(PollFd::new(c, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return 126,
        }
        let control_event = fds.get(1).is_some_and(|f| !f.revents().is_empty());
        if control_event && watching.is_some_and(peer_closed) {
            sys::kill(-child, libc::SIGKILL);
            sys::kill(child, libc::SIGKILL);
            watching = None;
        }
        while let Some(sig) = sys::read_signal(signals) {
            if sig != libc::SIGCHLD {
                sys::kill(-child, sig);
                continue;
            }
            if let Some(status) = sys::wait_nohang(child) {
                return if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
            }
        }
    }
}

/// Whether the other end of a control socket has closed (reading it gives end of file).
fn peer_closed(control: &OwnedFd) -> bool {
    let mut buf = [0u8; 64];
    match rustix::net::recv(control, &mut buf, RecvFlags::DONTWAIT) {
        Ok((0, _)) => true,
        Ok(_) => false,
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => false,
        Err(_) => true,
    }
}

/// Sends one control message, with an fd attached if given (best effort: a daemon that has
/// gone away no longer listens).
pub(super) fn send(control: &OwnedFd, message: &[u8], fd: Option<&OwnedFd>) {
    let fds = fd.map(|f| [f.as_fd()]);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    if let Some(fds) = &fds {
        ancillary.push(SendAncillaryMessage::ScmRights(fds));
    }
    let _ = rustix::net::sendmsg(
        control,
        &[IoSlice::new(message)],
        &mut ancillary,
        SendFlags::NOSIGNAL,
    );
}

fn split_env(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tty_exec_gets_term_unless_the_container_sets_it() {
        let base = ProcessSpec::new(&["sleep", "1"], &["PATH=/bin"]);
        let mut spec = ExecSpec {
            args: vec!["sh".into()],
            env: vec!["A=1".into()],
            tty: true,
        };
        let p = exec_process(&base, &spec);
        assert_eq!(p.args, ["sh"]);
        assert_eq!(p.env, ["PATH=/bin", "TERM=xterm", "A=1"]);
        spec.tty = false;
        assert_eq!(exec_process(&base, &spec).env, ["PATH=/bin", "A=1"]);
        let own = ProcessSpec::new(&["x"], &["TERM=vt100"]);
        spec.tty = true;
        assert_eq!(exec_process(&own, &spec).env, ["TERM=vt100", "A=1"]);
    }
}
