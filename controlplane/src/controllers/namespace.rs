//! The namespace controller: a namespace being deleted (phase Terminating) has everything
//! in it deleted, kind by kind; once nothing is left, its `kubernetes` finalizer is removed
//! through `namespaces/finalize`, which removes the namespace.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Namespace;
use serde_json::Value;

use super::Reconcile;
use super::informer::{Event, Informer, key_of};
use super::queue::Queue;
use crate::apiserver::{ApiError, Client, DeleteOptions, Kind, Propagation};

/// The finalizer the namespace controller holds.
pub const FINALIZER: &str = "kubernetes";
/// How often a terminating namespace is checked while things in it finish.
const RECHECK: Duration = Duration::from_millis(500);

/// The controller.
pub struct NamespaceController {
    client: Client,
    namespaces: Informer<Namespace>,
}

impl NamespaceController {
    /// Wires the controller to the namespace informer; returns it and its queue.
    pub fn new(client: Client, namespaces: &Informer<Namespace>) -> (Arc<Self>, Queue) {
        let queue = Queue::new();
        let q = queue.clone();
        namespaces.on_change(move |event| {
            if let Event::Applied { new, .. } = event
                && new.metadata.deletion_timestamp.is_some()
            {
                q.add(key_of(new.as_ref()));
            }
        });
        let controller = Arc::new(NamespaceController {
            client,
            namespaces: namespaces.clone(),
        });
        (controller, queue)
    }
}

fn name_of(object: &Value) -> Option<&str> {
    object.pointer("/metadata/name").and_then(Value::as_str)
}

#[async_trait]
impl Reconcile for NamespaceController {
    fn name(&self) -> &'static str {
        "namespace"
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>, ApiError> {
        let Some(ns) = self.namespaces.get(key) else {
            return Ok(None);
        };
        let finalizers = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default();
        if ns.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FINALIZER) {
            return Ok(None);
        }
        let mut remaining = 0usize;
        for kind in Kind::namespaced() {
            let objects = self.client.list_dynamic(kind, Some(key)).await?;
            remaining += objects.len();
            for object in &objects {
                let deleting = object.pointer("/metadata/deletionTimestamp").is_some();
                if deleting {
                    continue;
                }
                if let Some(name) = name_of(object) {
                    let options = DeleteOptions {
                        propagation: Some(Propagation::Background),
                        ..DeleteOptions::default()
                    };
                    self.client
                        .delete_dynamic(kind, Some(key), name, options)
                        .await?;
                }
            }
        }
        if remaining > 0 {
            return Ok(Some(RECHECK));
        }
        let mut done = (*ns).clone();
        if let Some(spec) = done.spec.as_mut() {
            spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
        }
        self.client.finalize_namespace(&done).await?;
        Ok(None)
    }
}
