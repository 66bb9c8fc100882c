//! Services and EndpointSlices → what the data plane serves: for every Service port, the
//! addresses clients dial (frontends) and the endpoints behind them (backends), with the
//! Service's affinity and traffic policies. Pure: a function of the [`ClusterState`] and the
//! node, table-tested without a kernel.
//!
//! Endpoint choice follows kube-proxy (`pkg/proxy/topology.go`): ready endpoints; when none
//! is ready, the serving ones that are terminating. The local set (traffic policy `Local`)
//! is chosen the same way among this node's endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use crate::state::{ClusterState, ObjectKey};

/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// The node the model is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Endpoints whose `nodeName` is this are local.
    pub name: String,
    /// Addresses NodePorts are served on.
    pub addresses: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => skiff_ebpf::IPPROTO_TCP,
            Protocol::Udp => skiff_ebpf::IPPROTO_UDP,
        }
    }

    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            skiff_ebpf::IPPROTO_TCP => Some(Protocol::Tcp),
            skiff_ebpf::IPPROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }

    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// One port of one Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortKey {
    pub service: ObjectKey,
    /// The port's name ("" when unnamed).
    pub port: String,
    pub protocol: Protocol,
}

impl std::fmt::Display for ServicePortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.service, self.port, self.protocol)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FrontendKind {
    ClusterIp,
    ExternalIp,
    LoadBalancer,
    NodePort,
}

impl FrontendKind {
    /// Reached from outside the node (served at tc too, subject to externalTrafficPolicy).
    pub fn is_external(self) -> bool {
        self != FrontendKind::ClusterIp
    }
}

/// An address and port clients dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub kind: FrontendKind,
}

/// An endpoint serving a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub addr: Ipv4Addr,
    pub port: u16,
    /// Runs on this node.
    pub local: bool,
}

/// What the data plane serves for one Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub frontends: Vec<Frontend>,
    /// The endpoints any client may reach: this node's first, then by address.
    pub backends: Vec<Backend>,
    /// The endpoints for traffic policy `Local` (this node's only).
    pub local_backends: Vec<Backend>,
    /// `sessionAffinity: ClientIP`, with its timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`
    pub internal_local: bool,
}

/// Every Service port the node serves, plus what was left out and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub ports: BTreeMap<ServicePortKey, ServicePort>,
    /// One line per thing skipped (unsupported protocol, bad address, a frontend two
    /// Services claim).
    pub warnings: Vec<String>,
}

impl Model {
    /// The model of every Service in `state` for `node`.
    pub fn build(state: &ClusterState, node: &NodeInfo) -> Model {
        let mut model = Model::default();
        let mut claimed: BTreeMap<(Ipv4Addr, u16, Protocol), ServicePortKey> = BTreeMap::new();
        let by_service = slices_by_service(state);
        for (key, service) in &state.services {
            let slices = by_service.get(key).map(Vec::as_slice).unwrap_or(&[]);
            for port in service.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                    model.warnings.push(format!(
                        "{key}: port {}: protocol {} is not supported",
                        port.port,
                        port.protocol.as_deref().unwrap_or_default()
                    ));
                    continue;
                };
                let spk = ServicePortKey {
                    service: key.clone(),
                    port: port.name.clone().unwrap_or_default(),
                    protocol,
                };
                let Some(mut sp) = service_port(service, port, slices, node, &mut model.warnings)
                else {
                    continue;
                };
                sp.frontends.retain(|fe| {
                    let at = (fe.addr, fe.port, protocol);
                    match claimed.get(&at) {
                        Some(owner) => {
                            model.warnings.push(format!(
                                "{spk}: {}:{}/{protocol} is already served for {owner}",
                                fe.addr, fe.port
                            ));
                            false
                        }
                        None => {
                            claimed.insert(at, spk.clone());
                            true
                        }
                    }
                });
                model.ports.insert(spk, sp);
            }
        }
        model
    }
}

/// Every Service's EndpointSlices (by the `kubernetes.io/service-name` label), in one pass.
fn slices_by_service(state: &ClusterState) -> BTreeMap<ObjectKey, Vec<&EndpointSlice>> {
    let mut out: BTreeMap<ObjectKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in state.slices.values() {
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::state::SERVICE_NAME_LABEL));
        if let (Some(ns), Some(service)) = (slice.metadata.namespace.as_ref(), service) {
            out.entry(ObjectKey::new(ns.clone(), service.clone()))
                .or_default()
                .push(slice);
        }
    }
    out
}

/// One Service port's frontends and backends; None when the Service serves no address
/// (headless, ExternalName).
fn service_port(
    service: &Service,
    port: &K8sServicePort,
    slices: &[&EndpointSlice],
    node: &NodeInfo,
    warnings: &mut Vec<String>,
) -> Option<ServicePort> {
    let spec = service.spec.as_ref()?;
    let key = ObjectKey::of(&service.metadata);
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let Some(service_port) = to_port(port.port) else {
        warnings.push(format!("{key}: port {} is out of range", port.port));
        return None;
    };
    let mut frontends = Vec::new();
    let mut add = |addr: &str, port: u16, kind: FrontendKind| match addr.parse::<Ipv4Addr>() {
        Ok(addr) => frontends.push(Frontend { addr, port, kind }),
        Err(_) if addr.contains(':') => {} // IPv6: the data plane is IPv4 only
        Err(_) => warnings.push(format!("{key}: {addr:?} is not an IPv4 address")),
    };
    let cluster_ips: Vec<&str> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.iter().map(String::as_str).collect(),
    };
    for ip in cluster_ips
        .into_iter()
        .filter(|ip| !ip.is_empty() && *ip != "None")
    {
        add(ip, service_port, FrontendKind::ClusterIp);
    }
    for ip in spec.external_ips.iter().flatten() {
        add(ip, service_port, FrontendKind::ExternalIp);
    }
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref());
    for ip in ingress
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref())
    {
        add(ip, service_port, FrontendKind::LoadBalancer);
    }
    if matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
        && let Some(node_port) = port.node_port.and_then(to_port)
    {
        for addr in &node.addresses {
            frontends.push(Frontend {
                addr: *addr,
                port: node_port,
                kind: FrontendKind::NodePort,
            });
        }
    }
    frontends.sort();
    frontends.dedup();

    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    let endpoints = endpoints_of(slices, port.name.as_deref().unwrap_or(""), protocol, node);
    let backends = choose(&endpoints, |_| true);
    let local_backends = choose(&endpoints, |b| b.local);
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    Some(ServicePort {
        frontends,
        backends,
        local_backends,
        affinity_timeout,
        external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
    })
}

fn to_port(port: i32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

/// An endpoint address with its conditions, for one Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    backend: Backend,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// The endpoints of a Service port, from the slices' ports with the same name and protocol.
fn endpoints_of(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: &str,
    node: &NodeInfo,
) -> Vec<Candidate> {
    let mut out = BTreeSet::new();
    for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == protocol
        }) else {
            continue;
        };
        let Some(port) = port.port.and_then(to_port) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            out.extend(candidates(endpoint, port, node));
        }
    }
    out.into_iter().collect()
}

fn candidates<'a>(
    endpoint: &'a Endpoint,
    port: u16,
    node: &'a NodeInfo,
) -> impl Iterator<Item = Candidate> + 'a {
    let conditions = endpoint.conditions.clone().unwrap_or_default();
    // An unset `ready` means ready; unset `serving` follows `ready` (EndpointSlice API).
    let ready = conditions.ready.unwrap_or(true);
    let serving = conditions.serving.unwrap_or(ready);
    let terminating = conditions.terminating.unwrap_or(false);
    let local = !node.name.is_empty() && endpoint.node_name.as_deref() == Some(&node.name);
    endpoint
        .addresses
        .iter()
        .filter_map(|a| a.parse::<Ipv4Addr>().ok())
        .map(move |addr| Candidate {
            backend: Backend { addr, port, local },
            ready,
            serving,
            terminating,
        })
}

/// kube-proxy's choice among the endpoints `keep` admits: the ready ones, or when none is
/// ready, the serving ones that are terminating. This node's first, then by address.
fn choose(endpoints: &[Candidate], keep: impl Fn(&Backend) -> bool) -> Vec<Backend> {
    let pool: Vec<&Candidate> = endpoints.iter().filter(|c| keep(&c.backend)).collect();
    let ready: Vec<Backend> = pool.iter().filter(|c| c.ready).map(|c| c.backend).collect();
    let mut chosen = if ready.is_empty() {
        pool.iter()
            .filter(|c| c.serving && c.terminating)
            .map(|c| c.backend)
            .collect()
    } else {
        ready
    };
    chosen.sort_by_key(|b| (!b.local, b.addr, b.port));
    chosen.dedup();
    chosen
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
