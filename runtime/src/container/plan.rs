//! The plan half of container setup: a `ContainerSpec` becomes the exact list of mounts and the
//! process settings the setup process applies (`setup.rs`). Pure, so the rootfs layout —
//! which paths are masked, what is read-only, which device nodes exist — is unit-tested.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{BindMount, ContainerSpec, NsKind, ProcessSpec, Propagation};

/// Paths runc masks by default: files get /dev/null bound over them, directories an empty
/// read-only tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths runc makes read-only by default.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Where the init binary is bound inside the container until it has started (it removes
/// it): exec needs a path on an attached mount, and the host's are detached by pivot_root.
pub const INIT_IN_CONTAINER: &str = "/dev/.skiff-init";

/// Device nodes every container gets: (name, major, minor).
pub const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flag {
    ReadOnly,
    NoSuid,
    NoDev,
    NoExec,
}

/// One step of building the root file system. Targets are relative to the rootfs before
/// `pivot_root` and absolute inside the container after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountOp {
    /// A file system mount (proc, tmpfs, sysfs, …) on a directory.
    Fs {
        fstype: String,
        target: PathBuf,
        flags: Vec<Flag>,
        data: String,
    },
    Bind {
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
        propagation: Propagation,
    },
    CharDevice {
        target: PathBuf,
        major: u32,
        minor: u32,
    },
    Symlink {
        target: PathBuf,
        points_to: String,
    },
    /// Hide a path: /dev/null over a file, an empty read-only tmpfs over a directory.
    Mask {
        target: PathBuf,
    },
    /// Bind a path over itself read-only.
    ReadOnly {
        target: PathBuf,
    },
}

/// Everything the setup process needs, written as JSON into the container's state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupPlan {
    pub join: Vec<(NsKind, PathBuf)>,
    pub cgroup_procs: Vec<PathBuf>,
    pub new_pid_namespace: bool,
    /// overlayfs: lowerdirs top first, then upper and work.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Where the rootfs is mounted before `pivot_root`.
    pub rootfs: PathBuf,
    pub before_pivot: Vec<MountOp>,
    pub after_pivot: Vec<MountOp>,
    pub readonly_rootfs: bool,
    pub process: ProcessSpec,
    pub state_dir: PathBuf,
    pub start_fifo: PathBuf,
    pub init_binary: PathBuf,
    pub log_dir: PathBuf,
    pub log_name: String,
    pub log_max_bytes: u64,
}

/// Paths of a container's state directory.
#[derive(Debug, Clone)]
pub struct StatePaths {
    pub dir: PathBuf,
}

impl StatePaths {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn start_fifo(&self) -> PathBuf {
        self.dir.join("start")
    }
    pub fn plan(&self) -> PathBuf {
        self.dir.join("setup.json")
    }
    pub fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("pid")
    }
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit")
    }
    pub fn started(&self) -> PathBuf {
        self.dir.join("started")
    }
    /// The container cgroups' OOM-kill count when it was created: a cgroup that outlives a
    /// container (a restart reuses it) keeps counting, so only kills above this are its.
    pub fn oom_base(&self) -> PathBuf {
        self.dir.join("oom-base")
    }
    pub fn reason(&self) -> PathBuf {
        self.dir.join("reason")
    }
}

/// Builds the setup plan of a container.
pub fn plan(spec: &ContainerSpec, state: &StatePaths, init_binary: &Path) -> SetupPlan {
    let mut lower = spec.layers.clone();
    lower.reverse();
    let new_pid_namespace = !spec.join.iter().any(|(kind, _)| *kind == NsKind::Pid);
    SetupPlan {
        join: spec.join.clone(),
        cgroup_procs: spec.cgroup_procs.clone(),
        new_pid_namespace,
        lower,
        upper: state.upper(),
        work: state.work(),
        rootfs: state.rootfs(),
        before_pivot: rootfs_mounts(spec.privileged, &spec.mounts, init_binary),
        after_pivot: hardening(spec.privileged),
        readonly_rootfs: spec.readonly_rootfs,
        process: spec.process.clone(),
        state_dir: state.dir.clone(),
        start_fifo: state.start_fifo(),
        init_binary: init_binary.to_path_buf(),
        log_dir: spec.log.dir.clone(),
        log_name: spec.log.name.clone(),
        log_max_bytes: spec.log.max_bytes,
    }
}

fn fs(fstype: &str, target: &str, flags: &[Flag], data: &str) -> MountOp {
    MountOp::Fs {
        fstype: fstype.into(),
        target: target.into(),
        flags: flags.to_vec(),
        data: data.into(),
    }
}

/// The kernel file systems, /dev, then the caller's bind mounts (parents before children).
fn rootfs_mounts(privileged: bool, binds: &[BindMount], init_binary: &Path) -> Vec<MountOp> {
    use Flag::*;
    let ro_unless_privileged: &[Flag] = if privileged {
        &[NoSuid, NoDev, NoExec]
    } else {
        &[NoSuid, NoDev, NoExec, ReadOnly]
    };
    let mut ops = vec![
        fs("proc", "proc", &[NoSuid, NoDev, NoExec], ""),
        fs("tmpfs", "dev", &[NoSuid], "mode=755,size=65536k"),
        fs(
            "devpts",
            "dev/pts",
            &[NoSuid, NoExec],
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
        fs(
            "tmpfs",
            "dev/shm",
            &[NoSuid, NoDev, NoExec],
            "mode=1777,size=65536k",
        ),
        fs("mqueue", "dev/mqueue", &[NoSuid, NoDev, NoExec], ""),
        fs("sysfs", "sys", ro_unless_privileged, ""),
        fs("cgroup2", "sys/fs/cgroup", ro_unless_privileged, ""),
    ];
    for (name, major, minor) in DEVICES {
        ops.push(MountOp::CharDevice {
            target: Path::new("dev").join(name),
            major: *major,
            minor: *minor,
        });
    }
    for (link, points_to) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
        ("dev/ptmx", "pts/ptmx"),
    ] {
        ops.push(MountOp::Symlink {
            target: link.into(),
            points_to: points_to.into(),
        });
    }
    ops.push(MountOp::Bind {
        source: init_binary.to_path_buf(),
        target: INIT_IN_CONTAINER.trim_start_matches('/').into(),
        readonly: true,
        propagation: Propagation::Private,
    });
    let mut binds: Vec<&BindMount> = binds.iter().collect();
    binds.sort_by_key(|b| b.destination.components().count());
    for bind in binds {
        let target = bind
            .destination
            .strip_prefix("/")
            .unwrap_or(&bind.destination)
            .to_path_buf();
        ops.push(MountOp::Bind {
            source: bind.source.clone(),
            target,
            readonly: bind.readonly,
            propagation: bind.propagation,
        });
    }
    ops
}

/// Masked and read-only paths (none for privileged containers).
fn hardening(privileged: bool) -> Vec<MountOp> {
    if privileged {
        return Vec::new();
    }
    let masks = MASKED_PATHS
        .iter()
        .map(|p| MountOp::Mask { target: p.into() });
    let readonly = READONLY_PATHS
        .iter()
        .map(|p| MountOp::ReadOnly { target: p.into() });
    masks.chain(readonly).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::spec::LogSpec;

    fn spec(privileged: bool) -> ContainerSpec {
        ContainerSpec {
            id: "c1".into(),
            layers: vec!["/l/base".into(), "/l/top".into()],
            readonly_rootfs: false,
            process: ProcessSpec {
                args: vec!["sh".into()],
                env: vec![],
                cwd: "/".into(),
                uid: 0,
                gid: 0,
                additional_gids: vec![],
                capabilities: vec![],
                no_new_privileges: false,
                rlimits: vec![],
                stop_signal: 15,
                seccomp: Default::default(),
            },
            join: vec![(NsKind::Net, "/run/ns/net".into())],
            cgroup_procs: vec![],
            mounts: vec![
                BindMount {
                    source: "/vol/b".into(),
                    destination: "/data/sub".into(),
                    readonly: true,
                    propagation: Propagation::Private,
                },
                BindMount {
                    source: "/vol/a".into(),
                    destination: "/data".into(),
                    readonly: false,
                    propagation: Propagation::Private,
                },
            ],
            privileged,
            log: LogSpec {
                dir: "/logs".into(),
                name: "0.log".into(),
                max_bytes: 1 << 20,
            },
        }
    }

    fn state() -> StatePaths {
        StatePaths {
            dir: "/state/c1".into(),
        }
    }

    #[test]
    fn overlay_lists_the_top_layer_first_and_gets_a_new_pid_namespace() {
        let p = plan(&spec(false), &state(), Path::new("/bin/init"));
        assert_eq!(
            p.lower,
            vec![PathBuf::from("/l/top"), PathBuf::from("/l/base")]
        );
        assert_eq!(p.upper, PathBuf::from("/state/c1/upper"));
        assert!(p.new_pid_namespace);
        let mut shared = spec(false);
        shared.join.push((NsKind::Pid, "/proc/1/ns/pid".into()));
        assert!(!plan(&shared, &state(), Path::new("/bin/init")).new_pid_namespace);
    }

    #[test]
    fn unprivileged_containers_are_masked_and_sys_is_read_only() {
        let p = plan(&spec(false), &state(), Path::new("/bin/init"));
        for masked in [
            "/proc/kcore",
            "/proc/keys",
            "/sys/firmware",
            "/proc/timer_list",
        ] {
            assert!(
                p.after_pivot.contains(&MountOp::Mask {
                    target: masked.into()
                }),
                "{masked}"
            );
        }
        assert!(p.after_pivot.contains(&MountOp::ReadOnly {
            target: "/proc/sys".into()
        }));
        let sys = p
            .before_pivot
            .iter()
            .find(|op| matches!(op, MountOp::Fs { target, .. } if target == Path::new("sys")));
        assert!(matches!(sys, Some(MountOp::Fs { flags, .. }) if flags.contains(&Flag::ReadOnly)));
    }

    #[test]
    fn privileged_containers_are_not_masked() {
        let p = plan(&spec(true), &state(), Path::new("/bin/init"));
        assert!(p.after_pivot.is_empty());
        let sys = p
            .before_pivot
            .iter()
            .find(|op| matches!(op, MountOp::Fs { target, .. } if target == Path::new("sys")));
        assert!(matches!(sys, Some(MountOp::Fs { flags, .. }) if !flags.contains(&Flag::ReadOnly)));
    }

    #[test]
    fn dev_has_the_standard_nodes_and_binds_go_parents_first() {
        let p = plan(&spec(false), &state(), Path::new("/bin/init"));
        let nodes: Vec<_> = p
            .before_pivot
            .iter()
            .filter_map(|op| match op {
                MountOp::CharDevice { target, .. } => Some(target.display().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            nodes,
            [
                "dev/null",
                "dev/zero",
                "dev/full",
                "dev/random",
                "dev/urandom",
                "dev/tty"
            ]
        );
        let binds: Vec<_> = p
            .before_pivot
            .iter()
            .filter_map(|op| match op {
                MountOp::Bind {
                    target, readonly, ..
                } => Some((target.display().to_string(), *readonly)),
                _ => None,
            })
            .collect();
        assert_eq!(
            binds,
            [
                ("dev/.skiff-init".to_string(), true),
                ("data".to_string(), false),
                ("data/sub".to_string(), true)
            ]
        );
        let proc_index = p
            .before_pivot
            .iter()
            .position(|op| matches!(op, MountOp::Fs { fstype, .. } if fstype == "proc"));
        assert_eq!(proc_index, Some(0));
    }
}
