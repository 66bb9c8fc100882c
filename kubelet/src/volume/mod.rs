//! A pod's volumes on the node, as [`crate::podspec`] plans them: [`prepare`] makes each one
//! (a directory, or a tmpfs for memory emptyDirs and anything holding a Secret) and writes its
//! files with the atomic writer ([`atomic`]); [`refresh`] rewrites the files of those whose
//! ConfigMaps, Secrets or pod metadata changed; [`teardown`] unmounts and removes them all.
//!
//! ```text
//! POD_DIR/volumes/NAME/                 what containers bind-mount (tmpfs for secrets)
//! POD_DIR/volumes/NAME/..2026_…/KEY     the current files
//! POD_DIR/volumes/NAME/..data           -> ..2026_…
//! POD_DIR/volumes/NAME/KEY              -> ..data/KEY
//! ```

pub mod atomic;
#[cfg(test)]
mod tests;
mod tmpfs;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Pod;

use crate::podspec::{self, Medium, ObjectSource, PlanContext, PodSpecError, VolumePlan};
pub use atomic::AtomicError;

/// How many times [`teardown`] unmounts a directory that has several mounts stacked on it.
const MAX_STACKED_MOUNTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The pod's volumes are invalid, or name ConfigMaps, Secrets or keys that are missing.
    #[error(transparent)]
    Spec(#[from] PodSpecError),
    #[error("volume {volume}: {source}")]
    Write { volume: String, source: AtomicError },
    #[error("volume {volume}: {} is not a tmpfs (prepare the pod's volumes first)", dir.display())]
    NotMounted { volume: String, dir: PathBuf },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{call} {}: {source}", path.display())]
    Mount {
        call: &'static str,
        path: PathBuf,
        source: rustix::io::Errno,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
    let path = path.to_path_buf();
    move |source| VolumeError::Io { op, path, source }
}

/// Plans the pod's volumes and makes them: what [`apply`] does, from the pod. Returns the
/// plans it applied.
pub fn prepare(
    pod: &Pod,
    ctx: &PlanContext,
    objects: Option<&dyn ObjectSource>,
) -> Result<Vec<VolumePlan>, VolumeError> {
    let plans = podspec::volume_plans(pod, ctx, objects)?;
    apply(&plans)?;
    Ok(plans)
}

/// Makes each volume (again, harmlessly, if it exists): its directory, its tmpfs if its medium
/// is memory, and its files.
pub fn apply(volumes: &[VolumePlan]) -> Result<(), VolumeError> {
    for v in volumes {
        fs::create_dir_all(&v.dir).map_err(io_err("create", &v.dir))?;
        // An emptyDir is writable by whatever user the containers run as, as in Kubernetes.
        let mode = if v.contents.is_some() { 0o755 } else { 0o777 };
        match v.medium {
            Medium::Memory { size_bytes } => {
                if !tmpfs::is_mount_point(&v.dir)? {
                    tmpfs::mount(&v.dir, mode, size_bytes)?;
                }
            }
            Medium::Disk => fs::set_permissions(&v.dir, fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", &v.dir))?,
        }
        write(v)?;
    }
    Ok(())
}

/// Re-plans the pod's volumes with the objects as they are now and rewrites the files of
/// those that changed; true if any did. A volume on tmpfs that is not mounted is an error,
/// never written to disk.
pub fn refresh(
    pod: &Pod,
    ctx: &PlanContext,
    objects: Option<&dyn ObjectSource>,
) -> Result<bool, VolumeError> {
    let mut changed = false;
    for v in podspec::volume_plans(pod, ctx, objects)? {
        if v.contents.is_none() {
            continue;
        }
        if let Medium::Memory { .. } = v.medium
            && !(v.dir.is_dir() && tmpfs::is_mount_point(&v.dir)?)
        {
            return Err(VolumeError::NotMounted {
                volume: v.name,
                dir: v.dir,
            });
        }
        if !v.dir.is_dir() {
            return Err(io_err("refresh", &v.dir)(
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        changed |= write(&v)?;
    }
    Ok(changed)
}

fn write(v: &VolumePlan) -> Result<bool, VolumeError> {
    let Some(payload) = &v.contents else {
        return Ok(false);
    };
    atomic::write(&v.dir, payload, v.gid, SystemTime::now()).map_err(|source| VolumeError::Write {
        volume: v.name.clone(),
        source,
    })
}

/// Unmounts (lazily) and removes every volume under `POD_DIR/volumes`. Tries them all; the
/// first error is returned. A volume that stays mounted is not removed.
pub fn teardown(pod_dir: &Path) -> Result<(), VolumeError> {
    let root = pod_dir.join("volumes");
    let entries = match fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("list", &root)(e)),
    };
    let mut first = None;
    for entry in entries {
        let result = entry
            .map_err(io_err("list", &root))
            .and_then(|e| remove_volume(&e.path()));
        if let Err(e) = result {
            first.get_or_insert(e);
        }
    }
    if first.is_none()
        && let Err(e) = fs::remove_dir(&root)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        first = Some(io_err("remove", &root)(e));
    }
    first.map_or(Ok(()), Err)
}

fn remove_volume(dir: &Path) -> Result<(), VolumeError> {
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return fs::remove_file(dir).map_err(io_err("remove", dir));
    }
    for _ in 0..MAX_STACKED_MOUNTS {
        if !tmpfs::is_mount_point(dir)? {
            break;
        }
        tmpfs::unmount(dir)?;
    }
    if tmpfs::is_mount_point(dir)? {
        return Err(VolumeError::Mount {
            call: "unmount",
            path: dir.into(),
            source: rustix::io::Errno::BUSY,
        });
    }
    fs::remove_dir_all(dir).map_err(io_err("remove", dir))
}
