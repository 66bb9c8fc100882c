//! Pod cgroups: detect the host's cgroup layout (v2, hybrid, v1), create cgroups below this
//! process's own cgroup, apply `Resources`, kill, detect OOM, remove — behind one interface.
//!
//! All effects go through [`CgroupIo`] and every path comes from the [`Layout`], so tests run
//! over a temp dir. Design notes: `docs/design/002-cgroups.md`.

mod error;
#[cfg(test)]
mod fake;
mod handle;
mod io;
mod layout;
mod resources;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

pub use error::CgroupError;
pub use handle::{Cgroup, DEFAULT_KILL_TIMEOUT, Node};
pub use io::{CgroupIo, KernelIo};
pub use layout::{
    CgroupMount, Hierarchy, Layout, LayoutKind, Membership, Version, parse_mountinfo,
    parse_proc_cgroup,
};
pub use resources::{
    Controller, CpuMax, Limit, Resources, Write, cpu_shares_to_weight, cpu_weight_to_shares, plan,
};

/// Where pod cgroups go, relative to this process's own cgroup in each hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Parent {
    /// This process's own cgroup (the default).
    #[default]
    Own,
    /// A path below the own cgroup, e.g. `skiff-pods` (created if missing).
    Below(PathBuf),
    /// An absolute cgroup path that must be at or below the own cgroup in every hierarchy
    /// used; anything else is refused.
    At(PathBuf),
}

impl Parent {
    /// From a config string: empty → `Own`, `/a/b` → `At`, `a/b` → `Below`.
    pub fn from_config(s: &str) -> Self {
        match s.trim() {
            "" => Parent::Own,
            s if s.starts_with('/') => Parent::At(PathBuf::from(s)),
            s => Parent::Below(PathBuf::from(s)),
        }
    }

    /// The parent's cgroup path in hierarchy `h`, checked to be at or below `h.own`.
    pub fn resolve(&self, h: &Hierarchy) -> Result<PathBuf, CgroupError> {
        let invalid = |path: &Path, reason| CgroupError::InvalidParent {
            path: path.to_path_buf(),
            reason,
        };
        match self {
            Parent::Own => Ok(h.own.clone()),
            Parent::Below(rel) => {
                if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
                    return Err(invalid(rel, "must be relative, without `.` or `..`"));
                }
                Ok(h.own.join(rel))
            }
            Parent::At(abs) => {
                let mut comps = abs.components();
                if comps.next() != Some(Component::RootDir)
                    || !comps.all(|c| matches!(c, Component::Normal(_)))
                {
                    return Err(invalid(abs, "must be absolute, without `.` or `..`"));
                }
                if !abs.starts_with(&h.own) {
                    return Err(CgroupError::ParentOutsideOwn {
                        parent: abs.clone(),
                        own: h.own.clone(),
                        hierarchy: h.name(),
                    });
                }
                Ok(abs.clone())
            }
        }
    }
}

/// The host's cgroup filesystem: its layout, which hierarchy serves each controller, and the
/// I/O seam. Build with [`CgroupFs::detect`] on a real machine.
#[derive(Debug, Clone)]
pub struct CgroupFs {
    layout: Layout,
    /// Controllers cgroup v2 offers at our own cgroup (`cgroup.controllers`).
    v2_controllers: Vec<String>,
    io: Arc<dyn CgroupIo>,
}

impl CgroupFs {
    /// Detects the layout of this process from `/proc/self/{mountinfo,cgroup}`.
    pub fn detect() -> Result<Self, CgroupError> {
        let read = |p: &str| {
            std::fs::read_to_string(p).map_err(|e| CgroupError::io("read", PathBuf::from(p), e))
        };
        let layout = Layout::parse(&read("/proc/self/mountinfo")?, &read("/proc/self/cgroup")?)?;
        Self::new(layout, Arc::new(KernelIo))
    }

    /// A `CgroupFs` over `layout` with effects through `io` (a temp-dir fake in tests).
    pub fn new(layout: Layout, io: Arc<dyn CgroupIo>) -> Result<Self, CgroupError> {
        let v2_controllers = match &layout.unified {
            Some(h) => {
                let path = h.own_dir().join("cgroup.controllers");
                match io.read(&path) {
                    Ok(s) => s.split_whitespace().map(str::to_string).collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(CgroupError::io("read", path, e)),
                }
            }
            None => Vec::new(),
        };
        Ok(Self {
            layout,
            v2_controllers,
            io,
        })
    }

    /// The detected layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Which version serves `c`: v2 when our v2 cgroup offers it, else its v1 hierarchy.
    pub fn placement(&self, c: Controller) -> Option<Version> {
        if self.v2_controllers.iter().any(|x| x == c.name()) {
            Some(Version::V2)
        } else {
            self.layout.v1_with(c.name()).map(|_| Version::V1)
        }
    }

    /// The hierarchies a pod cgroup lives in: v2 (always, when mounted: procs, events, kill,
    /// freeze), the v1 hierarchies of controllers v2 lacks, and v1 freezer on legacy hosts.
    fn hierarchies(&self) -> Result<Vec<&Hierarchy>, CgroupError> {
        let mut out: Vec<&Hierarchy> = self.layout.unified.iter().collect();
        let mut v1_names: Vec<&str> = Controller::ALL
            .iter()
            .filter(|c| self.placement(**c) == Some(Version::V1))
            .map(|c| c.name())
            .collect();
        if self.layout.unified.is_none() {
            v1_names.push("freezer");
        }
        for name in v1_names {
            if let Some(h) = self.layout.v1_with(name)
                && !out.iter().any(|o| std::ptr::eq(*o, h))
            {
                out.push(h);
            }
        }
        if out.is_empty() {
            return Err(CgroupError::NoHierarchy {
                reason: "no cgroup2 mount and no v1 cpu, memory, pids or freezer hierarchy"
                    .to_string(),
            });
        }
        Ok(out)
    }

    /// Creates cgroup `name` under `parent` in every hierarchy used (parents below the own
    /// cgroup are created as needed). Fails if it already exists; see [`CgroupFs::open`].
    pub fn create(&self, parent: &Parent, name: &str) -> Result<Cgroup, CgroupError> {
        validate_name(name)?;
        // Check the parent in every hierarchy before creating anything anywhere.
        let parents = self
            .hierarchies()?
            .into_iter()
            .map(|h| Ok((h, parent.resolve(h)?)))
            .collect::<Result<Vec<_>, CgroupError>>()?;
        let mut nodes = Vec::new();
        for (h, parent_cg) in parents {
            let parent_dir = self.ensure_parent(h, &parent_cg)?;
            nodes.push(Node::new(h, parent_dir.join(name)));
        }
        let cg = Cgroup::new(self.io.clone(), nodes, self.placements());
        cg.make_dirs()?;
        Ok(cg)
    }

    /// Re-adopts an existing cgroup `name` under `parent` (after a daemon restart).
    pub fn open(&self, parent: &Parent, name: &str) -> Result<Cgroup, CgroupError> {
        validate_name(name)?;
        let mut nodes = Vec::new();
        for h in self.hierarchies()? {
            let cg = parent.resolve(h)?.join(name);
            let dir = h
                .dir_of(&cg)
                .ok_or_else(|| CgroupError::NotFound { path: cg.clone() })?;
            if !self.io.exists(&dir) {
                return Err(CgroupError::NotFound { path: dir });
            }
            nodes.push(Node::new(h, dir));
        }
        Ok(Cgroup::new(self.io.clone(), nodes, self.placements()))
    }

    /// On a cgroup v2 host with resource controllers, moves this process into a leaf
    /// `<own>/<leaf>` so the own cgroup holds no process and can delegate controllers to pod
    /// cgroups (v2's no-internal-processes rule). Pods still nest under the original own
    /// cgroup. Does nothing when no controller is on v2 (hybrid, legacy) or when the own
    /// cgroup is the hierarchy root (exempt from the rule — and on a shared machine every
    /// other process lives there). Only this process is moved.
    pub fn isolate_self(&self, leaf: &str) -> Result<(), CgroupError> {
        validate_name(leaf)?;
        let Some(h) = &self.layout.unified else {
            return Ok(());
        };
        let needs = Controller::ALL
            .iter()
            .any(|c| self.placement(*c) == Some(Version::V2));
        if !needs || h.own == h.mount_root || h.own == Path::new("/") {
            return Ok(());
        }
        let dir = h.own_dir().join(leaf);
        match self.io.mkdir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(CgroupError::io("mkdir", dir, e));
            }
            _ => {}
        }
        let procs = dir.join("cgroup.procs");
        let pid = std::process::id().to_string();
        self.io
            .write(&procs, &pid)
            .map_err(|e| CgroupError::io("write", procs, e))
    }

    fn placements(&self) -> Vec<(Controller, Version)> {
        Controller::ALL
            .iter()
            .filter_map(|c| self.placement(*c).map(|v| (*c, v)))
            .collect()
    }

    /// Creates the directories from the own cgroup down to `parent_cg` and, on v2, enables
    /// the controllers we place there in each one's `cgroup.subtree_control`.
    fn ensure_parent(&self, h: &Hierarchy, parent_cg: &Path) -> Result<PathBuf, CgroupError> {
        let rel = parent_cg
            .strip_prefix(&h.own)
            .expect("Parent::resolve keeps parents below own");
        let mut dir = h.own_dir();
        self.enable_v2_controllers(h, &dir)?;
        for comp in rel.components() {
            dir.push(comp);
            match self.io.mkdir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(CgroupError::io("mkdir", dir, e)),
            }
            self.enable_v2_controllers(h, &dir)?;
        }
        Ok(dir)
    }

    fn enable_v2_controllers(&self, h: &Hierarchy, dir: &Path) -> Result<(), CgroupError> {
        if h.version != Version::V2 {
            return Ok(());
        }
        let path = dir.join("cgroup.subtree_control");
        let current = self
            .io
            .read(&path)
            .map_err(|e| CgroupError::io("read", &path, e))?;
        let missing: Vec<String> = Controller::ALL
            .iter()
            .filter(|c| self.placement(**c) == Some(Version::V2))
            .filter(|c| !current.split_whitespace().any(|x| x == c.name()))
            .map(|c| format!("+{}", c.name()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.io.write(&path, &missing.join(" ")).map_err(|e| {
            // EBUSY: the no-internal-processes rule; the daemon must sit in a leaf cgroup.
            CgroupError::io(
                "enable controllers (the cgroup must hold no processes) in",
                &path,
                e,
            )
        })
    }
}

/// A cgroup name: one path component, not an interface file name.
fn validate_name(name: &str) -> Result<(), CgroupError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        Some("must be a single path component")
    } else if name.len() > 255 {
        Some("longer than 255 bytes")
    } else if name.contains('.') && name.split('.').next().is_some_and(is_interface_prefix) {
        Some("collides with cgroup interface file names")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CgroupError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn is_interface_prefix(s: &str) -> bool {
    [
        "cgroup",
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "pids",
        "io",
        "blkio",
        "freezer",
        "devices",
        "hugetlb",
        "rdma",
        "misc",
        "net_cls",
        "net_prio",
        "perf_event",
    ]
    .contains(&s)
}

#[cfg(test)]
mod tests;
