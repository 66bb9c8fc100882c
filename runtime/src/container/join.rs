//! How the container setup process enters the container's cgroups without writing a PID into
//! `cgroup.procs`. That write takes the kernel's global threadgroup lock for writing, and the
//! first writer after a quiet moment waits for an RCU grace period: 5–20 ms per container
//! here, the biggest single cost of a pod start (docs/design/009-pod-start.md). Instead:
//!
//! - cgroup v2: the setup process forks PID 1 with `clone3(CLONE_INTO_CGROUP)`, which only
//!   takes that lock for reading, as every fork does;
//! - cgroup v1 hierarchies (hybrid and legacy hosts): the setup process writes `0` into the
//!   cgroup's `tasks` file. Moving the calling thread alone skips the global lock, and the
//!   setup process has a single thread, so that thread is the whole process.
//!
//! Kernels without `CLONE_INTO_CGROUP` (< 5.7) get the `cgroup.procs` write.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

use super::setup::{io_err, open_path};
use super::sys::{self, SysResult};

/// The container's cgroups, half joined: every v1 hierarchy already, v2 at [`CgroupJoin::fork`].
pub(super) struct CgroupJoin {
    v2: Option<(PathBuf, OwnedFd)>,
}

impl CgroupJoin {
    /// Moves this (single-threaded) process into the v1 cgroups among the directories of
    /// `procs_files` (their `cgroup.procs` paths) and opens the v2 one for the fork.
    pub fn prepare(procs_files: &[PathBuf]) -> SysResult<CgroupJoin> {
        let mut v2 = None;
        for procs in procs_files {
            let dir = procs.parent().unwrap_or(Path::new("/"));
            let fd = open_path(dir, OFlags::RDONLY | OFlags::DIRECTORY)?;
            let fs = rustix::fs::fstatfs(&fd).map_err(|e| io_err("statfs", dir, e.into()))?;
            if fs.f_type as i64 == sys::CGROUP2_SUPER_MAGIC && v2.is_none() {
                v2 = Some((procs.clone(), fd));
            } else if std::fs::write(dir.join("tasks"), "0").is_err() {
                write_pid(procs)?;
            }
        }
        Ok(CgroupJoin { v2 })
    }

    /// Forks a child that starts in every one of the container's cgroups (0 in the child).
    pub fn fork(&self) -> SysResult<libc::pid_t> {
        let Some((procs, fd)) = &self.v2 else {
            return sys::fork();
        };
        match sys::fork_into_cgroup(fd) {
            Err(e)
                if matches!(
                    e.source.raw_os_error(),
                    Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
                ) =>
            {
                write_pid(procs)?;
                sys::fork()
            }
            other => other,
        }
    }
}

fn write_pid(procs: &Path) -> SysResult<()> {
    std::fs::write(procs, std::process::id().to_string())
        .map_err(|e| io_err("join cgroup", procs, e))
}
