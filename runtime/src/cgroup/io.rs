//! The one choke point for cgroupfs effects: `CgroupIo` (read, write, mkdir, rmdir, list,
//! signal), with `KernelIo` for the real machine; tests use a recording fake over a temp dir.

use std::fmt::Debug;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Every filesystem and signal effect of the cgroup layer goes through this trait.
pub trait CgroupIo: Debug + Send + Sync {
    /// Reads a whole interface file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `value` to an existing interface file in one `write(2)`.
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Creates one cgroup directory (the kernel fills in the interface files).
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes one empty cgroup directory.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// True if the path exists.
    fn exists(&self, path: &Path) -> bool;
    /// The child cgroup directories of a cgroup directory.
    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
    /// Sends SIGKILL to a process.
    fn sigkill(&self, pid: u32) -> io::Result<()>;
}

/// `CgroupIo` on the real kernel: std::fs and kill(2).
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelIo;

impl CgroupIo for KernelIo {
    fn read(&self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // No O_CREAT, no O_TRUNC: cgroupfs files exist or the controller is missing.
        let mut f = fs::OpenOptions::new().write(true).open(path)?;
        let n = f.write(value.as_bytes())?;
        if n != value.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short cgroup write",
            ));
        }
        Ok(())
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                out.push(entry.path());
            }
        }
        Ok(out)
    }

    fn sigkill(&self, pid: u32) -> io::Result<()> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).map_err(io::Error::from)
    }
}
