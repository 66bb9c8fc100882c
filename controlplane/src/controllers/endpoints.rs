//! The Endpoints and EndpointSlice controller: for each Service with a selector, the pods
//! it selects (with an IP) become addresses — ready, not ready, and (in slices) serving and
//! terminating — with named target ports resolved per pod from its container ports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Reconcile;
use super::informer::{Event, Informer, key_of, split_key};
use super::meta::{controller_ref, is_ready, name, namespace};
use super::queue::Queue;
use crate::apiserver::{ApiError, Client, DeleteOptions};

/// The label naming a slice's Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGER: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice, as kube-controller-manager's default.
const PER_SLICE: usize = 100;

/// A resolved service port: name, port number, protocol.
pub type Port = (Option<String>, i32, String);
/// Backends grouped by the ports they resolve to.
pub type Groups = BTreeMap<Vec<Port>, Vec<Backend>>;

/// One selected pod, as an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub ip: String,
    pub node: Option<String>,
    pub target: ObjectReference,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// The service ports resolved for one pod: `(name, port, protocol)`; a named target port
/// the pod does not have leaves that port out.
fn resolve_ports(svc: &Service, pod: &Pod) -> Vec<Port> {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or(&[]);
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let port = match &p.target_port {
                None => p.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(named)) => containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .find(|cp| cp.name.as_deref() == Some(named.as_str()))
                    .map(|cp| cp.container_port)?,
            };
            Some((p.name.clone(), port, protocol))
        })
        .collect()
}

/// The backends of `svc` among `pods`, grouped by their resolved ports.
pub fn backends(svc: &Service, pods: &[Arc<Pod>]) -> Groups {
    let mut groups: BTreeMap<_, Vec<Backend>> = BTreeMap::new();
    let Some(selector) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    else {
        return groups;
    };
    let publish_all = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        == Some(true);
    for pod in pods {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if selector.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            continue;
        }
        let status = pod.status.as_ref();
        let Some(ip) = status
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = publish_all || is_ready(pod);
        groups
            .entry(resolve_ports(svc, pod))
            .or_default()
            .push(Backend {
                ip,
                node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                target: ObjectReference {
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    namespace: pod.metadata.namespace.clone(),
                    uid: pod.metadata.uid.clone(),
                    ..ObjectReference::default()
                },
                ready: serving && !terminating,
                serving,
                terminating,
            });
    }
    for list in groups.values_mut() {
        list.sort_by(|a, b| a.ip.cmp(&b.ip).then(a.target.name.cmp(&b.target.name)));
    }
    groups
}

/// The Endpoints object's subsets (terminating pods are left out, as Kubernetes does).
pub fn subsets(groups: &Groups) -> Option<Vec<EndpointSubset>> {
    let address = |b: &Backend| EndpointAddress {
        ip: b.ip.clone(),
        node_name: b.node.clone(),
        target_ref: Some(b.target.clone()),
        hostname: None,
    };
    let subsets: Vec<EndpointSubset> = groups
        .iter()
        .filter_map(|(ports, list)| {
            let ready: Vec<_> = list.iter().filter(|b| b.ready).map(address).collect();
            let not_ready: Vec<_> = list
                .iter()
                .filter(|b| !b.ready && !b.terminating)
                .map(address)
                .collect();
            if ready.is_empty() && not_ready.is_empty() {
                return None;
            }
            Some(EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name: name.clone(),
                            port: *port,
                            protocol: Some(protocol.clone()),
                            app_protocol: None,
                        })
                        .collect(),
                ),
            })
        })
        .collect();
    (!subsets.is_empty()).then_some(subsets)
}

/// The slices of a Service: at most 100 endpoints each, one port set per slice.
pub fn slices(svc: &Service, groups: &Groups) -> Vec<EndpointSlice> {
    let mut out = Vec::new();
    let labels: BTreeMap<String, String> = [
        (SERVICE_NAME.to_owned(), name(svc).to_owned()),
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
    ]
    .into();
    let mut push = |ports: &[Port], chunk: &[Backend]| {
        out.push(EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", name(svc))),
                namespace: Some(namespace(svc).to_owned()),
                labels: Some(labels.clone()),
                owner_references: Some(vec![controller_ref(svc)]),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: chunk
                .iter()
                .map(|b| Endpoint {
                    addresses: vec![b.ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(b.ready),
                        serving: Some(b.serving),
                        terminating: Some(b.terminating),
                    }),
                    node_name: b.node.clone(),
                    target_ref: Some(b.target.clone()),
                    ..Endpoint::default()
                })
                .collect(),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port, protocol)| SlicePort {
                        name: name.clone(),
                        port: Some(*port),
                        protocol: Some(protocol.clone()),
                        app_protocol: None,
                    })
                    .collect(),
            ),
        });
    };
    let mut any = false;
    for (ports, list) in groups {
        for chunk in list.chunks(PER_SLICE) {
            push(ports, chunk);
            any = true;
        }
    }
    if !any {
        // A selected Service with no endpoints still has one (empty) slice.
        push(&[], &[]);
    }
    out
}

/// The controller.
pub struct EndpointsController {
    client: Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    endpoints: Informer<Endpoints>,
    slices: Informer<EndpointSlice>,
}

impl EndpointsController {
    /// Wires the controller to the informers; returns it and its queue.
    pub fn new(
        client: Client,
        services: &Informer<Service>,
        pods: &Informer<Pod>,
        endpoints: &Informer<Endpoints>,
        slices: &Informer<EndpointSlice>,
    ) -> (Arc<Self>, Queue) {
        let queue = Queue::new();
        let q = queue.clone();
        services.on_change(move |event| match event {
            Event::Applied { new, .. } => q.add(key_of(new.as_ref())),
            Event::Deleted(old) => q.add(key_of(old.as_ref())),
        });
        let controller = Arc::new(EndpointsController {
            client,
            services: services.clone(),
            pods: pods.clone(),
            endpoints: endpoints.clone(),
            slices: slices.clone(),
        });
        let (q, c) = (queue.clone(), controller.clone());
        pods.on_change(move |event| {
            let (new, old) = match event {
                Event::Applied { new, old } => (new, old.as_ref()),
                Event::Deleted(old) => (old, None),
            };
            for pod in std::iter::once(new).chain(old) {
                for svc in c.services.list_namespace(namespace(pod.as_ref())) {
                    let selects = svc
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .is_some_and(|sel| {
                            !sel.is_empty()
                                && sel.iter().all(|(k, v)| {
                                    pod.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v)
                                })
                        });
                    if selects {
                        q.add(key_of(svc.as_ref()));
                    }
                }
            }
        });
        (controller, queue)
    }

    async fn sync_endpoints(
        &self,
        key: &str,
        svc: &Service,
        subsets: Option<Vec<EndpointSubset>>,
    ) -> Result<(), ApiError> {
        let (ns, svc_name) = split_key(key);
        match self.endpoints.get(key) {
            Some(current)
                if current.subsets == subsets && current.metadata.labels == svc.metadata.labels =>
            {
                Ok(())
            }
            Some(current) => {
                let mut next = (*current).clone();
                next.subsets = subsets;
                next.metadata.labels = svc.metadata.labels.clone();
                self.client.replace(&next).await.map(|_| ())
            }
            None => {
                let endpoints = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(svc_name.to_owned()),
                        namespace: ns.map(str::to_owned),
                        labels: svc.metadata.labels.clone(),
                        ..ObjectMeta::default()
                    },
                    subsets,
                };
                match self.client.create(&endpoints).await {
                    Err(e) if e.code == 409 => Err(e), // cache lag: retried with fresh data
                    other => other.map(|_| ()),
                }
            }
        }
    }

    async fn sync_slices(&self, key: &str, wanted: Vec<EndpointSlice>) -> Result<(), ApiError> {
        let (ns, svc_name) = split_key(key);
        let mut existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .list_namespace(ns.unwrap_or(""))
            .into_iter()
            .filter(|s| {
                let labels = s.metadata.labels.as_ref();
                labels.and_then(|l| l.get(SERVICE_NAME)).map(String::as_str) == Some(svc_name)
                    && labels.and_then(|l| l.get(MANAGED_BY)).map(String::as_str) == Some(MANAGER)
            })
            .collect();
        existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut existing = existing.into_iter();
        for want in wanted {
            match existing.next() {
                Some(current) => {
                    if current.endpoints != want.endpoints || current.ports != want.ports {
                        let mut next = (*current).clone();
                        next.endpoints = want.endpoints;
                        next.ports = want.ports;
                        self.client.replace(&next).await?;
                    }
                }
                None => {
                    self.client.create(&want).await?;
                }
            }
        }
        for surplus in existing {
            let options = DeleteOptions {
                uid: surplus.metadata.uid.clone(),
                ..DeleteOptions::default()
            };
            self.client
                .delete::<EndpointSlice>(ns, name(surplus.as_ref()), options)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Reconcile for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>, ApiError> {
        let (ns, svc_name) = split_key(key);
        let Some(svc) = self.services.get(key) else {
            // Slices go with their owner (garbage collector); Endpoints are ours to remove.
            if self.endpoints.get(key).is_some() {
                self.client
                    .delete::<Endpoints>(ns, svc_name, DeleteOptions::default())
                    .await?;
            }
            return Ok(None);
        };
        let has_selector = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| !s.is_empty());
        if !has_selector {
            return Ok(None); // endpoints of a selector-less Service are the user's
        }
        let pods = self.pods.list_namespace(ns.unwrap_or(""));
        let groups = backends(&svc, &pods);
        self.sync_endpoints(key, &svc, subsets(&groups)).await?;
        self.sync_slices(key, slices(&svc, &groups)).await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(target: serde_json::Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "uid": "s-1"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": target}]}}))
        .unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, extra: serde_json::Value) -> Arc<Pod> {
        let mut p = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
        json_patch::merge(&mut p, &extra);
        Arc::new(serde_json::from_value(p).unwrap())
    }

    #[test]
    fn ready_not_ready_and_terminating_pods_land_where_kubernetes_puts_them() {
        let pods = vec![
            pod("a", "10.0.0.1", true, json!({})),
            pod("b", "10.0.0.2", false, json!({})),
            pod(
                "c",
                "10.0.0.3",
                true,
                json!({"metadata": {"deletionTimestamp": "2026-03-01T10:00:00Z"}}),
            ),
            pod("d", "", true, json!({})),
            pod(
                "e",
                "10.0.0.5",
                true,
                json!({"metadata": {"labels": {"app": "db"}}}),
            ),
        ];
        let groups = backends(&svc(json!(8080)), &pods);
        let subsets = subsets(&groups).unwrap();
        assert_eq!(subsets.len(), 1);
        let ips = |a: &Option<Vec<EndpointAddress>>| {
            a.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>()
        };
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1"]);
        assert_eq!(
            ips(&subsets[0].not_ready_addresses),
            ["10.0.0.2"],
            "terminating pods left out"
        );
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
        let slice = &slices(&svc(json!(8080)), &groups)[0];
        let conds: Vec<(String, bool, bool, bool)> = slice
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap();
                (
                    e.addresses[0].clone(),
                    c.ready.unwrap(),
                    c.serving.unwrap(),
                    c.terminating.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            conds,
            [
                ("10.0.0.1".into(), true, true, false),
                ("10.0.0.2".into(), false, false, false),
                ("10.0.0.3".into(), false, true, true),
            ]
        );
        assert_eq!(slice.metadata.labels.as_ref().unwrap()[SERVICE_NAME], "web");
        assert_eq!(
            slice.metadata.owner_references.as_ref().unwrap()[0].uid,
            "s-1"
        );
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let pods = vec![
            pod("a", "10.0.0.1", true, json!({})),
            pod(
                "b",
                "10.0.0.2",
                true,
                json!({"spec": {"containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 9090}]}]}}),
            ),
            pod(
                "c",
                "10.0.0.3",
                true,
                json!({"spec": {"containers": [{"name": "c"}]}}),
            ),
        ];
        let groups = backends(&svc(json!("web")), &pods);
        let ports: Vec<i32> = subsets(&groups)
            .unwrap()
            .iter()
            .map(|s| s.ports.as_ref().unwrap().first().map_or(0, |p| p.port))
            .collect();
        assert_eq!(ports.len(), 3, "one subset per port set: {ports:?}");
        assert!(ports.contains(&8080) && ports.contains(&9090));
    }

    #[test]
    fn slices_hold_at_most_a_hundred_endpoints_and_an_empty_service_has_one() {
        let pods: Vec<_> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.1.{}.{}", i / 200, i % 200),
                    true,
                    json!({}),
                )
            })
            .collect();
        let groups = backends(&svc(json!(8080)), &pods);
        let sizes: Vec<usize> = slices(&svc(json!(8080)), &groups)
            .iter()
            .map(|s| s.endpoints.len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
        let empty = slices(&svc(json!(8080)), &BTreeMap::new());
        assert_eq!(empty.len(), 1);
        assert!(empty[0].endpoints.is_empty());
        assert!(subsets(&BTreeMap::new()).is_none());
    }
}
