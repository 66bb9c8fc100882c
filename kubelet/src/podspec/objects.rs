//! Where the ConfigMaps and Secrets a pod names come from ([`ObjectSource`]: the node agent's
//! view of the API server, a table in tests), and lookups that turn "missing" into the errors
//! Kubernetes shows (`configmap "x" not found`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};

use super::PodSpecError;

/// ConfigMaps and Secrets by namespace and name.
pub trait ObjectSource: Send + Sync {
    /// `Ok(None)` when there is no such ConfigMap; `Err` when it could not be looked up.
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, String>;
    /// `Ok(None)` when there is no such Secret; `Err` when it could not be looked up.
    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String>;
}

/// The message of every reference that needs a control plane, when there is none.
pub(crate) const NO_CONTROL_PLANE: &str = "not supported without a control plane";

/// Lookups on behalf of one pod (in its namespace).
#[derive(Clone, Copy)]
pub(crate) struct Objects<'a> {
    source: Option<&'a dyn ObjectSource>,
    namespace: &'a str,
}

/// What a ConfigMap or Secret holds, as the kubelet reads it.
pub(crate) struct Entries {
    /// `data` (text) then `binaryData` of a ConfigMap; `data` of a Secret.
    pub text: BTreeMap<String, Vec<u8>>,
    pub binary: BTreeMap<String, Vec<u8>>,
}

impl Entries {
    pub fn get(&self, key: &str) -> Option<&Vec<u8>> {
        self.text.get(key).or_else(|| self.binary.get(key))
    }

    fn of_config_map(cm: ConfigMap) -> Entries {
        let text = cm.data.unwrap_or_default();
        Entries {
            text: text.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
            binary: binary(cm.binary_data),
        }
    }

    fn of_secret(secret: Secret) -> Entries {
        Entries {
            text: binary(secret.data),
            binary: BTreeMap::new(),
        }
    }
}

fn binary(map: Option<BTreeMap<String, k8s_openapi::ByteString>>) -> BTreeMap<String, Vec<u8>> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// A ConfigMap or a Secret, as errors name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    /// `configmap` / `secret`, as in Kubernetes' "not found" errors.
    fn lower(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }

    /// `ConfigMap` / `Secret`, as in "couldn't find key".
    pub fn title(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }
}

impl<'a> Objects<'a> {
    pub fn new(source: Option<&'a dyn ObjectSource>, pod: &'a Pod) -> Objects<'a> {
        let namespace = pod
            .metadata
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("default");
        Objects { source, namespace }
    }

    pub fn namespace(&self) -> &'a str {
        self.namespace
    }

    /// The named object's entries; `None` when it is missing and `optional`. `field` is the
    /// reference (`spec.volumes[0].configMap`), for the error.
    pub fn get(
        &self,
        kind: Kind,
        field: &str,
        name: &str,
        optional: bool,
    ) -> Result<Option<Entries>, PodSpecError> {
        let Some(source) = self.source else {
            return Err(PodSpecError::new(field, NO_CONTROL_PLANE));
        };
        if name.is_empty() {
            return Err(PodSpecError::new(format!("{field}.name"), "required"));
        }
        let found = match kind {
            Kind::ConfigMap => source
                .config_map(self.namespace, name)
                .map(|o| o.map(Entries::of_config_map)),
            Kind::Secret => source
                .secret(self.namespace, name)
                .map(|o| o.map(Entries::of_secret)),
        };
        match found {
            Ok(Some(entries)) => Ok(Some(entries)),
            Ok(None) if optional => Ok(None),
            Ok(None) => Err(PodSpecError::config(
                field,
                format!("{} {name:?} not found", kind.lower()),
            )),
            Err(e) => Err(PodSpecError::config(
                field,
                format!(
                    "couldn't get {} {}/{name}: {e}",
                    kind.lower(),
                    self.namespace
                ),
            )),
        }
    }
}
