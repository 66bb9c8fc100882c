//! Cleaning up after the cluster tests, also when they fail: processes in the test's pod
//! cgroups, the cgroups themselves, mounts under its temp dir (the bench clusters' own
//! steps, `skiff::bench::cluster::cleanup`); and waiting with a deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use skiff::bench::cluster::cleanup::find_dirs;
pub use skiff::bench::cluster::cleanup::{remove_cgroups, unmount_below};

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
