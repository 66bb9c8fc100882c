//! The garbage collector: a graph of owner references over every watched kind.
//! - A dependent whose owners are all gone (checked with a live read, never only the
//!   cache) is deleted — Background propagation; dangling references among live owners
//!   are removed.
//! - An owner deleted with `Foreground` keeps its `foregroundDeletion` finalizer until its
//!   dependents are gone; they are deleted in the foreground too.
//! - An owner deleted with `Orphan` has its references removed from its dependents, then
//!   its `orphan` finalizer removed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;

use super::Reconcile;
use super::informer::{Event, Informer};
use super::queue::Queue;
use crate::apiserver::{ApiError, Client, DeleteOptions, Kind, Object, Propagation};

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

#[derive(Debug, Clone)]
struct Item {
    kind: Kind,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    finalizers: Vec<String>,
    deleting: bool,
}

#[derive(Default)]
struct Graph {
    items: HashMap<String, Item>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn unlink(&mut self, uid: &str) {
        if let Some(old) = self.items.get(uid) {
            for o in &old.owners {
                if let Some(set) = self.dependents.get_mut(&o.uid) {
                    set.remove(uid);
                    if set.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
            }
        }
    }

    fn put(&mut self, uid: String, item: Item) {
        self.unlink(&uid);
        for o in &item.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.items.insert(uid, item);
    }

    fn remove(&mut self, uid: &str) -> Option<Item> {
        self.unlink(uid);
        self.items.remove(uid)
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The collector.
pub struct GarbageCollector {
    client: Client,
    graph: Mutex<Graph>,
    queue: Queue,
}

fn item_of<K: Object>(object: &K) -> Option<(String, Item)> {
    let meta = object.metadata();
    let uid = meta.uid.clone()?;
    let kind = Kind::find(K::API_VERSION, K::KIND)?;
    Some((
        uid,
        Item {
            kind,
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            owners: meta.owner_references.clone().unwrap_or_default(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
        },
    ))
}

impl GarbageCollector {
    /// A collector; `watch` each kind's informer before spawning them.
    pub fn new(client: Client) -> (Arc<Self>, Queue) {
        let queue = Queue::new();
        let gc = Arc::new(GarbageCollector {
            client,
            graph: Mutex::new(Graph::default()),
            queue: queue.clone(),
        });
        (gc, queue)
    }

    fn lock(&self) -> MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the objects of one kind.
    pub fn watch<K: Object>(self: &Arc<Self>, informer: &Informer<K>) {
        let gc = self.clone();
        informer.on_change(move |event| gc.changed(event));
    }

    fn changed<K: Object>(&self, event: &Event<K>) {
        let mut graph = self.lock();
        match event {
            Event::Applied { new, .. } => {
                let Some((uid, item)) = item_of(new.as_ref()) else {
                    return;
                };
                let finalizing = item.deleting
                    && item
                        .finalizers
                        .iter()
                        .any(|f| f == FOREGROUND || f == ORPHAN);
                let check_owners = item
                    .owners
                    .iter()
                    .any(|o| graph.items.get(&o.uid).is_none_or(|owner| owner.deleting));
                graph.put(uid.clone(), item);
                if finalizing || check_owners {
                    self.queue.add(uid);
                }
            }
            Event::Deleted(old) => {
                let Some((uid, _)) = item_of(old.as_ref()) else {
                    return;
                };
                let removed = graph.remove(&uid);
                for dependent in graph.dependents_of(&uid) {
                    self.queue.add(dependent);
                }
                // An owner waiting in the foreground for this one looks again.
                for owner in removed.iter().flat_map(|i| &i.owners) {
                    if graph.items.get(&owner.uid).is_some_and(|o| o.deleting) {
                        self.queue.add(owner.uid.clone());
                    }
                }
            }
        }
    }

    /// Whether the owner a reference names is gone (by a live read).
    async fn owner_gone(
        &self,
        namespace: Option<&str>,
        owner: &OwnerReference,
    ) -> Result<bool, ApiError> {
        let Some(kind) = Kind::find(&owner.api_version, &owner.kind) else {
            return Ok(false); // a kind we do not serve: leave it alone
        };
        let live = self
            .client
            .get_dynamic(kind, namespace, &owner.name)
            .await?;
        Ok(live.is_none_or(|o| {
            o.pointer("/metadata/uid").and_then(|u| u.as_str()) != Some(&owner.uid)
        }))
    }

    async fn set_finalizers(&self, item: &Item, keep: Vec<String>) -> Result<(), ApiError> {
        let patch = json!({"metadata": {"finalizers": keep}});
        match self
            .client
            .merge_patch_dynamic(item.kind, item.namespace.as_deref(), &item.name, patch)
            .await
        {
            Err(e) if e.code != 404 => Err(e),
            _ => Ok(()),
        }
    }

    async fn delete(
        &self,
        uid: &str,
        item: &Item,
        propagation: Propagation,
    ) -> Result<(), ApiError> {
        let options = DeleteOptions {
            uid: Some(uid.to_owned()),
            propagation: Some(propagation),
            ..DeleteOptions::default()
        };
        match self
            .client
            .delete_dynamic(item.kind, item.namespace.as_deref(), &item.name, options)
            .await
        {
            Err(e) if e.code != 404 && e.code != 409 => Err(e),
            _ => Ok(()),
        }
    }

    /// An owner being deleted with a GC finalizer: orphan or delete its dependents.
    async fn finalize(&self, uid: &str, item: &Item) -> Result<Option<Duration>, ApiError> {
        let dependents: Vec<(String, Item)> = {
            let graph = self.lock();
            graph
                .dependents_of(uid)
                .into_iter()
                .filter_map(|d| graph.items.get(&d).map(|i| (d, i.clone())))
                .collect()
        };
        if item.finalizers.iter().any(|f| f == ORPHAN) {
            for (_, dependent) in &dependents {
                let owners: Vec<&OwnerReference> =
                    dependent.owners.iter().filter(|o| o.uid != uid).collect();
                let patch = json!({"metadata": {"ownerReferences": owners}});
                if let Err(e) = self
                    .client
                    .merge_patch_dynamic(
                        dependent.kind,
                        dependent.namespace.as_deref(),
                        &dependent.name,
                        patch,
                    )
                    .await
                    && e.code != 404
                {
                    return Err(e);
                }
            }
            let keep = item
                .finalizers
                .iter()
                .filter(|f| *f != ORPHAN)
                .cloned()
                .collect();
            self.set_finalizers(item, keep).await?;
            return Ok(None);
        }
        if dependents.is_empty() {
            let keep = item
                .finalizers
                .iter()
                .filter(|f| *f != FOREGROUND)
                .cloned()
                .collect();
            self.set_finalizers(item, keep).await?;
            return Ok(None);
        }
        for (dep_uid, dependent) in &dependents {
            if !dependent.deleting {
                self.delete(dep_uid, dependent, Propagation::Foreground)
                    .await?;
            }
        }
        // Their deletion events bring this owner back; look again anyway in a while.
        Ok(Some(Duration::from_secs(5)))
    }
}

#[async_trait]
impl Reconcile for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    async fn reconcile(&self, uid: &str) -> Result<Option<Duration>, ApiError> {
        let Some(item) = self.lock().items.get(uid).cloned() else {
            return Ok(None);
        };
        if item.deleting
            && item
                .finalizers
                .iter()
                .any(|f| f == FOREGROUND || f == ORPHAN)
        {
            return self.finalize(uid, &item).await;
        }
        if item.owners.is_empty() {
            return Ok(None);
        }
        let mut gone = Vec::new();
        let mut foreground_owner = false;
        for owner in &item.owners {
            let cached = self.lock().items.get(&owner.uid).cloned();
            match cached {
                Some(o) if o.deleting && o.finalizers.iter().any(|f| f == FOREGROUND) => {
                    foreground_owner |= owner.block_owner_deletion == Some(true);
                }
                Some(_) => {}
                None => {
                    if self.owner_gone(item.namespace.as_deref(), owner).await? {
                        gone.push(owner.uid.clone());
                    }
                }
            }
        }
        if gone.len() == item.owners.len() {
            self.delete(uid, &item, Propagation::Background).await?;
        } else if !gone.is_empty() {
            let owners: Vec<&OwnerReference> = item
                .owners
                .iter()
                .filter(|o| !gone.contains(&o.uid))
                .collect();
            let patch = json!({"metadata": {"ownerReferences": owners}});
            if let Err(e) = self
                .client
                .merge_patch_dynamic(item.kind, item.namespace.as_deref(), &item.name, patch)
                .await
                && e.code != 404
            {
                return Err(e);
            }
        } else if foreground_owner && !item.deleting {
            self.delete(uid, &item, Propagation::Foreground).await?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(owners: &[&str]) -> Item {
        Item {
            kind: Kind::find("v1", "Pod").unwrap(),
            namespace: Some("default".into()),
            name: "p".into(),
            owners: owners
                .iter()
                .map(|uid| OwnerReference {
                    uid: (*uid).into(),
                    ..OwnerReference::default()
                })
                .collect(),
            finalizers: Vec::new(),
            deleting: false,
        }
    }

    #[test]
    fn the_graph_tracks_dependents_through_updates_and_removals() {
        let mut g = Graph::default();
        g.put("pod-1".into(), item(&["rs-1"]));
        g.put("pod-2".into(), item(&["rs-1", "rs-2"]));
        let mut deps = g.dependents_of("rs-1");
        deps.sort();
        assert_eq!(deps, ["pod-1", "pod-2"]);
        // Releasing pod-2 from rs-1 (an update) unlinks it.
        g.put("pod-2".into(), item(&["rs-2"]));
        assert_eq!(g.dependents_of("rs-1"), ["pod-1"]);
        assert_eq!(g.dependents_of("rs-2"), ["pod-2"]);
        g.remove("pod-1");
        assert!(g.dependents_of("rs-1").is_empty());
        assert!(
            !g.dependents.contains_key("rs-1"),
            "no empty sets left behind"
        );
    }
}
