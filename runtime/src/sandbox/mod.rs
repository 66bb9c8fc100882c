//! Pod sandboxes without a pause container: the pod's network, IPC and UTS namespaces are
//! pinned by bind mounts under the state dir, its cgroup nests under the daemon's own, and its
//! network interface is a veth whose peer is created directly inside the pod's netns. The
//! containers of the pod join these (see `container::ContainerSpec::join`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroup::{Cgroup, CgroupError, CgroupFs, Parent, Resources};
use crate::container::NsKind as JoinKind;
use crate::net::{NetError, NetHandle, PodInterface};
use crate::ns::{self, NsError, NsKind, PinnedNs};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox id {0:?}")]
    InvalidId(String),
    #[error("sandbox {0} already exists")]
    Exists(String),
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error("sandbox {id}: {source}")]
    Namespace { id: String, source: NsError },
    #[error("sandbox {id}: {source}")]
    Network { id: String, source: NetError },
    #[error("sandbox {id}: {source}")]
    Cgroup { id: String, source: CgroupError },
    #[error("sandbox {id}: {op} {}: {source}", path.display())]
    Io {
        id: String,
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a pod's sandbox is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    pub id: String,
    pub hostname: String,
    /// The pod's interface; `None` for a host-network pod (no network namespace).
    pub network: Option<PodInterface>,
    pub resources: Resources,
}

/// What `sandbox.json` records (also what marks a sandbox as complete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub hostname: String,
    pub address: Option<String>,
    pub host_ifname: Option<String>,
}

/// The sandboxes of one node.
#[derive(Debug, Clone)]
pub struct Sandboxes {
    dir: PathBuf,
    cgroups: CgroupFs,
    /// Where pod cgroups go, below this process's own cgroup.
    cgroup_parent: PathBuf,
    /// The node's network namespace (where the bridge is); `None` means this process's.
    node_netns: Option<PathBuf>,
}

impl Sandboxes {
    /// Opens the sandbox state under `root` (made a private mount, so pins do not spread).
    pub fn open(
        root: &Path,
        cgroups: CgroupFs,
        cgroup_parent: impl Into<PathBuf>,
        node_netns: Option<PathBuf>,
    ) -> Result<Sandboxes, SandboxError> {
        let ns_err = |source| SandboxError::Namespace {
            id: String::new(),
            source,
        };
        let dir = ns::prepare_state_dir(&root.join("sandboxes")).map_err(ns_err)?;
        Ok(Sandboxes {
            dir,
            cgroups,
            cgroup_parent: cgroup_parent.into(),
            node_netns,
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Where sandbox `id` under state root `root` pins its network namespace (whether or not
    /// it has one), without opening the sandboxes.
    pub fn netns_pin(root: &Path, id: &str) -> PathBuf {
        root.join("sandboxes").join(id).join("net")
    }

    fn pod_parent(&self) -> Parent {
        Parent::Below(self.cgroup_parent.clone())
    }

    /// Creates the sandbox; on failure everything created so far is removed again.
    pub fn create(&self, spec: &SandboxSpec) -> Result<(), SandboxError> {
        validate_id(&spec.id)?;
        let dir = self.path(&spec.id);
        if dir.exists() {
            return Err(SandboxError::Exists(spec.id.clone()));
        }
        let result = self.create_in(spec, &dir);
        if result.is_err() {
            let _ = self.remove(&spec.id);
        }
        result
    }

    fn create_in(&self, spec: &SandboxSpec, dir: &Path) -> Result<(), SandboxError> {
        let id = spec.id.clone();
        let io = |op, path: &Path| {
            let (id, path) = (id.clone(), path.to_path_buf());
            move |source| SandboxError::Io {
                id,
                op,
                path,
                source,
            }
        };
        let ns_err = |source| SandboxError::Namespace {
            id: id.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        // All of the pod's namespaces on one helper thread, which also opens the netlink
        // socket the pod side of the network is configured through (no second thread and
        // setns for it).
        let mut pins = vec![
            (NsKind::Uts, dir.join("uts")),
            (NsKind::Ipc, dir.join("ipc")),
        ];
        if spec.network.is_some() {
            pins.insert(0, (NsKind::Net, dir.join("net")));
        }
        let (hostname, with_net) = (spec.hostname.clone(), spec.network.is_some());
        let mut pod_net = None;
        PinnedNs::create_all(&pins, || {
            rustix::system::sethostname(hostname.as_bytes())?;
            if with_net {
                pod_net = Some(NetHandle::current(id.clone()).map_err(std::io::Error::other)?);
            }
            Ok(())
        })
        .map_err(ns_err)?;
        if let (Some(iface), Some(mut pod_net)) = (&spec.network, pod_net) {
            let net_err = |source| SandboxError::Network {
                id: id.clone(),
                source,
            };
            let pod_fd = PinnedNs::open(dir.join("net")).map_err(ns_err)?;
            let mut node = self.node_handle().map_err(net_err)?;
            node.add_pod_interface(std::os::fd::AsFd::as_fd(&pod_fd), &mut pod_net, iface)
                .map_err(net_err)?;
        }
        let cg_err = |source| SandboxError::Cgroup {
            id: id.clone(),
            source,
        };
        let cgroup = self
            .cgroups
            .create(&self.pod_parent(), &pod_cgroup_name(&id))
            .map_err(cg_err)?;
        cgroup.apply(&spec.resources).map_err(cg_err)?;
        let record = SandboxRecord {
            id: id.clone(),
            hostname: spec.hostname.clone(),
            address: spec.network.as_ref().map(|n| n.address.to_string()),
            host_ifname: spec.network.as_ref().map(|n| n.host_ifname.clone()),
        };
        let json = serde_json::to_vec_pretty(&record).unwrap_or_default();
        std::fs::write(dir.join("sandbox.json"), json).map_err(io("write", dir))
    }

    fn node_handle(&self) -> Result<NetHandle, NetError> {
        match &self.node_netns {
            Some(pin) => {
                let fd = PinnedNs::open(pin)?;
                NetHandle::in_netns(std::os::fd::AsFd::as_fd(&fd), pin.display().to_string())
            }
            None => NetHandle::current("node"),
        }
    }

    /// The namespaces a container of this pod joins.
    pub fn join(&self, id: &str) -> Result<Vec<(JoinKind, PathBuf)>, SandboxError> {
        let dir = self.path(id);
        if !dir.join("sandbox.json").is_file() {
            return Err(SandboxError::NotFound(id.into()));
        }
        let mut join = vec![
            (JoinKind::Uts, dir.join("uts")),
            (JoinKind::Ipc, dir.join("ipc")),
        ];
        if dir.join("net").exists() {
            join.push((JoinKind::Net, dir.join("net")));
        }
        Ok(join)
    }

    /// The pod's cgroup.
    pub fn cgroup(&self, id: &str) -> Result<Cgroup, SandboxError> {
        self.cgroups
            .open(&self.pod_parent(), &pod_cgroup_name(id))
            .map_err(|source| SandboxError::Cgroup {
                id: id.into(),
                source,
            })
    }

    /// Creates a container's cgroup inside the pod's, with the container's limits; its
    /// `cgroup.procs` files go into `ContainerSpec::cgroup_procs`.
    pub fn container_cgroup(
        &self,
        id: &str,
        container: &str,
        resources: &Resources,
    ) -> Result<Cgroup, SandboxError> {
        let cg_err = |source| SandboxError::Cgroup {
            id: id.into(),
            source,
        };
        let parent = Parent::Below(self.cgroup_parent.join(pod_cgroup_name(id)));
        let cgroup = self.cgroups.create(&parent, container).map_err(cg_err)?;
        cgroup.apply(resources).map_err(cg_err)?;
        Ok(cgroup)
    }

    /// Tears the sandbox down: kills every process left in the pod cgroup (containers should
    /// have been stopped gracefully before), removes the cgroups, deletes the pod's veth and
    /// unpins the namespaces. Missing parts are fine.
    ///
    /// The veth is deleted here rather than left to go with the netns: the kernel frees an
    /// unpinned netns (and the devices in it) later, on a worker, so the host end's name —
    /// which the kubelet derives from the pod IP — could still exist when the next pod gets
    /// that IP, and its create would fail with EEXIST.
    pub fn remove(&self, id: &str) -> Result<(), SandboxError> {
        validate_id(id)?;
        let cg_err = |source| SandboxError::Cgroup {
            id: id.into(),
            source,
        };
        match self.cgroups.open(&self.pod_parent(), &pod_cgroup_name(id)) {
            Ok(cgroup) => {
                cgroup.kill().map_err(cg_err)?;
                cgroup.remove().map_err(cg_err)?;
            }
            Err(CgroupError::NotFound { .. }) => {}
            Err(e) => return Err(cg_err(e)),
        }
        let dir = self.path(id);
        if let Some(host_ifname) = self.record(id).and_then(|r| r.host_ifname) {
            let net_err = |source| SandboxError::Network {
                id: id.into(),
                source,
            };
            self.node_handle()
                .and_then(|mut node| node.remove_pod_interface(&host_ifname))
                .map_err(net_err)?;
        }
        for kind in ["net", "ipc", "uts"] {
            PinnedNs::remove(dir.join(kind)).map_err(|source| SandboxError::Namespace {
                id: id.into(),
                source,
            })?;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(SandboxError::Io {
                id: id.into(),
                op: "remove",
                path: dir,
                source,
            }),
        }
    }

    /// What `sandbox.json` says, if it is there and readable.
    fn record(&self, id: &str) -> Option<SandboxRecord> {
        let bytes = std::fs::read(self.path(id).join("sandbox.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Ids of the sandboxes on disk (for re-adoption after a restart).
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("sandbox.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        ids
    }
}

fn pod_cgroup_name(id: &str) -> String {
    format!("pod-{id}")
}

fn validate_id(id: &str) -> Result<(), SandboxError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::InvalidId(id.into()))
    }
}
