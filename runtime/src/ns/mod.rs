//! Namespaces pinned by bind mounts: a pod's network, IPC and UTS namespaces live as files
//! under the runtime's state dir, held by nothing but a mount, so no process (no pause
//! container) keeps them alive and a restarted daemon finds them again by path.
//!
//! `PinnedNs::create` unshares in a short-lived helper thread (per-thread `unshare` is fine
//! for net, ipc and uts; never for mount namespaces), runs a setup closure inside, and
//! bind-mounts `/proc/thread-self/ns/<kind>` onto an empty file. [`in_ns`] runs a closure in a
//! thread that has joined a namespace — e.g. to open a netlink socket there, which stays
//! bound to that namespace. All effects go through [`NsSys`]. Design notes:
//! `docs/design/005-pod-network.md`.

mod error;
#[cfg(test)]
mod fake;
mod mountinfo;
mod sys;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use error::NsError;
pub use mountinfo::{MountEntry, mounts_under, parse_mountinfo, top_mount_at};
pub use sys::{KernelSys, NsSys};

/// A namespace kind that can be pinned per thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NsKind {
    /// Network (`CLONE_NEWNET`).
    Net,
    /// System V IPC and POSIX message queues (`CLONE_NEWIPC`).
    Ipc,
    /// Hostname and NIS domain name (`CLONE_NEWUTS`).
    Uts,
}

impl NsKind {
    /// The file name under `/proc/<pid>/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
        }
    }

    /// The calling thread's namespace file of this kind.
    pub fn thread_self_path(self) -> PathBuf {
        Path::new("/proc/thread-self/ns").join(self.proc_name())
    }
}

impl fmt::Display for NsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.proc_name())
    }
}

/// A namespace held by a bind mount at `path`. Dropping it does nothing: pins outlive the
/// daemon on purpose; call [`PinnedNs::remove`] to release one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedNs {
    kind: NsKind,
    path: PathBuf,
}

impl PinnedNs {
    /// Creates a new namespace of `kind`, runs `setup` inside it (e.g. `sethostname` for
    /// UTS, opening a netlink socket for net), and pins it at `path` (a new file; its parent
    /// directory must exist). On any failure nothing is left mounted or created.
    pub fn create<F>(kind: NsKind, path: impl AsRef<Path>, setup: F) -> Result<Self, NsError>
    where
        F: FnOnce() -> io::Result<()> + Send,
    {
        Self::create_with(&KernelSys, kind, path.as_ref(), setup)
    }

    /// [`PinnedNs::create`] with effects through `sys`.
    pub fn create_with<F>(
        sys: &dyn NsSys,
        kind: NsKind,
        path: &Path,
        setup: F,
    ) -> Result<Self, NsError>
    where
        F: FnOnce() -> io::Result<()> + Send,
    {
        let mut pins = Self::create_all_with(sys, &[(kind, path.to_path_buf())], setup)?;
        Ok(pins.remove(0))
    }

    /// Creates namespaces of several kinds on one helper thread (one thread for a pod's net,
    /// IPC and UTS namespaces instead of three), runs `setup` inside all of them (e.g.
    /// `sethostname` and opening a netlink socket in the new netns), and pins each at its
    /// path, in order. A setup failure is reported against the first pin. On any failure
    /// nothing is left mounted or created.
    pub fn create_all<F>(pins: &[(NsKind, PathBuf)], setup: F) -> Result<Vec<Self>, NsError>
    where
        F: FnOnce() -> io::Result<()> + Send,
    {
        Self::create_all_with(&KernelSys, pins, setup)
    }

    /// [`PinnedNs::create_all`] with effects through `sys`.
    pub fn create_all_with<F>(
        sys: &dyn NsSys,
        pins: &[(NsKind, PathBuf)],
        setup: F,
    ) -> Result<Vec<Self>, NsError>
    where
        F: FnOnce() -> io::Result<()> + Send,
    {
        let Some((first_kind, first_path)) = pins.first() else {
            return Ok(Vec::new());
        };
        let work = || -> Result<(), NsError> {
            for (kind, _) in pins {
                sys.unshare(*kind).map_err(|source| NsError::Syscall {
                    call: "unshare",
                    kind: *kind,
                    source,
                })?;
            }
            setup().map_err(|source| NsError::Setup {
                kind: *first_kind,
                path: first_path.clone(),
                source,
            })?;
            for (done, (kind, path)) in pins.iter().enumerate() {
                if let Err(e) = pin_here(sys, *kind, path) {
                    for (_, made) in pins[..done].iter().rev() {
                        let _ = remove_with(sys, made);
                    }
                    return Err(e);
                }
            }
            Ok(())
        };
        // The helper thread ends here, so its (now unshared) namespaces are held only by the
        // bind mounts; the caller's thread never changes namespace.
        on_helper_thread("create", work)??;
        Ok(pins
            .iter()
            .map(|(kind, path)| Self {
                kind: *kind,
                path: path.clone(),
            })
            .collect())
    }

    /// A pin created earlier (e.g. found after a restart); checks nothing.
    pub fn at(kind: NsKind, path: impl Into<PathBuf>) -> Self {
        Self {
            kind,
            path: path.into(),
        }
    }

    /// The namespace kind.
    pub fn kind(&self) -> NsKind {
        self.kind
    }

    /// The pin path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens this pin; see [`PinnedNs::open`].
    pub fn fd(&self) -> Result<OwnedFd, NsError> {
        Self::open(&self.path)
    }

    /// Opens a pinned namespace read-only (for `setns`, `IFLA_NET_NS_FD`, …). Fails with
    /// [`NsError::NotPinned`] if nothing is mounted there.
    pub fn open(path: impl AsRef<Path>) -> Result<OwnedFd, NsError> {
        open_with(&KernelSys, path.as_ref())
    }

    /// Unmounts (`MNT_DETACH`) and unlinks a pin. Already unmounted or already gone is fine.
    pub fn remove(path: impl AsRef<Path>) -> Result<(), NsError> {
        remove_with(&KernelSys, path.as_ref())
    }
}

/// Pins the calling thread's namespace of `kind` at `path` (a new file).
fn pin_here(sys: &dyn NsSys, kind: NsKind, path: &Path) -> Result<(), NsError> {
    sys.create_file(path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => NsError::Exists {
            kind,
            path: path.to_path_buf(),
        },
        _ => NsError::io("create pin file", path, e),
    })?;
    if let Err(e) = sys.bind_mount(&kind.thread_self_path(), path, false) {
        let _ = sys.remove_file(path);
        return Err(NsError::io("bind mount namespace onto", path, e));
    }
    Ok(())
}

pub(crate) fn open_with(sys: &dyn NsSys, path: &Path) -> Result<OwnedFd, NsError> {
    let fd = sys
        .open(path)
        .map_err(|e| NsError::io("open namespace", path, e))?;
    match sys.is_nsfs(fd.as_fd()) {
        Ok(true) => Ok(fd),
        Ok(false) => Err(NsError::NotPinned {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(NsError::io("statfs", path, e)),
    }
}

pub(crate) fn remove_with(sys: &dyn NsSys, path: &Path) -> Result<(), NsError> {
    // Unmount until nothing is left (a pin mounted twice by accident goes too). EINVAL: not
    // a mount point (any more); ENOENT: the file is gone.
    for _ in 0..8 {
        match sys.unmount_detach(path) {
            Ok(()) => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => break,
            Err(e) => return Err(NsError::io("unmount", path, e)),
        }
    }
    match sys.remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(NsError::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Runs `f` on a helper thread that has joined the `kind` namespace behind `fd`, and returns
/// its result. The caller's thread never changes namespace; the helper ends with `f`.
pub fn in_ns<T, F>(fd: BorrowedFd<'_>, kind: NsKind, f: F) -> Result<T, NsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    in_ns_with(&KernelSys, fd, kind, f)
}

/// [`in_ns`] for a network namespace: e.g. open a netlink or TCP socket there (a socket
/// stays in the namespace it was created in, whichever thread uses it later).
pub fn in_netns<T, F>(fd: BorrowedFd<'_>, f: F) -> Result<T, NsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    in_ns(fd, NsKind::Net, f)
}

pub(crate) fn in_ns_with<T, F>(
    sys: &dyn NsSys,
    fd: BorrowedFd<'_>,
    kind: NsKind,
    f: F,
) -> Result<T, NsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    on_helper_thread("setns", || {
        sys.setns(fd, kind).map_err(|source| NsError::Syscall {
            call: "setns",
            kind,
            source,
        })?;
        Ok(f())
    })?
}

/// Runs `f` on a fresh scoped thread and returns its result (a panic becomes an error).
fn on_helper_thread<T: Send>(
    what: &'static str,
    f: impl FnOnce() -> T + Send,
) -> Result<T, NsError> {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name(format!("skiff-ns-{what}"))
            .spawn_scoped(s, f)
            .map_err(|e| NsError::Thread {
                what,
                reason: e.to_string(),
            })?;
        h.join().map_err(|_| NsError::Thread {
            what,
            reason: "panicked".to_string(),
        })
    })
}

/// Makes `dir` (created if missing) a private bind mount of itself, once: pins created under
/// it then neither propagate into other mount namespaces nor receive mounts from them. If
/// `dir` already is a private mount point (e.g. after a daemon restart), nothing is done.
/// Existing pins below it are kept (the self-bind is recursive). See
/// `docs/design/005-pod-network.md` for why private rather than shared.
pub fn prepare_state_dir(dir: &Path) -> Result<PathBuf, NsError> {
    prepare_state_dir_with(&KernelSys, dir)
}

pub(crate) fn prepare_state_dir_with(sys: &dyn NsSys, dir: &Path) -> Result<PathBuf, NsError> {
    std::fs::create_dir_all(dir).map_err(|e| NsError::io("create state dir", dir, e))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| NsError::io("canonicalize", dir, e))?;
    let info = sys
        .mountinfo()
        .map_err(|e| NsError::io("read", "/proc/self/mountinfo", e))?;
    let bound = match top_mount_at(&info, &dir) {
        Some(m) if m.is_private() => return Ok(dir),
        Some(_) => false,
        None => {
            sys.bind_mount(&dir, &dir, true)
                .map_err(|e| NsError::io("bind mount state dir onto itself", &dir, e))?;
            true
        }
    };
    if let Err(e) = sys.make_private(&dir) {
        if bound {
            let _ = sys.unmount_detach(&dir);
        }
        return Err(NsError::io("make private", &dir, e));
    }
    Ok(dir)
}

/// Undoes [`prepare_state_dir`]: detaches the state dir's self-mount. Pins below it must have
/// been removed first (this does not look for them). Not a mount point is fine.
pub fn release_state_dir(dir: &Path) -> Result<(), NsError> {
    match KernelSys.unmount_detach(dir) {
        Err(e) if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {
            Err(NsError::io("unmount state dir", dir, e))
        }
        _ => Ok(()),
    }
}

/// Mount points at or below `dir` in this process's mount table (a leak check).
pub fn mounts_below(dir: &Path) -> Result<Vec<PathBuf>, NsError> {
    let info = KernelSys
        .mountinfo()
        .map_err(|e| NsError::io("read", "/proc/self/mountinfo", e))?;
    Ok(mounts_under(&info, dir))
}
