//! The container setup and exec helper processes' system calls: each wrapper names the call
//! and its subject in the error, and every `unsafe` block is here with its reason. Only those
//! processes (single-threaded, fresh from exec) call these, except [`place_fd`], which runs
//! in a child between fork and exec.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A failed system call: which, on what, and the errno.
#[derive(Debug, thiserror::Error)]
#[error("{call} {subject}: {source}")]
pub struct SysError {
    pub call: &'static str,
    pub subject: String,
    #[source]
    pub source: io::Error,
}

pub type SysResult<T> = Result<T, SysError>;

fn check(
    ret: libc::c_int,
    call: &'static str,
    subject: impl Into<String>,
) -> SysResult<libc::c_int> {
    if ret < 0 {
        Err(SysError {
            call,
            subject: subject.into(),
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(ret)
    }
}

pub fn cstring(s: impl AsRef<OsStr>) -> SysResult<CString> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| SysError {
        call: "cstring",
        subject: s.as_ref().to_string_lossy().into_owned(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

pub fn setns(fd: &OwnedFd, nstype: libc::c_int, what: &Path) -> SysResult<()> {
    // SAFETY: fd is a valid namespace fd for the duration of the call.
    let ret = unsafe { libc::setns(fd.as_raw_fd(), nstype) };
    check(ret, "setns", what.display().to_string()).map(drop)
}

pub fn unshare(flags: libc::c_int) -> SysResult<()> {
    // SAFETY: unshare only changes this (single-threaded) process's namespaces.
    let ret = unsafe { libc::unshare(flags) };
    check(ret, "unshare", format!("{flags:#x}")).map(drop)
}

/// fork(2). The setup process is single-threaded, so the child may do anything.
pub fn fork() -> SysResult<libc::pid_t> {
    // SAFETY: the setup process has a single thread (it is exec'd fresh and starts none), so
    // the child inherits a consistent heap and no held locks.
    check(unsafe { libc::fork() }, "fork", "")
}

/// The cgroup v2 file system's magic number (`statfs.f_type`).
pub const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// fork(2) through clone3 with `CLONE_INTO_CGROUP`: the child starts in the cgroup v2
/// directory open at `cgroup`, without a `cgroup.procs` write (which takes the global
/// threadgroup lock and waits for an RCU grace period, 5–20 ms here). Same single-threaded
/// rule as [`fork`].
pub fn fork_into_cgroup(cgroup: &OwnedFd) -> SysResult<libc::pid_t> {
    let args = libc::clone_args {
        flags: CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.as_raw_fd() as u64,
    };
    // SAFETY: clone3 without CLONE_VM is fork: the child gets a copy of this single-threaded
    // process (see `fork`); `args` is a valid clone_args of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    check(ret as libc::c_int, "clone3", "CLONE_INTO_CGROUP")
}

pub fn mount(
    source: Option<&OsStr>,
    target: &OsStr,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> SysResult<()> {
    let subject = || {
        format!(
            "{} on {}",
            fstype.unwrap_or("bind"),
            Path::new(target).display()
        )
    };
    let source = source.map(cstring).transpose()?;
    let target_c = cstring(target)?;
    let fstype = fstype.map(cstring).transpose()?;
    let data = data.filter(|d| !d.is_empty()).map(cstring).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a NUL-terminated string alive for the call.
    let ret = unsafe {
        libc::mount(
            ptr(&source),
            target_c.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data) as *const libc::c_void,
        )
    };
    check(ret, "mount", subject()).map(drop)
}

pub fn pivot_root(new_root: &Path) -> SysResult<()> {
    std::env::set_current_dir(new_root).map_err(|source| SysError {
        call: "chdir",
        subject: new_root.display().to_string(),
        source,
    })?;
    let dot = cstring(".")?;
    // SAFETY: pivot_root(".", ".") with valid C strings; the old root is stacked under the new
    // one and detached just below.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(
        ret as libc::c_int,
        "pivot_root",
        new_root.display().to_string(),
    )?;
    // SAFETY: detaching the old root, now mounted on ".".
    let ret = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
    check(ret, "umount2", "old root")?;
    std::env::set_current_dir("/").map_err(|source| SysError {
        call: "chdir",
        subject: "/".into(),
        source,
    })
}

/// Duplicates `fd` onto exactly `target` (clearing close-on-exec there).
pub fn dup2(fd: RawFd, target: RawFd) -> SysResult<()> {
    // SAFETY: dup2 on fds this process owns.
    let ret = unsafe { libc::dup2(fd, target) };
    check(ret, "dup2", format!("{fd} -> {target}")).map(drop)
}

/// Duplicates `fd` to a number >= `min`, close-on-exec.
pub fn dup_above(fd: RawFd, min: RawFd) -> SysResult<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd that we then own.
    let ret = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    let new = check(ret, "fcntl", "F_DUPFD_CLOEXEC")?;
    // SAFETY: `new` was just returned by fcntl and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A pipe whose both ends are close-on-exec: (read, write).
pub fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    check(ret, "pipe2", "")?;
    // SAFETY: pipe2 returned two fresh fds that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn setsid() -> SysResult<()> {
    // SAFETY: no memory is involved.
    check(unsafe { libc::setsid() }, "setsid", "").map(drop)
}

pub fn set_identity(uid: u32, gid: u32, groups: &[u32]) -> SysResult<()> {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: groups points at groups.len() gids.
    let ret = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
    check(ret, "setgroups", format!("{groups:?}"))?;
    // SAFETY: no memory is involved.
    let ret = unsafe { libc::setresgid(gid, gid, gid) };
    check(ret, "setresgid", gid.to_string())?;
    // SAFETY: no memory is involved.
    let ret = unsafe { libc::setresuid(uid, uid, uid) };
    check(ret, "setresuid", uid.to_string()).map(drop)
}

pub fn setrlimit(resource: u32, soft: u64, hard: u64) -> SysResult<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: limit is a valid rlimit.
    let ret = unsafe { libc::setrlimit(resource as _, &limit) };
    check(ret, "setrlimit", resource.to_string()).map(drop)
}

/// Keeps only `keep` (capability numbers) in the bounding set and clears the ambient set.
pub fn drop_bounding_capabilities(keep: &[u8], last_cap: u8) -> SysResult<()> {
    for cap in (0..=last_cap).filter(|c| !keep.contains(c)) {
        // SAFETY: prctl with integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        check(ret, "prctl", format!("PR_CAPBSET_DROP {cap}"))?;
    }
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    check(ret, "prctl", "PR_CAP_AMBIENT_CLEAR_ALL").map(drop)
}

/// Sets the effective, permitted and inheritable sets of a root process to `keep`.
pub fn set_root_capabilities(keep: &[u8]) -> SysResult<()> {
    let mut mask = [0u32; 2];
    for &cap in keep {
        mask[usize::from(cap / 32)] |= 1 << (cap % 32);
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [0, 1].map(|i| Data {
        effective: mask[i],
        permitted: mask[i],
        inheritable: mask[i],
    });
    // SAFETY: capset v3 reads one header and two data structs, both laid out as the kernel's.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    check(ret as libc::c_int, "capset", format!("{keep:?}")).map(drop)
}

pub fn set_no_new_privs() -> SysResult<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(ret, "prctl", "PR_SET_NO_NEW_PRIVS").map(drop)
}

/// execve; returns only on failure.
pub fn execve(path: &CString, args: &[CString], env: &[CString]) -> SysError {
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    // SAFETY: argv and envp are NULL-terminated arrays of pointers to live C strings.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    SysError {
        call: "exec",
        subject: path.to_string_lossy().into_owned(),
        source: io::Error::last_os_error(),
    }
}

/// execveat(fd, "", …, AT_EMPTY_PATH): runs the binary open at `fd`; returns only on failure.
pub fn execveat(fd: &OwnedFd, args: &[CString]) -> SysError {
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let empty = c"";
    // SAFETY: valid fd, empty path with AT_EMPTY_PATH, NULL-terminated argv/envp.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            empty.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    SysError {
        call: "execveat",
        subject: "skiff-init".into(),
        source: io::Error::last_os_error(),
    }
}

/// Best effort: writes `bytes` to `name` in the directory open at `dirfd`.
pub fn write_file_at(dirfd: RawFd, name: &std::ffi::CStr, bytes: &[u8]) {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
    // SAFETY: name is NUL-terminated; the fd we open is closed below.
    let fd = unsafe { libc::openat(dirfd, name.as_ptr(), flags, 0o644) };
    if fd >= 0 {
        // SAFETY: writing from a valid slice to the fd just opened, then closing it.
        unsafe {
            libc::write(fd, bytes.as_ptr().cast(), bytes.len());
            libc::close(fd);
        }
    }
}

/// Blocks `signals` for this (single-threaded) process and returns a signalfd that reads
/// them. The mask is inherited by children: they call [`unblock_all_signals`] first.
pub fn signalfd(signals: &[libc::c_int]) -> SysResult<OwnedFd> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t for these calls.
    unsafe {
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
    }
    // SAFETY: set is valid; the old mask is not wanted.
    let ret = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    check(ret, "sigprocmask", "SIG_BLOCK")?;
    // SAFETY: set is valid; -1 asks for a new signalfd.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
    let fd = check(fd, "signalfd", "")?;
    // SAFETY: signalfd returned a fresh fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Gives every signal its default disposition and unblocks them all, as a container's
/// process must start (runc does the same): the Rust runtime of the setup and exec helpers
/// ignores SIGPIPE, and an ignored signal stays ignored across exec — a workload would then
/// never die of a broken pipe (`yes | head` spins instead of ending).
pub fn reset_signals() {
    // The kernel's `struct sigaction` (x86_64), not glibc's: glibc's `signal()` refuses its
    // own real-time signals 32 and 33, which arrive here ignored too.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads one kernel sigaction of the size passed (8 bytes of
        // mask); SIG_DFL needs no restorer. The old action is not asked for.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null::<KernelSigaction>(),
                8usize,
            )
        };
    }
    unblock_all_signals();
}

/// Unblocks every signal (a child of a process that blocked some, before it execs).
pub fn unblock_all_signals() {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is valid for both calls.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// The number of the next signal queued on a signalfd, if one is there.
pub fn read_signal(fd: &OwnedFd) -> Option<libc::c_int> {
    // SAFETY: signalfd_siginfo is plain data.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: reading at most one record into a buffer of exactly its size.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    (n == size as isize).then_some(info.ssi_signo as libc::c_int)
}

/// Makes the calling process the leader of a new process group.
pub fn setpgid_self() -> SysResult<()> {
    // SAFETY: no memory is involved.
    check(unsafe { libc::setpgid(0, 0) }, "setpgid", "").map(drop)
}

/// Reaps `pid` if it has ended: its wait status.
pub fn wait_nohang(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    // SAFETY: waiting for our own child; status is a valid out-pointer.
    let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (ret == pid).then_some(status)
}

/// Sends `sig` to a process (`pid` > 0) or a process group (`pid` < 0); errors are ignored
/// (the target may be gone).
pub fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: no memory is involved.
    unsafe { libc::kill(pid, sig) };
}

/// Sets close-on-exec on a raw fd this process inherited (e.g. fd 3 of the exec helper).
pub fn set_cloexec(fd: RawFd) -> SysResult<()> {
    // SAFETY: fcntl on an fd number; a bad one fails with EBADF.
    let ret = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    check(ret, "fcntl", format!("F_SETFD {fd}")).map(drop)
}

/// Takes ownership of an fd this process inherited under a fixed number, if it is open.
pub fn inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only asks whether the number is an open fd.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the fd is open and, by the exec helper's interface, ours alone.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// In a child between fork and exec: puts `fd` at `target`, inheritable across exec. Only
/// async-signal-safe calls (it runs in `Command::pre_exec`).
pub fn place_fd(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: fcntl/dup2 on fd numbers touch no memory.
    let ret = unsafe {
        if fd == target {
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, target)
        }
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running atexit handlers or flushing stdio that a
    // forked child shares with its parent.
    unsafe { libc::_exit(code) }
}
