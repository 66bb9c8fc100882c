//! Test support: `FakeSys`, a recording `NsSys` that tracks pin files and mounts in memory
//! and can fail a chosen operation with a chosen errno.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{NsKind, NsSys};

/// A recorded effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NsOp {
    Unshare(NsKind),
    Setns(NsKind),
    CreateFile(PathBuf),
    RemoveFile(PathBuf),
    Bind(PathBuf, PathBuf, bool),
    MakePrivate(PathBuf),
    Unmount(PathBuf),
}

#[derive(Debug, Default)]
struct State {
    ops: Vec<NsOp>,
    files: BTreeSet<PathBuf>,
    /// Mount points, one entry per stacked mount.
    mounts: Vec<PathBuf>,
    fail: Option<(&'static str, i32)>,
    last_open_mounted: bool,
    mountinfo: String,
}

/// An in-memory `NsSys`.
#[derive(Debug, Default)]
pub(crate) struct FakeSys {
    state: Mutex<State>,
}

impl FakeSys {
    pub(crate) fn ops(&self) -> Vec<NsOp> {
        self.state.lock().unwrap().ops.clone()
    }

    /// Makes the next call of `op` (a method name) fail with `errno`.
    pub(crate) fn fail(&self, op: &'static str, errno: i32) {
        self.state.lock().unwrap().fail = Some((op, errno));
    }

    pub(crate) fn set_mountinfo(&self, text: &str) {
        self.state.lock().unwrap().mountinfo = text.to_string();
    }

    pub(crate) fn files(&self) -> Vec<PathBuf> {
        self.state.lock().unwrap().files.iter().cloned().collect()
    }

    pub(crate) fn mounts(&self) -> Vec<PathBuf> {
        self.state.lock().unwrap().mounts.clone()
    }

    fn record(&self, name: &'static str, op: NsOp) -> io::Result<std::sync::MutexGuard<'_, State>> {
        let mut st = self.state.lock().unwrap();
        if let Some((f, errno)) = st.fail
            && f == name
        {
            st.fail = None;
            return Err(io::Error::from_raw_os_error(errno));
        }
        st.ops.push(op);
        Ok(st)
    }
}

impl NsSys for FakeSys {
    fn unshare(&self, kind: NsKind) -> io::Result<()> {
        self.record("unshare", NsOp::Unshare(kind)).map(drop)
    }

    fn setns(&self, _fd: BorrowedFd<'_>, kind: NsKind) -> io::Result<()> {
        self.record("setns", NsOp::Setns(kind)).map(drop)
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.record("create_file", NsOp::CreateFile(path.into()))?;
        if !st.files.insert(path.into()) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.record("remove_file", NsOp::RemoveFile(path.into()))?;
        if !st.files.remove(path) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        // Unlinking a mount point detaches what is mounted on it.
        st.mounts.retain(|m| m != path);
        Ok(())
    }

    fn bind_mount(&self, src: &Path, dst: &Path, recursive: bool) -> io::Result<()> {
        let mut st = self.record("bind_mount", NsOp::Bind(src.into(), dst.into(), recursive))?;
        st.mounts.push(dst.into());
        Ok(())
    }

    fn make_private(&self, path: &Path) -> io::Result<()> {
        self.record("make_private", NsOp::MakePrivate(path.into()))
            .map(drop)
    }

    fn unmount_detach(&self, path: &Path) -> io::Result<()> {
        let mut st = self.record("unmount_detach", NsOp::Unmount(path.into()))?;
        match st.mounts.iter().rposition(|m| m == path) {
            Some(i) => {
                st.mounts.remove(i);
                Ok(())
            }
            None if st.files.contains(path) => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    fn open(&self, path: &Path) -> io::Result<OwnedFd> {
        let mut st = self.state.lock().unwrap();
        if !st.files.contains(path) {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        st.last_open_mounted = st.mounts.iter().any(|m| m == path);
        std::fs::File::open("/dev/null").map(OwnedFd::from)
    }

    fn is_nsfs(&self, _fd: BorrowedFd<'_>) -> io::Result<bool> {
        Ok(self.state.lock().unwrap().last_open_mounted)
    }

    fn mountinfo(&self) -> io::Result<String> {
        Ok(self.state.lock().unwrap().mountinfo.clone())
    }
}
