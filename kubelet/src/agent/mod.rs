//! The node agent: registers this machine with the control plane over the node contract
//! (`skiff-api`'s gRPC service), renews its Lease, watches the pods bound to it and runs
//! each with a worker (`worker.rs`). The connection is redialled with back-off and the
//! watch resumed from the last revision; losing the control plane never stops a pod.

mod conn;
mod exits;
mod hooks;
mod images;
pub mod metrics;
pub mod nodeinfo;
mod objects;
mod probes;
pub mod pullsecrets;
pub mod routes;
pub mod status;
mod worker;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use skiff_api::node::pod_event::Type;
use skiff_api::node::{EventRequest, HeartbeatRequest, PodRef, RegisterRequest, WatchPodsRequest};
use skiff_runtime::image::{ImageStore, PullOptions};

use crate::local::{ClusterDns, LocalConfig, LocalPods};
use crate::stream::{PodIndex, StreamContext};
use worker::WorkerHandle;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(String),
    #[error("connecting to {server}: {message}")]
    Connect { server: String, message: String },
    #[error("{0}")]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Local(#[from] crate::local::LocalError),
}

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node service, `https://host:6444`.
    pub server: String,
    /// The node's certificate, key and the cluster CA (from joining).
    pub credentials: crate::join::NodeCredentials,
    /// This node's address (InternalIP); `None` finds the one that routes to the server.
    pub node_ip: Option<IpAddr>,
    pub state_dir: PathBuf,
    pub image_root: PathBuf,
    pub setup_binary: PathBuf,
    pub cgroup_parent: PathBuf,
    /// The network namespace holding the bridge; `None` is the agent's own.
    pub node_netns: Option<PathBuf>,
    pub bridge: String,
    pub pull: PullOptions,
    pub parallel_pulls: usize,
    /// Where `/metrics` is served (plain HTTP; meant for loopback); `None`: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// What every worker shares.
pub struct Shared {
    pods: Arc<LocalPods>,
    /// Replaced on every reconnection.
    client: std::sync::RwLock<conn::Client>,
    images: Images,
    host_ip: IpAddr,
    node_name: String,
    exits: Arc<exits::ExitWatcher>,
    metrics: Arc<metrics::Metrics>,
    state_dir: PathBuf,
    /// Routes to the other nodes' pods.
    routes: Arc<tokio::sync::Mutex<routes::Routes>>,
    pod_cidr: Ipv4Net,
    /// The stream sessions' view of this node's pods.
    streams: Arc<StreamContext>,
}

use images::Images;

impl Shared {
    fn client(&self) -> conn::Client {
        match self.client.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Records an Event about `pod` (best effort).
    async fn event(&self, pod: &Pod, kind: &str, reason: &str, message: &str) {
        let request = EventRequest {
            pod: Some(PodRef {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
            }),
            r#type: kind.into(),
            reason: reason.into(),
            message: message.into(),
        };
        let mut client = self.client();
        if let Err(e) = client.record_event(request).await {
            tracing::debug!(error = %e, "recording an event");
        }
    }
}

/// The address this machine uses toward `server` (no packet is sent): a node's address
/// when none is configured.
pub fn route_source(server: &str) -> Option<IpAddr> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(skiff_api::dial::authority(server))
        .ok()?
        .next()?;
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect(addr).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Runs the agent until `shutdown` resolves; pods keep running after it returns.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    tokio::pin!(shutdown);
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut delay = Duration::from_millis(200);
    // The control plane's heartbeat interval, once a session told it.
    let mut heartbeat: Option<Duration> = None;
    let mut resume = 0u64;
    let mut setup: Option<Arc<Shared>> = None;
    let exits = exits::ExitWatcher::start()
        .map_err(|e| AgentError::Config(format!("starting the exit watcher: {e}")))?;
    let metrics = Arc::new(metrics::Metrics::default());
    let serving = config.metrics_listen.map(|addr| {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, metrics).await {
                tracing::warn!(%addr, error = %e, "serving /metrics");
            }
        })
    });
    loop {
        let session = session(
            &config,
            &mut workers,
            &mut resume,
            &mut setup,
            &mut heartbeat,
            (&exits, &metrics),
        );
        tokio::select! {
            () = &mut shutdown => break,
            result = session => {
                match result {
                    Ok(()) => delay = Duration::from_millis(200),
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?delay, "control plane connection lost");
                    }
                }
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(delay) => {}
        }
        delay = next_redial(delay, heartbeat);
    }
    if let Some(task) = serving {
        task.abort();
    }
    // Workers see their channel close and leave their pods running.
    for (_, w) in workers.drain() {
        drop(w.pod);
        let _ = w.task.await;
    }
    Ok(())
}

/// The wait before the next dial after `delay`: doubling up to 10 s, and never longer than
/// the control plane's heartbeat interval once known, so that a control plane back from an
/// outage hears from the node well within its grace period.
fn next_redial(delay: Duration, heartbeat: Option<Duration>) -> Duration {
    let cap = heartbeat.map_or(Duration::from_secs(10), |h| {
        h.clamp(Duration::from_millis(200), Duration::from_secs(10))
    });
    (delay * 2).min(cap)
}

/// One connection: register, heartbeat, watch until the stream breaks.
async fn session(
    config: &AgentConfig,
    workers: &mut HashMap<String, WorkerHandle>,
    resume: &mut u64,
    setup: &mut Option<Arc<Shared>>,
    heartbeat_interval: &mut Option<Duration>,
    (exit_watcher, metrics): (&Arc<exits::ExitWatcher>, &Arc<metrics::Metrics>),
) -> Result<(), AgentError> {
    let channel = conn::connect(&config.server, &config.credentials).await?;
    let mut client = conn::node_client(channel.clone());
    let machine = nodeinfo::Machine::detect();
    let host_ip = config
        .node_ip
        .or_else(|| route_source(&config.server))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let pressure = nodeinfo::Pressure::measure(&config.state_dir, &config.image_root);
    let node = nodeinfo::node(
        &config.credentials.node_name,
        &machine,
        &pressure,
        host_ip,
        Timestamp::now(),
    );
    let registered = client
        .register(RegisterRequest {
            node: serde_json::to_vec(&node).unwrap_or_default(),
        })
        .await?
        .into_inner();
    let shared = match setup {
        Some(shared) => {
            if let Ok(mut c) = shared.client.write() {
                *c = client.clone();
            }
            shared.clone()
        }
        None => {
            let pod_cidr: Ipv4Net = registered.pod_cidr.parse().map_err(|_| {
                AgentError::Config(format!(
                    "the control plane gave podCIDR {:?}",
                    registered.pod_cidr
                ))
            })?;
            let local = LocalConfig {
                state_dir: config.state_dir.clone(),
                image_root: config.image_root.clone(),
                setup_binary: config.setup_binary.clone(),
                cgroup_parent: config.cgroup_parent.clone(),
                node_netns: config.node_netns.clone(),
                pod_cidr,
                bridge: config.bridge.clone(),
                host_ips: vec![host_ip],
                cluster_dns: Some(ClusterDns {
                    server: registered.cluster_dns.clone(),
                    domain: registered.cluster_domain.clone(),
                }),
            };
            let store = ImageStore::open(&config.image_root)
                .map_err(|e| AgentError::Config(format!("image store: {e}")))?;
            let pods = Arc::new(LocalPods::open(local)?);
            let routes = routes::Routes::load(pods.clone(), &config.state_dir);
            let shared = Arc::new(Shared {
                streams: Arc::new(StreamContext {
                    pods: pods.clone(),
                    index: Arc::new(PodIndex::default()),
                }),
                pods,
                routes: Arc::new(tokio::sync::Mutex::new(routes)),
                pod_cidr,
                client: std::sync::RwLock::new(client.clone()),
                images: Images::new(store, config.pull.clone(), config.parallel_pulls),
                host_ip,
                node_name: config.credentials.node_name.clone(),
                exits: exit_watcher.clone(),
                metrics: metrics.clone(),
                state_dir: config.state_dir.clone(),
            });
            *setup = Some(shared.clone());
            block_service_range(shared.pods.clone(), &registered.service_cidr).await;
            shared
        }
    };
    tracing::info!(node = %config.credentials.node_name, pod_cidr = %registered.pod_cidr, "registered");
    let interval = Duration::from_secs(u64::from(registered.heartbeat_seconds.max(1)));
    *heartbeat_interval = Some(interval);
    let heartbeat = tokio::spawn(heartbeat(
        client.clone(),
        config.credentials.node_name.clone(),
        interval,
        machine,
        host_ip,
        (config.state_dir.clone(), config.image_root.clone()),
    ));
    let routes = routes::follow(
        client.clone(),
        config.credentials.node_name.clone(),
        shared.pod_cidr,
        host_ip,
        shared.routes.clone(),
    );
    // Logs, exec, attach and port-forward ride the same channel; sessions in progress keep
    // their own calls when this connection's offers end.
    let offers = tokio::spawn(crate::stream::client::run(
        channel,
        shared.streams.clone(),
        config.credentials.node_name.clone(),
    ));
    // The pods and the routes share the connection: either breaking ends the session.
    let result = tokio::select! {
        r = watch(&mut client, &shared, workers, resume) => r,
        r = routes => r,
    };
    heartbeat.abort();
    offers.abort();
    result
}

/// Installs an `unreachable` route for the Service range in the node's network namespace:
/// a Service address the proxy does not translate fails here at once instead of following
/// the default route off the machine.
async fn block_service_range(pods: Arc<LocalPods>, cidr: &str) {
    let Ok(dst) = cidr.parse::<ipnet::IpNet>() else {
        tracing::warn!(%cidr, "the control plane's Service range does not parse");
        return;
    };
    match tokio::task::spawn_blocking(move || pods.route_unreachable(dst)).await {
        Ok(Ok(())) => tracing::info!(%cidr, "Service range routed unreachable"),
        Ok(Err(e)) => tracing::warn!(%cidr, error = %e, "routing the Service range"),
        Err(e) => tracing::warn!(error = %e, "routing the Service range"),
    }
}

async fn heartbeat(
    mut client: conn::Client,
    node: String,
    every: Duration,
    machine: nodeinfo::Machine,
    host_ip: IpAddr,
    (state_dir, image_root): (PathBuf, PathBuf),
) {
    let mut n = 0u64;
    let mut last: Option<Vec<(String, String)>> = None;
    loop {
        tokio::time::sleep(every).await;
        n += 1;
        // The status (with fresh condition heartbeats) when a condition changed, else every
        // sixth beat: a minute by default.
        let pressure = nodeinfo::Pressure::measure(&state_dir, &image_root);
        let now = Timestamp::now();
        let flags: Vec<(String, String)> = pressure
            .conditions(now)
            .into_iter()
            .map(|c| (c.type_, c.status))
            .collect();
        let changed = last.as_ref() != Some(&flags);
        last = Some(flags);
        let status = if n.is_multiple_of(6) || changed {
            serde_json::to_vec(&nodeinfo::status(&machine, &pressure, host_ip, &node, now))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if let Err(e) = client
            .heartbeat(HeartbeatRequest {
                node_name: node.clone(),
                status,
            })
            .await
        {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }
}

async fn watch(
    client: &mut conn::Client,
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, WorkerHandle>,
    resume: &mut u64,
) -> Result<(), AgentError> {
    let request = WatchPodsRequest {
        node_name: shared.node_name.clone(),
        resource_version: *resume,
    };
    let mut stream = match client.watch_pods(request).await {
        Ok(s) => s.into_inner(),
        Err(e) if e.code() == tonic::Code::OutOfRange => {
            *resume = 0;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let mut snapshot: Option<HashSet<String>> = (*resume == 0).then(HashSet::new);
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                if e.code() == tonic::Code::OutOfRange {
                    *resume = 0;
                }
                return Err(e.into());
            }
        };
        let kind = Type::try_from(event.r#type).unwrap_or(Type::AddedOrModified);
        if kind == Type::Synced {
            if let Some(seen) = snapshot.take() {
                forget_missing(shared, workers, &seen);
            }
            *resume = event.resource_version;
            continue;
        }
        let pod: Pod = match serde_json::from_slice(&event.pod) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable pod from the control plane");
                continue;
            }
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        if let Some(seen) = snapshot.as_mut() {
            seen.insert(uid.clone());
        }
        let pod = Arc::new(pod);
        match kind {
            Type::Deleted => shared.streams.index.remove(&uid),
            _ => shared.streams.index.insert(pod.clone()),
        }
        match kind {
            Type::Deleted => {
                if let Some(w) = workers.remove(&uid) {
                    let _ = w.pod.send(None);
                    detach(w);
                }
            }
            _ => match workers.get(&uid) {
                Some(w) if !w.task.is_finished() => {
                    let _ = w.pod.send(Some(pod));
                }
                _ => {
                    workers.insert(uid.clone(), worker::spawn(shared.clone(), uid, pod));
                }
            },
        }
        if kind != Type::Snapshot {
            *resume = event.resource_version;
        }
    }
    Err(AgentError::Rpc(tonic::Status::unavailable(
        "the pod watch ended",
    )))
}

/// After a snapshot: pods this node runs (workers, or records on disk from before a
/// restart) that the control plane no longer has are torn down.
fn forget_missing(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, WorkerHandle>,
    seen: &HashSet<String>,
) {
    let gone: Vec<String> = workers
        .keys()
        .filter(|u| !seen.contains(*u))
        .cloned()
        .collect();
    for uid in gone {
        shared.streams.index.remove(&uid);
        if let Some(w) = workers.remove(&uid) {
            let _ = w.pod.send(None);
            detach(w);
        }
    }
    for uid in shared.pods.names().unwrap_or_default() {
        if !seen.contains(&uid) && !workers.contains_key(&uid) {
            let pod = Arc::new(Pod::default());
            let w = worker::spawn(shared.clone(), uid, pod);
            let _ = w.pod.send(None);
            detach(w);
        }
    }
}

/// Lets a worker finish its teardown on its own.
fn detach(w: WorkerHandle) {
    let WorkerHandle { pod, task } = w;
    tokio::spawn(async move {
        let _keep_open = pod;
        let _ = task.await;
    });
}

#[cfg(test)]
mod redial_tests {
    use super::*;

    #[test]
    fn redials_back_off_to_the_heartbeat_interval_at_most() {
        let ms = Duration::from_millis;
        let mut d = ms(200);
        let mut waits = Vec::new();
        for _ in 0..8 {
            d = next_redial(d, None);
            waits.push(d.as_millis());
        }
        assert_eq!(waits, [400, 800, 1600, 3200, 6400, 10000, 10000, 10000]);
        let one_second = Some(Duration::from_secs(1));
        assert_eq!(next_redial(ms(400), one_second), ms(800));
        assert_eq!(next_redial(ms(800), one_second), ms(1000));
        assert_eq!(next_redial(ms(1000), one_second), ms(1000));
        assert_eq!(
            next_redial(ms(6400), Some(Duration::from_secs(40))),
            ms(10000),
            "a long heartbeat keeps the 10 s cap"
        );
    }
}
