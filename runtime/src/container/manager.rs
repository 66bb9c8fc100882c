//! Containers as the kubelet drives them: create, start, stop, status, remove, list. All state
//! lives in each container's state directory, so a new `Containers` over the same root (after
//! a daemon restart) knows every container and how the exited ones ended.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

use super::ContainerError;
use super::plan::{StatePaths, plan};
use super::setup::SETUP_ARG0;
use super::spec::ContainerSpec;
use super::state::{ExitStatus, InitProcess, now_ns, write_atomic};

/// The small static init every container runs as PID 1 (built by build.rs).
static INIT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/skiff-init"));

/// How long `start` waits for the workload to reach exec.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    Exited(ExitStatus),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    pub state: State,
    /// Host PID of the container's init while it lives.
    pub pid: Option<i32>,
    /// Nanoseconds since the epoch when the workload was started.
    pub started_ns: Option<u128>,
    /// Why an exited container ended, as Kubernetes names it: `OOMKilled` when it was killed
    /// and its cgroup counted an OOM kill (v2 `memory.events`, v1 `memory.oom_control`).
    pub reason: Option<String>,
}

/// The containers under one state root.
#[derive(Debug, Clone)]
pub struct Containers {
    root: PathBuf,
    setup_binary: PathBuf,
    init_binary: PathBuf,
}

impl Containers {
    /// Opens the container state root. `setup_binary` is a binary that calls
    /// `run_if_setup_process()` first thing (the skiff binary).
    pub fn open(
        root: impl Into<PathBuf>,
        setup_binary: impl Into<PathBuf>,
    ) -> Result<Containers, ContainerError> {
        let root = root.into();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ContainerError::Io {
                path,
                op: "create",
                source,
            }
        };
        std::fs::create_dir_all(root.join("containers")).map_err(io(&root))?;
        let init_binary = install_init(&root)?;
        Ok(Containers {
            root,
            setup_binary: setup_binary.into(),
            init_binary,
        })
    }

    fn paths(&self, id: &str) -> StatePaths {
        StatePaths {
            dir: self.root.join("containers").join(id),
        }
    }

    /// Creates the container: its rootfs is built and its workload forked, waiting for `start`.
    /// On failure nothing of it is left.
    pub fn create(&self, spec: &ContainerSpec) -> Result<ContainerStatus, ContainerError> {
        validate_id(&spec.id)?;
        let paths = self.paths(&spec.id);
        if paths.dir.exists() {
            return Err(ContainerError::Exists(spec.id.clone()));
        }
        let result = self.create_in(spec, &paths);
        if result.is_err() {
            self.rollback(&paths);
        }
        result
    }

    fn create_in(
        &self,
        spec: &ContainerSpec,
        paths: &StatePaths,
    ) -> Result<ContainerStatus, ContainerError> {
        let io = |path: &Path, op: &'static str| {
            let path = path.to_path_buf();
            move |source| ContainerError::Io { path, op, source }
        };
        for dir in [
            paths.dir.clone(),
            paths.rootfs(),
            paths.upper(),
            paths.work(),
            spec.log.dir.clone(),
        ] {
            std::fs::create_dir_all(&dir).map_err(io(&dir, "create"))?;
        }
        // The state directory is root's alone; the fifo inside must be writable by the workload
        // after it has dropped to its own uid (it reopens it through /proc/self/fd).
        std::fs::set_permissions(&paths.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&paths.dir, "chmod"))?;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            paths.start_fifo(),
            rustix::fs::FileType::Fifo,
            Mode::empty(),
            0,
        )
        .map_err(|e| io(&paths.start_fifo(), "mkfifo")(e.into()))?;
        std::fs::set_permissions(paths.start_fifo(), std::fs::Permissions::from_mode(0o622))
            .map_err(io(&paths.start_fifo(), "chmod"))?;
        let setup = plan(spec, paths, &self.init_binary);
        let oom_base = oom_kills(spec.cgroup_procs.iter().filter_map(|p| p.parent()));
        write_atomic(&paths.oom_base(), &oom_base.to_string())
            .map_err(io(&paths.oom_base(), "write"))?;
        write_atomic(&paths.spec(), &to_json(spec)).map_err(io(&paths.spec(), "write"))?;
        write_atomic(&paths.plan(), &to_json(&setup)).map_err(io(&paths.plan(), "write"))?;

        let mut child = Command::new(&self.setup_binary)
            .arg0(SETUP_ARG0)
            .arg(&paths.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(&self.setup_binary, "spawn setup"))?;
        let stdout = child.stdout.take().ok_or_else(|| ContainerError::Setup {
            id: spec.id.clone(),
            message: "no status pipe".into(),
        })?;
        let outcome = read_setup_status(stdout);
        let stage1 = child.wait(); // stage 1 exits once it has forked PID 1
        let pid = outcome.pid.ok_or_else(|| ContainerError::Setup {
            id: spec.id.clone(),
            message: outcome.error.clone().unwrap_or_else(|| match stage1 {
                Ok(status) => format!("setup ended without a PID ({status})"),
                Err(e) => format!("setup ended without a PID (wait: {e})"),
            }),
        })?;
        if let Some(init) = InitProcess::of(pid) {
            write_atomic(&paths.pid(), &init.render()).map_err(io(&paths.pid(), "write"))?;
        }
        if !outcome.ready {
            return Err(ContainerError::Setup {
                id: spec.id.clone(),
                message: outcome
                    .error
                    .unwrap_or_else(|| "setup ended before the container was ready".into()),
            });
        }
        self.status(&spec.id)
    }

    /// Kills whatever a failed create started and removes its state.
    fn rollback(&self, paths: &StatePaths) {
        if let Some(init) = read_init(paths) {
            kill_and_wait(init, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&paths.dir);
    }

    /// Lets the workload exec. Returns the exec error (e.g. a command that does not exist) as
    /// `ContainerError::Exec`; the container then shows exited with code 127.
    pub fn start(&self, id: &str) -> Result<ContainerStatus, ContainerError> {
        let paths = self.paths(id);
        let status = self.status(id)?;
        if status.state != State::Created {
            return Err(ContainerError::State {
                id: id.into(),
                wanted: "created",
                state: describe(&status.state),
            });
        }
        let fifo = rustix::fs::open(
            paths.start_fifo(),
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ContainerError::Io {
            path: paths.start_fifo(),
            op: "open",
            source: e.into(),
        })?;
        write_atomic(&paths.started(), &now_ns().to_string()).map_err(|source| {
            ContainerError::Io {
                path: paths.started(),
                op: "write",
                source,
            }
        })?;
        let ended = || {
            let exited = paths.exit().exists();
            exited || read_init(&paths).is_none_or(|i| !i.is_alive())
        };
        let message =
            wait_for_exec(&fifo, START_TIMEOUT, ended).map_err(|source| ContainerError::Io {
                path: paths.start_fifo(),
                op: "wait for exec",
                source,
            })?;
        if !message.is_empty() {
            return Err(ContainerError::Exec {
                id: id.into(),
                message,
            });
        }
        self.status(id)
    }

    pub fn status(&self, id: &str) -> Result<ContainerStatus, ContainerError> {
        let paths = self.paths(id);
        if !paths.dir.is_dir() {
            return Err(ContainerError::NotFound(id.into()));
        }
        let init = read_init(&paths);
        let started_ns = std::fs::read_to_string(paths.started())
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let exit = std::fs::read_to_string(paths.exit())
            .ok()
            .and_then(|t| ExitStatus::parse(&t));
        let alive = init.is_some_and(|i| i.is_alive());
        let state = match (exit, alive) {
            (Some(exit), _) => State::Exited(exit),
            (None, true) if started_ns.is_some() => State::Running,
            (None, true) => State::Created,
            // Init died without a record (killed): the workload died with its pid namespace.
            (None, false) => State::Exited(self.record_killed(&paths)),
        };
        let pid = if alive { init.map(|i| i.pid) } else { None };
        let reason = match &state {
            State::Exited(exit) => self.reason(id, &paths, exit),
            _ => None,
        };
        Ok(ContainerStatus {
            id: id.into(),
            state,
            pid,
            started_ns,
            reason,
        })
    }

    /// The reason an exited container ended, recorded in its state directory on first look
    /// (the cgroup that tells may be removed with the pod afterwards).
    fn reason(&self, id: &str, paths: &StatePaths, exit: &ExitStatus) -> Option<String> {
        if let Ok(text) = std::fs::read_to_string(paths.reason()) {
            return Some(text.trim().to_string()).filter(|r| !r.is_empty());
        }
        if exit.signal != libc::SIGKILL {
            return None;
        }
        let spec = self.spec(id).ok()?;
        // Kills counted before this container was created were an earlier instance's.
        let base = std::fs::read_to_string(paths.oom_base())
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if oom_kills(spec.cgroup_procs.iter().filter_map(|p| p.parent())) <= base {
            return None;
        }
        let _ = write_atomic(&paths.reason(), "OOMKilled\n");
        Some("OOMKilled".into())
    }

    fn record_killed(&self, paths: &StatePaths) -> ExitStatus {
        let exit = ExitStatus {
            code: 0,
            signal: libc::SIGKILL,
            finished_ns: now_ns(),
        };
        let _ = write_atomic(&paths.exit(), &exit.render());
        exit
    }

    /// Sends the stop signal (init forwards it), waits up to `grace`, then SIGKILLs the
    /// container's PID 1, which takes every process of its PID namespace with it.
    pub fn stop(&self, id: &str, grace: Duration) -> Result<ContainerStatus, ContainerError> {
        let paths = self.paths(id);
        let spec = self.spec(id)?;
        if let Some(init) = read_init(&paths).filter(|i| i.is_alive()) {
            let signal = spec.process.stop_signal;
            // SAFETY: sending a signal to a process we identified by PID and start time.
            unsafe { libc::kill(init.pid, signal) };
            if !wait_gone(init, grace) {
                kill_and_wait(init, Duration::from_secs(10));
            }
        }
        self.status(id)
    }

    /// Removes an exited (or never started) container's state; its log stays.
    pub fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let status = self.status(id)?;
        if matches!(status.state, State::Running | State::Created) && status.pid.is_some() {
            return Err(ContainerError::State {
                id: id.into(),
                wanted: "stopped",
                state: describe(&status.state),
            });
        }
        let dir = self.paths(id).dir;
        std::fs::remove_dir_all(&dir).map_err(|source| ContainerError::Io {
            path: dir,
            op: "remove",
            source,
        })
    }

    pub fn spec(&self, id: &str) -> Result<ContainerSpec, ContainerError> {
        let path = self.paths(id).spec();
        let bytes = std::fs::read(&path).map_err(|_| ContainerError::NotFound(id.into()))?;
        serde_json::from_slice(&bytes).map_err(|e| ContainerError::Io {
            path,
            op: "parse",
            source: std::io::Error::other(e),
        })
    }

    /// Every container's status, by id.
    pub fn list(&self) -> Result<Vec<ContainerStatus>, ContainerError> {
        let dir = self.root.join("containers");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|source| ContainerError::Io {
            path: dir.clone(),
            op: "list",
            source,
        })? {
            let Ok(entry) = entry else { continue };
            if let Some(status) = entry
                .file_name()
                .to_str()
                .and_then(|id| self.status(id).ok())
            {
                out.push(status);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Runs a process in the running container with the container's identity, capabilities
    /// and environment (plus `spec.env`). Returns the child process: its stdio are pipes as
    /// `stdio` asks, and its exit status is the exec'd process's (126 when it could not be
    /// run, 127 when the command was not found).
    pub fn exec(
        &self,
        id: &str,
        spec: &super::ExecSpec,
        stdio: [Stdio; 3],
    ) -> Result<std::process::Child, ContainerError> {
        let status = self.status(id)?;
        if status.state != State::Running {
            return Err(ContainerError::State {
                id: id.into(),
                wanted: "running",
                state: describe(&status.state),
            });
        }
        let [stdin, stdout, stderr] = stdio;
        Command::new(&self.setup_binary)
            .arg0(super::EXEC_ARG0)
            .arg(self.paths(id).dir)
            .arg(to_json(spec))
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| ContainerError::Io {
                path: self.setup_binary.clone(),
                op: "spawn exec",
                source,
            })
    }

    /// Waits until the container has exited, up to `timeout`.
    pub fn wait(&self, id: &str, timeout: Duration) -> Result<ContainerStatus, ContainerError> {
        if let Some(init) = read_init(&self.paths(id)) {
            wait_gone(init, timeout);
        }
        self.status(id)
    }
}

/// The OOM kills the cgroups at `dirs` counted: `oom_kill N` in v2 `memory.events` or v1
/// `memory.oom_control` (whichever hierarchy serves memory has it), summed.
fn oom_kills<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> u64 {
    dirs.into_iter()
        .flat_map(|dir| ["memory.events", "memory.oom_control"].map(|f| dir.join(f)))
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .map(|text| oom_kill_count(&text))
        .sum()
}

/// `N` of the `oom_kill N` line of a memory events file (0 without one).
fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum()
}

fn describe(state: &State) -> String {
    match state {
        State::Created => "created".into(),
        State::Running => "running".into(),
        State::Exited(e) => format!("exited ({})", e.shell_code()),
    }
}

fn validate_id(id: &str) -> Result<(), ContainerError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidId(id.into()))
    }
}

fn read_init(paths: &StatePaths) -> Option<InitProcess> {
    InitProcess::parse(&std::fs::read_to_string(paths.pid()).ok()?)
}

#[derive(Default)]
struct SetupOutcome {
    pid: Option<i32>,
    ready: bool,
    error: Option<String>,
}

/// Reads the setup status pipe: `pid N` from stage 1 and `ready` from the container's init,
/// in either order (stage 1 can be descheduled between its fork and its write long enough for
/// init to start), or `error: …` from either.
fn read_setup_status(stdout: impl Read) -> SetupOutcome {
    let mut outcome = SetupOutcome::default();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(pid) = line.strip_prefix("pid ") {
            outcome.pid = pid.trim().parse().ok();
        } else if line == "ready" {
            outcome.ready = true;
        } else if let Some(error) = line.strip_prefix("error: ") {
            outcome.error = Some(error.to_string());
            break;
        }
        if outcome.ready && outcome.pid.is_some() {
            break;
        }
    }
    outcome
}

/// Waits until the workload closes the start fifo: at a successful exec (close-on-exec) with
/// nothing written, or after writing why exec failed.
fn wait_for_exec(
    fifo: &impl AsFd,
    timeout: Duration,
    ended: impl Fn() -> bool,
) -> std::io::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut message = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the workload never reached exec",
            ));
        }
        let mut fds = [rustix::event::PollFd::new(
            fifo,
            rustix::event::PollFlags::IN,
        )];
        // Wake now and then: a workload that died before opening the fifo never closes it.
        let tick = left.min(Duration::from_millis(50));
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: i64::from(tick.subsec_nanos()),
        };
        if rustix::event::poll(&mut fds, Some(&timeout))? == 0 {
            if ended() {
                return Ok("the container ended before it was started; see its log".into());
            }
            continue;
        }
        let mut buf = [0u8; 4096];
        match rustix::io::read(fifo, &mut buf) {
            Ok(0) if fds[0].revents().contains(rustix::event::PollFlags::HUP) => break,
            Ok(0) => continue,
            Ok(n) => message.extend_from_slice(&buf[..n]),
            Err(rustix::io::Errno::AGAIN) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(String::from_utf8_lossy(&message).trim().to_string())
}

/// Waits for a process to be gone (or a zombie), up to `timeout`.
fn wait_gone(init: InitProcess, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    while init.is_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    true
}

fn kill_and_wait(init: InitProcess, timeout: Duration) {
    if init.is_alive() {
        // SAFETY: SIGKILL to the container's PID 1, identified by PID and start time.
        unsafe { libc::kill(init.pid, libc::SIGKILL) };
        wait_gone(init, timeout);
    }
}

/// Writes the embedded init binary into `root/bin` under a name with its digest.
fn install_init(root: &Path) -> Result<PathBuf, ContainerError> {
    use std::os::unix::fs::PermissionsExt;
    let digest = crate::image::Digest::of(INIT_BINARY);
    let dir = root.join("bin");
    let path = dir.join(format!("skiff-init-{}", digest.short()));
    if path.is_file() {
        return Ok(path);
    }
    let io = |op| {
        let path = path.clone();
        move |source| ContainerError::Io { path, op, source }
    };
    std::fs::create_dir_all(&dir).map_err(io("create"))?;
    let tmp = dir.join(format!(".skiff-init-{}", std::process::id()));
    std::fs::write(&tmp, INIT_BINARY).map_err(io("write"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(io("chmod"))?;
    std::fs::rename(&tmp, &path).map_err(io("install"))?;
    Ok(path)
}

fn to_json(value: &impl serde::Serialize) -> String {
    // Plain data types: serialising them cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_status_takes_pid_and_ready_in_either_order() {
        for text in ["pid 42\nready\n", "ready\npid 42\n"] {
            let outcome = read_setup_status(text.as_bytes());
            assert_eq!((outcome.pid, outcome.ready), (Some(42), true), "{text:?}");
            assert_eq!(outcome.error, None);
        }
        let failed = read_setup_status("pid 42\nerror: mount overlay: EINVAL\n".as_bytes());
        assert_eq!(failed.pid, Some(42));
        assert!(!failed.ready);
        assert_eq!(failed.error.as_deref(), Some("mount overlay: EINVAL"));
        let silent = read_setup_status("".as_bytes());
        assert_eq!((silent.pid, silent.ready), (None, false));
    }

    #[test]
    fn oom_kills_are_counted_from_v1_and_v2_files_and_above_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let (v1, v2) = (dir.path().join("v1"), dir.path().join("v2"));
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::create_dir_all(&v2).unwrap();
        assert_eq!(oom_kills([v1.as_path(), v2.as_path()]), 0, "no files");
        std::fs::write(
            v1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        std::fs::write(v2.join("memory.events"), "low 0\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(oom_kills([v1.as_path(), v2.as_path()]), 3);
        assert_eq!(oom_kill_count("oom 4\n"), 0, "oom is not oom_kill");
    }
}
