//! ConfigMaps and Secrets for a pod's env and volumes, read from the control plane over
//! the node contract (`GetObject`: only what pods bound to this node use). The planner is
//! synchronous and runs on a blocking thread, so each lookup blocks on the runtime there.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::de::DeserializeOwned;
use skiff_api::node::ObjectRequest;
use tokio::runtime::Handle;

use super::conn::Client;
use crate::podspec::ObjectSource;

/// Lookups through the node service; build on an async thread, use on a blocking one.
pub struct RemoteObjects {
    client: Client,
    runtime: Handle,
}

impl RemoteObjects {
    pub fn new(client: Client) -> RemoteObjects {
        RemoteObjects {
            client,
            runtime: Handle::current(),
        }
    }

    fn get<T: DeserializeOwned>(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<T>, String> {
        let mut client = self.client.clone();
        let request = ObjectRequest {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        let response = self
            .runtime
            .block_on(client.get_object(request))
            .map_err(|e| format!("reading {kind} {namespace}/{name}: {}", e.message()))?
            .into_inner();
        if response.object.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&response.object)
            .map(Some)
            .map_err(|e| format!("decoding {kind} {namespace}/{name}: {e}"))
    }
}

impl ObjectSource for RemoteObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        self.get("ConfigMap", namespace, name)
    }

    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        self.get("Secret", namespace, name)
    }
}
