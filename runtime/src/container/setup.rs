//! The container setup process: the `skiff` binary re-executed as `skiff-container-setup
//! STATE_DIR`, single-threaded, applying the plan the daemon wrote.
//!
//! ```text
//! daemon ──spawn──► setup (stage 1): join the sandbox's namespaces and the container's v1
//!                   cgroups (`join.rs`), unshare mount(+pid) namespaces, fork into the v2
//!                   cgroup, print "pid <host pid>", exit
//!                     └─► PID 1: unshare the cgroup namespace, mount the rootfs (overlay, /proc, /dev, binds), pivot_root,
//!                         masks; fork the workload; exec skiff-init, which prints "ready"
//!                           └─► workload: session, stdio pipes, identity, capabilities,
//!                               no_new_privs; block on the start fifo; exec the command
//! ```
//! Progress and errors go to stdout, a pipe the daemon reads: `pid N`, then `ready` or
//! `error: …`. No process of the runtime stays behind except the container's own.

use std::ffi::{CString, OsStr};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::join::CgroupJoin;
use super::plan::{ATTACH_SOCKET, INIT_IN_CONTAINER, SetupPlan};
use super::rootfs;
use super::spec::{NsKind, ProcessSpec};
use super::sys::{self, SysError, SysResult};

/// argv[0] that makes a skiff binary run as a container's setup process.
pub const SETUP_ARG0: &str = "skiff-container-setup";

/// The fds skiff-init finds its work on (see `init/skiff-init.rs`).
const INIT_STATE_FD: i32 = 3;
const INIT_STDOUT_FD: i32 = 4;
const INIT_STDERR_FD: i32 = 5;
const INIT_LOG_DIR_FD: i32 = 6;
const INIT_STATUS_FD: i32 = 7;
const INIT_ATTACH_FD: i32 = 8;
const INIT_STDIN_FD: i32 = 9;

/// Called first thing in `main` of every binary that links the runtime: when this process is a
/// container's setup process, it does that work and exits; otherwise it returns at once.
pub fn run_if_setup_process() {
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    let name = Path::new(&arg0).file_name();
    if name == Some(OsStr::new(super::exec::EXEC_ARG0)) {
        super::exec::run(args)
    }
    if name != Some(OsStr::new(SETUP_ARG0)) {
        return;
    }
    let Some(state_dir) = args.next() else {
        report("error: usage: skiff-container-setup STATE_DIR");
        sys::exit(2);
    };
    if let Err(e) = stage1(Path::new(&state_dir)) {
        report(&format!("error: {e}"));
        sys::exit(1);
    }
    sys::exit(0);
}

pub(super) fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub(super) fn io_err(call: &'static str, path: &Path, source: std::io::Error) -> SysError {
    SysError {
        call,
        subject: path.display().to_string(),
        source,
    }
}

fn stage1(state_dir: &Path) -> SysResult<()> {
    let plan_path = state_dir.join("setup.json");
    let bytes = std::fs::read(&plan_path).map_err(|e| io_err("read", &plan_path, e))?;
    let plan: SetupPlan = serde_json::from_slice(&bytes)
        .map_err(|e| io_err("parse", &plan_path, std::io::Error::other(e)))?;
    let attach = attach_listener(&plan.state_dir)?;
    for (kind, path) in &plan.join {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io_err("open", path, e.into()))?;
        sys::setns(&fd, ns_flag(*kind), path)?;
    }
    let cgroups = CgroupJoin::prepare(&plan.cgroup_procs)?;
    let mut flags = libc::CLONE_NEWNS;
    if plan.new_pid_namespace {
        flags |= libc::CLONE_NEWPID;
    }
    sys::unshare(flags)?;
    match cgroups.fork()? {
        0 => {
            // The cgroup namespace only now: clone3 copies the parent's namespaces before it
            // moves the child, so one unshared earlier would be rooted at the daemon's cgroup.
            let result = sys::unshare(libc::CLONE_NEWCGROUP).and_then(|()| pid1(&plan, attach));
            if let Err(e) = result {
                report(&format!("error: {e}"));
                sys::exit(1);
            }
            sys::exit(0) // not reached: pid1 execs skiff-init
        }
        child => {
            report(&format!("pid {child}"));
            Ok(())
        }
    }
}

/// The container's attach socket (`STATE_DIR/attach`, SOCK_SEQPACKET), listening, for
/// skiff-init to serve. Bound through `/proc/self/fd/N/`, so a long state path cannot exceed
/// the 108 bytes a socket address holds.
fn attach_listener(state_dir: &Path) -> SysResult<OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let path = state_dir.join(ATTACH_SOCKET);
    let err = |call, e: rustix::io::Errno| io_err(call, &path, e.into());
    let dir = open_path(state_dir, OFlags::PATH | OFlags::DIRECTORY)?;
    let short = format!("/proc/self/fd/{}/{ATTACH_SOCKET}", dir.as_raw_fd());
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| err("socket", e))?;
    let addr = SocketAddrUnix::new(short.as_str()).map_err(|e| err("socket address", e))?;
    rustix::net::bind(&socket, &addr).map_err(|e| err("bind", e))?;
    rustix::net::listen(&socket, 8).map_err(|e| err("listen", e))?;
    Ok(socket)
}

pub(super) fn ns_flag(kind: NsKind) -> libc::c_int {
    match kind {
        NsKind::Net => libc::CLONE_NEWNET,
        NsKind::Ipc => libc::CLONE_NEWIPC,
        NsKind::Uts => libc::CLONE_NEWUTS,
        NsKind::Pid => libc::CLONE_NEWPID,
    }
}

pub(super) fn open_path(path: &Path, flags: OFlags) -> SysResult<OwnedFd> {
    rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io_err("open", path, e.into()))
}

/// PID 1 of the container: builds the rootfs, starts the workload, becomes skiff-init.
fn pid1(plan: &SetupPlan, attach: OwnedFd) -> SysResult<()> {
    sys::mount(
        None,
        OsStr::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    let lower: Vec<String> = plan.lower.iter().map(|p| p.display().to_string()).collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        plan.upper.display(),
        plan.work.display()
    );
    sys::mount(
        Some(OsStr::new("overlay")),
        plan.rootfs.as_os_str(),
        Some("overlay"),
        0,
        Some(&options),
    )?;
    rootfs::build(&plan.rootfs, &plan.before_pivot)?;

    // What must outlive pivot_root: the state and log directories and the start fifo.
    let state = open_path(&plan.state_dir, OFlags::PATH | OFlags::DIRECTORY)?;
    let logs = open_path(&plan.log_dir, OFlags::PATH | OFlags::DIRECTORY)?;
    let fifo = open_path(&plan.start_fifo, OFlags::PATH)?;

    sys::pivot_root(&plan.rootfs)?;
    let init = open_path(Path::new(INIT_IN_CONTAINER), OFlags::RDONLY)?;
    for op in &plan.after_pivot {
        rootfs::harden(op)?;
    }
    if plan.readonly_rootfs {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        sys::mount(None, OsStr::new("/"), None, flags, None)?;
    }

    let io = WorkloadIo::new(plan)?;
    let workload = match sys::fork()? {
        0 => workload(plan, &fifo, &io.workload),
        pid => pid,
    };
    drop(fifo);
    let mut fds = vec![
        (state, INIT_STATE_FD),
        (io.init_out, INIT_STDOUT_FD),
        (io.init_err, INIT_STDERR_FD),
        (logs, INIT_LOG_DIR_FD),
        (attach, INIT_ATTACH_FD),
    ];
    fds.extend(io.init_stdin.map(|fd| (fd, INIT_STDIN_FD)));
    // The workload's ends (the pty slave above all: init must see EIO once the workload is
    // gone) are dropped with `io.workload` here.
    drop(io.workload);
    become_init(workload, plan, fds, &init)
}

/// The workload's stdio and init's ends of it.
struct WorkloadIo {
    workload: StdioFds,
    init_out: OwnedFd,
    init_err: OwnedFd,
    init_stdin: Option<OwnedFd>,
}

/// stdin, stdout and stderr of the workload; with a tty, all three are the pty slave, which
/// also becomes its controlling terminal.
struct StdioFds {
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
    tty: bool,
}

impl WorkloadIo {
    /// Made after pivot_root: a tty comes from the container's own devpts.
    fn new(plan: &SetupPlan) -> SysResult<WorkloadIo> {
        if plan.stdio.tty {
            let (master, slave) = super::exec::open_pty()?;
            let dup = |fd: &OwnedFd| sys::dup_above(fd.as_raw_fd(), 0);
            return Ok(WorkloadIo {
                workload: StdioFds {
                    stdin: Some(dup(&slave)?),
                    stdout: dup(&slave)?,
                    stderr: slave,
                    tty: true,
                },
                init_out: master,
                // No separate stderr on a terminal: init reads end of file at once.
                init_err: open_path(Path::new("/dev/null"), OFlags::RDONLY)?,
                init_stdin: None,
            });
        }
        let (out_r, out_w) = sys::pipe()?;
        let (err_r, err_w) = sys::pipe()?;
        let (stdin, init_stdin) = if plan.stdio.stdin {
            let (r, w) = sys::pipe()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        Ok(WorkloadIo {
            workload: StdioFds {
                stdin,
                stdout: out_w,
                stderr: err_w,
                tty: false,
            },
            init_out: out_r,
            init_err: err_r,
            init_stdin,
        })
    }
}

/// Puts the init's fds in place and execs it.
fn become_init(
    workload: i32,
    plan: &SetupPlan,
    fds: Vec<(OwnedFd, i32)>,
    init: &OwnedFd,
) -> SysResult<()> {
    // Move everything out of the way first so dup2 never clobbers an fd still needed
    // (the init binary's own fd included).
    let high: Vec<(OwnedFd, i32)> = fds
        .iter()
        .map(|(fd, target)| sys::dup_above(fd.as_raw_fd(), 100).map(|h| (h, *target)))
        .collect::<SysResult<_>>()?;
    let init = sys::dup_above(init.as_raw_fd(), 100)?;
    let status = sys::dup_above(1, 100)?; // skiff-init says "ready" on it
    drop(fds);
    for (fd, target) in high.iter().chain([(status, INIT_STATUS_FD)].iter()) {
        sys::dup2(fd.as_raw_fd(), *target)?;
    }
    drop(high);
    let null = open_path(Path::new("/dev/null"), OFlags::RDWR)?;
    for target in 0..=2 {
        sys::dup2(null.as_raw_fd(), target)?;
    }
    let flags = match (plan.stdio.tty, plan.stdio.stdin) {
        (true, true) => "ti",
        (true, false) => "t",
        (false, true) => "i",
        (false, false) => "-",
    };
    let args = [
        sys::cstring("skiff-init")?,
        sys::cstring(workload.to_string())?,
        sys::cstring(&plan.log_name)?,
        sys::cstring(plan.log_max_bytes.to_string())?,
        sys::cstring(flags)?,
    ];
    let error = sys::execveat(&init, &args);
    // stdout is /dev/null by now: leave the reason in the state directory for the daemon.
    sys::write_file_at(INIT_STATE_FD, c"setup-error", error.to_string().as_bytes());
    Err(error)
}

/// The workload process: never returns.
fn workload(plan: &SetupPlan, fifo: &OwnedFd, io: &StdioFds) -> ! {
    let fail = |e: SysError| -> ! {
        let _ = writeln!(std::io::stderr(), "skiff: {e}");
        sys::exit(127)
    };
    if let Err(e) = prepare_workload(plan, io) {
        fail(e);
    }
    // Block until the daemon starts the container (it opens the fifo for reading).
    let fifo_path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let mut start = match std::fs::OpenOptions::new().write(true).open(&fifo_path) {
        Ok(f) => f,
        Err(e) => fail(io_err("open", Path::new("start fifo"), e)),
    };
    let (path, args, env) = match exec_args(&plan.process) {
        Ok(v) => v,
        Err(e) => {
            let _ = write!(start, "{e}");
            fail(e)
        }
    };
    // The fifo is close-on-exec: a successful exec closes it with nothing written.
    let e = sys::execve(&path, &args, &env);
    let _ = write!(start, "{e}");
    fail(e)
}

fn prepare_workload(plan: &SetupPlan, io: &StdioFds) -> SysResult<()> {
    sys::reset_signals();
    sys::setsid()?;
    if io.tty {
        rustix::process::ioctl_tiocsctty(&io.stdout)
            .map_err(|e| io_err("TIOCSCTTY", Path::new("pty"), e.into()))?;
    }
    let null;
    let stdin = match &io.stdin {
        Some(fd) => fd,
        None => {
            null = open_path(Path::new("/dev/null"), OFlags::RDONLY)?;
            &null
        }
    };
    sys::dup2(stdin.as_raw_fd(), 0)?;
    sys::dup2(io.stdout.as_raw_fd(), 1)?;
    sys::dup2(io.stderr.as_raw_fd(), 2)?;
    apply_process(&plan.process)
}

/// Working directory, limits, capabilities, identity and no_new_privs of a container
/// process (the workload, or a process exec'd into the container).
pub(super) fn apply_process(p: &ProcessSpec) -> SysResult<()> {
    // First, while every capability is still held (installing a filter without
    // no_new_privs needs CAP_SYS_ADMIN); nothing done after it is on the deny list.
    super::seccomp::install(p.seccomp).map_err(|e| {
        io_err(
            "install",
            Path::new("seccomp filter"),
            std::io::Error::other(e),
        )
    })?;
    let cwd = Path::new(&p.cwd);
    if let Err(e) = std::fs::create_dir_all(cwd).and_then(|()| std::env::set_current_dir(cwd)) {
        return Err(io_err("chdir", cwd, e));
    }
    for &(resource, soft, hard) in &p.rlimits {
        sys::setrlimit(resource, soft, hard)?;
    }
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    // Bounding set first (needs CAP_SETPCAP), then identity; a non-root uid loses the other
    // sets by itself, root gets exactly the kept ones.
    sys::drop_bounding_capabilities(&p.capabilities, last_cap)?;
    if p.uid != 0 || p.gid != 0 || !p.additional_gids.is_empty() {
        sys::set_identity(p.uid, p.gid, &p.additional_gids)?;
    }
    if p.uid == 0 {
        sys::set_root_capabilities(&p.capabilities)?;
    }
    if p.no_new_privileges {
        sys::set_no_new_privs()?;
    }
    Ok(())
}

/// The executable (looked up in the container's PATH), argv and environment.
pub(super) fn exec_args(p: &ProcessSpec) -> SysResult<(CString, Vec<CString>, Vec<CString>)> {
    let argv0 = p.args.first().ok_or_else(|| {
        io_err(
            "exec",
            Path::new(""),
            std::io::Error::other("no command given"),
        )
    })?;
    let path_var = p
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let exe = find_executable(argv0, path_var).ok_or_else(|| SysError {
        call: "exec",
        subject: format!("{argv0:?}"),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "executable file not found in $PATH",
        ),
    })?;
    let args = p
        .args
        .iter()
        .map(sys::cstring)
        .collect::<SysResult<Vec<_>>>()?;
    let env = p
        .env
        .iter()
        .map(sys::cstring)
        .collect::<SysResult<Vec<_>>>()?;
    Ok((sys::cstring(exe.as_os_str())?, args, env))
}

fn find_executable(name: &str, path_var: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    path_var
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
