//! The effect half of unpacking: carries out checked `Op`s inside one directory. Every path is
//! resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from the layer root, and the
//! final component is created with `*at` calls that never follow a symlink, so nothing a layer
//! contains can make a write land outside the root.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags, chmodat,
    chownat, linkat, makedev, mkdirat, mknodat, openat, openat2, statat, symlinkat, unlinkat,
    utimensat,
};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};

use super::UnpackError;
use super::entry::{Kind, LayerPath, Meta, Op};

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const COPY_BUFFER: usize = 256 * 1024;

pub struct Applier {
    root: OwnedFd,
    dirs: HashMap<PathBuf, OwnedFd>,
    dir_times: Vec<(LayerPath, i64)>,
    buffer: Vec<u8>,
}

impl Applier {
    pub fn open(dest: &Path) -> Result<Applier, UnpackError> {
        let root = rustix::fs::open(
            dest,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UnpackError::Root {
            path: dest.display().to_string(),
            source: e.into(),
        })?;
        Ok(Applier {
            root,
            dirs: HashMap::new(),
            dir_times: Vec::new(),
            buffer: vec![0; COPY_BUFFER],
        })
    }

    pub fn apply(&mut self, op: &Op, content: &mut impl Read) -> Result<(), UnpackError> {
        let err = |op_name: &'static str| {
            let entry = op.path.as_path().display().to_string();
            move |e: Errno| io_error(entry, op_name, e)
        };
        if op.kind == Kind::Opaque {
            let dir = self
                .ensure_dir_path(op.path.as_path())
                .map_err(|e| for_entry(e, op))?;
            let fd = reopen_dir(&dir).map_err(err("open opaque dir"))?;
            rustix::fs::fsetxattr(&fd, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(err("set opaque xattr"))?;
            return Ok(());
        }
        let (parent_path, name) = op.path.split();
        let parent = self
            .ensure_dir_path(parent_path)
            .map_err(|e| for_entry(e, op))?;
        if op.kind == Kind::Dir {
            return self.make_dir(op, &parent, name);
        }
        self.clear(&parent, name, op)?;
        self.create_leaf(op, &parent, name, content)
    }

    /// Creates a non-directory entry where nothing is now.
    fn create_leaf(
        &mut self,
        op: &Op,
        parent: &OwnedFd,
        name: &OsStr,
        content: &mut impl Read,
    ) -> Result<(), UnpackError> {
        let err = |op_name: &'static str| {
            let entry = display(op);
            move |e: Errno| io_error(entry, op_name, e)
        };
        let node =
            |file_type, mode, dev| mknodat(parent, name, file_type, Mode::from_raw_mode(mode), dev);
        match &op.kind {
            Kind::File => {
                let flags = OFlags::WRONLY
                    | OFlags::CREATE
                    | OFlags::EXCL
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC;
                let fd = openat(parent, name, flags, Mode::from_raw_mode(0o600))
                    .map_err(err("create file"))?;
                let mut file = File::from(fd);
                copy(content, &mut file, &mut self.buffer).map_err(|e| UnpackError::Io {
                    entry: display(op),
                    op: "write file",
                    source: e,
                })?;
                apply_meta_fd(file.as_fd(), &op.meta).map_err(err("set file metadata"))
            }
            Kind::Symlink(target) => {
                symlinkat(target.as_path(), parent, name).map_err(err("create symlink"))?;
                apply_meta_at(parent, name, &op.meta, false).map_err(err("set symlink metadata"))
            }
            Kind::Hardlink(target) => self.hard_link(op, target, parent, name),
            Kind::CharDevice { major, minor } => {
                node(FileType::CharacterDevice, 0o600, makedev(*major, *minor))
                    .map_err(err("create device node"))?;
                apply_meta_at(parent, name, &op.meta, true).map_err(err("set device metadata"))
            }
            Kind::BlockDevice { major, minor } => {
                node(FileType::BlockDevice, 0o600, makedev(*major, *minor))
                    .map_err(err("create device node"))?;
                apply_meta_at(parent, name, &op.meta, true).map_err(err("set device metadata"))
            }
            Kind::Fifo => {
                node(FileType::Fifo, 0o600, 0).map_err(err("create fifo"))?;
                apply_meta_at(parent, name, &op.meta, true).map_err(err("set fifo metadata"))
            }
            Kind::Whiteout => {
                node(FileType::CharacterDevice, 0, makedev(0, 0))
                    .map_err(err("create whiteout"))?;
                apply_meta_at(parent, name, &op.meta, true).map_err(err("set whiteout metadata"))
            }
            Kind::Dir | Kind::Opaque => Ok(()),
        }
    }

    /// Sets directory mtimes last: creating children changes them.
    pub fn finish(mut self) -> Result<(), UnpackError> {
        let times = std::mem::take(&mut self.dir_times);
        for (path, mtime) in times.into_iter().rev() {
            let fd = open_beneath(&self.root, path.as_path())
                .and_then(|fd| reopen_dir(&fd))
                .map_err(|e| escape_or_io(path.as_path(), "open dir", e))?;
            rustix::fs::futimens(&fd, &timestamps(mtime))
                .map_err(|e| io_error(path.as_path().display().to_string(), "set dir mtime", e))?;
        }
        Ok(())
    }

    fn make_dir(&mut self, op: &Op, parent: &OwnedFd, name: &OsStr) -> Result<(), UnpackError> {
        let err = |op_name| {
            let entry = display(op);
            move |e: Errno| io_error(entry, op_name, e)
        };
        match statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Ok(_) => {
                self.dirs.clear();
                unlinkat(parent, name, AtFlags::empty()).map_err(err("replace with dir"))?;
                mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(err("create dir"))?;
            }
            Err(Errno::NOENT) => {
                mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(err("create dir"))?
            }
            Err(e) => return Err(err("stat")(e)),
        }
        let fd = openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(err("open dir"))?;
        apply_meta_fd(fd.as_fd(), &op.meta).map_err(err("set dir metadata"))?;
        self.dir_times.push((op.path.clone(), op.meta.mtime));
        Ok(())
    }

    fn hard_link(
        &mut self,
        op: &Op,
        target: &LayerPath,
        parent: &OwnedFd,
        name: &OsStr,
    ) -> Result<(), UnpackError> {
        let resolved = openat2(
            &self.root,
            target.as_path(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            beneath(),
        )
        .map_err(|e| UnpackError::LinkTarget {
            entry: display(op),
            target: target.as_path().display().to_string(),
            reason: match e {
                Errno::XDEV | Errno::LOOP => "it resolves outside the layer".into(),
                e => io::Error::from(e).to_string(),
            },
        })?;
        linkat(&resolved, "", parent, name, AtFlags::EMPTY_PATH)
            .or_else(|_| {
                // Without CAP_DAC_READ_SEARCH, go through the fd's magic link instead.
                let proc_path = format!("/proc/self/fd/{}", resolved.as_raw_fd());
                linkat(
                    rustix::fs::CWD,
                    proc_path.as_str(),
                    parent,
                    name,
                    AtFlags::SYMLINK_FOLLOW,
                )
            })
            .map_err(|e| io_error(display(op), "create hard link", e))
    }

    /// Removes what an entry replaces (a later entry wins, as in `tar -x`).
    fn clear(&mut self, parent: &OwnedFd, name: &OsStr, op: &Op) -> Result<(), UnpackError> {
        match statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io_error(display(op), "stat", e)),
            Ok(st) => {
                self.dirs.clear();
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    remove_tree(parent, name).map_err(|e| io_error(display(op), "replace dir", e))
                } else {
                    unlinkat(parent, name, AtFlags::empty())
                        .map_err(|e| io_error(display(op), "replace", e))
                }
            }
        }
    }

    /// Opens (creating as needed, with 0755) the directory at `path` beneath the root.
    fn ensure_dir_path(&mut self, path: &Path) -> Result<OwnedFd, UnpackError> {
        let key = path.to_path_buf();
        if let Some(fd) = self.dirs.get(&key) {
            return dup(fd, path);
        }
        let fd = match open_beneath(&self.root, path) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                let parent = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                let name = path.file_name().unwrap_or_default();
                let parent_fd = self.ensure_dir_path(parent)?;
                match mkdirat(&parent_fd, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(io_error(path.display().to_string(), "create parent dir", e));
                    }
                }
                open_beneath(&self.root, path)
                    .map_err(|e| escape_or_io(path, "open parent dir", e))?
            }
            Err(e) => return Err(escape_or_io(path, "open parent dir", e)),
        };
        self.dirs.insert(key, dup(&fd, path)?);
        Ok(fd)
    }
}

fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

fn open_beneath(root: &OwnedFd, path: &Path) -> Result<OwnedFd, Errno> {
    openat2(
        root,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        beneath(),
    )
}

fn dup(fd: &OwnedFd, path: &Path) -> Result<OwnedFd, UnpackError> {
    fd.try_clone().map_err(|e| UnpackError::Io {
        entry: path.display().to_string(),
        op: "dup",
        source: e,
    })
}

fn reopen_dir(fd: &OwnedFd) -> Result<OwnedFd, Errno> {
    openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn escape_or_io(path: &Path, op: &'static str, e: Errno) -> UnpackError {
    let entry = path.display().to_string();
    match e {
        Errno::XDEV | Errno::LOOP => UnpackError::Escape { entry },
        e => io_error(entry, op, e),
    }
}

fn io_error(entry: String, op: &'static str, e: Errno) -> UnpackError {
    UnpackError::Io {
        entry,
        op,
        source: e.into(),
    }
}

/// Names the entry being unpacked in an error about one of its parent directories.
fn for_entry(e: UnpackError, op: &Op) -> UnpackError {
    match e {
        UnpackError::Escape { .. } => UnpackError::Escape { entry: display(op) },
        UnpackError::Io {
            op: what, source, ..
        } => UnpackError::Io {
            entry: display(op),
            op: what,
            source,
        },
        other => other,
    }
}

fn display(op: &Op) -> String {
    op.path.as_path().display().to_string()
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Ownership first (chown clears set-id bits), then mode, xattrs and mtime.
fn apply_meta_fd(fd: std::os::fd::BorrowedFd<'_>, meta: &Meta) -> Result<(), Errno> {
    if is_root() {
        rustix::fs::fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))?;
    for (name, value) in &meta.xattrs {
        rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty())?;
    }
    rustix::fs::futimens(fd, &timestamps(meta.mtime))
}

/// The same for what cannot be opened for writing (symlinks, devices, fifos).
fn apply_meta_at(parent: &OwnedFd, name: &OsStr, meta: &Meta, chmod: bool) -> Result<(), Errno> {
    if is_root() {
        chownat(
            parent,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    if chmod {
        chmodat(
            parent,
            name,
            Mode::from_raw_mode(meta.mode),
            AtFlags::empty(),
        )?;
    }
    if !meta.xattrs.is_empty() {
        let path = Path::new("/proc/self/fd")
            .join(parent.as_raw_fd().to_string())
            .join(name);
        for (key, value) in &meta.xattrs {
            rustix::fs::lsetxattr(&path, key.as_str(), value, XattrFlags::empty())?;
        }
    }
    utimensat(
        parent,
        name,
        &timestamps(meta.mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )
}

fn copy(from: &mut impl Read, to: &mut File, buffer: &mut [u8]) -> io::Result<u64> {
    use std::io::Write;
    let mut total = 0;
    loop {
        let n = match from.read(buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buffer[..n])?;
        total += n as u64;
    }
}

/// Removes a directory tree below `parent` without following symlinks.
fn remove_tree(parent: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    let dir = openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&dir)? {
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child != b"." && child != b".." {
            names.push((OsStr::from_bytes(child).to_os_string(), entry.file_type()));
        }
    }
    for (child, file_type) in names {
        if file_type == FileType::Directory {
            remove_tree(&dir, &child)?;
        } else {
            unlinkat(&dir, &child, AtFlags::empty())?;
        }
    }
    unlinkat(parent, name, AtFlags::REMOVEDIR)
}
