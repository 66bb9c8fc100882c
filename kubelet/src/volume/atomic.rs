//! Kubernetes' AtomicWriter: a volume's set of files is replaced all at once. The volume
//! directory holds a timestamped data directory (`..2026_11_23_10_00_00.123456789`), a symlink
//! `..data` to it, and user-visible entries that are symlinks through it (`key -> ..data/key`).
//! An update writes a fresh data directory, renames a new `..data` link over the old one (the
//! one atomic step), adds the new user-visible links, then removes stale links and the old data
//! directory: a reader sees the old set or the new one, never a half-written one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::podspec::{FileProjection, Payload, check_file_path};

/// The link to the current data directory.
pub const DATA_LINK: &str = "..data";
/// The new link, before it is renamed over [`DATA_LINK`].
const NEW_LINK: &str = "..data_tmp";

#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    #[error("file {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AtomicError {
    let path = path.to_path_buf();
    move |source| AtomicError::Io { op, path, source }
}

/// Makes `dir` (which must exist) hold exactly `payload`, its files owned by group `gid` when
/// set; `now` names the new data directory. Returns whether anything was written: a payload
/// equal to what is there (bytes and modes) touches nothing but missing links.
pub fn write(
    dir: &Path,
    payload: &Payload,
    gid: Option<u32>,
    now: SystemTime,
) -> Result<bool, AtomicError> {
    check(payload)?;
    let visible: BTreeSet<&str> = payload
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p))
        .collect();
    let old = current(dir)?;
    if let Some(old) = &old
        && read_tree(&dir.join(old))? == *payload
    {
        update_links(dir, &visible)?;
        remove_other_data_dirs(dir, old)?;
        return Ok(false);
    }
    let name = new_data_dir(dir, now)?;
    let data = dir.join(&name);
    for (path, file) in payload {
        write_file(&data, path, file, gid)?;
    }
    chown(&data, gid)?;
    let new_link = dir.join(NEW_LINK);
    match fs::remove_file(&new_link) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_err("remove", &new_link)(e));
        }
        _ => {}
    }
    symlink(&name, &new_link).map_err(io_err("symlink", &new_link))?;
    fs::rename(&new_link, dir.join(DATA_LINK)).map_err(io_err("rename", &new_link))?;
    update_links(dir, &visible)?;
    remove_other_data_dirs(dir, &name)?;
    Ok(true)
}

/// Every path valid, and no file also a directory (`a` and `a/b`).
fn check(payload: &Payload) -> Result<(), AtomicError> {
    for path in payload.keys() {
        check_file_path(path).map_err(|reason| AtomicError::InvalidPath {
            path: path.clone(),
            reason,
        })?;
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            if payload.contains_key(dir.to_string_lossy().as_ref()) {
                return Err(AtomicError::InvalidPath {
                    path: path.clone(),
                    reason: format!("{} is also a file", dir.display()),
                });
            }
            parent = dir.parent();
        }
    }
    Ok(())
}

/// The data directory `..data` names now.
fn current(dir: &Path) -> Result<Option<String>, AtomicError> {
    let link = dir.join(DATA_LINK);
    match fs::read_link(&link) {
        Ok(target) => Ok(Some(target.to_string_lossy().into_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read link", &link)(e)),
    }
}

/// The files under a data directory, as a payload (empty if it is gone).
fn read_tree(root: &Path) -> Result<Payload, AtomicError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
            if meta.is_dir() {
                stack.push((path, format!("{name}/")));
            } else {
                let data = fs::read(&path).map_err(io_err("read", &path))?;
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(name, FileProjection { data, mode });
            }
        }
    }
    Ok(out)
}

/// Makes a fresh, empty data directory named after `now`.
fn new_data_dir(dir: &Path, now: SystemTime) -> Result<String, AtomicError> {
    for attempt in 0..1000 {
        let name = data_dir_name(now, attempt);
        let path = dir.join(&name);
        match fs::create_dir(&path) {
            Ok(()) => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", &path))?;
                return Ok(name);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create", &path)(e)),
        }
    }
    Err(io_err("create data dir in", dir)(
        io::ErrorKind::AlreadyExists.into(),
    ))
}

/// `..YYYY_MM_DD_HH_MM_SS.NNNNNNNNN` (UTC), `attempt` added to the nanoseconds.
fn data_dir_name(now: SystemTime, attempt: u32) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "..{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}.{:09}",
        t / 3600,
        t % 3600 / 60,
        t % 60,
        u64::from(since.subsec_nanos()) + u64::from(attempt)
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One file (and its parent directories) in a data directory.
fn write_file(
    data: &Path,
    rel: &str,
    file: &FileProjection,
    gid: Option<u32>,
) -> Result<(), AtomicError> {
    let path = data.join(rel);
    if let Some(parent) = path.parent().filter(|p| *p != data) {
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        let mut dir = parent;
        while dir != data {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod", dir))?;
            chown(dir, gid)?;
            dir = dir.parent().unwrap_or(data);
        }
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("create", &path))?;
    f.write_all(&file.data).map_err(io_err("write", &path))?;
    chown(&path, gid)?;
    // After the chown, which may clear set-id bits; the mode is exact (no umask).
    f.set_permissions(fs::Permissions::from_mode(file.mode))
        .map_err(io_err("chmod", &path))
}

fn chown(path: &Path, gid: Option<u32>) -> Result<(), AtomicError> {
    match gid {
        Some(gid) => std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err("chown", path)),
        None => Ok(()),
    }
}

/// Adds a `name -> ..data/name` link for each visible name, and removes the links (only
/// links into `..data`) of names no longer there.
fn update_links(dir: &Path, visible: &BTreeSet<&str>) -> Result<(), AtomicError> {
    for name in visible {
        let link = dir.join(name);
        let target = Path::new(DATA_LINK).join(name);
        match fs::read_link(&link) {
            Ok(t) if t == target => continue,
            Ok(_) => fs::remove_file(&link).map_err(io_err("remove", &link))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("read link", &link)(e)),
        }
        symlink(&target, &link).map_err(io_err("symlink", &link))?;
    }
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || visible.contains(name.as_str()) {
            continue;
        }
        let path = entry.path();
        if fs::read_link(&path).is_ok_and(|t| t.starts_with(DATA_LINK)) {
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
    }
    Ok(())
}

/// Removes data directories other than `keep`: the one just replaced, and any left by a
/// write that was interrupted.
fn remove_other_data_dirs(dir: &Path, keep: &str) -> Result<(), AtomicError> {
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = name.starts_with("..") && name != keep && name != DATA_LINK;
        if stale && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let path = entry.path();
            fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "atomic_tests.rs"]
mod tests;
