//! The one choke point for namespace effects: `NsSys` (unshare, setns, pin files, bind
//! mounts, unmounts, mountinfo), with `KernelSys` for the real machine. The only `unsafe` of
//! the namespace layer lives here.

use std::fmt::Debug;
use std::fs;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::mount::{MountPropagationFlags, UnmountFlags};
use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use super::NsKind;

/// `statfs.f_type` of nsfs, the filesystem of `/proc/*/ns/*` files and their bind mounts.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Every kernel effect of the namespace layer goes through this trait.
pub trait NsSys: Debug + Send + Sync {
    /// Moves the calling thread into a new namespace of `kind` (`unshare(2)`).
    fn unshare(&self, kind: NsKind) -> io::Result<()>;
    /// Moves the calling thread into the namespace `fd` refers to (`setns(2)`).
    fn setns(&self, fd: BorrowedFd<'_>, kind: NsKind) -> io::Result<()>;
    /// Creates an empty file (`O_CREAT | O_EXCL`, mode 0444) to mount a namespace on.
    fn create_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// `mount(src, dst, MS_BIND [| MS_REC])`.
    fn bind_mount(&self, src: &Path, dst: &Path, recursive: bool) -> io::Result<()>;
    /// `mount(NULL, path, MS_PRIVATE)`.
    fn make_private(&self, path: &Path) -> io::Result<()>;
    /// `umount2(path, MNT_DETACH)`.
    fn unmount_detach(&self, path: &Path) -> io::Result<()>;
    /// Opens a file read-only, close-on-exec.
    fn open(&self, path: &Path) -> io::Result<OwnedFd>;
    /// True when `fd` is on nsfs (a namespace file or a bind mount of one).
    fn is_nsfs(&self, fd: BorrowedFd<'_>) -> io::Result<bool>;
    /// This process's `/proc/self/mountinfo`.
    fn mountinfo(&self) -> io::Result<String>;
}

/// `NsSys` on the real kernel, through rustix.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelSys;

impl NsSys for KernelSys {
    fn unshare(&self, kind: NsKind) -> io::Result<()> {
        let flags = match kind {
            NsKind::Net => UnshareFlags::NEWNET,
            NsKind::Ipc => UnshareFlags::NEWIPC,
            NsKind::Uts => UnshareFlags::NEWUTS,
        };
        // SAFETY: `unshare_unsafe` is unsafe because of `CLONE_FILES`, which can leave other
        // threads holding descriptors this thread no longer sees. We only pass NEWNET,
        // NEWIPC or NEWUTS, which change the calling thread's namespaces and nothing else.
        unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(io::Error::from)
    }

    fn setns(&self, fd: BorrowedFd<'_>, kind: NsKind) -> io::Result<()> {
        let t = match kind {
            NsKind::Net => LinkNameSpaceType::Network,
            NsKind::Ipc => LinkNameSpaceType::InterProcessCommunication,
            NsKind::Uts => LinkNameSpaceType::HostNameAndNISDomainName,
        };
        rustix::thread::move_into_link_name_space(fd, Some(t)).map_err(io::Error::from)
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(path)
            .map(drop)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn bind_mount(&self, src: &Path, dst: &Path, recursive: bool) -> io::Result<()> {
        let r = if recursive {
            rustix::mount::mount_bind_recursive(src, dst)
        } else {
            rustix::mount::mount_bind(src, dst)
        };
        r.map_err(io::Error::from)
    }

    fn make_private(&self, path: &Path) -> io::Result<()> {
        rustix::mount::mount_change(path, MountPropagationFlags::PRIVATE).map_err(io::Error::from)
    }

    fn unmount_detach(&self, path: &Path) -> io::Result<()> {
        rustix::mount::unmount(path, UnmountFlags::DETACH).map_err(io::Error::from)
    }

    fn open(&self, path: &Path) -> io::Result<OwnedFd> {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map(OwnedFd::from)
    }

    fn is_nsfs(&self, fd: BorrowedFd<'_>) -> io::Result<bool> {
        let st = rustix::fs::fstatfs(fd).map_err(io::Error::from)?;
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
        Ok(st.f_type as i64 == NSFS_MAGIC)
    }

    fn mountinfo(&self) -> io::Result<String> {
        fs::read_to_string("/proc/self/mountinfo")
    }
}
