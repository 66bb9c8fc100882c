//! The plan half of unpacking: one tar header becomes one checked `Op` (what to create where),
//! or a refusal naming the entry. No file system access happens here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::UnpackError;

/// The whiteout prefix of the OCI layer format (`.wh.name` deletes `name` from lower layers).
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The marker that makes a directory opaque (hides everything below it in lower layers).
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A path inside the layer: only normal components, never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerPath(PathBuf);

impl LayerPath {
    pub fn as_path(&self) -> &Path {
        &self.0
    }

    /// The parent directory (`.` for the layer root) and the final component.
    pub fn split(&self) -> (&Path, &OsStr) {
        let name = self.0.file_name().unwrap_or_default();
        let parent = self.0.parent().filter(|p| !p.as_os_str().is_empty());
        (parent.unwrap_or(Path::new(".")), name)
    }
}

/// What a tar entry asks to be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
    Hardlink(LayerPath),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// `.wh.name`: an overlay whiteout (0/0 character device) named `name`.
    Whiteout,
    /// `.wh..wh..opq`: the directory at `path` is opaque.
    Opaque,
}

/// Ownership, permissions, times and extended attributes of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// One checked step of an unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub path: LayerPath,
    pub kind: Kind,
    pub meta: Meta,
}

/// The header fields the plan needs, lifted out of the tar crate so the plan is testable.
#[derive(Debug, Clone)]
pub struct RawEntry<'a> {
    pub path: &'a Path,
    pub entry_type: tar::EntryType,
    pub link_name: Option<&'a Path>,
    pub device: (u32, u32),
    pub meta: Meta,
}

/// Checks a path from a tar entry: relative, no `..`, at least one component.
pub fn layer_path(entry: &Path) -> Result<Option<LayerPath>, UnpackError> {
    let display = || entry.display().to_string();
    let mut clean = PathBuf::new();
    for component in entry.components() {
        match component {
            Component::Normal(c) => clean.push(c),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Absolute { entry: display() });
            }
            Component::ParentDir => return Err(UnpackError::ParentDir { entry: display() }),
        }
    }
    Ok((!clean.as_os_str().is_empty()).then_some(LayerPath(clean)))
}

/// Turns one header into an `Op`; `Ok(None)` for entries that create nothing (the layer root
/// itself, pax global headers, aufs hard-link bookkeeping).
pub fn plan(raw: &RawEntry<'_>) -> Result<Option<Op>, UnpackError> {
    use tar::EntryType as T;
    let entry = || raw.path.display().to_string();
    if matches!(
        raw.entry_type,
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
    ) {
        return Ok(None);
    }
    let Some(path) = layer_path(raw.path)? else {
        return Ok(None);
    };
    let (_, name) = path.split();
    let name_bytes = name.as_bytes();
    if name_bytes == OPAQUE_MARKER.as_bytes() {
        let dir = path.0.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        return Ok(Some(Op {
            path: LayerPath(dir),
            kind: Kind::Opaque,
            meta: raw.meta.clone(),
        }));
    }
    if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) || hidden.is_empty() {
            // `.wh..wh.plnk` and friends: aufs metadata, not content.
            return Ok(None);
        }
        let target = path.0.with_file_name(OsStr::from_bytes(hidden));
        let meta = Meta {
            mode: 0,
            uid: 0,
            gid: 0,
            ..raw.meta.clone()
        };
        return Ok(Some(Op {
            path: LayerPath(target),
            kind: Kind::Whiteout,
            meta,
        }));
    }
    let link = || {
        raw.link_name.ok_or_else(|| UnpackError::Malformed {
            entry: entry(),
            reason: "link entry without a target".into(),
        })
    };
    let kind = match raw.entry_type {
        T::Regular | T::Continuous => Kind::File,
        T::Directory => Kind::Dir,
        T::Symlink => Kind::Symlink(link()?.to_path_buf()),
        T::Link => {
            let target = link()?;
            let target = layer_path(target)
                .map_err(|e| UnpackError::LinkTarget {
                    entry: entry(),
                    target: target.display().to_string(),
                    reason: e.reason(),
                })?
                .ok_or_else(|| UnpackError::LinkTarget {
                    entry: entry(),
                    target: target.display().to_string(),
                    reason: "empty target".into(),
                })?;
            Kind::Hardlink(target)
        }
        T::Char => Kind::CharDevice {
            major: raw.device.0,
            minor: raw.device.1,
        },
        T::Block => Kind::BlockDevice {
            major: raw.device.0,
            minor: raw.device.1,
        },
        T::Fifo => Kind::Fifo,
        other => {
            return Err(UnpackError::Unsupported {
                entry: entry(),
                kind: format!("{other:?}"),
            });
        }
    };
    Ok(Some(Op {
        path,
        kind,
        meta: raw.meta.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType as T;

    fn raw<'a>(path: &'a str, entry_type: T, link: Option<&'a str>) -> RawEntry<'a> {
        RawEntry {
            path: Path::new(path),
            entry_type,
            link_name: link.map(Path::new),
            device: (0, 0),
            meta: Meta {
                mode: 0o644,
                uid: 1,
                gid: 2,
                mtime: 3,
                xattrs: vec![],
            },
        }
    }

    fn kind_of(path: &str, t: T, link: Option<&str>) -> (String, Kind) {
        let op = plan(&raw(path, t, link)).unwrap().unwrap();
        (op.path.as_path().display().to_string(), op.kind)
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        assert_eq!(
            kind_of("etc/.wh.passwd", T::Regular, None),
            ("etc/passwd".into(), Kind::Whiteout)
        );
        assert_eq!(
            kind_of(".wh.top", T::Regular, None),
            ("top".into(), Kind::Whiteout)
        );
        assert_eq!(
            kind_of("./a/b/.wh..wh..opq", T::Regular, None),
            ("a/b".into(), Kind::Opaque)
        );
        assert_eq!(
            kind_of(".wh..wh..opq", T::Regular, None),
            (".".into(), Kind::Opaque)
        );
        let op = plan(&raw("x/.wh.y", T::Regular, None)).unwrap().unwrap();
        assert_eq!(
            (op.meta.uid, op.meta.gid),
            (0, 0),
            "whiteouts are 0/0 devices owned by root"
        );
        assert_eq!(
            plan(&raw("a/.wh..wh.plnk", T::Directory, None)).unwrap(),
            None
        );
    }

    #[test]
    fn classifies_entry_types() {
        assert_eq!(
            kind_of("./bin/", T::Directory, None),
            ("bin".into(), Kind::Dir)
        );
        assert_eq!(
            kind_of("bin/sh", T::Symlink, Some("/bin/busybox")).1,
            Kind::Symlink("/bin/busybox".into())
        );
        assert_eq!(
            kind_of("a/hl", T::Link, Some("./a/src")).1,
            Kind::Hardlink(layer_path(Path::new("a/src")).unwrap().unwrap())
        );
        assert_eq!(kind_of("p", T::Fifo, None).1, Kind::Fifo);
        assert_eq!(
            plan(&raw("./", T::Directory, None)).unwrap(),
            None,
            "the root creates nothing"
        );
        assert_eq!(plan(&raw("x", T::XGlobalHeader, None)).unwrap(), None);
    }

    #[test]
    fn refuses_escaping_paths() {
        for bad in ["../evil", "a/../../evil", "/etc/passwd", "a/b/../../../c"] {
            let err = plan(&raw(bad, T::Regular, None)).unwrap_err();
            assert!(
                err.to_string().contains(bad),
                "error names the entry: {err}"
            );
        }
        for bad_target in ["../outside", "/etc/shadow"] {
            let err = plan(&raw("hl", T::Link, Some(bad_target))).unwrap_err();
            assert!(matches!(err, UnpackError::LinkTarget { .. }), "{err}");
            assert!(err.to_string().contains(bad_target), "{err}");
        }
        let err = plan(&raw("s", T::GNUSparse, None)).unwrap_err();
        assert!(matches!(err, UnpackError::Unsupported { .. }));
    }

    #[test]
    fn symlink_targets_are_not_judged() {
        // A symlink may point anywhere; only writing through it is refused, at apply time.
        assert_eq!(
            kind_of("l", T::Symlink, Some("../../../etc")).1,
            Kind::Symlink("../../../etc".into())
        );
    }
}
