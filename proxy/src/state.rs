//! The proxy's picture of the cluster: every Service and EndpointSlice, as the node contract's
//! `WatchServices` delivers them. Plain data, no I/O: the data plane's plan and the DNS
//! records are both pure functions of it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// `namespace/name` of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object from its metadata (empty strings when a field is missing).
    pub fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
        ObjectKey::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Every Service and EndpointSlice the proxy knows of.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub services: BTreeMap<ObjectKey, Service>,
    pub slices: BTreeMap<ObjectKey, EndpointSlice>,
}

/// The label an EndpointSlice carries naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl ClusterState {
    /// The EndpointSlices of one Service (by the `kubernetes.io/service-name` label).
    pub fn slices_of<'a>(
        &'a self,
        service: &'a ObjectKey,
    ) -> impl Iterator<Item = &'a EndpointSlice> {
        self.slices.values().filter(move |slice| {
            slice.metadata.namespace.as_deref() == Some(service.namespace.as_str())
                && slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .map(String::as_str)
                    == Some(service.name.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn slice(ns: &str, name: &str, service: &str) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), service.to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ..Default::default()
        }
    }

    #[test]
    fn slices_of_a_service_are_found_by_label_and_namespace() {
        let mut state = ClusterState::default();
        for s in [
            slice("a", "web-1", "web"),
            slice("a", "web-2", "web"),
            slice("b", "web-3", "web"),
            slice("a", "db-1", "db"),
        ] {
            state.slices.insert(ObjectKey::of(&s.metadata), s);
        }
        let names: Vec<_> = state
            .slices_of(&ObjectKey::new("a", "web"))
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["web-1", "web-2"]);
    }
}
