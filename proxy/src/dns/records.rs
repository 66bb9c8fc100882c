//! The cluster's DNS records as data, rebuilt from each [`ClusterState`] (no lookup into
//! the store per query): `svc.ns.svc.DOMAIN` → the ClusterIP, or for a headless Service the
//! ready endpoints' addresses; `_port._proto.svc.ns.svc.DOMAIN` SRV for named ports; an
//! ExternalName Service → a CNAME; for headless Services each endpoint's own name
//! (`hostname.svc…` or `10-244-0-5.svc…`), which SRV targets point at. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use crate::state::{ClusterState, ObjectKey};

/// One SRV record's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Srv {
    pub port: u16,
    /// A name in the cluster domain, lowercase, without the trailing dot.
    pub target: String,
}

/// What one name holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub a: Vec<Ipv4Addr>,
    /// ExternalName: the target (lowercase, no trailing dot).
    pub cname: Option<String>,
    pub srv: Vec<Srv>,
}

/// Every name of the cluster domain, by lowercase name without the trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    domain: String,
    names: BTreeMap<String, Entry>,
    /// Names that exist without records of their own (`ns.svc.DOMAIN`, `svc.DOMAIN`, …):
    /// they answer NODATA, not NXDOMAIN.
    empty: BTreeSet<String>,
}

/// Where a name stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Outside the cluster domain: the upstream resolver's business.
    Foreign,
    Found(&'a Entry),
    /// In the domain, exists, no records of its own.
    Empty,
    /// In the domain, does not exist.
    Missing,
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The endpoints of a Service that DNS publishes: ready ones (a missing `ready` counts as
/// ready, as the API says).
fn ready(endpoint: &Endpoint) -> bool {
    endpoint
        .conditions
        .as_ref()
        .and_then(|c| c.ready)
        .unwrap_or(true)
}

/// An endpoint's own name under its Service: its `hostname`, else its address with dashes.
fn endpoint_label(endpoint: &Endpoint, ip: Ipv4Addr) -> String {
    match endpoint.hostname.as_deref() {
        Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
        _ => ip.to_string().replace('.', "-"),
    }
}

impl Records {
    /// The records of `state` under `domain` (e.g. `cluster.local`).
    pub fn build(state: &ClusterState, domain: &str) -> Records {
        let mut records = Records {
            domain: normalise(domain),
            ..Records::default()
        };
        records.empty.insert(records.domain.clone());
        records.empty.insert(format!("svc.{}", records.domain));
        for (key, svc) in &state.services {
            let slices: Vec<&EndpointSlice> = state.slices_of(key).collect();
            records.add_service(key, svc, &slices);
        }
        for entry in records.names.values_mut() {
            entry.srv.sort();
        }
        records
    }

    /// The cluster domain, lowercase, without the trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// How many names hold records.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether `name` is the cluster domain or below it.
    pub fn in_domain(&self, name: &str) -> bool {
        let name = normalise(name);
        name == self.domain || name.ends_with(&format!(".{}", self.domain))
    }

    /// Looks `name` up (any case, trailing dot or not).
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        let name = normalise(name);
        if !self.in_domain(&name) {
            return Lookup::Foreign;
        }
        match self.names.get(&name) {
            Some(entry) => Lookup::Found(entry),
            None if self.empty.contains(&name) => Lookup::Empty,
            None => Lookup::Missing,
        }
    }

    fn entry(&mut self, name: String) -> &mut Entry {
        self.names.entry(name).or_default()
    }

    fn add_service(&mut self, key: &ObjectKey, svc: &Service, slices: &[&EndpointSlice]) {
        let Some(spec) = svc.spec.as_ref() else {
            return;
        };
        let ns_name = format!("{}.svc.{}", key.namespace.to_ascii_lowercase(), self.domain);
        let name = format!("{}.{ns_name}", key.name.to_ascii_lowercase());
        self.empty.insert(ns_name);
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec.external_name.as_deref().filter(|t| !t.is_empty()) {
                self.entry(name).cname = Some(normalise(target));
            }
            return;
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if headless {
            self.add_headless(&name, slices);
            return;
        }
        let ips: Vec<Ipv4Addr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if ips.is_empty() {
            return;
        }
        for port in spec.ports.iter().flatten() {
            let (Some(port_name), Ok(number)) = (port.name.as_deref(), u16::try_from(port.port))
            else {
                continue;
            };
            if port_name.is_empty() {
                continue;
            }
            let proto = port
                .protocol
                .as_deref()
                .unwrap_or("TCP")
                .to_ascii_lowercase();
            let srv_name = format!("_{}._{proto}.{name}", port_name.to_ascii_lowercase());
            self.entry(srv_name).srv.push(Srv {
                port: number,
                target: name.clone(),
            });
        }
        self.entry(name).a = ips;
    }

    /// A headless Service: the ready endpoints' addresses under the Service's name and
    /// each under its own; SRV per named port pointing at those own names.
    fn add_headless(&mut self, name: &str, slices: &[&EndpointSlice]) {
        let mut all = BTreeSet::new();
        for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
            for endpoint in slice.endpoints.iter().filter(|e| ready(e)) {
                for ip in endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<Ipv4Addr>().ok())
                {
                    all.insert(ip);
                    let own = format!("{}.{name}", endpoint_label(endpoint, ip));
                    let entry = self.entry(own.clone());
                    if !entry.a.contains(&ip) {
                        entry.a.push(ip);
                    }
                    for port in slice.ports.iter().flatten() {
                        let (Some(port_name), Some(number)) = (
                            port.name.as_deref().filter(|n| !n.is_empty()),
                            port.port.and_then(|p| u16::try_from(p).ok()),
                        ) else {
                            continue;
                        };
                        let proto = port
                            .protocol
                            .as_deref()
                            .unwrap_or("TCP")
                            .to_ascii_lowercase();
                        let srv_name =
                            format!("_{}._{proto}.{name}", port_name.to_ascii_lowercase());
                        let srv = Srv {
                            port: number,
                            target: own.clone(),
                        };
                        let entry = self.entry(srv_name);
                        if !entry.srv.contains(&srv) {
                            entry.srv.push(srv);
                        }
                    }
                }
            }
        }
        if all.is_empty() {
            // Exists, no ready endpoint: NODATA rather than NXDOMAIN.
            self.empty.insert(name.to_owned());
        } else {
            self.entry(name.to_owned()).a = all.into_iter().collect();
        }
    }
}
