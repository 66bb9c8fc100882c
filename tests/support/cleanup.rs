//! Cleaning up after the cluster tests, also when they fail: processes in the test's pod
//! cgroups, the cgroups themselves, mounts under its temp dir; and waiting with a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Kills what runs in every cgroup named `name` (at most 4 levels below each hierarchy's
/// root: the test's own cgroup and the parent under it) and removes them, deepest first.
pub fn remove_cgroups(name: &str) {
    for hierarchy in [
        "unified", "pids", "cpu", "memory", "cpuset", "freezer", "devices", "blkio", "",
    ] {
        let root = Path::new("/sys/fs/cgroup").join(hierarchy);
        for dir in find_dirs(&root, name, 4) {
            kill_tree(&dir);
            remove_tree(&dir);
        }
    }
}

/// How many processes run in the cgroups named `name` and below them (the v2 hierarchy:
/// `unified` on a hybrid host, the root on a v2 one).
pub fn processes_in(name: &str) -> usize {
    fn count(dir: &Path) -> usize {
        let here = std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        let below: usize = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| count(&e.path()))
                    .sum()
            })
            .unwrap_or(0);
        here + below
    }
    for hierarchy in ["unified", ""] {
        let dirs = find_dirs(&Path::new("/sys/fs/cgroup").join(hierarchy), name, 4);
        if !dirs.is_empty() {
            return dirs.iter().map(|d| count(d)).sum();
        }
    }
    0
}

/// Lazily unmounts every mount below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let data = dir.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&data))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

fn find_dirs(root: &Path, name: &str, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name().to_string_lossy() == name {
            out.push(e.path());
        } else if depth > 0 {
            out.extend(find_dirs(&e.path(), name, depth - 1));
        }
    }
    out
}

fn kill_tree(dir: &Path) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                kill_tree(&e.path());
            }
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    for _ in 0..20 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `ok` until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("timed out waiting for {what}");
}
