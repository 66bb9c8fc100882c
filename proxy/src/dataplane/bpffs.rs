//! The pin directory on a BPF filesystem: mounted when absent, removed on reset.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

use super::DataplaneError;

/// `BPF_FS_MAGIC` from <linux/magic.h>.
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// The conventional bpffs mount point.
const SYS_FS_BPF: &str = "/sys/fs/bpf";

/// True when `path` exists on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as u64 == BPF_FS_MAGIC)
}

/// Makes `pin_dir` a directory on a bpffs with `maps/`, `progs/` and `links/` below it.
/// When no bpffs holds it, one is mounted: at /sys/fs/bpf for a directory right below it
/// (where the system expects it), else at `pin_dir` itself.
pub fn ensure(pin_dir: &Path) -> Result<(), DataplaneError> {
    if !is_bpffs(pin_dir) {
        let parent = pin_dir.parent().unwrap_or(Path::new("/"));
        // Right below /sys/fs/bpf, or below a bpffs: the directory is made below it.
        let target: PathBuf = if parent == Path::new(SYS_FS_BPF) || is_bpffs(parent) {
            parent.to_path_buf()
        } else {
            std::fs::create_dir_all(pin_dir).map_err(DataplaneError::io(pin_dir, "mkdir"))?;
            pin_dir.to_path_buf()
        };
        if !is_bpffs(&target) {
            rustix::mount::mount("bpf", &target, "bpf", MountFlags::empty(), c"mode=0700")
                .map_err(|e| DataplaneError::Bpffs {
                    path: target.clone(),
                    call: "mount",
                    source: e.into(),
                })?;
        }
    }
    for sub in ["", "maps", "progs", "links"] {
        let dir = pin_dir.join(sub);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(DataplaneError::io(dir, "mkdir")(e)),
        }
    }
    Ok(())
}

/// Removes everything pinned below `pin_dir` (links first: that detaches the programs),
/// then the directory; unmounts it when it is a bpffs mount of its own. Absent is fine.
pub fn remove(pin_dir: &Path) -> Result<(), DataplaneError> {
    if !pin_dir.exists() {
        return Ok(());
    }
    for sub in ["links", "progs", "maps"] {
        let dir = pin_dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(DataplaneError::io(&path, "unlink"))?;
        }
        std::fs::remove_dir(&dir).map_err(DataplaneError::io(&dir, "rmdir"))?;
    }
    if is_mount_point(pin_dir) && is_bpffs(pin_dir) {
        rustix::mount::unmount(pin_dir, UnmountFlags::DETACH).map_err(|e| {
            DataplaneError::Bpffs {
                path: pin_dir.to_path_buf(),
                call: "umount",
                source: e.into(),
            }
        })?;
    }
    match std::fs::remove_dir(pin_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DataplaneError::io(pin_dir, "rmdir")(e)),
    }
}

fn is_mount_point(path: &Path) -> bool {
    let (Ok(me), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    me.dev() != parent.dev()
}
