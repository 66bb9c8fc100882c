//! ClusterIP and NodePort allocation for Services. Every allocated address and port is a
//! key in the store (`/registry/ranges/serviceips/<ip>`, `…/servicenodeports/<port>`)
//! made with the store's create-if-absent, so two API servers (or two concurrent creates)
//! never hand out the same one. Allocations are made before the Service is stored and
//! released if storing fails, and when the Service is deleted or gives a port up.

mod ranges;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use jiff::Timestamp;
use rand::Rng;
use serde_json::{Value, json};

use ranges::{IpRequest, Request};
pub use ranges::{PortRange, ServiceCidr};

use super::admit::{self, meta_str};
use super::registry;
use super::request::WriteOptions;
use super::status::{ApiError, Cause};
use crate::store::{ListOptions, Store, StoreError};

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
/// Random picks before falling back to a scan of what is taken.
const RANDOM_TRIES: usize = 32;

/// The two allocators of a cluster.
#[derive(Debug, Clone)]
pub struct ServiceAllocator {
    pub cidr: ServiceCidr,
    pub node_ports: PortRange,
}

/// What one write claimed, so that a failed write can give it back.
#[derive(Debug, Default)]
pub struct Reservation {
    ips: Vec<Ipv4Addr>,
    ports: Vec<u16>,
}

impl Reservation {
    /// The node ports claimed.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
}

/// A node port to write into the port with this number and protocol.
#[derive(Debug, Clone)]
pub struct PortFill {
    pub port: Value,
    pub protocol: Value,
    pub node_port: u16,
}

impl PortFill {
    /// Writes the fills into `svc`'s ports that still have no node port.
    pub fn apply(fills: &[PortFill], svc: &mut Value) {
        let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
            return;
        };
        for port in ports {
            let unset = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0) == 0;
            let fill = fills.iter().find(|f| {
                Some(&f.port) == port.get("port") && Some(&f.protocol) == port.get("protocol")
            });
            if let (true, Some(fill)) = (unset, fill) {
                port["nodePort"] = json!(fill.node_port);
            }
        }
    }
}

/// The node ports a Service holds.
pub fn node_ports_of(svc: &Value) -> Vec<u16> {
    ranges::node_ports_of(svc)
}

fn invalid(name: &str, cause: Cause) -> ApiError {
    ApiError::invalid("", "Service", name, vec![cause])
}

fn owner(svc: &Value) -> Vec<u8> {
    let id = json!({
        "namespace": meta_str(svc, "namespace"),
        "name": meta_str(svc, "name"),
        "uid": meta_str(svc, "uid"),
    });
    serde_json::to_vec(&id).unwrap_or_default()
}

fn store_error(e: StoreError) -> ApiError {
    ApiError::from_store(e, "", "services", "")
}

impl ServiceAllocator {
    /// The allocators for `cidr` and `node_ports`.
    pub fn new(cidr: ServiceCidr, node_ports: PortRange) -> Self {
        ServiceAllocator { cidr, node_ports }
    }

    /// Claims `key` for `svc`; `false` if someone holds it.
    async fn claim(store: &dyn Store, key: String, svc: &Value) -> Result<bool, ApiError> {
        match store.create(&key, owner(svc)).await {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Keys taken under `prefix`, by their last segment.
    async fn taken(store: &dyn Store, prefix: &str) -> Result<HashSet<String>, ApiError> {
        let mut out = HashSet::new();
        let mut token = None;
        loop {
            let options = ListOptions {
                limit: Some(10_000),
                continue_token: token,
                revision: None,
            };
            let page = store.list(prefix, options).await.map_err(store_error)?;
            out.extend(
                page.items
                    .iter()
                    .map(|kv| kv.key.trim_start_matches(prefix).to_owned()),
            );
            token = page.continue_token;
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Any free address: random picks in the dynamic band, then in the whole range, then
    /// a scan of what is taken.
    async fn any_ip(&self, store: &dyn Store, svc: &Value) -> Result<Ipv4Addr, ApiError> {
        let (start, end) = (self.cidr.dynamic_start(), self.cidr.size() - 1);
        for i in 0..RANDOM_TRIES * 2 {
            let low = if i < RANDOM_TRIES { start } else { 2 };
            let ip = self.cidr.nth(rand::rng().random_range(low..end));
            if Self::claim(store, format!("{IP_PREFIX}{ip}"), svc).await? {
                return Ok(ip);
            }
        }
        let taken = Self::taken(store, IP_PREFIX).await?;
        for offset in (start..end).chain(2..start) {
            let ip = self.cidr.nth(offset);
            if !taken.contains(&ip.to_string())
                && Self::claim(store, format!("{IP_PREFIX}{ip}"), svc).await?
            {
                return Ok(ip);
            }
        }
        Err(ApiError::internal(
            "Internal error occurred: failed to allocate a serviceIP: range is full",
        ))
    }

    async fn any_port(&self, store: &dyn Store, svc: &Value) -> Result<u16, ApiError> {
        let range = self.node_ports;
        for _ in 0..RANDOM_TRIES {
            let port = rand::rng().random_range(range.first..=range.last);
            if Self::claim(store, format!("{PORT_PREFIX}{port}"), svc).await? {
                return Ok(port);
            }
        }
        let taken = Self::taken(store, PORT_PREFIX).await?;
        for port in range.first..=range.last {
            if !taken.contains(&port.to_string())
                && Self::claim(store, format!("{PORT_PREFIX}{port}"), svc).await?
            {
                return Ok(port);
            }
        }
        Err(ApiError::internal(
            "Internal error occurred: failed to allocate a nodePort: range is full",
        ))
    }

    /// Claims what the new Service `svc` asks for and writes it into the object; on an
    /// error, nothing stays claimed.
    pub async fn reserve(
        &self,
        store: &dyn Store,
        svc: &mut Value,
    ) -> Result<Reservation, ApiError> {
        let name = meta_str(svc, "name").unwrap_or("").to_owned();
        let request = ranges::request(svc, &self.cidr, &self.node_ports)
            .map_err(|causes| ApiError::invalid("", "Service", &name, causes))?;
        let mut held = Reservation::default();
        match self.fill(store, svc, &name, &request, &mut held).await {
            Ok(()) => Ok(held),
            Err(e) => {
                self.release(store, &held).await;
                Err(e)
            }
        }
    }

    async fn fill(
        &self,
        store: &dyn Store,
        svc: &mut Value,
        name: &str,
        request: &Request,
        held: &mut Reservation,
    ) -> Result<(), ApiError> {
        let ip = match request.ip {
            IpRequest::Nothing => None,
            IpRequest::Headless => Some("None".to_owned()),
            IpRequest::Explicit(ip) => {
                if !Self::claim(store, format!("{IP_PREFIX}{ip}"), svc).await? {
                    return Err(invalid(
                        name,
                        Cause {
                            reason: "FieldValueInvalid",
                            field: "spec.clusterIPs".into(),
                            message: format!(
                                "Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: provided IP is already allocated"
                            ),
                        },
                    ));
                }
                held.ips.push(ip);
                Some(ip.to_string())
            }
            IpRequest::Any => {
                let ip = self.any_ip(store, svc).await?;
                held.ips.push(ip);
                Some(ip.to_string())
            }
        };
        if let Some(ip) = ip {
            let spec = &mut svc["spec"];
            spec["clusterIP"] = json!(ip);
            spec["clusterIPs"] = json!([ip]);
            spec["ipFamilies"] = json!(["IPv4"]);
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
        for &(index, explicit) in &request.node_ports {
            let port = match explicit {
                Some(port) => {
                    if !Self::claim(store, format!("{PORT_PREFIX}{port}"), svc).await? {
                        return Err(invalid(
                            name,
                            Cause {
                                reason: "FieldValueInvalid",
                                field: format!("spec.ports[{index}].nodePort"),
                                message: format!(
                                    "Invalid value: {port}: provided port is already allocated"
                                ),
                            },
                        ));
                    }
                    port
                }
                None => self.any_port(store, svc).await?,
            };
            held.ports.push(port);
            svc["spec"]["ports"][index]["nodePort"] = json!(port);
        }
        if ranges::needs_node_ports(svc) {
            let spec = &mut svc["spec"];
            if spec.get("externalTrafficPolicy").is_none() {
                spec["externalTrafficPolicy"] = json!("Cluster");
            }
        }
        Ok(())
    }

    /// Gives back what a reservation holds (best effort: a failure leaves a key that
    /// only costs one address or port).
    pub async fn release(&self, store: &dyn Store, held: &Reservation) {
        for ip in &held.ips {
            let _ = store.delete(&format!("{IP_PREFIX}{ip}"), None).await;
        }
        for port in &held.ports {
            let _ = store.delete(&format!("{PORT_PREFIX}{port}"), None).await;
        }
    }

    /// Releases what a deleted Service held.
    pub async fn release_object(&self, store: &dyn Store, svc: &Value) {
        let held = Reservation {
            ips: ranges::ips_of(svc),
            ports: ranges::node_ports_of(svc),
        };
        self.release(store, &held).await;
    }

    /// Before an update: claims a node port for every port of the updated Service
    /// `candidate` that needs one and has none (a type change to NodePort, an added port).
    /// Returns `(port, protocol, node port)` to fill in, and the claim.
    pub async fn fill_missing(
        &self,
        store: &dyn Store,
        candidate: &Value,
    ) -> Result<(Vec<PortFill>, Reservation), ApiError> {
        let mut fills = Vec::new();
        let mut held = Reservation::default();
        if !ranges::needs_node_ports(candidate) {
            return Ok((fills, held));
        }
        let list = candidate.pointer("/spec/ports").and_then(Value::as_array);
        for port in list.into_iter().flatten() {
            if port.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                continue;
            }
            match self.any_port(store, candidate).await {
                Ok(n) => {
                    held.ports.push(n);
                    fills.push(PortFill {
                        port: port.get("port").cloned().unwrap_or_default(),
                        protocol: port.get("protocol").cloned().unwrap_or_default(),
                        node_port: n,
                    });
                }
                Err(e) => {
                    self.release(store, &held).await;
                    return Err(e);
                }
            }
        }
        Ok((fills, held))
    }

    /// After an update: releases the node ports of `before` (the old object's and those
    /// claimed for the update) that the stored object `after` does not use.
    pub async fn release_unused(&self, store: &dyn Store, before: &[u16], after: &Value) {
        let kept: HashSet<u16> = ranges::node_ports_of(after).into_iter().collect();
        let ports = before
            .iter()
            .copied()
            .filter(|p| !kept.contains(p))
            .collect();
        let held = Reservation {
            ips: Vec::new(),
            ports,
        };
        self.release(store, &held).await;
    }

    /// Checks a new explicit node port of an update is free and claims it.
    pub async fn claim_new_ports(
        &self,
        store: &dyn Store,
        old: &Value,
        new: &Value,
    ) -> Result<Reservation, ApiError> {
        let before: HashSet<u16> = ranges::node_ports_of(old).into_iter().collect();
        let name = meta_str(new, "name").unwrap_or("").to_owned();
        let mut held = Reservation::default();
        let list = new.pointer("/spec/ports").and_then(Value::as_array);
        for (i, port) in list.into_iter().flatten().enumerate() {
            let Some(n) = port.get("nodePort").and_then(Value::as_u64) else {
                continue;
            };
            let Ok(n) = u16::try_from(n) else { continue };
            if n == 0 || before.contains(&n) || held.ports.contains(&n) {
                continue;
            }
            if !self.node_ports.contains(i64::from(n)) {
                self.release(store, &held).await;
                return Err(invalid(
                    &name,
                    Cause {
                        reason: "FieldValueInvalid",
                        field: format!("spec.ports[{i}].nodePort"),
                        message: format!(
                            "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}",
                            self.node_ports.first, self.node_ports.last
                        ),
                    },
                ));
            }
            if !Self::claim(store, format!("{PORT_PREFIX}{n}"), new).await? {
                self.release(store, &held).await;
                return Err(invalid(
                    &name,
                    Cause {
                        reason: "FieldValueInvalid",
                        field: format!("spec.ports[{i}].nodePort"),
                        message: format!("Invalid value: {n}: provided port is already allocated"),
                    },
                ));
            }
            held.ports.push(n);
        }
        Ok(held)
    }
}

/// The update-time rule of `ranges::keep_allocated`, as the admission pipeline calls it.
pub fn keep_allocated(old: &Value, new: &mut Value) -> Result<(), ApiError> {
    ranges::keep_allocated(old, new).map_err(|cause| {
        let name = meta_str(old, "name").unwrap_or("").to_owned();
        invalid(&name, cause)
    })
}

/// Writes `object` (a Service or Endpoints of `default/kubernetes`) unless the stored one
/// already has the same `spec.ports`/`subsets`; keeps the stored identity.
async fn put_default(
    store: &dyn Store,
    plural: &str,
    mut object: Value,
    compare: &str,
) -> Result<(), ApiError> {
    let Some(resource) = registry::find("", "v1", plural) else {
        return Ok(());
    };
    let key = resource.key(Some("default"), "kubernetes");
    let opts = WriteOptions::default();
    match store.get(&key).await.map_err(store_error)? {
        Some(kv) => {
            let old: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
            if old.pointer(compare) == object.pointer(compare) {
                return Ok(());
            }
            let mut next = old.clone();
            if let (Some(slot), Some(v)) = (next.pointer_mut(compare), object.pointer(compare)) {
                *slot = v.clone();
            }
            let bytes = serde_json::to_vec(&next).unwrap_or_default();
            match store.update(&key, bytes, Some(kv.mod_revision)).await {
                Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
                Err(e) => Err(store_error(e)),
            }
        }
        None => {
            object =
                admit::prepare_create(resource, object, Some("default"), Timestamp::now(), &opts)?;
            let bytes = serde_json::to_vec(&object).unwrap_or_default();
            match store.create(&key, bytes).await {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(store_error(e)),
            }
        }
    }
}

impl ServiceAllocator {
    /// The `kubernetes` Service in `default` at the first address of the range, port 443
    /// to the API server's port, and its Endpoints with the server's address.
    pub async fn ensure_kubernetes_service(
        &self,
        store: &dyn Store,
        server: std::net::SocketAddr,
    ) -> Result<(), ApiError> {
        let ip = self.cidr.first();
        let port = server.port();
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": ip.to_string(),
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
        });
        let resource = registry::find("", "v1", "services");
        let key = resource.map(|r| r.key(Some("default"), "kubernetes"));
        let exists = match key {
            Some(key) => store.get(&key).await.map_err(store_error)?.is_some(),
            None => true,
        };
        if !exists {
            // Claim the address first; a leftover claim from an earlier start is fine.
            let _ = Self::claim(store, format!("{IP_PREFIX}{ip}"), &svc).await?;
            let spec = &mut svc["spec"];
            spec["clusterIPs"] = json!([ip.to_string()]);
            spec["ipFamilies"] = json!(["IPv4"]);
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
        put_default(store, "services", svc, "/spec/ports").await?;
        let host = match server.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            ip => ip.to_string(),
        };
        let endpoints = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": host}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
        });
        put_default(store, "endpoints", endpoints, "/subsets").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    fn svc(name: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "d", "uid": name}, "spec": spec})
    }

    #[tokio::test]
    async fn a_small_range_fills_up_and_failed_claims_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let alloc = ServiceAllocator::new(
            ServiceCidr::parse("10.0.0.0/29").unwrap(),
            PortRange::parse("30000-30001").unwrap(),
        );
        // /29: 8 addresses, .0 and .7 unusable, .1 for `kubernetes`: .2 to .6 are dynamic.
        let mut got = HashSet::new();
        for i in 0..5 {
            let mut s = svc(&format!("s{i}"), json!({"type": "ClusterIP"}));
            alloc.reserve(&store, &mut s).await.unwrap();
            got.insert(s["spec"]["clusterIP"].as_str().unwrap().to_owned());
        }
        assert_eq!(got.len(), 5);
        assert!(!got.contains("10.0.0.1"));
        let mut full = svc("full", json!({"type": "ClusterIP"}));
        let err = alloc.reserve(&store, &mut full).await.unwrap_err();
        assert_eq!(err.code, 500);
        assert!(err.message.contains("range is full"), "{}", err.message);

        // Releasing one makes room; a taken node port rolls the IP claim back.
        let mut first = svc("s0", json!({"clusterIP": "10.0.0.2"}));
        alloc.release_object(&store, &first).await;
        let mut np = svc(
            "np",
            json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80, "nodePort": 30000}]}),
        );
        alloc
            .reserve(&store, &mut np)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut clash = svc(
            "clash",
            json!({"type": "NodePort", "clusterIP": "10.0.0.1", "ports": [{"port": 80, "nodePort": 30000}]}),
        );
        assert_eq!(
            alloc.reserve(&store, &mut clash).await.unwrap_err().code,
            422
        );
        assert!(
            store
                .get("/registry/ranges/serviceips/10.0.0.1")
                .await
                .unwrap()
                .is_none()
        );
        alloc
            .reserve(&store, &mut first)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
