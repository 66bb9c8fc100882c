//! The node contract's server side (`skiff-api`'s `proto/node.proto`): the gRPC service
//! kubelets dial. Every call names no node: the caller's identity (the client certificate
//! it got when it joined, mutual TLS) says which node it is, and a node reaches only its own Node and
//! Lease, the pods bound to it, and the ConfigMaps and Secrets those pods use — the same
//! rules as the API server's node authorizer. Writes go through the in-process API client,
//! so admission, validation and watches are the API server's own.

pub mod dns;
mod podcidr;
mod refs;
mod routes;
mod server;
mod services;
mod watch;

use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Node, NodeSpec, NodeStatus, Pod, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use serde::de::DeserializeOwned;
use skiff_api::node::node_server;
use skiff_api::node::{
    EventRequest, EventResponse, HeartbeatRequest, HeartbeatResponse, ObjectRequest,
    ObjectResponse, PodEvent, PodRef, PodStatusRequest, PodStatusResponse, PodTerminatedResponse,
    RegisterRequest, RegisterResponse, WatchNodesRequest, WatchPodsRequest,
};
use tonic::{Request, Response, Status};

use crate::apiserver::{self, ApiError, Client, DeleteOptions};
use crate::controllers::events;

pub use podcidr::{PodCidrError, PodCidrs};
pub use refs::{RefKind, uses};
pub use routes::routes;
pub use server::{NodeServer, NodeServerError, serve};
pub use services::ServiceFeed;

/// What the control plane tells every node.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub pod_cidrs: PodCidrs,
    /// The cluster DNS Service address (the tenth of the Service range, as kubeadm picks).
    pub cluster_dns: Ipv4Addr,
    pub cluster_domain: String,
    pub service_cidr: String,
    /// How often nodes renew their Lease.
    pub heartbeat: Duration,
}

impl NodeSettings {
    /// Pods in 10.244.0.0/16 (a /24 per node), DNS at the Service range's tenth address,
    /// `cluster.local`, a 10 s heartbeat.
    pub fn new(service_cidr: apiserver::ServiceCidr) -> NodeSettings {
        NodeSettings {
            pod_cidrs: PodCidrs::new(
                ipnet::Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
                24,
            )
            .unwrap_or_else(|_| unreachable!("a /24 fits a /16")),
            cluster_dns: service_cidr.nth(10),
            cluster_domain: "cluster.local".into(),
            service_cidr: service_cidr.to_string(),
            heartbeat: Duration::from_secs(10),
        }
    }
}

/// The service; cheap to clone.
#[derive(Clone)]
pub struct NodeService {
    client: Client,
    settings: Arc<NodeSettings>,
    /// Registration reads every Node's podCIDR and writes one: one at a time.
    register: Arc<tokio::sync::Mutex<()>>,
}

/// An API error as a gRPC status (the Kubernetes reason and message kept).
pub fn status_of(e: ApiError) -> Status {
    let message = e.message;
    match e.code {
        400 | 422 => Status::invalid_argument(message),
        401 => Status::unauthenticated(message),
        403 => Status::permission_denied(message),
        404 => Status::not_found(message),
        409 => Status::aborted(message),
        410 => Status::out_of_range(message),
        429 | 503 => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes).map_err(|e| {
        Status::invalid_argument(format!("{what} is not valid JSON for its kind: {e}"))
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The calling node, from its client certificate (the TLS layer required one signed by the
/// cluster CA; its CN says which node it is).
fn identify<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().and_then(|c| apiserver::node_name(c)))
        .ok_or_else(|| {
            Status::unauthenticated("a node client certificate (CN system:node:NAME) is required")
        })
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

impl NodeService {
    pub fn new(client: Client, settings: NodeSettings) -> NodeService {
        NodeService {
            client,
            settings: Arc::new(settings),
            register: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn identify<T>(&self, request: &Request<T>) -> Result<String, Status> {
        identify(request)
    }

    fn same_node(identity: &str, claimed: &str) -> Result<(), Status> {
        if claimed.is_empty() || claimed == identity {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "node {identity:?} cannot act for node {claimed:?}"
            )))
        }
    }

    /// The pod, if it is bound to `node` (and has `uid`, when one is given).
    async fn own_pod(
        &self,
        node: &str,
        ns: &str,
        name: &str,
        uid: &str,
    ) -> Result<Option<Pod>, Status> {
        let Some(pod) = self
            .client
            .get_opt::<Pod>(Some(ns), name)
            .await
            .map_err(status_of)?
        else {
            return Ok(None);
        };
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
        if !bound {
            return Err(Status::permission_denied(format!(
                "node {node:?} cannot touch pod {ns}/{name}: it is not bound to that node"
            )));
        }
        if !uid.is_empty() && pod.metadata.uid.as_deref() != Some(uid) {
            return Ok(None);
        }
        Ok(Some(pod))
    }

    async fn register_node(&self, node: &str, mut desired: Node) -> Result<Node, Status> {
        let _one = self.register.lock().await;
        let existing = self
            .client
            .get_opt::<Node>(None, node)
            .await
            .map_err(status_of)?;
        let status = desired.status.take();
        let mut stored = match existing {
            Some(mut current) => {
                let labels = current.metadata.labels.get_or_insert_default();
                labels.extend(desired.metadata.labels.unwrap_or_default());
                let spec = current.spec.get_or_insert_default();
                if spec.pod_cidr.is_none() {
                    let cidr = self.free_cidr().await?;
                    spec.pod_cidr = Some(cidr.clone());
                    spec.pod_cidrs = Some(vec![cidr]);
                }
                self.client.replace(&current).await.map_err(status_of)?
            }
            None => {
                let cidr = self.free_cidr().await?;
                desired.spec = Some(NodeSpec {
                    pod_cidr: Some(cidr.clone()),
                    pod_cidrs: Some(vec![cidr]),
                    ..desired.spec.unwrap_or_default()
                });
                self.client.create(&desired).await.map_err(status_of)?
            }
        };
        if let Some(status) = status {
            stored = self.write_node_status(node, status).await?;
        }
        Ok(stored)
    }

    async fn free_cidr(&self) -> Result<String, Status> {
        let nodes = self
            .client
            .list::<Node>(None, "")
            .await
            .map_err(status_of)?;
        let used = nodes
            .items
            .iter()
            .filter_map(|n| n.spec.as_ref()?.pod_cidr.as_deref());
        self.settings
            .pod_cidrs
            .next_free(used)
            .map(|c| c.to_string())
            .map_err(|e| Status::resource_exhausted(e.to_string()))
    }

    /// Sets the node's status, keeping conditions the control plane owns (none yet).
    async fn write_node_status(&self, node: &str, status: NodeStatus) -> Result<Node, Status> {
        for _ in 0..5 {
            let mut current = self
                .client
                .get::<Node>(None, node)
                .await
                .map_err(status_of)?;
            current.status = Some(status.clone());
            match self.client.replace_status(&current).await {
                Ok(n) => return Ok(n),
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(status_of(e)),
            }
        }
        Err(Status::aborted(format!(
            "node {node}: status kept conflicting"
        )))
    }

    async fn renew_lease(&self, node: &str) -> Result<(), Status> {
        let ns = "kube-node-lease";
        let duration = i32::try_from(self.settings.heartbeat.as_secs() * 4).unwrap_or(40);
        let spec = |s: Option<LeaseSpec>| LeaseSpec {
            holder_identity: Some(node.to_owned()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(now())),
            ..s.unwrap_or_default()
        };
        match self
            .client
            .get_opt::<Lease>(Some(ns), node)
            .await
            .map_err(status_of)?
        {
            Some(mut lease) => {
                lease.spec = Some(spec(lease.spec.take()));
                self.client.replace(&lease).await.map_err(status_of)?;
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(node.to_owned()),
                        namespace: Some(ns.to_owned()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec(None)),
                };
                match self.client.create(&lease).await {
                    Ok(_) => {}
                    Err(e) if e.code == 409 => {} // a concurrent heartbeat made it
                    Err(e) => return Err(status_of(e)),
                }
            }
        }
        Ok(())
    }
}

type PodStream = Pin<Box<dyn Stream<Item = Result<PodEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl node_server::Node for NodeService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let identity = self.identify(&request)?;
        let desired: Node = decode("node", &request.get_ref().node)?;
        Self::same_node(
            &identity,
            desired.metadata.name.as_deref().unwrap_or_default(),
        )?;
        let mut desired = desired;
        desired.metadata.name = Some(identity.clone());
        let node = self.register_node(&identity, desired).await?;
        self.renew_lease(&identity).await?;
        let s = &self.settings;
        Ok(Response::new(RegisterResponse {
            pod_cidr: node.spec.and_then(|s| s.pod_cidr).unwrap_or_default(),
            cluster_dns: s.cluster_dns.to_string(),
            cluster_domain: s.cluster_domain.clone(),
            service_cidr: s.service_cidr.clone(),
            heartbeat_seconds: u32::try_from(s.heartbeat.as_secs()).unwrap_or(10),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let identity = self.identify(&request)?;
        let r = request.get_ref();
        Self::same_node(&identity, &r.node_name)?;
        self.renew_lease(&identity).await?;
        if !r.status.is_empty() {
            let status: NodeStatus = decode("status", &r.status)?;
            self.write_node_status(&identity, status).await?;
        }
        Ok(Response::new(HeartbeatResponse {}))
    }

    type WatchPodsStream = PodStream;

    async fn watch_pods(
        &self,
        request: Request<WatchPodsRequest>,
    ) -> Result<Response<PodStream>, Status> {
        let identity = self.identify(&request)?;
        let r = request.get_ref();
        Self::same_node(&identity, &r.node_name)?;
        let stream = watch::pods(self.client.clone(), identity, r.resource_version).await?;
        Ok(Response::new(stream))
    }

    type WatchNodesStream = routes::RouteStream;

    async fn watch_nodes(
        &self,
        request: Request<WatchNodesRequest>,
    ) -> Result<Response<routes::RouteStream>, Status> {
        let identity = self.identify(&request)?;
        Self::same_node(&identity, &request.get_ref().node_name)?;
        let stream = routes::watch(self.client.clone(), identity).await?;
        Ok(Response::new(stream))
    }

    async fn update_pod_status(
        &self,
        request: Request<PodStatusRequest>,
    ) -> Result<Response<PodStatusResponse>, Status> {
        let identity = self.identify(&request)?;
        let r = request.get_ref();
        let status: PodStatus = decode("status", &r.status)?;
        for _ in 0..5 {
            let Some(mut pod) = self
                .own_pod(&identity, &r.namespace, &r.name, &r.uid)
                .await?
            else {
                return Err(Status::not_found(format!(
                    "pod {}/{} (uid {}) not found",
                    r.namespace, r.name, r.uid
                )));
            };
            pod.status = Some(status.clone());
            match self.client.replace_status(&pod).await {
                Ok(pod) => {
                    let rv = pod.metadata.resource_version.and_then(|v| v.parse().ok());
                    return Ok(Response::new(PodStatusResponse {
                        resource_version: rv.unwrap_or_default(),
                    }));
                }
                Err(e) if e.code == 409 => continue,
                Err(e) => return Err(status_of(e)),
            }
        }
        Err(Status::aborted(format!(
            "pod {}/{}: status kept conflicting",
            r.namespace, r.name
        )))
    }

    async fn pod_terminated(
        &self,
        request: Request<PodRef>,
    ) -> Result<Response<PodTerminatedResponse>, Status> {
        let identity = self.identify(&request)?;
        let r = request.get_ref();
        if self
            .own_pod(&identity, &r.namespace, &r.name, &r.uid)
            .await?
            .is_none()
        {
            return Ok(Response::new(PodTerminatedResponse {}));
        }
        let options = DeleteOptions {
            uid: (!r.uid.is_empty()).then(|| r.uid.clone()),
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        };
        match self
            .client
            .delete::<Pod>(Some(&r.namespace), &r.name, options)
            .await
        {
            Ok(_) => Ok(Response::new(PodTerminatedResponse {})),
            Err(e) if e.code == 404 || e.code == 409 => Ok(Response::new(PodTerminatedResponse {})),
            Err(e) => Err(status_of(e)),
        }
    }

    async fn get_object(
        &self,
        request: Request<ObjectRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        let identity = self.identify(&request)?;
        let r = request.get_ref();
        let kind = RefKind::parse(&r.kind).ok_or_else(|| {
            Status::invalid_argument(format!("kind {:?}: only ConfigMap and Secret", r.kind))
        })?;
        let pods = self
            .client
            .list::<Pod>(Some(&r.namespace), "")
            .await
            .map_err(status_of)?;
        let allowed = pods.items.iter().any(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(identity.as_str())
                && uses(p, kind, &r.name)
        });
        if !allowed {
            return Err(Status::permission_denied(format!(
                "node {identity:?} has no pod that uses {} {}/{}",
                r.kind, r.namespace, r.name
            )));
        }
        let object = match kind {
            RefKind::ConfigMap => self
                .client
                .get_opt::<ConfigMap>(Some(&r.namespace), &r.name)
                .await
                .map_err(status_of)?
                .map(|o| encode(&o)),
            RefKind::Secret => self
                .client
                .get_opt::<Secret>(Some(&r.namespace), &r.name)
                .await
                .map_err(status_of)?
                .map(|o| encode(&o)),
        };
        Ok(Response::new(ObjectResponse {
            object: object.unwrap_or_default(),
        }))
    }

    async fn record_event(
        &self,
        request: Request<EventRequest>,
    ) -> Result<Response<EventResponse>, Status> {
        let identity = self.identify(&request)?;
        let r = request.get_ref();
        let pod_ref = r.pod.clone().unwrap_or_default();
        let Some(pod) = self
            .own_pod(&identity, &pod_ref.namespace, &pod_ref.name, &pod_ref.uid)
            .await?
        else {
            return Ok(Response::new(EventResponse {}));
        };
        let kind = if r.r#type == "Warning" {
            events::Kind::Warning
        } else {
            events::Kind::Normal
        };
        let mut event = events::event(
            events::reference(&pod),
            kind,
            &r.reason,
            &r.message,
            "kubelet",
            now(),
        );
        if let Some(source) = event.source.as_mut() {
            source.host = Some(identity.clone());
        }
        event.reporting_instance = Some(identity);
        self.client.create(&event).await.map_err(status_of)?;
        Ok(Response::new(EventResponse {}))
    }
}
