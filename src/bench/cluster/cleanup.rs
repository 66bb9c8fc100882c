//! Removing what a bench cluster leaves behind, also after a failure: its skiff processes,
//! what still runs in its network namespace, its pod cgroups, mounts under its data dir.
//! The end-to-end tests clean up with these too (`tests/support/cleanup.rs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, sig);
    }
}

/// SIGTERM, then SIGKILL if it has not exited within `grace`.
pub fn stop(mut child: Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    signal(child.id(), Signal::TERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILLs every process whose network namespace is `netns` (`ip netns pids`): only the
/// bench started processes there (pods have namespaces of their own).
pub fn kill_netns_processes(netns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output() else {
        return;
    };
    let own = std::process::id();
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        match pid.parse::<u32>() {
            Ok(pid) if pid != own => signal(pid, Signal::KILL),
            _ => {}
        }
    }
}

/// Kills what runs in every cgroup named `name` (at most 4 levels below each hierarchy's
/// root: where our own cgroup is, and the parent below it) and removes them, deepest first.
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

/// Lazily unmounts every mount below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let prefix = format!("{}/", dir.to_string_lossy());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

/// The directories named `name` at most `depth` levels below `root`.
pub fn find_dirs(root: &Path, name: &str, depth: usize) -> Vec<PathBuf> {
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
        for pid in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
            signal(pid, Signal::KILL);
        }
    }
    for sub in subdirs(dir) {
        kill_tree(&sub);
    }
}

fn remove_tree(dir: &Path) {
    for sub in subdirs(dir) {
        remove_tree(&sub);
    }
    // A cgroup goes once its last process has been reaped.
    for _ in 0..40 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
