//! The table of served resources: group, version, names, scope, discovery data, the
//! k8s-openapi type that checks an object, and how `kubectl get` prints it.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::{apps, coordination, core, discovery};

use super::table::{self, Printer};

/// A subresource served under `…/{name}/{subresource}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `status`: writes change only `.status`; writes to the main resource keep it.
    Status,
    /// `scale`: an `autoscaling/v1` Scale view of `.spec.replicas`.
    Scale,
    /// `pods/binding`: POST a `Binding` to set `spec.nodeName` once (the scheduler's write).
    Binding,
    /// `pods/eviction`: POST an `Eviction` to delete the pod gracefully.
    Eviction,
    /// `namespaces/finalize`: PUT to change `spec.finalizers` of a namespace.
    Finalize,
    /// `pods/log`: the container's log as text, through the node's stream (`stream/`).
    Log,
    /// `pods/exec`: a command in a container, over WebSocket or SPDY (`stream/`).
    Exec,
    /// `pods/attach`: the container's own process, over WebSocket or SPDY (`stream/`).
    Attach,
    /// `pods/portforward`: TCP connections into the pod, over SPDY (`stream/`).
    PortForward,
}

impl Subresource {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Eviction => "eviction",
            Subresource::Finalize => "finalize",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
        }
    }

    /// The verbs discovery lists for it.
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Subresource::Status | Subresource::Scale => &["get", "patch", "update"],
            Subresource::Binding | Subresource::Eviction => &["create"],
            Subresource::Finalize => &["update"],
            Subresource::Log => &["get"],
            Subresource::Exec | Subresource::Attach | Subresource::PortForward => {
                &["create", "get"]
            }
        }
    }
}

/// Decodes a JSON object as the resource's typed form and encodes it back: fails on
/// wrong field types; drops fields the type does not know.
pub type RoundTrip = fn(&Value) -> Result<Value, serde_json::Error>;

/// One served resource.
#[derive(Debug)]
pub struct ResourceType {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural resource name used in paths.
    pub plural: &'static str,
    /// Singular name (discovery `singularResource`).
    pub singular: &'static str,
    /// Kind of the objects.
    pub kind: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// `kubectl get po` style aliases.
    pub short_names: &'static [&'static str],
    /// Discovery categories (`all`).
    pub categories: &'static [&'static str],
    /// Served subresources.
    pub subresources: &'static [Subresource],
    /// Whether `metadata.generation` tracks spec changes.
    pub generation: bool,
    /// Field selector labels beyond `metadata.name` and `metadata.namespace`.
    pub fields: &'static [&'static str],
    /// The typed check.
    pub round_trip: RoundTrip,
    /// Server-side printing.
    pub printer: &'static Printer,
}

fn typed<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Value, serde_json::Error> {
    let object: T = serde_json::from_value(value.clone())?;
    serde_json::to_value(object)
}

const NONE: &[&str] = &[];
const ALL: &[&str] = &["all"];
const STATUS: &[Subresource] = &[Subresource::Status];
const SCALE_STATUS: &[Subresource] = &[Subresource::Scale, Subresource::Status];
const POD_SUBS: &[Subresource] = &[
    Subresource::Status,
    Subresource::Binding,
    Subresource::Eviction,
    Subresource::Log,
    Subresource::Exec,
    Subresource::Attach,
    Subresource::PortForward,
];
const NAMESPACE_SUBS: &[Subresource] = &[Subresource::Status, Subresource::Finalize];

macro_rules! resource {
    ($group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $ty:ty,
     namespaced: $ns:expr, short: $short:expr, cat: $cat:expr, sub: $sub:expr,
     generation: $generation:expr, fields: $fields:expr, printer: $printer:expr) => {
        ResourceType {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            generation: $generation,
            fields: $fields,
            round_trip: typed::<$ty>,
            printer: &$printer,
        }
    };
}

/// Every served resource, core group first (the order of discovery documents).
pub static RESOURCES: &[ResourceType] = &[
    resource!("", "v1", "namespaces", "namespace", "Namespace", core::v1::Namespace,
        namespaced: false, short: &["ns"], cat: NONE, sub: NAMESPACE_SUBS, generation: false,
        fields: &["status.phase"], printer: table::NAMESPACES),
    resource!("", "v1", "nodes", "node", "Node", core::v1::Node,
        namespaced: false, short: &["no"], cat: NONE, sub: STATUS, generation: false,
        fields: &["spec.unschedulable"], printer: table::NODES),
    resource!("", "v1", "pods", "pod", "Pod", core::v1::Pod,
        namespaced: true, short: &["po"], cat: ALL, sub: POD_SUBS, generation: false,
        fields: &["spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                  "spec.serviceAccountName", "status.phase", "status.podIP"],
        printer: table::PODS),
    resource!("", "v1", "services", "service", "Service", core::v1::Service,
        namespaced: true, short: &["svc"], cat: ALL, sub: STATUS, generation: false,
        fields: NONE, printer: table::SERVICES),
    resource!("", "v1", "replicationcontrollers", "replicationcontroller",
        "ReplicationController", core::v1::ReplicationController,
        namespaced: true, short: &["rc"], cat: ALL, sub: SCALE_STATUS, generation: true,
        fields: &["status.replicas"], printer: table::REPLICASETS),
    resource!("", "v1", "endpoints", "endpoints", "Endpoints", core::v1::Endpoints,
        namespaced: true, short: &["ep"], cat: NONE, sub: &[], generation: false,
        fields: NONE, printer: table::ENDPOINTS),
    resource!("", "v1", "configmaps", "configmap", "ConfigMap", core::v1::ConfigMap,
        namespaced: true, short: &["cm"], cat: NONE, sub: &[], generation: false,
        fields: NONE, printer: table::CONFIGMAPS),
    resource!("", "v1", "secrets", "secret", "Secret", core::v1::Secret,
        namespaced: true, short: NONE, cat: NONE, sub: &[], generation: false,
        fields: &["type"], printer: table::SECRETS),
    resource!("", "v1", "events", "event", "Event", core::v1::Event,
        namespaced: true, short: &["ev"], cat: NONE, sub: &[], generation: false,
        fields: &["involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                  "involvedObject.uid", "involvedObject.apiVersion",
                  "involvedObject.resourceVersion", "involvedObject.fieldPath",
                  "reason", "source", "type", "reportingComponent"],
        printer: table::EVENTS),
    resource!("", "v1", "serviceaccounts", "serviceaccount", "ServiceAccount",
        core::v1::ServiceAccount,
        namespaced: true, short: &["sa"], cat: NONE, sub: &[], generation: false,
        fields: NONE, printer: table::SERVICEACCOUNTS),
    resource!("apps", "v1", "deployments", "deployment", "Deployment", apps::v1::Deployment,
        namespaced: true, short: &["deploy"], cat: ALL, sub: SCALE_STATUS, generation: true,
        fields: NONE, printer: table::DEPLOYMENTS),
    resource!("apps", "v1", "replicasets", "replicaset", "ReplicaSet", apps::v1::ReplicaSet,
        namespaced: true, short: &["rs"], cat: ALL, sub: SCALE_STATUS, generation: true,
        fields: &["status.replicas"], printer: table::REPLICASETS),
    resource!("apps", "v1", "statefulsets", "statefulset", "StatefulSet",
        apps::v1::StatefulSet,
        namespaced: true, short: &["sts"], cat: ALL, sub: SCALE_STATUS, generation: true,
        fields: NONE, printer: table::STATEFULSETS),
    resource!("coordination.k8s.io", "v1", "leases", "lease", "Lease",
        coordination::v1::Lease,
        namespaced: true, short: NONE, cat: NONE, sub: &[], generation: false,
        fields: NONE, printer: table::LEASES),
    resource!("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice",
        discovery::v1::EndpointSlice,
        namespaced: true, short: NONE, cat: NONE, sub: &[], generation: false,
        fields: &["addressType"], printer: table::ENDPOINTSLICES),
];

impl ResourceType {
    /// `apiVersion` of the objects: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether `sub` is served for this resource.
    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The store key prefix of every object of this resource (all namespaces).
    pub fn prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// The store key prefix of a list: one namespace, or all of them.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/", self.prefix()),
            _ => self.prefix(),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.list_prefix(namespace))
    }

    /// Whether `label` may be used in a field selector.
    pub fn supports_field(&self, label: &str) -> bool {
        label == "metadata.name"
            || (self.namespaced && label == "metadata.namespace")
            || self.fields.contains(&label)
    }
}

/// The resource served at `group`/`version`/`plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The served group/versions, in discovery order: `("", "v1")`, `("apps", "v1")`, ….
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_follow_group_plural_namespace_name() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        assert_eq!(
            deploy.key(Some("default"), "web"),
            "/registry/apps/deployments/default/web"
        );
        assert_eq!(deploy.list_prefix(None), "/registry/apps/deployments/");
        let node = find("", "v1", "nodes").unwrap();
        assert_eq!(node.key(None, "n1"), "/registry/core/nodes/n1");
    }

    #[test]
    fn round_trip_rejects_wrong_types_and_drops_unknown_fields() {
        let cm = find("", "v1", "configmaps").unwrap();
        let ok = (cm.round_trip)(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a"}, "data": {"k": "v"}, "bogus": 1}))
        .unwrap();
        assert_eq!(ok["data"]["k"], "v");
        assert!(ok.get("bogus").is_none());
        assert!(
            (cm.round_trip)(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a"}, "data": {"k": 3}}))
            .is_err()
        );
    }

    #[test]
    fn every_resource_round_trips_a_minimal_object() {
        for r in RESOURCES {
            let obj = json!({"apiVersion": r.api_version(), "kind": r.kind,
                "metadata": {"name": "x"}});
            assert!((r.round_trip)(&obj).is_ok(), "{}", r.plural);
        }
        assert_eq!(group_versions().len(), 4);
    }
}
