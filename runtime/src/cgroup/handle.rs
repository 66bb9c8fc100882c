//! `Cgroup`: a handle on one pod cgroup across the hierarchies of the layout — add processes,
//! apply `Resources`, list processes, kill, count OOM kills, remove.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::CgroupError;
use super::io::CgroupIo;
use super::layout::{Hierarchy, Version};
use super::resources::{Controller, Resources, Write, plan};

/// How long [`Cgroup::kill`] waits for the cgroup to empty.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// The cgroup's directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// v1 or v2.
    pub version: Version,
    /// The v1 controllers of the hierarchy (empty for v2).
    pub controllers: Vec<String>,
    /// The cgroup directory, e.g. `/sys/fs/cgroup/memory/process_api/…/pod-x`.
    pub dir: PathBuf,
}

impl Node {
    pub(crate) fn new(h: &Hierarchy, dir: PathBuf) -> Self {
        Self {
            version: h.version,
            controllers: h.controllers.clone(),
            dir,
        }
    }
}

/// One cgroup in every hierarchy the layout uses. Dropping the handle leaves the cgroup in
/// place (pods outlive the handle); call [`Cgroup::kill`] and [`Cgroup::remove`].
#[derive(Debug, Clone)]
pub struct Cgroup {
    io: Arc<dyn CgroupIo>,
    /// v2 first (when mounted), then the v1 hierarchies.
    nodes: Vec<Node>,
    placements: Vec<(Controller, Version)>,
}

impl Cgroup {
    pub(crate) fn new(
        io: Arc<dyn CgroupIo>,
        mut nodes: Vec<Node>,
        placements: Vec<(Controller, Version)>,
    ) -> Self {
        nodes.sort_by_key(|n| n.version != Version::V2);
        Self {
            io,
            nodes,
            placements,
        }
    }

    /// The cgroup's directory in each hierarchy, v2 first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Creates the directories; on failure removes the ones already made.
    pub(crate) fn make_dirs(&self) -> Result<(), CgroupError> {
        for (i, node) in self.nodes.iter().enumerate() {
            if let Err(e) = self.io.mkdir(&node.dir) {
                for made in &self.nodes[..i] {
                    let _ = self.io.rmdir(&made.dir);
                }
                return Err(CgroupError::io("mkdir", &node.dir, e));
            }
        }
        Ok(())
    }

    /// The v2 node, if the layout has cgroup v2.
    fn v2(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.version == Version::V2)
    }

    /// The node that lists processes: v2, or the first v1 hierarchy.
    fn primary(&self) -> &Node {
        &self.nodes[0]
    }

    /// The node holding `controller` on `version`.
    fn node_for(&self, version: Version, c: Controller) -> Result<&Node, CgroupError> {
        self.nodes
            .iter()
            .find(|n| {
                n.version == version
                    && (version == Version::V2 || n.controllers.iter().any(|x| x == c.name()))
            })
            .ok_or(CgroupError::ControllerMissing {
                controller: c.name(),
            })
    }

    fn placement(&self, c: Controller) -> Option<Version> {
        self.placements
            .iter()
            .find(|(x, _)| *x == c)
            .map(|(_, v)| *v)
    }

    fn read(&self, path: &Path) -> Result<String, CgroupError> {
        self.io
            .read(path)
            .map_err(|e| CgroupError::io("read", path, e))
    }

    fn write(&self, path: &Path, value: &str) -> Result<(), CgroupError> {
        self.io
            .write(path, value)
            .map_err(|e| CgroupError::io("write", path, e))
    }

    /// Moves process `pid` into the cgroup in every hierarchy.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        for node in &self.nodes {
            self.write(&node.dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Applies `res`: plans the writes for this host's placement and executes them. A write
    /// refused with EINVAL is retried once after the others (orders v1 memory/memsw and
    /// cfs period/quota pairs whichever way the change needs).
    pub fn apply(&self, res: &Resources) -> Result<(), CgroupError> {
        let writes = plan(res, |c| self.placement(c))?;
        let mut retry: Vec<(&Write, PathBuf)> = Vec::new();
        for w in &writes {
            let path = self.node_for(w.version, w.controller)?.dir.join(w.file);
            if w.if_present && !self.io.exists(&path) {
                tracing::debug!(file = %path.display(), "skipping absent optional cgroup file");
                continue;
            }
            match self.write(&path, &w.value) {
                Err(e) if e.is_errno(libc::EINVAL) => retry.push((w, path)),
                other => other?,
            }
        }
        for (w, path) in retry {
            self.write(&path, &w.value)?;
        }
        Ok(())
    }

    /// Reads interface file `file` of `controller` (wherever this host places it), e.g.
    /// `(Memory, "memory.limit_in_bytes")` on v1.
    pub fn read_file(&self, controller: Controller, file: &str) -> Result<String, CgroupError> {
        if file.contains('/') || file.starts_with('.') {
            return Err(CgroupError::InvalidName {
                name: file.to_string(),
                reason: "not an interface file name",
            });
        }
        let version = self
            .placement(controller)
            .ok_or(CgroupError::ControllerMissing {
                controller: controller.name(),
            })?;
        let path = self.node_for(version, controller)?.dir.join(file);
        Ok(self.read(&path)?.trim_end().to_string())
    }

    /// The processes in the cgroup and its descendants (from v2, or the first v1 hierarchy).
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut out = Vec::new();
        self.collect_pids(&self.primary().dir, &mut out)?;
        Ok(out)
    }

    fn collect_pids(&self, dir: &Path, out: &mut Vec<u32>) -> Result<(), CgroupError> {
        let path = dir.join("cgroup.procs");
        for line in self.read(&path)?.lines().filter(|l| !l.trim().is_empty()) {
            out.push(line.trim().parse().map_err(|_| CgroupError::Parse {
                path: path.clone(),
                reason: format!("bad pid {line:?}"),
            })?);
        }
        let subdirs = self
            .io
            .subdirs(dir)
            .map_err(|e| CgroupError::io("list", dir, e))?;
        for sub in subdirs {
            self.collect_pids(&sub, out)?;
        }
        Ok(())
    }

    /// True while any process is in the cgroup or below (v2 `cgroup.events`, else the pid
    /// list).
    pub fn is_populated(&self) -> Result<bool, CgroupError> {
        match self.v2() {
            Some(v2) => {
                let path = v2.dir.join("cgroup.events");
                Ok(keyed_value(&self.read(&path)?, "populated", &path)? != 0)
            }
            None => Ok(!self.pids()?.is_empty()),
        }
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup: v2
    /// `memory.events` `oom_kill`, or v1 `memory.oom_control` `oom_kill`.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        let (version, file) = match self.placement(Controller::Memory) {
            Some(Version::V2) => (Version::V2, "memory.events"),
            Some(Version::V1) => (Version::V1, "memory.oom_control"),
            None => {
                return Err(CgroupError::ControllerMissing {
                    controller: "memory",
                });
            }
        };
        let path = self.node_for(version, Controller::Memory)?.dir.join(file);
        keyed_value(&self.read(&path)?, "oom_kill", &path)
    }

    /// Kills every process in the cgroup and waits (up to [`DEFAULT_KILL_TIMEOUT`]) until it
    /// is empty. See [`Cgroup::kill_timeout`].
    pub fn kill(&self) -> Result<(), CgroupError> {
        self.kill_timeout(DEFAULT_KILL_TIMEOUT)
    }

    /// Kills every process in the cgroup: v2 `cgroup.kill` when the kernel has it, else
    /// [`Cgroup::kill_each`]. Returns once the cgroup is empty or fails at the deadline.
    pub fn kill_timeout(&self, timeout: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        if !self.io.exists(&self.primary().dir) {
            return Ok(()); // already removed: nothing can be inside
        }
        let Some(kill_file) = self
            .v2()
            .map(|n| n.dir.join("cgroup.kill"))
            .filter(|p| self.io.exists(p))
        else {
            return self.kill_each(timeout);
        };
        self.write(&kill_file, "1")?;
        let mut backoff = Backoff::new();
        while self.is_populated()? {
            if start.elapsed() >= timeout {
                return Err(self.timeout_error(start));
            }
            backoff.sleep();
        }
        Ok(())
    }

    /// The fallback without `cgroup.kill`: freeze, SIGKILL each listed process, thaw, until
    /// the cgroup is empty or `timeout` passes. Freezing stops forks racing the listing.
    pub fn kill_each(&self, timeout: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        if !self.io.exists(&self.primary().dir) {
            return Ok(());
        }
        let mut backoff = Backoff::new();
        loop {
            self.freeze(true)?;
            let signalled = self.signal_all();
            self.freeze(false)?;
            if signalled? == 0 && !self.is_populated()? {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(self.timeout_error(start));
            }
            backoff.sleep();
        }
    }

    /// SIGKILLs every listed process; returns how many were listed.
    fn signal_all(&self) -> Result<usize, CgroupError> {
        let pids = self.pids()?;
        for &pid in &pids {
            match self.io.sigkill(pid) {
                Err(e) if e.raw_os_error() != Some(libc::ESRCH) => {
                    return Err(CgroupError::io("kill", format!("pid {pid}"), e));
                }
                _ => {}
            }
        }
        Ok(pids.len())
    }

    /// Freezes or thaws: v2 `cgroup.freeze`, else v1 `freezer.state`, else nothing.
    fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        if let Some(path) = self
            .v2()
            .map(|n| n.dir.join("cgroup.freeze"))
            .filter(|p| self.io.exists(p))
        {
            return self.write(&path, if frozen { "1" } else { "0" });
        }
        let v1 = self
            .nodes
            .iter()
            .find(|n| n.version == Version::V1 && n.controllers.iter().any(|c| c == "freezer"));
        match v1 {
            Some(n) => self.write(
                &n.dir.join("freezer.state"),
                if frozen { "FROZEN" } else { "THAWED" },
            ),
            None => Ok(()),
        }
    }

    fn timeout_error(&self, start: Instant) -> CgroupError {
        CgroupError::KillTimeout {
            path: self.primary().dir.clone(),
            remaining: self.pids().map(|p| p.len()).unwrap_or(0),
            waited_ms: start.elapsed().as_millis(),
        }
    }

    /// Removes the cgroup (and any child cgroups, deepest first) in every hierarchy. Missing
    /// directories are fine; processes must be gone (see [`Cgroup::kill`]).
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for node in &self.nodes {
            if let Err(e) = self.remove_tree(&node.dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn remove_tree(&self, dir: &Path) -> Result<(), CgroupError> {
        let subdirs = match self.io.subdirs(dir) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CgroupError::io("list", dir, e)),
        };
        for sub in subdirs {
            self.remove_tree(&sub)?;
        }
        // A v1 cgroup can stay busy for a moment after its last task exits.
        let start = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            match self.io.rmdir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && start.elapsed() < RMDIR_WAIT
                        && self.has_no_procs(dir) =>
                {
                    backoff.sleep();
                }
                Err(e) => return Err(CgroupError::io("rmdir", dir, e)),
            }
        }
    }

    /// True when `dir` lists no processes (an EBUSY rmdir is then worth retrying).
    fn has_no_procs(&self, dir: &Path) -> bool {
        self.io
            .read(&dir.join("cgroup.procs"))
            .is_ok_and(|p| p.trim().is_empty())
    }
}

/// How long `remove` retries an rmdir refused with EBUSY.
const RMDIR_WAIT: Duration = Duration::from_secs(1);

/// Polling delay that grows from 1 ms to 20 ms.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(1))
    }

    fn sleep(&mut self) {
        std::thread::sleep(self.0);
        self.0 = (self.0 * 2).min(Duration::from_millis(20));
    }
}

/// The value of `key` in a flat-keyed file (`populated 1`, `oom_kill 3`).
fn keyed_value(text: &str, key: &str, path: &Path) -> Result<u64, CgroupError> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| CgroupError::Parse {
            path: path.to_path_buf(),
            reason: format!("no numeric {key:?} entry"),
        })
}
