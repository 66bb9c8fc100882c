//! Cgroup layout detection: parse `/proc/self/mountinfo` and `/proc/self/cgroup` into a
//! `Layout` (unified, hybrid or legacy) with each hierarchy's mount point and our own cgroup.

use std::path::{Path, PathBuf};

use super::error::CgroupError;

/// v1 controllers we recognise in the super options of a `cgroup` mount.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Controllers that carry resource limits: a v1 mount with any of them makes a host hybrid or
/// legacy (a lone `name=systemd` v1 mount does not).
const RESOURCE_CONTROLLERS: &[&str] = &["cpu", "memory", "pids", "cpuset", "blkio", "io"];

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// Pure cgroup v2 (a real node, the QEMU guests).
    Unified,
    /// v1 resource controllers plus a cgroup2 mount (this build machine: `/sys/fs/cgroup/unified`).
    Hybrid,
    /// v1 only.
    Legacy,
}

/// The cgroup version of a hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// A `cgroup` (v1) hierarchy.
    V1,
    /// The `cgroup2` hierarchy.
    V2,
}

/// One mounted hierarchy and where this process sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// v1 or v2.
    pub version: Version,
    /// v1: controllers (and `name=...`) bound to the hierarchy; v2: empty here (read
    /// `cgroup.controllers` for what is enabled).
    pub controllers: Vec<String>,
    /// Where the hierarchy is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub mount_point: PathBuf,
    /// The cgroup path of the mount's root (4th mountinfo field), usually `/`.
    pub mount_root: PathBuf,
    /// This process's cgroup path in the hierarchy (from `/proc/self/cgroup`), e.g.
    /// `/process_api/96b4…`.
    pub own: PathBuf,
}

impl Hierarchy {
    /// A short name for messages: `unified`, or the v1 controllers joined by `,`.
    pub fn name(&self) -> String {
        match self.version {
            Version::V2 => "unified".to_string(),
            Version::V1 => self.controllers.join(","),
        }
    }

    /// True if this v1 hierarchy has `controller` bound to it.
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    /// The directory of cgroup path `cgroup` (absolute cgroup path) under this mount, or
    /// `None` when the cgroup is not visible through the mount.
    pub fn dir_of(&self, cgroup: &Path) -> Option<PathBuf> {
        let rel = cgroup.strip_prefix(&self.mount_root).ok()?;
        Some(self.mount_point.join(rel))
    }

    /// The directory of this process's own cgroup.
    pub fn own_dir(&self) -> PathBuf {
        self.dir_of(&self.own)
            .expect("own cgroup is below the mount root by construction")
    }
}

/// The detected layout: the cgroup2 hierarchy (if mounted) and the v1 hierarchies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Unified, hybrid or legacy.
    pub kind: LayoutKind,
    /// The cgroup2 mount, if any.
    pub unified: Option<Hierarchy>,
    /// The v1 mounts (one per hierarchy), in mountinfo order.
    pub v1: Vec<Hierarchy>,
}

impl Layout {
    /// Builds the layout from the text of `/proc/self/mountinfo` and `/proc/self/cgroup`.
    /// Pure: no I/O.
    pub fn parse(mountinfo: &str, proc_cgroup: &str) -> Result<Self, CgroupError> {
        let mounts = parse_mountinfo(mountinfo);
        let membership = parse_proc_cgroup(proc_cgroup)?;
        let mut unified = None;
        let mut v1: Vec<Hierarchy> = Vec::new();
        for m in mounts {
            let Some(own) = own_path(&m, &membership) else {
                continue;
            };
            if !own.starts_with(&m.root) {
                continue; // a bind mount of some other part of the hierarchy
            }
            let h = Hierarchy {
                version: m.version,
                controllers: m.controllers,
                mount_point: m.mount_point,
                mount_root: m.root,
                own,
            };
            match h.version {
                Version::V2 if unified.is_none() => unified = Some(h),
                Version::V1 if !v1.iter().any(|o| o.controllers == h.controllers) => v1.push(h),
                _ => {}
            }
        }
        let has_v1_resources = v1
            .iter()
            .any(|h| RESOURCE_CONTROLLERS.iter().any(|c| h.has(c)));
        let kind = match (&unified, has_v1_resources) {
            (Some(_), true) => LayoutKind::Hybrid,
            (Some(_), false) => LayoutKind::Unified,
            (None, true) => LayoutKind::Legacy,
            (None, false) => {
                return Err(CgroupError::NoHierarchy {
                    reason: "no cgroup2 mount and no v1 resource controller mount that this \
                             process belongs to"
                        .to_string(),
                });
            }
        };
        if kind == LayoutKind::Unified {
            v1.clear(); // e.g. a lone name=systemd hierarchy: nothing we use
        }
        Ok(Self { kind, unified, v1 })
    }

    /// The v1 hierarchy that has `controller` bound, if any.
    pub fn v1_with(&self, controller: &str) -> Option<&Hierarchy> {
        self.v1.iter().find(|h| h.has(controller))
    }
}

/// A cgroup mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// v1 or v2.
    pub version: Version,
    /// v1 controllers from the super options (empty for v2).
    pub controllers: Vec<String>,
    /// Mount point.
    pub mount_point: PathBuf,
    /// Root of the mount within the hierarchy.
    pub root: PathBuf,
}

/// Parses the cgroup and cgroup2 mounts out of `/proc/self/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<CgroupMount> {
    // id parent maj:min root mount_point opts [optional...] - fstype source super_opts
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    let post: Vec<&str> = post.split(' ').collect();
    let (root, mount_point) = (pre.get(3)?, pre.get(4)?);
    let fstype = *post.first()?;
    let super_opts = post.get(2).copied().unwrap_or("");
    let version = match fstype {
        "cgroup2" => Version::V2,
        "cgroup" => Version::V1,
        _ => return None,
    };
    let controllers = match version {
        Version::V2 => Vec::new(),
        Version::V1 => super_opts
            .split(',')
            .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
            .map(str::to_string)
            .collect(),
    };
    Some(CgroupMount {
        version,
        controllers,
        mount_point: PathBuf::from(unescape(mount_point)),
        root: PathBuf::from(unescape(root)),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, etc.).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/self/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Hierarchy id; 0 is cgroup2.
    pub id: u32,
    /// Controllers of the hierarchy (empty for cgroup2).
    pub controllers: Vec<String>,
    /// The cgroup path.
    pub path: PathBuf,
}

/// Parses `/proc/self/cgroup` text.
pub fn parse_proc_cgroup(text: &str) -> Result<Vec<Membership>, CgroupError> {
    let bad = |reason: String| CgroupError::Parse {
        path: PathBuf::from("/proc/self/cgroup"),
        reason,
    };
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!("malformed line {line:?}")));
        };
        let id = id
            .parse()
            .map_err(|_| bad(format!("bad hierarchy id in {line:?}")))?;
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        if !path.starts_with('/') {
            return Err(bad(format!("cgroup path is not absolute in {line:?}")));
        }
        let controllers = ctrl
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        out.push(Membership {
            id,
            controllers,
            path: PathBuf::from(path),
        });
    }
    Ok(out)
}

/// This process's cgroup path in the hierarchy of mount `m`.
fn own_path(m: &CgroupMount, membership: &[Membership]) -> Option<PathBuf> {
    let found = match m.version {
        Version::V2 => membership
            .iter()
            .find(|e| e.id == 0 && e.controllers.is_empty()),
        Version::V1 => membership.iter().find(|e| {
            e.id != 0 && {
                let mut a = e.controllers.clone();
                let mut b = m.controllers.clone();
                a.sort();
                b.sort();
                a == b
            }
        }),
    };
    found.map(|e| e.path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::fake::{HYBRID_MOUNTINFO, HYBRID_PROC_CGROUP};

    /// A pure v2 host (Debian 12, systemd, daemon in a service cgroup).
    const UNIFIED_MOUNTINFO: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    const UNIFIED_PROC_CGROUP: &str = "0::/system.slice/skiff.service\n";

    /// An old v1-only host with combined cpu,cpuacct.
    const LEGACY_MOUNTINFO: &str = "\
30 22 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/systemd rw shared:10 - cgroup cgroup rw,xattr,name=systemd
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/memory rw shared:16 - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/pids rw shared:17 - cgroup cgroup rw,pids
37 30 0:33 / /sys/fs/cgroup/freezer rw shared:18 - cgroup cgroup rw,freezer
";
    const LEGACY_PROC_CGROUP: &str = "\
6:freezer:/
5:pids:/system.slice/skiff.service
4:memory:/system.slice/skiff.service
3:cpu,cpuacct:/system.slice/skiff.service
1:name=systemd:/system.slice/skiff.service
";

    #[test]
    fn hybrid_machine() {
        let l = Layout::parse(HYBRID_MOUNTINFO, HYBRID_PROC_CGROUP).unwrap();
        assert_eq!(l.kind, LayoutKind::Hybrid);
        let u = l.unified.as_ref().unwrap();
        assert_eq!(u.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(u.own, Path::new("/"));
        assert_eq!(l.v1.len(), 9);
        let mem = l.v1_with("memory").unwrap();
        assert_eq!(
            mem.own_dir(),
            Path::new("/sys/fs/cgroup/memory/process_api/96b46cdde82b2eb5d51f636b999f9baa")
        );
        assert_eq!(
            l.v1_with("cpu").unwrap().own_dir(),
            Path::new("/sys/fs/cgroup/cpu")
        );
        assert_eq!(
            l.v1_with("pids").unwrap().mount_point,
            Path::new("/sys/fs/cgroup/pids")
        );
        assert!(l.v1.iter().any(|h| h.has("name=systemd")));
    }

    #[test]
    fn unified_host() {
        let l = Layout::parse(UNIFIED_MOUNTINFO, UNIFIED_PROC_CGROUP).unwrap();
        assert_eq!(l.kind, LayoutKind::Unified);
        assert!(l.v1.is_empty());
        let u = l.unified.unwrap();
        assert_eq!(
            u.own_dir(),
            Path::new("/sys/fs/cgroup/system.slice/skiff.service")
        );
        assert_eq!(u.name(), "unified");
    }

    #[test]
    fn legacy_host_with_combined_cpu_cpuacct() {
        let l = Layout::parse(LEGACY_MOUNTINFO, LEGACY_PROC_CGROUP).unwrap();
        assert_eq!(l.kind, LayoutKind::Legacy);
        assert!(l.unified.is_none());
        let cpu = l.v1_with("cpuacct").unwrap();
        assert_eq!(cpu.name(), "cpu,cpuacct");
        assert_eq!(
            cpu.own_dir(),
            Path::new("/sys/fs/cgroup/cpu,cpuacct/system.slice/skiff.service")
        );
        assert_eq!(l.v1_with("freezer").unwrap().own, Path::new("/"));
    }

    #[test]
    fn mount_root_below_hierarchy_root_is_stripped() {
        // A container that sees only its own subtree, bind-mounted at /sys/fs/cgroup.
        let mi = "50 40 0:38 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let l = Layout::parse(mi, "0::/kubepods/pod1/ctr\n").unwrap();
        let u = l.unified.unwrap();
        assert_eq!(u.own_dir(), Path::new("/sys/fs/cgroup/ctr"));
        // A mount of a subtree we are not in is ignored.
        let err = Layout::parse(mi, "0::/other\n").unwrap_err();
        assert!(matches!(err, CgroupError::NoHierarchy { .. }), "{err}");
    }

    #[test]
    fn escapes_and_deleted_suffix() {
        let mi = "41 31 0:38 / /mnt/cg\\040two rw,relatime - cgroup2 cgroup2 rw\n";
        let l = Layout::parse(mi, "0::/a (deleted)\n").unwrap();
        let u = l.unified.unwrap();
        assert_eq!(u.mount_point, Path::new("/mnt/cg two"));
        assert_eq!(u.own, Path::new("/a"));
    }

    #[test]
    fn malformed_proc_cgroup_is_an_error() {
        assert!(parse_proc_cgroup("garbage\n").is_err());
        assert!(parse_proc_cgroup("x::/\n").is_err());
        assert!(parse_proc_cgroup("0::relative\n").is_err());
        assert!(Layout::parse("", "0::/\n").is_err());
    }
}
