//! The in-process client the scheduler and controllers use: typed `k8s-openapi` objects
//! through the very admission, validation, concurrency and deletion code that serves HTTPS,
//! without TLS, HTTP or a second JSON round trip through the wire.

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::handlers::{self, AppState, Page};
use super::registry::{self, ResourceType, Subresource};
use super::request::{Command, DeleteOptions, ListQuery, Patch, Target, WriteOptions};
use super::selector::LabelSelector;
use super::status::ApiError;
use crate::store::{StoreError, WatchEvent};

/// A served object type.
pub trait Object:
    k8s_openapi::Resource
    + k8s_openapi::Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Object for T where
    T: k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A list and the revision it reflects (where a watch continues).
#[derive(Debug, Clone)]
pub struct ObjectList<K> {
    /// The objects, in key order.
    pub items: Vec<K>,
    /// The store revision of the list.
    pub revision: u64,
}

/// A change seen by a typed watch.
#[derive(Debug, Clone)]
pub enum Change<K> {
    /// Created or updated.
    Applied(K),
    /// Deleted (its last state).
    Deleted(K),
}

/// The in-process API client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    state: AppState,
}

fn resource<K: Object>() -> Result<&'static ResourceType, ApiError> {
    registry::find(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT).ok_or_else(|| {
        ApiError::internal(format!("{} is not a served resource", K::URL_PATH_SEGMENT))
    })
}

fn from_value<K: Object>(value: Value) -> Result<K, ApiError> {
    serde_json::from_value(value)
        .map_err(|e| ApiError::internal(format!("cannot decode a {}: {e}", K::KIND)))
}

fn to_value<K: Object>(object: &K) -> Result<Value, ApiError> {
    serde_json::to_value(object)
        .map_err(|e| ApiError::internal(format!("cannot encode a {}: {e}", K::KIND)))
}

impl Client {
    /// A client over the server's shared state.
    pub fn new(state: AppState) -> Client {
        Client { state }
    }

    /// The API server's registry of node stream tunnels (the node service serves it).
    pub fn tunnels(&self) -> std::sync::Arc<crate::node::Tunnels> {
        self.state.tunnels.clone()
    }

    fn target<K: Object>(
        ns: Option<&str>,
        name: Option<&str>,
        sub: Option<Subresource>,
    ) -> Result<Target, ApiError> {
        let resource = resource::<K>()?;
        Ok(Target {
            resource,
            namespace: if resource.namespaced {
                ns.map(str::to_owned)
            } else {
                None
            },
            name: name.map(str::to_owned),
            subresource: sub,
        })
    }

    fn target_of<K: Object>(object: &K, sub: Option<Subresource>) -> Result<Target, ApiError> {
        let meta = object.metadata();
        Self::target::<K>(meta.namespace.as_deref(), meta.name.as_deref(), sub)
    }

    async fn write<K: Object>(&self, command: Command) -> Result<K, ApiError> {
        let (_, value) = handlers::apply(&self.state, command).await?;
        from_value(value)
    }

    /// One object; 404 as an error.
    pub async fn get<K: Object>(&self, ns: Option<&str>, name: &str) -> Result<K, ApiError> {
        let target = Self::target::<K>(ns, Some(name), None)?;
        let (value, _) = handlers::load(&self.state, &target).await?;
        from_value(value)
    }

    /// One object, or `None` if absent.
    pub async fn get_opt<K: Object>(
        &self,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<K>, ApiError> {
        match self.get(ns, name).await {
            Ok(object) => Ok(Some(object)),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object in `ns` (or everywhere) matching the label selector `labels` ("" = all).
    pub async fn list<K: Object>(
        &self,
        ns: Option<&str>,
        labels: &str,
    ) -> Result<ObjectList<K>, ApiError> {
        let target = Self::target::<K>(ns, None, None)?;
        let query = ListQuery {
            labels: LabelSelector::parse(labels)?,
            ..ListQuery::default()
        };
        let Page {
            items, revision, ..
        } = handlers::collect(&self.state, &target, &query).await?;
        let items = items
            .into_iter()
            .map(from_value)
            .collect::<Result<_, _>>()?;
        Ok(ObjectList { items, revision })
    }

    /// Creates `object` in its `metadata.namespace`.
    pub async fn create<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        let target = Self::target::<K>(object.metadata().namespace.as_deref(), None, None)?;
        let body = to_value(object)?;
        self.write(Command::Create(target, body, WriteOptions::default()))
            .await
    }

    /// PUT of `object` (or of its `sub`resource); with its `resourceVersion` set, only if
    /// unchanged since.
    async fn put<K: Object>(&self, object: &K, sub: Option<Subresource>) -> Result<K, ApiError> {
        let target = Self::target_of(object, sub)?;
        let body = to_value(object)?;
        self.write(Command::Update(target, body, WriteOptions::default()))
            .await
    }

    /// Replaces `object` (PUT); with its `resourceVersion` set, only if unchanged since.
    pub async fn replace<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        self.put(object, None).await
    }

    /// Replaces the status of `object` (PUT …/status), same concurrency rule.
    pub async fn replace_status<K: Object>(&self, object: &K) -> Result<K, ApiError> {
        self.put(object, Some(Subresource::Status)).await
    }

    /// A JSON merge patch (RFC 7386) of the object, or of its status.
    pub async fn merge_patch<K: Object>(
        &self,
        ns: Option<&str>,
        name: &str,
        patch: Value,
        status: bool,
    ) -> Result<K, ApiError> {
        let sub = status.then_some(Subresource::Status);
        let target = Self::target::<K>(ns, Some(name), sub)?;
        self.write(Command::Patch(
            target,
            Patch::Merge(patch),
            WriteOptions::default(),
        ))
        .await
    }

    /// Deletes an object; `Ok(false)` if it was already gone.
    pub async fn delete<K: Object>(
        &self,
        ns: Option<&str>,
        name: &str,
        options: DeleteOptions,
    ) -> Result<bool, ApiError> {
        let target = Self::target::<K>(ns, Some(name), None)?;
        self.delete_target(target, options).await
    }

    /// Binds a pending pod to a node (`pods/binding`).
    pub async fn bind(&self, ns: &str, pod: &str, node: &str) -> Result<(), ApiError> {
        let target = Target {
            resource: resource::<k8s_openapi::api::core::v1::Pod>()?,
            namespace: Some(ns.to_owned()),
            name: Some(pod.to_owned()),
            subresource: Some(Subresource::Binding),
        };
        let body = json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": pod, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        handlers::apply(
            &self.state,
            Command::Create(target, body, WriteOptions::default()),
        )
        .await
        .map(|_| ())
    }

    /// Sets a terminating namespace's `spec.finalizers` (`namespaces/finalize`).
    pub async fn finalize_namespace(
        &self,
        namespace: &k8s_openapi::api::core::v1::Namespace,
    ) -> Result<(), ApiError> {
        let target = Self::target_of(namespace, Some(Subresource::Finalize))?;
        let body = to_value(namespace)?;
        handlers::apply(
            &self.state,
            Command::Update(target, body, WriteOptions::default()),
        )
        .await
        .map(|_| ())
    }

    /// Changes after `from_revision` in `ns` (or everywhere). The stream ends with a 410
    /// error when that revision is compacted: list again and continue from the new one.
    pub async fn watch<K: Object>(
        &self,
        ns: Option<&str>,
        from_revision: u64,
    ) -> Result<impl Stream<Item = Result<Change<K>, ApiError>> + Send + 'static, ApiError> {
        let r = resource::<K>()?;
        let prefix = r.list_prefix(if r.namespaced { ns } else { None });
        let stream = self
            .state
            .store
            .watch(&prefix, from_revision)
            .await
            .map_err(|e| ApiError::from_store(e, r.group, r.plural, ""))?;
        // Decoded straight into the typed object (no intermediate JSON tree): informers
        // of 10,000 pods spend their time here.
        let typed = |kv: &crate::store::Kv, revision: u64| -> Result<K, ApiError> {
            let mut object: K = serde_json::from_slice(&kv.value)
                .map_err(|e| ApiError::internal(format!("cannot decode {}: {e}", kv.key)))?;
            object.metadata_mut().resource_version = Some(revision.to_string());
            Ok(object)
        };
        Ok(stream.filter_map(move |event| {
            let out = match event {
                Err(StoreError::Compacted {
                    requested,
                    compacted,
                }) => Some(Err(ApiError::expired(format!(
                    "too old resource version: {requested} ({compacted})"
                )))),
                Err(e) => Some(Err(ApiError::from_store(e, r.group, r.plural, ""))),
                Ok(WatchEvent::Put { kv, .. }) => {
                    Some(typed(&kv, kv.mod_revision).map(Change::Applied))
                }
                Ok(WatchEvent::Delete { prev, revision }) => {
                    Some(typed(&prev, revision).map(Change::Deleted))
                }
            };
            futures::future::ready(out)
        }))
    }
}

/// A served resource chosen at run time (by `apiVersion` and `kind`), for the controllers
/// that handle every kind alike: the garbage collector and the namespace controller.
#[derive(Debug, Clone, Copy)]
pub struct Kind(&'static ResourceType);

impl Kind {
    /// The served resource of `api_version` (`v1`, `apps/v1`) and `kind`.
    pub fn find(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        registry::RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .map(Kind)
    }

    /// Every namespaced resource.
    pub fn namespaced() -> impl Iterator<Item = Kind> {
        registry::RESOURCES
            .iter()
            .filter(|r| r.namespaced)
            .map(Kind)
    }

    /// `Deployment`, `Pod`, …
    pub fn kind(&self) -> &'static str {
        self.0.kind
    }

    /// `apps/v1`, `v1`, …
    pub fn api_version(&self) -> String {
        self.0.api_version()
    }

    fn target(&self, ns: Option<&str>, name: Option<&str>) -> Target {
        Target {
            resource: self.0,
            namespace: if self.0.namespaced {
                ns.map(str::to_owned)
            } else {
                None
            },
            name: name.map(str::to_owned),
            subresource: None,
        }
    }
}

impl Client {
    /// One object of a run-time kind, or `None` if absent.
    pub async fn get_dynamic(
        &self,
        kind: Kind,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        match handlers::load(&self.state, &kind.target(ns, Some(name))).await {
            Ok((value, _)) => Ok(Some(value)),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object of a run-time kind in `ns`.
    pub async fn list_dynamic(&self, kind: Kind, ns: Option<&str>) -> Result<Vec<Value>, ApiError> {
        let page =
            handlers::collect(&self.state, &kind.target(ns, None), &ListQuery::default()).await?;
        Ok(page.items)
    }

    /// Deletes an object of a run-time kind; `Ok(false)` if it was already gone.
    pub async fn delete_dynamic(
        &self,
        kind: Kind,
        ns: Option<&str>,
        name: &str,
        options: DeleteOptions,
    ) -> Result<bool, ApiError> {
        self.delete_target(kind.target(ns, Some(name)), options)
            .await
    }

    /// DELETE of `target`; `Ok(false)` if it was already gone.
    async fn delete_target(
        &self,
        target: Target,
        options: DeleteOptions,
    ) -> Result<bool, ApiError> {
        let command = Command::Delete(target, options, WriteOptions::default());
        match handlers::apply(&self.state, command).await {
            Ok(_) => Ok(true),
            Err(e) if e.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A JSON merge patch of an object of a run-time kind.
    pub async fn merge_patch_dynamic(
        &self,
        kind: Kind,
        ns: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Result<Value, ApiError> {
        let command = Command::Patch(
            kind.target(ns, Some(name)),
            Patch::Merge(patch),
            WriteOptions::default(),
        );
        handlers::apply(&self.state, command).await.map(|(_, v)| v)
    }
}
