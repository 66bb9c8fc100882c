//! What a caller asks of a container, in Linux terms (the kubelet translates a Pod's container
//! into this, as CRI does).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A namespace kind a container can join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsKind {
    Net,
    Ipc,
    Uts,
    Pid,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Unique among the runtime's containers: `[a-z0-9][a-z0-9._-]*`.
    pub id: String,
    /// The image's unpacked layers, lowest first.
    pub layers: Vec<PathBuf>,
    pub readonly_rootfs: bool,
    pub process: ProcessSpec,
    /// Namespaces to join (the sandbox's); the container always gets new mount and cgroup
    /// namespaces, and a new PID namespace unless a PID namespace is joined here.
    pub join: Vec<(NsKind, PathBuf)>,
    /// `cgroup.procs` files the container's processes are put in (its cgroup, every hierarchy).
    pub cgroup_procs: Vec<PathBuf>,
    /// Bind mounts (volumes, and the caller's /etc/hosts, /etc/hostname, /etc/resolv.conf).
    pub mounts: Vec<BindMount>,
    /// No masked paths, no read-only /proc parts, /sys writable, all capabilities.
    pub privileged: bool,
    /// Where the container's CRI-format log goes: `dir/name`, rotated at `max_bytes`.
    pub log: LogSpec,
    /// What `attach` reaches: the workload's stdin (a pipe init writes) and a terminal.
    #[serde(default)]
    pub stdio: StdioSpec,
}

/// The workload's stdin and terminal, as a Kubernetes container's `stdin`, `tty`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioSpec {
    /// stdin is a pipe that attached clients write (else /dev/null).
    pub stdin: bool,
    /// A pty is the workload's controlling terminal and stdin/stdout/stderr; init holds
    /// the master (its output is logged as stdout).
    pub tty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// argv, already resolved from the image and the request (see `process::resolve_args`).
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Capability numbers kept (bounding, permitted, effective, inheritable for root).
    pub capabilities: Vec<u8>,
    pub no_new_privileges: bool,
    /// (resource, soft, hard), e.g. RLIMIT_NOFILE.
    pub rlimits: Vec<(u32, u64, u64)>,
    /// The signal `stop` sends first (the image's STOPSIGNAL, else SIGTERM).
    pub stop_signal: i32,
    #[serde(default)]
    pub seccomp: super::seccomp::Seccomp,
}

impl ProcessSpec {
    /// `args` with `env`, as root in `/`, with containerd's default capabilities,
    /// no_new_privs, the `RuntimeDefault` seccomp profile and SIGTERM to stop; callers change
    /// what differs.
    pub fn new(args: &[&str], env: &[&str]) -> ProcessSpec {
        ProcessSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            capabilities: DEFAULT_CAPABILITIES.iter().map(|(_, n)| *n).collect(),
            no_new_privileges: true,
            rlimits: vec![],
            stop_signal: libc::SIGTERM,
            seccomp: super::seccomp::Seccomp::RuntimeDefault,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub destination: PathBuf,
    pub readonly: bool,
    pub propagation: Propagation,
}

/// Mount propagation of a bind mount, as Kubernetes' `mountPropagation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Propagation {
    /// `None`: private.
    #[default]
    Private,
    /// `HostToContainer`: rslave.
    HostToContainer,
    /// `Bidirectional`: rshared (privileged containers only).
    Bidirectional,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSpec {
    pub dir: PathBuf,
    pub name: String,
    pub max_bytes: u64,
}

/// The capabilities containerd gives a container by default, by number.
pub const DEFAULT_CAPABILITIES: &[(&str, u8)] = &[
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_RAW", 13),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_MKNOD", 27),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_SETFCAP", 31),
];
