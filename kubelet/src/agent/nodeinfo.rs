//! The Node object this machine registers: capacity and allocatable from the kernel,
//! addresses, `nodeInfo`, labels, and the conditions the kubelet reports.

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
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn pretty_name(os_release: &str) -> Option<String> {
    let line = os_release.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    Some(line["PRETTY_NAME=".len()..].trim_matches('"').to_owned())
}

/// The most pods a node takes (the kubelet's default).
pub const MAX_PODS: u32 = 110;

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
pub fn status(machine: &Machine, address: IpAddr, hostname: &str, now: Timestamp) -> NodeStatus {
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
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                now,
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                now,
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                now,
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "skiff kubelet is posting ready status",
                now,
            ),
        ]),
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
pub fn node(name: &str, machine: &Machine, address: IpAddr, now: Timestamp) -> Node {
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
        status: Some(status(machine, address, name, now)),
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
