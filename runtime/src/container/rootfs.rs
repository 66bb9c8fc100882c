//! Builds a container's root file system from the plan's `MountOp`s. Before `pivot_root`,
//! every target is resolved inside the rootfs with `openat2(RESOLVE_IN_ROOT)` — an image's
//! symlinks cannot aim a mount at the host — and mounted through its `/proc/self/fd` path.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::plan::{Flag, MountOp};
use super::spec::Propagation;
use super::sys::{self, SysError, SysResult};

fn errno_err(call: &'static str, path: &Path, e: Errno) -> SysError {
    SysError {
        call,
        subject: path.display().to_string(),
        source: e.into(),
    }
}

fn flags_of(flags: &[Flag]) -> libc::c_ulong {
    flags.iter().fold(0, |acc, f| {
        acc | match f {
            Flag::ReadOnly => libc::MS_RDONLY,
            Flag::NoSuid => libc::MS_NOSUID,
            Flag::NoDev => libc::MS_NODEV,
            Flag::NoExec => libc::MS_NOEXEC,
        }
    })
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Opens `rel` inside `root` as an O_PATH fd, creating missing directories (and, when
/// `file` is set, the final component as an empty file).
fn open_in_root(root: &OwnedFd, rel: &Path, file: bool) -> SysResult<OwnedFd> {
    let open = |p: &Path| {
        rustix::fs::openat2(
            root,
            p,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        )
    };
    match open(rel) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) => {}
        Err(e) => return Err(errno_err("open", rel, e)),
    }
    let mut prefix = std::path::PathBuf::new();
    let comps: Vec<_> = rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    for (i, comp) in comps.iter().enumerate() {
        let parent = if prefix.as_os_str().is_empty() {
            Path::new(".")
        } else {
            prefix.as_path()
        };
        let parent_fd = open(parent).map_err(|e| errno_err("open", parent, e))?;
        let parent_dir = rustix::fs::openat(
            &parent_fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno_err("open", parent, e))?;
        let name = comp.as_os_str();
        let last = i + 1 == comps.len();
        let made = if last && file {
            rustix::fs::openat(
                &parent_dir,
                name,
                OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        } else {
            rustix::fs::mkdirat(&parent_dir, name, Mode::from_raw_mode(0o755))
        };
        match made {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(errno_err(
                    if file { "create" } else { "mkdir" },
                    &prefix.join(name),
                    e,
                ));
            }
        }
        prefix.push(name);
    }
    open(rel).map_err(|e| errno_err("open", rel, e))
}

/// Applies the before-pivot operations inside `rootfs`.
pub fn build(rootfs: &Path, ops: &[MountOp]) -> SysResult<()> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno_err("open", rootfs, e))?;
    for op in ops {
        apply(&root, op)?;
    }
    Ok(())
}

fn apply(root: &OwnedFd, op: &MountOp) -> SysResult<()> {
    apply_op(root, op).map_err(|e| match op {
        // Name what the user gave, not the /proc/self/fd path the mount went through.
        MountOp::Bind { source, target, .. } => SysError {
            subject: format!("{} on /{}", source.display(), target.display()),
            ..e
        },
        MountOp::Fs { fstype, target, .. } => SysError {
            subject: format!("{fstype} on /{}", target.display()),
            ..e
        },
        _ => e,
    })
}

fn apply_op(root: &OwnedFd, op: &MountOp) -> SysResult<()> {
    match op {
        MountOp::Fs {
            fstype,
            target,
            flags,
            data,
        } => {
            let fd = open_in_root(root, target, false)?;
            sys::mount(
                Some(OsStr::new(fstype)),
                OsStr::new(&fd_path(&fd)),
                Some(fstype),
                flags_of(flags),
                Some(data),
            )
        }
        MountOp::Bind {
            source,
            target,
            readonly,
            propagation,
        } => {
            let is_file = !source.is_dir();
            let fd = open_in_root(root, target, is_file)?;
            sys::mount(
                Some(source.as_os_str()),
                OsStr::new(&fd_path(&fd)),
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )?;
            // Re-open: the old fd names the directory under the new mount, not the mount.
            let mounted = open_in_root(root, target, is_file)?;
            let path = fd_path(&mounted);
            if *readonly {
                let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC;
                sys::mount(None, OsStr::new(&path), None, flags, None)?;
            }
            let propagation = match propagation {
                Propagation::Private => libc::MS_PRIVATE,
                Propagation::HostToContainer => libc::MS_SLAVE,
                Propagation::Bidirectional => libc::MS_SHARED,
            };
            sys::mount(
                None,
                OsStr::new(&path),
                None,
                propagation | libc::MS_REC,
                None,
            )
        }
        MountOp::CharDevice {
            target,
            major,
            minor,
        } => {
            let (parent, name) = split(target);
            let dir = open_dir(root, parent)?;
            match rustix::fs::mknodat(
                &dir,
                name,
                FileType::CharacterDevice,
                Mode::from_raw_mode(0o666),
                rustix::fs::makedev(*major, *minor),
            ) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(errno_err("mknod", target, e)),
            }
            // mknod's mode is masked by the umask; set it exactly.
            rustix::fs::chmodat(
                &dir,
                name,
                Mode::from_raw_mode(0o666),
                rustix::fs::AtFlags::empty(),
            )
            .map_err(|e| errno_err("chmod", target, e))
        }
        MountOp::Symlink { target, points_to } => {
            let (parent, name) = split(target);
            let dir = open_dir(root, parent)?;
            match rustix::fs::symlinkat(points_to.as_str(), &dir, name) {
                Ok(()) | Err(Errno::EXIST) => Ok(()),
                Err(e) => Err(errno_err("symlink", target, e)),
            }
        }
        MountOp::Mask { .. } | MountOp::ReadOnly { .. } => harden(op),
    }
}

fn split(target: &Path) -> (&Path, &OsStr) {
    (
        target.parent().unwrap_or(Path::new(".")),
        target.file_name().unwrap_or_default(),
    )
}

fn open_dir(root: &OwnedFd, rel: &Path) -> SysResult<OwnedFd> {
    let path = open_in_root(root, rel, false)?;
    rustix::fs::openat(
        &path,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno_err("open", rel, e))
}

/// After `pivot_root`: masks and read-only paths, by absolute path inside the container.
/// Paths the kernel does not have are skipped.
pub fn harden(op: &MountOp) -> SysResult<()> {
    let (target, mask) = match op {
        MountOp::Mask { target } => (target, true),
        MountOp::ReadOnly { target } => (target, false),
        _ => return Ok(()),
    };
    let Ok(meta) = std::fs::symlink_metadata(target) else {
        return Ok(());
    };
    let path = target.as_os_str();
    if mask {
        if meta.is_dir() {
            sys::mount(
                Some(OsStr::new("tmpfs")),
                path,
                Some("tmpfs"),
                libc::MS_RDONLY,
                None,
            )
        } else {
            sys::mount(
                Some(OsStr::new("/dev/null")),
                path,
                None,
                libc::MS_BIND,
                None,
            )
        }
    } else {
        sys::mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None)?;
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC;
        sys::mount(None, path, None, flags, None)
    }
}
