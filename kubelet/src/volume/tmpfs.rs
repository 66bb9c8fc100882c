//! The one kernel effect of volumes: a tmpfs mounted on a volume's directory (memory
//! emptyDirs, and Secrets, which must never reach the disk), and its lazy unmount.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::mount::{MountFlags, UnmountFlags};

use super::VolumeError;

/// Mounts a fresh tmpfs on `dir` (nosuid, nodev), `mode` for its root, at most `size` bytes.
pub(crate) fn mount(dir: &Path, mode: u32, size: Option<u64>) -> Result<(), VolumeError> {
    let mut data = format!("mode={mode:o}");
    if let Some(size) = size {
        data.push_str(&format!(",size={size}"));
    }
    let data = std::ffi::CString::new(data).unwrap_or_default();
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        data.as_c_str(),
    )
    .map_err(|source| VolumeError::Mount {
        call: "mount tmpfs on",
        path: dir.into(),
        source,
    })
}

/// Detaches what is mounted on `dir` (it goes once no process uses it).
pub(crate) fn unmount(dir: &Path) -> Result<(), VolumeError> {
    rustix::mount::unmount(dir, UnmountFlags::DETACH).map_err(|source| VolumeError::Mount {
        call: "unmount",
        path: dir.into(),
        source,
    })
}

/// Whether something is mounted on `dir`: it is on another device than its parent.
pub(crate) fn is_mount_point(dir: &Path) -> Result<bool, VolumeError> {
    let stat = |p: &Path| {
        std::fs::metadata(p).map_err(|source| VolumeError::Io {
            op: "stat",
            path: p.into(),
            source,
        })
    };
    Ok(stat(dir)?.dev() != stat(&dir.join(".."))?.dev())
}
