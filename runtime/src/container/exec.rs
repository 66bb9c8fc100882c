//! Running another process in a live container (`kubectl exec`): the skiff binary re-executed
//! as `skiff-container-exec STATE_DIR EXEC_JSON`, single-threaded, joins the container's
//! cgroup and namespaces (taken from its PID 1), forks the process inside the PID namespace
//! with the container's identity and capabilities, and exits with its exit code. stdin,
//! stdout and stderr are the caller's, so the daemon streams them as it likes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;
use serde::{Deserialize, Serialize};

use super::plan::SetupPlan;
use super::setup::{apply_process, exec_args, io_err, open_path, report};
use super::state::InitProcess;
use super::sys::{self, SysResult};

/// argv[0] that makes a skiff binary run as an exec into a container.
pub const EXEC_ARG0: &str = "skiff-container-exec";

/// What to run in the container; unset fields come from the container's own process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub args: Vec<String>,
    /// Extra `KEY=value` entries over the container's environment.
    pub env: Vec<String>,
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

pub(super) fn run(mut args: impl Iterator<Item = OsString>) -> ! {
    let (Some(state_dir), Some(spec)) = (args.next(), args.next()) else {
        report("error: usage: skiff-container-exec STATE_DIR EXEC_JSON");
        sys::exit(126);
    };
    match exec(Path::new(&state_dir), &spec.to_string_lossy()) {
        Ok(code) => sys::exit(code),
        Err(e) => {
            eprintln!("skiff: exec: {e}");
            sys::exit(126)
        }
    }
}

fn exec(state_dir: &Path, spec: &str) -> SysResult<i32> {
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
    let mut process = plan.process.clone();
    process.args = spec.args;
    process.env = super::process::merge_env(&process.env, &split_env(&spec.env));
    match sys::fork()? {
        0 => {
            let error = apply_process(&process)
                .and_then(|()| exec_args(&process))
                .map(|(path, args, env)| sys::execve(&path, &args, &env));
            let message = match error {
                Ok(exec_error) => exec_error.to_string(),
                Err(e) => e.to_string(),
            };
            eprintln!("skiff: {message}");
            sys::exit(
                if message.contains("No such file") || message.contains("not found") {
                    127
                } else {
                    126
                },
            )
        }
        child => Ok(wait(child)),
    }
}

fn split_env(env: &[String]) -> Vec<(String, String)> {
    env.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

/// Waits for the exec'd process; its exit code, or 128 + the signal that killed it.
fn wait(child: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child; status is a valid out-pointer.
        let ret = unsafe { libc::waitpid(child, &mut status, 0) };
        if ret == child {
            break;
        }
        if ret < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 126;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}
