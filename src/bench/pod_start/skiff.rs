//! The skiff side of `skiff bench pod-start`: a throwaway node (state root, a pinned "node"
//! network namespace with a bridge, a parent cgroup below our own) and [`start_skiff_pod`],
//! which builds one pod from the runtime's pieces — pinned net/IPC/UTS namespaces, a pod
//! cgroup, a veth with an address on the bridge, one container — and times each phase.
//!
//! `start_skiff_pod` is the one place that knows how a pod is put together, so it can later
//! be swapped for the sandbox API. Everything created is undone by `Drop` guards, also when a
//! step fails half-way.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use skiff_runtime::cgroup::{Cgroup, CgroupFs, Parent};
use skiff_runtime::container::{self, ContainerSpec, Containers, LogSpec, ProcessSpec};
use skiff_runtime::net::{NetHandle, PodInterface};
use skiff_runtime::ns::{self, NsKind, PinnedNs};

const BRIDGE: &str = "skiffb0";
const GATEWAY: &str = "10.244.0.1";

/// Where one pod's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Phases {
    /// Pinning the net, IPC and UTS namespaces (hostname set, pod-side netlink socket open).
    pub ns: f64,
    pub cgroup: f64,
    /// veth with its peer in the pod netns, address, routes.
    pub net: f64,
    /// Of `net`: getting a netlink handle in the node netns (a free one from the pool, or a
    /// new one when every handle is in use, as in a burst).
    pub net_handle: f64,
    /// Rootfs and the forked, waiting workload.
    pub create: f64,
    /// Until the workload has exec'd.
    pub start: f64,
    /// The pod's network came from the node's pool (only its address and route were added).
    pub pooled: bool,
}

impl Phases {
    pub fn total(&self) -> f64 {
        self.ns + self.cgroup + self.net + self.create + self.start
    }
}

/// The bench's node: everything pods share. Dropping it removes the node netns (and with it
/// the bridge), the parent cgroup and the state dir's mount.
pub struct Node {
    pub containers: Containers,
    layers: Vec<PathBuf>,
    logs: PathBuf,
    /// Private bind mount holding the namespace pins.
    pins: PathBuf,
    cgroups: CgroupFs,
    parent: String,
    node_pin: PathBuf,
    /// Netlink handles in the node netns not in use right now. A pod takes one (or opens a new
    /// one) and gives it back: pods of a burst never wait for each other's requests (a single
    /// shared handle behind a lock made the burst's veths wait ~200 ms here).
    handles: Mutex<Vec<NetHandle>>,
    /// Each pod opens its own netlink handle in the node netns instead of reusing one.
    handle_per_pod: bool,
    /// Pod namespaces made ahead of need ([`Node::fill_pool`]), taken by pooled starts.
    pool: Mutex<Vec<PooledNs>>,
    pooled_made: std::sync::atomic::AtomicU32,
}

/// A pod's namespaces made ahead of need, as a node would keep a few ready and refill them in
/// the background: pinned net, IPC and UTS namespaces, the netns with `lo` up, a veth on the
/// bridge (peer `eth0` inside) and a netlink handle open inside it. A pod that takes one only
/// sets its hostname and adds its address and route.
pub struct PooledNs {
    /// Net, IPC, UTS.
    pins: [PathBuf; 3],
    host_ifname: String,
    handle: NetHandle,
}

impl Node {
    /// Sets the node up under `work` (a temp dir the caller removes after dropping this).
    pub fn new(work: &Path, layers: Vec<PathBuf>, handle_per_pod: bool) -> Result<Node> {
        let containers = Containers::open(work.join("state"), crate::setup_binary()?)
            .context("opening the container state root")?;
        let cgroups = CgroupFs::detect().context("detecting the cgroup layout")?;
        let pins = ns::prepare_state_dir(&work.join("pins")).context("preparing the pin dir")?;
        let node_pin = pins.join("node-net");
        let guard = PinsGuard(pins.clone());
        PinnedNs::create(NsKind::Net, &node_pin, || Ok(())).context("pinning the node netns")?;
        let bridge = (|| -> Result<NetHandle> {
            let fd = PinnedNs::open(&node_pin)?;
            let mut h = NetHandle::in_netns(fd.as_fd(), "bench-node")?;
            h.ensure_bridge(BRIDGE, format!("{GATEWAY}/16").parse()?)?;
            Ok(h)
        })();
        let bridge = match bridge {
            Ok(b) => b,
            Err(e) => {
                let _ = PinnedNs::remove(&node_pin);
                return Err(e.context("creating the node bridge"));
            }
        };
        std::mem::forget(guard); // the Node owns the pin dir from here
        Ok(Node {
            containers,
            layers,
            logs: work.join("logs"),
            pins,
            cgroups,
            parent: format!("skiff-bench-{}", std::process::id()),
            node_pin,
            handles: Mutex::new(vec![bridge]),
            handle_per_pod,
            pool: Mutex::new(Vec::new()),
            pooled_made: Default::default(),
        })
    }

    /// A container running `args` in the pod whose net, IPC and UTS namespaces are pinned at
    /// `pins`.
    fn spec(&self, id: &str, args: &[&str], pins: &[PathBuf], cg: &Cgroup) -> ContainerSpec {
        use container::NsKind as Join;
        ContainerSpec {
            id: id.into(),
            layers: self.layers.clone(),
            readonly_rootfs: false,
            process: ProcessSpec::new(args, &["PATH=/bin", "HOME=/root"]),
            join: [Join::Net, Join::Ipc, Join::Uts]
                .into_iter()
                .zip(pins.iter().cloned())
                .collect(),
            cgroup_procs: cg
                .nodes()
                .iter()
                .map(|n| n.dir.join("cgroup.procs"))
                .collect(),
            mounts: vec![],
            privileged: false,
            log: LogSpec {
                dir: self.logs.join(id),
                name: "0.log".into(),
                max_bytes: 1 << 20,
            },
            stdio: Default::default(),
        }
    }
}

impl Node {
    fn open_handle(&self) -> Result<NetHandle> {
        let fd = PinnedNs::open(&self.node_pin)?;
        Ok(NetHandle::in_netns(fd.as_fd(), "bench-node")?)
    }

    /// A free handle in the node netns, or a new one.
    fn take_handle(&self) -> Result<NetHandle> {
        let free = self.handles.lock().ok().and_then(|mut h| h.pop());
        match free {
            Some(h) => Ok(h),
            None => self.open_handle(),
        }
    }

    fn give_handle(&self, handle: NetHandle) {
        if let Ok(mut free) = self.handles.lock() {
            free.push(handle);
        }
    }

    /// Makes pod namespaces until `n` are ready (not timed: a node does this in the
    /// background).
    pub fn fill_pool(&self, n: usize) -> Result<()> {
        let dir = self.pins.join("pool");
        std::fs::create_dir_all(&dir)?;
        while self.pool.lock().map_or(n, |p| p.len()) < n {
            let k = self
                .pooled_made
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let kinds = [NsKind::Net, NsKind::Ipc, NsKind::Uts];
            let pins = kinds.map(|kind| dir.join(format!("{kind}-{k}")));
            let pin = pins[0].clone();
            let mut handle = None;
            let to_make: Vec<_> = kinds.into_iter().zip(pins.iter().cloned()).collect();
            PinnedNs::create_all(&to_make, || {
                handle =
                    Some(NetHandle::current(format!("pool-{k}")).map_err(std::io::Error::other)?);
                Ok(())
            })?;
            let host_ifname = format!("vp{k}");
            let made = (|| -> Result<NetHandle> {
                let mut handle = handle.context("no netlink handle in the pooled netns")?;
                let fd = PinnedNs::open(&pin)?;
                let mut node = self.take_handle()?;
                let added =
                    node.add_pod_link(fd.as_fd(), &mut handle, &host_ifname, BRIDGE, "eth0");
                self.give_handle(node);
                added?;
                Ok(handle)
            })();
            match made {
                Ok(handle) => self
                    .pool
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the pool is poisoned"))?
                    .push(PooledNs {
                        pins,
                        host_ifname,
                        handle,
                    }),
                Err(e) => {
                    for pin in &pins {
                        let _ = PinnedNs::remove(pin);
                    }
                    return Err(e.context("filling the namespace pool"));
                }
            }
        }
        Ok(())
    }

    fn take_pooled(&self) -> Option<PooledNs> {
        self.pool.lock().ok()?.pop()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The bridge and every veth end left in the node netns go with its last reference.
        if let Ok(mut pool) = self.pool.lock() {
            for pin in pool.drain(..).flat_map(|p| p.pins) {
                let _ = PinnedNs::remove(&pin);
            }
        }
        let _ = std::fs::remove_dir(self.pins.join("pool"));
        let _ = PinnedNs::remove(&self.node_pin);
        if let Ok(cg) = self.cgroups.open(&Parent::Own, &self.parent) {
            let _ = cg.kill();
            let _ = cg.remove();
        }
        let _ = ns::release_state_dir(&self.pins);
    }
}

/// Releases the pin dir's mount if `Node::new` fails after preparing it.
struct PinsGuard(PathBuf);

impl Drop for PinsGuard {
    fn drop(&mut self) {
        let _ = ns::release_state_dir(&self.0);
    }
}

/// One pod. Dropping it tears down whatever of it exists: the container (stopped, removed),
/// the veth, the cgroup, the pins.
pub struct Pod<'a> {
    node: &'a Node,
    dir: PathBuf,
    pins: Vec<PathBuf>,
    cgroup: Option<Cgroup>,
    veth: Option<String>,
    container: Option<String>,
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        let node = self.node;
        if let Some(id) = self.container.take() {
            let _ = node.containers.stop(&id, Duration::from_secs(2));
            let _ = node.containers.remove(&id);
            let _ = std::fs::remove_dir_all(node.logs.join(&id));
        }
        if let Some(veth) = self.veth.take()
            && let Ok(mut handle) = node.take_handle()
        {
            let _ = handle.remove_pod_interface(&veth);
            node.give_handle(handle);
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.kill();
            let _ = cg.remove();
        }
        for pin in self.pins.drain(..).rev() {
            let _ = PinnedNs::remove(&pin);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Creates pod number `index` (its address is derived from it) running `args`, and returns
/// once the workload has exec'd, with the time each phase took. With `pooled`, the pod's
/// network comes from the node's pool when one is ready. On failure everything made so far is
/// undone.
pub fn start_skiff_pod<'a>(
    node: &'a Node,
    index: u32,
    args: &[&str],
    pooled: bool,
) -> Result<(Pod<'a>, Phases)> {
    let name = format!("pod{index}");
    let dir = node.pins.join(&name);
    let mut pod = Pod {
        node,
        dir: dir.clone(),
        pins: vec![],
        cgroup: None,
        veth: None,
        container: None,
    };
    let mut phases = Phases::default();
    let mut lap = Lap(Instant::now());

    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let from_pool = if pooled { node.take_pooled() } else { None };
    phases.pooled = from_pool.is_some();
    let (pins, mut pod_handle, pooled_veth) = match from_pool {
        Some(p) => {
            // Owned by the pod from here: its teardown removes the pins and the veth.
            pod.pins = p.pins.to_vec();
            pod.veth = Some(p.host_ifname);
            let uts = PinnedNs::open(&p.pins[2])?;
            ns::in_ns(uts.as_fd(), NsKind::Uts, || {
                rustix::system::sethostname(name.as_bytes())
            })?
            .with_context(|| format!("setting the hostname of {name}"))?;
            (p.pins.to_vec(), p.handle, true)
        }
        None => {
            let pins: Vec<_> = [NsKind::Net, NsKind::Ipc, NsKind::Uts]
                .into_iter()
                .map(|kind| (kind, dir.join(kind.proc_name())))
                .collect();
            // One helper thread makes all three, sets the hostname and opens the pod-side
            // netlink socket inside the new netns.
            let mut handle = None;
            PinnedNs::create_all(&pins, || {
                rustix::system::sethostname(name.as_bytes())?;
                handle = Some(NetHandle::current(name.clone()).map_err(std::io::Error::other)?);
                Ok(())
            })
            .with_context(|| format!("pinning the namespaces of {name}"))?;
            pod.pins = pins.into_iter().map(|(_, path)| path).collect();
            let handle = handle.context("no netlink handle in the pod netns")?;
            (pod.pins.clone(), handle, false)
        }
    };
    let net_pin = pins[0].clone();
    phases.ns = lap.ms();

    let cg = node
        .cgroups
        .create(&Parent::Below(PathBuf::from(&node.parent)), &name)
        .with_context(|| format!("creating the cgroup of {name}"))?;
    pod.cgroup = Some(cg.clone());
    phases.cgroup = lap.ms();

    let pod_ip = 2 + index; // 10.244.0.1 is the bridge
    let iface = PodInterface {
        host_ifname: format!("vb{index}"),
        bridge: BRIDGE.into(),
        pod_ifname: "eth0".into(),
        address: format!("10.244.{}.{}/16", (pod_ip >> 8) & 0xff, pod_ip & 0xff).parse()?,
        gateway: GATEWAY.parse()?,
    };
    if !pooled_veth {
        pod.veth = Some(iface.host_ifname.clone());
    }
    let net_fd = PinnedNs::open(&net_pin)?;
    let taken = Instant::now();
    let mut handle = if node.handle_per_pod {
        node.open_handle()?
    } else {
        node.take_handle()?
    };
    phases.net_handle = taken.elapsed().as_secs_f64() * 1e3;
    let added = if pooled_veth {
        handle.configure_pod_interface(net_fd.as_fd(), &mut pod_handle, &iface)
    } else {
        handle.add_pod_interface(net_fd.as_fd(), &mut pod_handle, &iface)
    }
    .with_context(|| format!("adding the interface of {name}"));
    if !node.handle_per_pod {
        node.give_handle(handle);
    }
    added?;
    phases.net = lap.ms();

    let id = format!("{name}-c0");
    let spec = node.spec(&id, args, &pins, &cg);
    node.containers
        .create(&spec)
        .with_context(|| format!("creating container {id}"))?;
    pod.container = Some(id.clone());
    phases.create = lap.ms();
    node.containers
        .start(&id)
        .with_context(|| format!("starting container {id}"))?;
    phases.start = lap.ms();
    Ok((pod, phases))
}

/// Milliseconds since the last call.
struct Lap(Instant);

impl Lap {
    fn ms(&mut self) -> f64 {
        let now = Instant::now();
        let ms = (now - self.0).as_secs_f64() * 1e3;
        self.0 = now;
        ms
    }
}
