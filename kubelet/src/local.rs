//! Pods run straight from a manifest on this node, without a control plane (`skiff pod …`):
//! a [`podspec::plan`](crate::podspec::plan) applied with the runtime, and a record per pod
//! on disk so that later invocations list, stop and remove what earlier ones started.
//!
//! State, under the state dir (`ROOT/run` for the CLI):
//!
//! ```text
//! sandboxes/NAME/        pinned uts/ipc/net namespaces (runtime::sandbox; a private mount)
//! containers/NAME.CTR/   container state (runtime::container), bin/ holds skiff-init
//! pods/NAME/pod.json     the pod's record (PodRecord)
//! pods/NAME/etc/         hosts, hostname, resolv.conf, bind-mounted into every container
//! pods/NAME/volumes/V/   emptyDir volumes
//! pods/NAME/logs/CTR/    CRI-format logs (0.log)
//! ipam-NET-LEN.json      pod address leases of the pod CIDR
//! ```

use std::fs::OpenOptions;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use skiff_runtime::cgroup::{CgroupFs, Resources};
use skiff_runtime::container::logs::{self, LogLine};
use skiff_runtime::container::{ContainerError, Containers, ExecProcess, ExecSpec, State};
use skiff_runtime::image::ImageStore;
use skiff_runtime::net::{NetHandle, PodInterface};
use skiff_runtime::ns::PinnedNs;
use skiff_runtime::sandbox::{SandboxSpec, Sandboxes};

use crate::images::StoreImages;
use crate::ipam::Ipam;
use crate::podspec::{
    self, FoundKind, HostPathAction, ObjectSource, PlanContext, PodPlan, PodSpecError,
};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Spec(#[from] PodSpecError),
    #[error("pod {0} already exists")]
    Exists(String),
    #[error("pod {0} not found")]
    NotFound(String),
    #[error("pod {pod} has no container {container}")]
    NoContainer { pod: String, container: String },
    #[error("pod {pod} has several containers ({}): choose one with -c", containers.join(", "))]
    ChooseContainer {
        pod: String,
        containers: Vec<String>,
    },
    #[error("pod {pod}: {source}")]
    Sandbox {
        pod: String,
        source: Box<skiff_runtime::sandbox::SandboxError>,
    },
    #[error("pod {pod}: {source}")]
    Container {
        pod: String,
        source: Box<ContainerError>,
    },
    #[error("pod {pod}: {source}")]
    Ipam {
        pod: String,
        source: crate::ipam::IpamError,
    },
    #[error("pod {pod}: node network: {source}")]
    Net {
        pod: String,
        source: Box<skiff_runtime::net::NetError>,
    },
    #[error("pod {pod}: node network namespace: {source}")]
    NodeNetns {
        pod: String,
        source: Box<skiff_runtime::ns::NsError>,
    },
    #[error("connecting to port {port} in pod {pod}: {source}")]
    Connect {
        pod: String,
        port: u16,
        source: std::io::Error,
    },
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    #[error("{0}")]
    Setup(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod record {}: {reason}", path.display())]
    Record { path: PathBuf, reason: String },
}

/// Where pods live and how they reach the network.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Pod and container state (see the module docs).
    pub state_dir: PathBuf,
    /// The image store's root.
    pub image_root: PathBuf,
    /// A binary that calls `run_if_setup_process()` first thing (the skiff binary).
    pub setup_binary: PathBuf,
    /// Pod cgroups go here, below the cgroup this process runs in.
    pub cgroup_parent: PathBuf,
    /// The network namespace holding the bridge; `None` is this process's (the host's).
    pub node_netns: Option<PathBuf>,
    pub pod_cidr: Ipv4Net,
    pub bridge: String,
    /// The cluster DNS that pods on the pod network use; `None` copies the node's
    /// `/etc/resolv.conf`.
    pub cluster_dns: Option<ClusterDns>,
    /// The node's addresses (`status.hostIP(s)` for the downward API).
    pub host_ips: Vec<IpAddr>,
}

/// Where pods resolve names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// The DNS Service address.
    pub server: String,
    /// `cluster.local`.
    pub domain: String,
}

impl ClusterDns {
    /// A pod's `/etc/resolv.conf`, as the kubelet writes it for `dnsPolicy: ClusterFirst`.
    pub fn resolv_conf(&self, namespace: &str) -> String {
        let d = &self.domain;
        format!(
            "search {namespace}.svc.{d} svc.{d} {d}\nnameserver {}\noptions ndots:5\n",
            self.server
        )
    }
}

/// What `pods/NAME/pod.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub name: String,
    pub hostname: String,
    pub host_network: bool,
    pub ip: Option<IpAddr>,
    pub grace_seconds: u64,
    pub containers: Vec<ContainerRecord>,
    /// The pod cgroup's directories, so `rm` removes them even when run from another cgroup.
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
    /// The settings the pod was made with, so that `rm` needs none.
    pub cgroup_parent: PathBuf,
    pub pod_cidr: Option<Ipv4Net>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    /// The runtime's container id (`POD.CONTAINER`).
    pub id: String,
    pub image: String,
    pub log_dir: PathBuf,
    pub log_name: String,
    /// An init container: runs to completion, in order, before the others start.
    #[serde(default)]
    pub init: bool,
}

/// A container as `pod ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRow {
    pub name: String,
    /// `Created`, `Running`, `Exited`, `OOMKilled` (exited, killed by the OOM killer), or
    /// `Unknown` when the runtime has no such container.
    pub state: &'static str,
    /// The shell-style exit code of an exited container.
    pub exit: Option<i32>,
}

/// The named container of a pod, or its only one.
fn choose<'a>(
    record: &'a PodRecord,
    container: Option<&str>,
) -> Result<&'a ContainerRecord, LocalError> {
    let pod = &record.name;
    match (container, record.containers.as_slice()) {
        (Some(name), all) => {
            all.iter()
                .find(|c| c.name == name)
                .ok_or_else(|| LocalError::NoContainer {
                    pod: pod.clone(),
                    container: name.into(),
                })
        }
        (None, [one]) => Ok(one),
        (None, all) => Err(LocalError::ChooseContainer {
            pod: pod.clone(),
            containers: all.iter().map(|c| c.name.clone()).collect(),
        }),
    }
}

/// The pods of one node.
#[derive(Debug)]
pub struct LocalPods {
    cfg: LocalConfig,
    containers: Containers,
    images: StoreImages,
    /// The cgroup layout as found before this process left its own cgroup (`cgroups`).
    cgroups: std::sync::Mutex<Option<CgroupFs>>,
}

/// The leaf this process moves into on a cgroup v2 host, so that its own cgroup can hand
/// controllers to the pod cgroups below it (v2's no-internal-processes rule): under systemd
/// `…/skiff-kubelet.service/skiff`, with pods in `…/skiff-kubelet.service/skiff-pods/…`.
pub const DAEMON_CGROUP_LEAF: &str = "skiff";

impl LocalPods {
    pub fn open(cfg: LocalConfig) -> Result<LocalPods, LocalError> {
        let containers = Containers::open(&cfg.state_dir, &cfg.setup_binary).map_err(|source| {
            LocalError::Container {
                pod: String::new(),
                source: Box::new(source),
            }
        })?;
        let store =
            ImageStore::open(&cfg.image_root).map_err(|e| LocalError::Setup(e.to_string()))?;
        Ok(LocalPods {
            cfg,
            containers,
            images: StoreImages::new(store),
            cgroups: std::sync::Mutex::new(None),
        })
    }

    /// The cgroup layout, detected once; on first use this process moves into its leaf
    /// (`CgroupFs::isolate_self`, a no-op on hybrid hosts and at a hierarchy root). Later
    /// calls keep the layout of the original own cgroup, where the pods go.
    fn cgroups(&self) -> Result<CgroupFs, String> {
        let mut found = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cgroups) = &*found {
            return Ok(cgroups.clone());
        }
        let cgroups = CgroupFs::detect().map_err(|e| e.to_string())?;
        cgroups
            .isolate_self(DAEMON_CGROUP_LEAF)
            .map_err(|e| format!("moving this process into its own leaf cgroup: {e}"))?;
        *found = Some(cgroups.clone());
        Ok(cgroups)
    }

    fn pod_dir(&self, name: &str) -> PathBuf {
        self.cfg.state_dir.join("pods").join(name)
    }

    /// Opened only where needed: it makes the sandbox dir a private mount.
    fn sandboxes(&self, pod: &str, cgroup_parent: &Path) -> Result<Sandboxes, LocalError> {
        let setup = |e: &dyn std::fmt::Display| LocalError::Setup(format!("pod {pod}: {e}"));
        let cgroups = self.cgroups().map_err(|e| setup(&e))?;
        Sandboxes::open(
            &self.cfg.state_dir,
            cgroups,
            cgroup_parent,
            self.cfg.node_netns.clone(),
        )
        .map_err(|source| LocalError::Sandbox {
            pod: pod.into(),
            source: Box::new(source),
        })
    }

    fn ipam(&self, pod: &str, cidr: Ipv4Net) -> Result<Ipam, LocalError> {
        Ipam::new(&self.cfg.state_dir, cidr).map_err(|source| LocalError::Ipam {
            pod: pod.into(),
            source,
        })
    }

    /// Runs the pod of a manifest: checks and plans it, builds its sandbox and containers
    /// (undone entirely if any of that fails), then starts the containers. A container that
    /// fails to start is reported, and the pod stays for `logs`, `ls` and `rm`.
    pub fn run(&self, manifest: &str) -> Result<PodRecord, LocalError> {
        let pod = podspec::parse(manifest)?;
        let name = podspec::pod_name(&pod)?;
        let record = self.create_pod(&pod, &name, None)?;
        for c in &record.containers {
            self.start_container(&record, &c.name)?;
            if c.init {
                self.wait_init(&record, c)?;
            }
        }
        Ok(record)
    }

    /// Waits for an init container to finish; anything but exit 0 stops the pod's start.
    fn wait_init(&self, record: &PodRecord, c: &ContainerRecord) -> Result<(), LocalError> {
        let status = self
            .containers
            .wait(&c.id, Duration::from_secs(24 * 3600))
            .map_err(|source| LocalError::Container {
                pod: record.name.clone(),
                source: Box::new(source),
            })?;
        match status.state {
            State::Exited(e) if e.shell_code() == 0 => Ok(()),
            State::Exited(e) => Err(LocalError::Setup(format!(
                "pod {}: init container {} exited with {}",
                record.name,
                c.name,
                e.shell_code()
            ))),
            _ => Err(LocalError::Setup(format!(
                "pod {}: init container {} did not finish",
                record.name, c.name
            ))),
        }
    }

    /// Makes pod `name` (a label: the pod's name for the CLI, its uid for the node agent):
    /// files, sandbox, network and every container, created but not started. On failure
    /// nothing of it is left.
    pub fn create_pod(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        name: &str,
        objects: Option<&dyn ObjectSource>,
    ) -> Result<PodRecord, LocalError> {
        podspec::check_label("pod", name)?;
        let dir = self.pod_dir(name);
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalError::Io { op, path, source }
        };
        std::fs::create_dir_all(self.cfg.state_dir.join("pods")).map_err(io("create", &dir))?;
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(LocalError::Exists(name.into()));
            }
            other => other.map_err(io("create", &dir))?,
        }
        match self.create(pod, name, &dir, objects) {
            Ok(record) => Ok(record),
            Err(e) => {
                let _ = self.teardown(name, Duration::ZERO);
                Err(e)
            }
        }
    }

    /// Starts a created container of a pod.
    pub fn start_container(&self, record: &PodRecord, container: &str) -> Result<(), LocalError> {
        let c = choose(record, Some(container))?;
        self.containers
            .start(&c.id)
            .map(|_| ())
            .map_err(|source| LocalError::Container {
                pod: record.name.clone(),
                source: Box::new(source),
            })
    }

    /// Replaces an exited container by a fresh one made from the same spec (same cgroup,
    /// same log path), ready to start: a restart. The exited instance's log becomes the
    /// previous one (`kubectl logs --previous`); only that one is kept.
    pub fn recreate_container(
        &self,
        record: &PodRecord,
        container: &str,
    ) -> Result<(), LocalError> {
        let c = choose(record, Some(container))?;
        let err = |source| LocalError::Container {
            pod: record.name.clone(),
            source: Box::new(source),
        };
        let spec = self.containers.spec(&c.id).map_err(err)?;
        self.containers.remove(&c.id).map_err(err)?;
        logs::retire(&c.log_dir, &c.log_name).map_err(|source| LocalError::Io {
            op: "keep the previous log of",
            path: c.log_dir.join(&c.log_name),
            source,
        })?;
        self.containers.create(&spec).map_err(err)?;
        Ok(())
    }

    /// The runtime's view of one container of a pod.
    pub fn container_status(
        &self,
        record: &PodRecord,
        container: &str,
    ) -> Result<skiff_runtime::container::ContainerStatus, LocalError> {
        let c = choose(record, Some(container))?;
        self.containers
            .status(&c.id)
            .map_err(|source| LocalError::Container {
                pod: record.name.clone(),
                source: Box::new(source),
            })
    }

    /// Stops one container: its stop signal, `grace`, then SIGKILL.
    pub fn stop_container(
        &self,
        record: &PodRecord,
        container: &str,
        grace: Duration,
    ) -> Result<(), LocalError> {
        let c = choose(record, Some(container))?;
        match self.containers.stop(&c.id, grace) {
            Ok(_) | Err(ContainerError::NotFound(_)) => Ok(()),
            Err(source) => Err(LocalError::Container {
                pod: record.name.clone(),
                source: Box::new(source),
            }),
        }
    }

    /// Runs a command in running container `id` (a runtime id) and returns once it has
    /// exec'd: the one exec path (`kubectl exec`, `skiff pod exec`, exec probes). See
    /// `Containers::exec` for `stdio` and the tty.
    pub fn exec(
        &self,
        id: &str,
        spec: &ExecSpec,
        stdio: [Stdio; 3],
    ) -> Result<ExecProcess, LocalError> {
        self.containers
            .exec(id, spec, stdio)
            .map_err(|source| LocalError::Container {
                pod: id.split('.').next().unwrap_or(id).into(),
                source: Box::new(source),
            })
    }

    /// Runs `args` in container `id` (a runtime id), its stdout and stderr captured together
    /// (the first `max_output` bytes kept), killed after `timeout`. Returns the exit code
    /// (128 + signal when killed) and the output.
    pub fn exec_capture(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
        max_output: usize,
    ) -> Result<(i32, Vec<u8>), LocalError> {
        use std::io::Read;
        let io = |op| {
            let path = PathBuf::from(id);
            move |source| LocalError::Io { op, path, source }
        };
        let (mut reader, writer) = std::io::pipe().map_err(io("pipe for exec"))?;
        let stdio = [
            Stdio::null(),
            Stdio::from(writer.try_clone().map_err(io("pipe for exec"))?),
            Stdio::from(writer),
        ];
        let spec = ExecSpec {
            args: args.to_vec(),
            ..ExecSpec::default()
        };
        let mut process = self.exec(id, &spec, stdio)?;
        // Read on a thread so a chatty command never blocks on a full pipe; a child it left
        // behind holding the pipe must not hold the caller either.
        let (sent, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = max_output.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            let _ = sent.send(kept);
        });
        let deadline = std::time::Instant::now() + timeout;
        let code = loop {
            match process.try_wait().map_err(io("wait for exec"))? {
                Some(code) => break code,
                None if std::time::Instant::now() >= deadline => {
                    process.kill();
                    break process.wait().map_err(io("wait for exec"))?;
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let output = received
            .recv_timeout(Duration::from_millis(500))
            .unwrap_or_default();
        Ok((code, output))
    }

    /// A TCP connection to `port` on the pod's loopback (127.0.0.1, else ::1), made inside
    /// the pod's network namespace (the node's for a host-network pod) on a short-lived
    /// thread; the socket stays in that namespace whichever thread uses it afterwards.
    pub fn connect_in_pod(
        &self,
        record: &PodRecord,
        port: u16,
    ) -> Result<std::net::TcpStream, LocalError> {
        let pod = record.name.clone();
        let pin = if record.host_network {
            self.cfg.node_netns.clone()
        } else {
            Some(Sandboxes::netns_pin(&self.cfg.state_dir, &record.name))
        };
        let connect = || {
            let v4 = std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port));
            v4.or_else(|e| {
                std::net::TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, port)).map_err(|_| e)
            })
        };
        let connected = match pin {
            None => connect(),
            Some(pin) => {
                let fd = PinnedNs::open(&pin).map_err(|source| LocalError::NodeNetns {
                    pod: pod.clone(),
                    source: Box::new(source),
                })?;
                skiff_runtime::ns::in_netns(std::os::fd::AsFd::as_fd(&fd), connect).map_err(
                    |source| LocalError::NodeNetns {
                        pod: pod.clone(),
                        source: Box::new(source),
                    },
                )?
            }
        };
        connected.map_err(|source| LocalError::Connect { pod, port, source })
    }

    /// A connection to the attach socket of a running container of the pod (see
    /// `skiff_runtime::container::attach`).
    pub fn attach(&self, record: &PodRecord, container: &str) -> Result<OwnedFd, LocalError> {
        let c = choose(record, Some(container))?;
        self.containers
            .attach(&c.id)
            .map_err(|source| LocalError::Container {
                pod: record.name.clone(),
                source: Box::new(source),
            })
    }

    /// The runtime id of a pod's container (its only one when `container` is `None`).
    pub fn container_id(&self, pod: &str, container: Option<&str>) -> Result<String, LocalError> {
        let record = self.record(pod)?;
        Ok(choose(&record, container)?.id.clone())
    }

    /// The names of the pods with a record on this node, sorted.
    pub fn names(&self) -> Result<Vec<String>, LocalError> {
        let dir = self.cfg.state_dir.join("pods");
        let mut names: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(source) => {
                return Err(LocalError::Io {
                    op: "list",
                    path: dir,
                    source,
                });
            }
        };
        names.sort();
        Ok(names)
    }

    /// What the node contributes to the plan of a pod kept in `dir` with address `ip`.
    fn context(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        dir: &Path,
        ip: Option<IpAddr>,
    ) -> PlanContext {
        PlanContext {
            pod_dir: dir.to_path_buf(),
            ip,
            node_hostname: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
            host_hosts: std::fs::read_to_string("/etc/hosts").ok(),
            host_resolv_conf: match (&self.cfg.cluster_dns, ip) {
                (Some(dns), Some(_)) => {
                    Some(dns.resolv_conf(pod.metadata.namespace.as_deref().unwrap_or("default")))
                }
                _ => std::fs::read_to_string("/etc/resolv.conf").ok(),
            },
            host_ips: self.cfg.host_ips.clone(),
            allocatable: allocatable(&self.cfg.state_dir),
        }
    }

    /// Rewrites the pod's configMap, secret, downwardAPI and projected files whose sources
    /// changed (atomically, as Kubernetes does); true when something changed.
    pub fn refresh_volumes(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        record: &PodRecord,
        objects: Option<&dyn ObjectSource>,
    ) -> Result<bool, LocalError> {
        let ctx = self.context(pod, &self.pod_dir(&record.name), record.ip);
        crate::volume::refresh(pod, &ctx, objects).map_err(LocalError::Volume)
    }

    fn create(
        &self,
        pod: &k8s_openapi::api::core::v1::Pod,
        name: &str,
        dir: &Path,
        objects: Option<&dyn ObjectSource>,
    ) -> Result<PodRecord, LocalError> {
        let ip = if podspec::host_network(pod) {
            None
        } else {
            let ip = self
                .ipam(name, self.cfg.pod_cidr)?
                .allocate(name)
                .map_err(|source| LocalError::Ipam {
                    pod: name.into(),
                    source,
                })?;
            Some(IpAddr::V4(ip))
        };
        let ctx = self.context(pod, dir, ip);
        let mut plan = podspec::plan(pod, &ctx, &self.images, objects)?;
        // Container ids follow the record's name: two pods of one name in two namespaces
        // (or two instances of one pod) never share one.
        for c in plan.init_containers.iter_mut().chain(&mut plan.containers) {
            c.spec.id = format!("{name}.{}", c.name);
        }
        let inits = plan.init_containers.len();
        let all: Vec<&podspec::ContainerPlan> = plan
            .init_containers
            .iter()
            .chain(&plan.containers)
            .collect();
        let mut record = PodRecord {
            name: name.into(),
            hostname: plan.hostname.clone(),
            host_network: plan.host_network,
            ip,
            grace_seconds: plan.grace.as_secs(),
            containers: all
                .iter()
                .enumerate()
                .map(|(i, c)| ContainerRecord {
                    name: c.name.clone(),
                    id: c.spec.id.clone(),
                    image: c.image.clone(),
                    log_dir: c.spec.log.dir.clone(),
                    log_name: c.spec.log.name.clone(),
                    init: i < inits,
                })
                .collect(),
            cgroup_dirs: vec![],
            cgroup_parent: self.cfg.cgroup_parent.clone(),
            pod_cidr: ip.map(|_| self.cfg.pod_cidr.trunc()),
        };
        self.write_record(&record)?;
        prepare_files(&plan)?;
        let sandboxes = self.sandboxes(name, &self.cfg.cgroup_parent)?;
        let sandbox_err = |source| LocalError::Sandbox {
            pod: name.into(),
            source: Box::new(source),
        };
        let network = match ip {
            Some(IpAddr::V4(ip)) => Some(self.pod_interface(name, ip)?),
            _ => None,
        };
        let spec = SandboxSpec {
            id: name.into(),
            hostname: plan.hostname.clone(),
            network,
            resources: Resources::default(),
        };
        sandboxes.create(&spec).map_err(sandbox_err)?;
        let cgroup = sandboxes.cgroup(name).map_err(sandbox_err)?;
        record.cgroup_dirs = cgroup.nodes().iter().map(|n| n.dir.clone()).collect();
        self.write_record(&record)?;
        let join = sandboxes.join(name).map_err(sandbox_err)?;
        for c in all {
            let cgroup = sandboxes
                .container_cgroup(name, &c.name, &c.resources)
                .map_err(sandbox_err)?;
            let mut spec = c.spec.clone();
            spec.join = join.clone();
            spec.cgroup_procs = cgroup
                .nodes()
                .iter()
                .map(|n| n.dir.join("cgroup.procs"))
                .collect();
            self.containers
                .create(&spec)
                .map_err(|source| LocalError::Container {
                    pod: name.into(),
                    source: Box::new(source),
                })?;
        }
        Ok(record)
    }

    /// A netlink handle in the node's network namespace (the pinned one, else this
    /// process's); `pod` names what it is for in errors.
    fn node_net(&self, pod: &str) -> Result<NetHandle, LocalError> {
        let net_err = |source| LocalError::Net {
            pod: pod.into(),
            source: Box::new(source),
        };
        match &self.cfg.node_netns {
            Some(pin) => {
                let fd = PinnedNs::open(pin).map_err(|source| LocalError::NodeNetns {
                    pod: pod.into(),
                    source: Box::new(source),
                })?;
                NetHandle::in_netns(std::os::fd::AsFd::as_fd(&fd), pin.display().to_string())
                    .map_err(net_err)
            }
            None => NetHandle::current("node").map_err(net_err),
        }
    }

    /// Routes `dst` (the Service range) `unreachable` in the node's network namespace.
    pub fn route_unreachable(&self, dst: IpNet) -> Result<(), LocalError> {
        let what = format!("route {dst}");
        self.node_net(&what)?
            .add_unreachable_route(dst)
            .map_err(|source| LocalError::Net {
                pod: what,
                source: Box::new(source),
            })
    }

    /// Adds (or replaces) the route `dst via gateway` in the node's network namespace: the
    /// way to another node's pods.
    pub fn route_via(&self, dst: IpNet, gateway: IpAddr) -> Result<(), LocalError> {
        let what = format!("route {dst} via {gateway}");
        self.node_net(&what)?
            .add_route(dst, gateway)
            .map_err(|source| LocalError::Net {
                pod: what,
                source: Box::new(source),
            })
    }

    /// Deletes the route to `dst` in the node's network namespace (gone already is fine).
    pub fn del_route(&self, dst: IpNet) -> Result<(), LocalError> {
        let what = format!("route {dst}");
        self.node_net(&what)?
            .del_route(dst)
            .map_err(|source| LocalError::Net {
                pod: what,
                source: Box::new(source),
            })
    }

    /// Turns on IPv4 forwarding in the node's network namespace (this process's: a pinned
    /// node namespace is only used by tests of the pod network, which route nothing).
    pub fn enable_forwarding(&self) -> Result<(), LocalError> {
        let path = PathBuf::from("/proc/sys/net/ipv4/ip_forward");
        if self.cfg.node_netns.is_some() {
            return Err(LocalError::Setup(
                "forwarding in a pinned node network namespace is not supported".into(),
            ));
        }
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
            return Ok(());
        }
        std::fs::write(&path, "1").map_err(|source| LocalError::Io {
            op: "write",
            path,
            source,
        })
    }

    /// The pod's veth on the node bridge (made if missing, carrying the CIDR's gateway).
    fn pod_interface(&self, pod: &str, ip: std::net::Ipv4Addr) -> Result<PodInterface, LocalError> {
        let net_err = |source| LocalError::Net {
            pod: pod.into(),
            source: Box::new(source),
        };
        let mut node = self.node_net(pod)?;
        let cidr = self.cfg.pod_cidr.trunc();
        let gateway = self.ipam(pod, cidr)?.gateway();
        let prefix = cidr.prefix_len();
        let bridge_net = IpNet::V4(Ipv4Net::new(gateway, prefix).unwrap_or(cidr));
        node.ensure_bridge(&self.cfg.bridge, bridge_net)
            .map_err(net_err)?;
        Ok(PodInterface {
            host_ifname: format!("skv{:08x}", u32::from(ip)),
            bridge: self.cfg.bridge.clone(),
            pod_ifname: "eth0".into(),
            address: IpNet::V4(Ipv4Net::new(ip, prefix).unwrap_or(cidr)),
            gateway: IpAddr::V4(gateway),
        })
    }

    fn write_record(&self, record: &PodRecord) -> Result<(), LocalError> {
        let path = self.pod_dir(&record.name).join("pod.json");
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(record).unwrap_or_default();
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| LocalError::Io {
                op: "write",
                path,
                source,
            })
    }

    pub fn record(&self, name: &str) -> Result<PodRecord, LocalError> {
        let path = self.pod_dir(name).join("pod.json");
        if podspec::check_label("pod", name).is_err() {
            return Err(LocalError::NotFound(name.into()));
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LocalError::NotFound(name.into()));
            }
            Err(source) => {
                return Err(LocalError::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| LocalError::Record {
            path,
            reason: e.to_string(),
        })
    }

    /// Every pod with its containers' states, by name.
    pub fn list(&self) -> Result<Vec<(PodRecord, Vec<ContainerRow>)>, LocalError> {
        let names = self.names()?;
        let mut out = Vec::new();
        for name in names {
            let Ok(record) = self.record(&name) else {
                continue;
            };
            let rows = record.containers.iter().map(|c| self.row(c)).collect();
            out.push((record, rows));
        }
        Ok(out)
    }

    fn row(&self, c: &ContainerRecord) -> ContainerRow {
        let status = self.containers.status(&c.id);
        let (state, exit) = match status.as_ref().map(|s| (s.state, s.reason.as_deref())) {
            Ok((State::Created, _)) => ("Created", None),
            Ok((State::Running, _)) => ("Running", None),
            // As kubectl's STATUS column shows it.
            Ok((State::Exited(e), Some("OOMKilled"))) => ("OOMKilled", Some(e.shell_code())),
            Ok((State::Exited(e), _)) => ("Exited", Some(e.shell_code())),
            Err(_) => ("Unknown", None),
        };
        ContainerRow {
            name: c.name.clone(),
            state,
            exit,
        }
    }

    /// A container's log lines (the only container's when `container` is `None`).
    pub fn logs(
        &self,
        pod: &str,
        container: Option<&str>,
        tail: Option<usize>,
    ) -> Result<Vec<LogLine>, LocalError> {
        let record = self.record(pod)?;
        let c = choose(&record, container)?;
        logs::read(&c.log_dir, &c.log_name, tail).map_err(|source| LocalError::Io {
            op: "read log",
            path: c.log_dir.join(&c.log_name),
            source,
        })
    }

    /// Stops the pod's containers: the stop signal, then SIGKILL after `grace` (default: the
    /// pod's `terminationGracePeriodSeconds`). The pod stays until `remove`.
    pub fn stop(&self, pod: &str, grace: Option<Duration>) -> Result<(), LocalError> {
        let record = self.record(pod)?;
        let grace = grace.unwrap_or(Duration::from_secs(record.grace_seconds));
        for c in &record.containers {
            match self.containers.stop(&c.id, grace) {
                Ok(_) | Err(ContainerError::NotFound(_)) => {}
                Err(source) => {
                    return Err(LocalError::Container {
                        pod: pod.into(),
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(())
    }

    /// Removes the pod: stops what still runs (with the pod's grace period), then removes
    /// its containers, sandbox, cgroups, address and directory (logs included).
    pub fn remove(&self, pod: &str) -> Result<(), LocalError> {
        let record = self.record(pod)?;
        self.teardown(pod, Duration::from_secs(record.grace_seconds))
    }

    /// Removes whatever exists of a pod; the first error is returned after trying everything.
    fn teardown(&self, pod: &str, grace: Duration) -> Result<(), LocalError> {
        let record = self.record(pod).ok();
        let mut first: Option<LocalError> = None;
        let mut note = |r: Result<(), LocalError>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        for c in record.iter().flat_map(|r| &r.containers) {
            let container = |source| LocalError::Container {
                pod: pod.into(),
                source: Box::new(source),
            };
            match self
                .containers
                .stop(&c.id, grace)
                .and_then(|_| self.containers.remove(&c.id))
            {
                Ok(()) | Err(ContainerError::NotFound(_)) => {}
                Err(e) => note(Err(container(e))),
            }
        }
        let parent = record
            .as_ref()
            .map_or(&self.cfg.cgroup_parent, |r| &r.cgroup_parent);
        if self.cfg.state_dir.join("sandboxes").join(pod).exists() {
            note(self.sandboxes(pod, parent).and_then(|s| {
                s.remove(pod).map_err(|source| LocalError::Sandbox {
                    pod: pod.into(),
                    source: Box::new(source),
                })
            }));
        }
        for dir in record.iter().flat_map(|r| &r.cgroup_dirs) {
            note(remove_cgroup_tree(dir));
        }
        let cidr = record
            .as_ref()
            .map_or(Some(self.cfg.pod_cidr), |r| r.pod_cidr);
        if let Some(cidr) = cidr {
            note(self.ipam(pod, cidr).and_then(|ipam| {
                ipam.release(pod).map_err(|source| LocalError::Ipam {
                    pod: pod.into(),
                    source,
                })
            }));
        }
        let dir = self.pod_dir(pod);
        note(crate::volume::teardown(&dir).map_err(LocalError::from));
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                note(Err(LocalError::Io {
                    op: "remove",
                    path: dir,
                    source: e,
                }));
            }
            _ => {}
        }
        first.map_or(Ok(()), Err)
    }
}

/// Writes the pod's files, makes its volumes and checks (or creates) its hostPaths.
fn prepare_files(plan: &PodPlan) -> Result<(), LocalError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| LocalError::Io { op, path, source }
    };
    for file in &plan.files {
        if let Some(dir) = file.path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        std::fs::write(&file.path, &file.contents).map_err(io("write", &file.path))?;
        std::fs::set_permissions(&file.path, std::fs::Permissions::from_mode(0o644))
            .map_err(io("chmod", &file.path))?;
    }
    // emptyDirs (on disk or tmpfs) and downwardAPI volumes.
    crate::volume::apply(&plan.volumes)?;
    for check in &plan.host_paths {
        match check.action(found_kind(&check.path))? {
            HostPathAction::Nothing => {}
            HostPathAction::CreateDirectory => {
                std::fs::create_dir_all(&check.path).map_err(io("create", &check.path))?;
            }
            HostPathAction::CreateFile => {
                if let Some(dir) = check.path.parent() {
                    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
                }
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&check.path)
                    .map_err(io("create", &check.path))?;
            }
        }
    }
    Ok(())
}

/// This machine's resources, as a `resourceFieldRef` to an unset limit reads them.
fn allocatable(state_dir: &Path) -> podspec::Allocatable {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let info = rustix::system::sysinfo();
    let disk = rustix::fs::statvfs(state_dir).map_or(0, |s| s.f_blocks * s.f_frsize);
    podspec::Allocatable {
        cpu_milli: cpus * 1000,
        memory_bytes: info.totalram as u64 * u64::from(info.mem_unit),
        ephemeral_storage_bytes: disk,
    }
}

fn found_kind(path: &Path) -> FoundKind {
    let Ok(meta) = std::fs::metadata(path) else {
        return FoundKind::Missing;
    };
    let t = meta.file_type();
    match () {
        _ if t.is_dir() => FoundKind::Directory,
        _ if t.is_file() => FoundKind::File,
        _ if t.is_socket() => FoundKind::Socket,
        _ if t.is_char_device() => FoundKind::CharDevice,
        _ if t.is_block_device() => FoundKind::BlockDevice,
        _ => FoundKind::Other,
    }
}

/// Removes an (empty) cgroup directory tree, deepest first; gone already is fine.
fn remove_cgroup_tree(dir: &Path) -> Result<(), LocalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(LocalError::Io {
                op: "list",
                path: dir.into(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LocalError::Io {
            op: "remove cgroup",
            path: dir.into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::ClusterDns;

    #[test]
    fn resolv_conf_points_at_cluster_dns_with_the_namespace_first() {
        let dns = ClusterDns {
            server: "10.96.0.10".into(),
            domain: "cluster.local".into(),
        };
        assert_eq!(
            dns.resolv_conf("web"),
            "search web.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }
}
