//! The container setup process's system calls: each wrapper names the call and its subject in
//! the error, and every `unsafe` block is here with its reason. Only the setup process
//! (single-threaded, fresh from exec) calls these.

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

pub fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running atexit handlers or flushing stdio that a
    // forked child shares with its parent.
    unsafe { libc::_exit(code) }
}
