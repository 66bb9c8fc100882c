//! The Node object this machine registers: capacity and allocatable from the kernel,
//! addresses, `nodeInfo`, labels, and the conditions the kubelet reports — MemoryPressure,
//! DiskPressure and PIDPressure measured against the kubelet's default eviction thresholds
//! ([`Pressure`], judged by the pure [`Pressure::conditions`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// The kubelet version skiff reports (the API it serves matches it).
pub const KUBELET_VERSION: &str = "v1.33.0-skiff";

/// What the node knows about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

impl Machine {
    /// Reads this machine's facts from the kernel and /etc.
    pub fn detect() -> Machine {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_total(&m))
            .unwrap_or(0);
        let uname = rustix::system::uname();
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        Machine {
            cpus,
            memory_bytes,
            kernel: uname.release().to_string_lossy().into_owned(),
            os_image: pretty_name(&read("/etc/os-release")).unwrap_or_else(|| "Linux".into()),
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

fn mem_total(meminfo: &str) -> Option<u64> {
    mem_field(meminfo, "MemTotal:")
}

/// A `/proc/meminfo` field in bytes.
fn mem_field(meminfo: &str, field: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn pretty_name(os_release: &str) -> Option<String> {
    let line = os_release.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    Some(line["PRETTY_NAME=".len()..].trim_matches('"').to_owned())
}

/// The most pods a node takes (the kubelet's default).
pub const MAX_PODS: u32 = 110;

/// The kubelet's default hard eviction thresholds: `memory.available<100Mi`,
/// `nodefs.available<10%`, `nodefs.inodesFree<5%`, `imagefs.available<15%`; and (no default
/// upstream) fewer than 10% of `kernel.pid_max` left for `pid.available`.
pub const MEMORY_AVAILABLE_MIN: u64 = 100 << 20;
pub const NODEFS_AVAILABLE_MIN: f64 = 0.10;
pub const NODEFS_INODES_FREE_MIN: f64 = 0.05;
pub const IMAGEFS_AVAILABLE_MIN: f64 = 0.15;
pub const PIDS_AVAILABLE_MIN: f64 = 0.10;

/// What the node has left, measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pressure {
    pub memory_available: u64,
    /// Free fraction of the filesystem holding pods' state and of its inodes.
    pub nodefs_available: f64,
    pub nodefs_inodes_free: f64,
    /// Free fraction of the filesystem holding images.
    pub imagefs_available: f64,
    pub pids: u64,
    pub pid_max: u64,
}

impl Default for Pressure {
    /// Nothing under pressure.
    fn default() -> Pressure {
        Pressure {
            memory_available: u64::MAX,
            nodefs_available: 1.0,
            nodefs_inodes_free: 1.0,
            imagefs_available: 1.0,
            pids: 0,
            pid_max: u64::MAX,
        }
    }
}

fn free_fraction(path: &std::path::Path) -> (f64, f64) {
    let ratio = |free: u64, total: u64| {
        if total == 0 {
            1.0
        } else {
            free as f64 / total as f64
        }
    };
    match rustix::fs::statvfs(path) {
        Ok(s) => (ratio(s.f_bavail, s.f_blocks), ratio(s.f_favail, s.f_files)),
        Err(_) => (1.0, 1.0),
    }
}

impl Pressure {
    /// Reads /proc/meminfo, the state and image filesystems, and the process count.
    pub fn measure(state_dir: &std::path::Path, image_root: &std::path::Path) -> Pressure {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (nodefs_available, nodefs_inodes_free) = free_fraction(state_dir);
        let read_u64 = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        // /proc/loadavg's fourth field: runnable/total scheduling entities (threads).
        let pids = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok())
            .unwrap_or(0);
        Pressure {
            memory_available: mem_field(&meminfo, "MemAvailable:").unwrap_or(u64::MAX),
            nodefs_available,
            nodefs_inodes_free,
            imagefs_available: free_fraction(image_root).0,
            pids,
            pid_max: read_u64("/proc/sys/kernel/pid_max").unwrap_or(u64::MAX),
        }
    }

    /// MemoryPressure, DiskPressure and PIDPressure, as the kubelet words them.
    pub fn conditions(&self, now: Timestamp) -> Vec<NodeCondition> {
        let memory = self.memory_available < MEMORY_AVAILABLE_MIN;
        let disk = self.nodefs_available < NODEFS_AVAILABLE_MIN
            || self.nodefs_inodes_free < NODEFS_INODES_FREE_MIN
            || self.imagefs_available < IMAGEFS_AVAILABLE_MIN;
        let pid_left = self.pid_max.saturating_sub(self.pids) as f64;
        let pid = self.pid_max != u64::MAX && pid_left < PIDS_AVAILABLE_MIN * self.pid_max as f64;
        let judge = |kind: &str, under: bool, ok: (&str, &str), bad: (&str, &str)| {
            let (reason, message) = if under { bad } else { ok };
            let status = if under { "True" } else { "False" };
            condition(kind, status, reason, message, now)
        };
        vec![
            judge(
                "MemoryPressure",
                memory,
                (
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                (
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                ),
            ),
            judge(
                "DiskPressure",
                disk,
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            ),
            judge(
                "PIDPressure",
                pid,
                (
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                (
                    "KubeletHasInsufficientPID",
                    "kubelet has insufficient PID available",
                ),
            ),
        ]
    }
}

fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> NodeCondition {
    NodeCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The node's status now.
pub fn status(
    machine: &Machine,
    pressure: &Pressure,
    address: IpAddr,
    hostname: &str,
    now: Timestamp,
) -> NodeStatus {
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_owned(), Quantity(machine.cpus.to_string()));
    capacity.insert(
        "memory".to_owned(),
        Quantity(format!("{}Ki", machine.memory_bytes / 1024)),
    );
    capacity.insert("pods".to_owned(), Quantity(MAX_PODS.to_string()));
    NodeStatus {
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: address.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: hostname.to_owned(),
            },
        ]),
        conditions: Some(
            pressure
                .conditions(now)
                .into_iter()
                .chain([condition(
                    "Ready",
                    "True",
                    "KubeletReady",
                    "skiff kubelet is posting ready status",
                    now,
                )])
                .collect(),
        ),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
            boot_id: machine.boot_id.clone(),
            container_runtime_version: concat!("skiff://", env!("CARGO_PKG_VERSION")).into(),
            kernel_version: machine.kernel.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: machine.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: machine.os_image.clone(),
            system_uuid: machine.machine_id.clone(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// The Node to register.
pub fn node(
    name: &str,
    machine: &Machine,
    pressure: &Pressure,
    address: IpAddr,
    now: Timestamp,
) -> Node {
    let labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), name.to_owned()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(status(machine, pressure, address, name, now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo_and_os_release() {
        assert_eq!(
            mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24576000 * 1024)
        );
        assert_eq!(
            pretty_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 13 (trixie)")
        );
    }

    #[test]
    fn pressure_follows_the_kubelets_eviction_thresholds() {
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let status = |p: Pressure| -> Vec<(String, String, String)> {
            p.conditions(now)
                .into_iter()
                .map(|c| (c.type_, c.status, c.reason.unwrap_or_default()))
                .collect()
        };
        let calm = status(Pressure::default());
        assert!(calm.iter().all(|c| c.1 == "False"), "{calm:?}");
        assert_eq!(calm[0].2, "KubeletHasSufficientMemory");
        let pressed = |p: Pressure, which: usize| {
            let s = status(p);
            assert_eq!(s[which].1, "True", "{s:?}");
            assert!(
                s.iter()
                    .enumerate()
                    .all(|(i, c)| i == which || c.1 == "False")
            );
            s[which].2.clone()
        };
        let base = Pressure::default();
        let memory = Pressure {
            memory_available: 99 << 20,
            ..base
        };
        assert_eq!(pressed(memory, 0), "KubeletHasInsufficientMemory");
        let enough = Pressure {
            memory_available: 100 << 20,
            ..base
        };
        assert!(status(enough).iter().all(|c| c.1 == "False"));
        for disk in [
            Pressure {
                nodefs_available: 0.09,
                ..base
            },
            Pressure {
                nodefs_inodes_free: 0.04,
                ..base
            },
            Pressure {
                imagefs_available: 0.14,
                ..base
            },
        ] {
            assert_eq!(pressed(disk, 1), "KubeletHasDiskPressure");
        }
        let pids = Pressure {
            pids: 29_500,
            pid_max: 32_768,
            ..base
        };
        assert_eq!(pressed(pids, 2), "KubeletHasInsufficientPID");
        let few = Pressure {
            pids: 1_000,
            pid_max: 32_768,
            ..base
        };
        assert!(status(few).iter().all(|c| c.1 == "False"));
    }

    #[test]
    fn node_has_capacity_addresses_and_ready() {
        let m = Machine {
            cpus: 2,
            memory_bytes: 2 * 1024 * 1024 * 1024,
            kernel: "6.18.0".into(),
            os_image: "Debian".into(),
            machine_id: "abc".into(),
            boot_id: "def".into(),
        };
        let n = node(
            "n1",
            &m,
            &Pressure::default(),
            "10.0.0.1".parse().unwrap(),
            "2026-11-23T10:00:00Z".parse().unwrap(),
        );
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["status"]["capacity"]["cpu"], "2");
        assert_eq!(v["status"]["allocatable"]["memory"], "2097152Ki");
        assert_eq!(v["status"]["addresses"][0]["address"], "10.0.0.1");
        assert_eq!(v["status"]["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        let ready = v["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready["status"], "True");
    }
}
