//! The proxy process on a node: the Service watch (`watch`), the sync loop handing each
//! state to the data plane and the DNS records (`feed`), and the DNS server on the
//! node-local cluster DNS address (`dns`, `nodelocal`). `skiff proxy run`, `skiff up` and
//! `skiff kubelet` all start it through [`start`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::dns::{DnsError, DnsRecords, DnsServer, Records};
use crate::feed::{self, Consumer, Pacing, Without};
use crate::state::ClusterState;
use crate::watch::{self, WatchConfig};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("putting the cluster DNS address {address} on {interface}: {source}")]
    Address {
        address: Ipv4Addr,
        interface: String,
        source: skiff_runtime::net::NetError,
    },
    #[error(transparent)]
    Dns(#[from] DnsError),
}

/// The cluster DNS side of the proxy.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// The cluster DNS address pods' resolv.conf names (`NodeSettings::cluster_dns`).
    pub address: Ipv4Addr,
    /// 53, or another port in tests.
    pub port: u16,
    /// The cluster domain, `cluster.local`.
    pub domain: String,
    /// Where names outside the cluster domain go (the node's resolv.conf by default).
    pub upstreams: Vec<SocketAddr>,
    /// The dummy interface that gets the address; `None` when the address is already local
    /// (loopback in tests).
    pub interface: Option<String>,
}

impl DnsSettings {
    /// `address:53` in `domain`, upstreams from the node's `/etc/resolv.conf`, on the
    /// `skiffdns0` dummy interface.
    pub fn node_local(address: Ipv4Addr, domain: impl Into<String>) -> DnsSettings {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        DnsSettings {
            address,
            port: 53,
            domain: domain.into(),
            upstreams: crate::dns::upstreams_from_resolv_conf(&text, &[IpAddr::V4(address)]),
            interface: Some(crate::nodelocal::INTERFACE.to_owned()),
        }
    }
}

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub watch: WatchConfig,
    /// `None`: no DNS server on this node.
    pub dns: Option<DnsSettings>,
    pub pacing: Pacing,
}

/// A running proxy; [`RunningProxy::stop`] ends it. The data plane's kernel state (pinned
/// maps and programs) stays: Service traffic does not depend on this process.
pub struct RunningProxy {
    /// Where the DNS server answers, if it runs.
    pub dns_addr: Option<SocketAddr>,
    /// Every complete state the watch published (for tests and status).
    pub states: tokio::sync::watch::Receiver<Option<Arc<ClusterState>>>,
    stop: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
    _dns: Option<DnsServer>,
}

impl RunningProxy {
    /// Stops the watch and the sync loop, and closes the DNS sockets.
    pub async fn stop(self) {
        self.stop.notify_waiters();
        self.stop.notify_one();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Starts the proxy: DNS first (so pods resolve as soon as records come), then the watch
/// and the sync loop feeding `data_plane` (the BPF data plane; it never sees the Services
/// at the DNS address) and the DNS records.
pub async fn start(
    config: ProxyConfig,
    data_plane: Vec<Box<dyn Consumer>>,
) -> Result<RunningProxy, ProxyError> {
    let mut consumers: Vec<Box<dyn Consumer>> = Vec::new();
    let mut dns_server = None;
    if let Some(dns) = &config.dns {
        if let Some(interface) = &dns.interface {
            let on =
                crate::nodelocal::ensure_address(interface, dns.address).map_err(|source| {
                    ProxyError::Address {
                        address: dns.address,
                        interface: interface.clone(),
                        source,
                    }
                })?;
            tracing::info!(address = %dns.address, interface = on, "cluster DNS address on the node");
        }
        let listen = SocketAddr::new(IpAddr::V4(dns.address), dns.port);
        let empty = Records::build(&ClusterState::default(), &dns.domain);
        let server = DnsServer::start(listen, empty, dns.upstreams.clone()).await?;
        consumers.push(Box::new(DnsRecords::new(&server, dns.domain.clone())));
        dns_server = Some(server);
    }
    let dns_address = config.dns.as_ref().map(|d| d.address);
    for consumer in data_plane {
        match dns_address {
            Some(address) => consumers.push(Box::new(Without::new(address, consumer))),
            None => consumers.push(consumer),
        }
    }
    let (publish, states) = tokio::sync::watch::channel(None);
    let stop = Arc::new(Notify::new());
    let stopped = stop.clone();
    let watcher = tokio::spawn(watch::run(config.watch.clone(), publish, async move {
        stopped.notified().await;
    }));
    let syncer = tokio::spawn(feed::sync_loop(states.clone(), consumers, config.pacing));
    Ok(RunningProxy {
        dns_addr: dns_server.as_ref().map(|s| s.addr),
        states,
        stop,
        tasks: vec![watcher, syncer],
        _dns: dns_server,
    })
}
