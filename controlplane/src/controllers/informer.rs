//! Informers: a local cache of one resource kept current by list-then-watch from the
//! list's revision, with secondary indexes (pods by owner, by node, …) and handlers that
//! turn changes into work-queue keys. A broken or compacted watch relists and reports
//! the difference, so handlers never miss a change (level-triggered).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::apiserver::{Change, Client, Object};

/// What a handler sees.
#[derive(Debug)]
pub enum Event<K> {
    /// Created (`old` is `None`) or changed.
    Applied { new: Arc<K>, old: Option<Arc<K>> },
    /// Deleted; its last known state.
    Deleted(Arc<K>),
}

type Handler<K> = Box<dyn Fn(&Event<K>) + Send + Sync>;
type IndexFn<K> = Box<dyn Fn(&K) -> Vec<String> + Send + Sync>;

struct Index<K> {
    name: &'static str,
    values: IndexFn<K>,
    entries: HashMap<String, HashSet<String>>,
}

struct Cache<K> {
    objects: BTreeMap<String, Arc<K>>,
    indexes: Vec<Index<K>>,
}

impl<K> Cache<K> {
    fn unindex(&mut self, key: &str, object: &K) {
        for index in &mut self.indexes {
            for value in (index.values)(object) {
                if let Some(set) = index.entries.get_mut(&value) {
                    set.remove(key);
                    if set.is_empty() {
                        index.entries.remove(&value);
                    }
                }
            }
        }
    }

    fn insert(&mut self, key: String, object: Arc<K>) -> Option<Arc<K>> {
        let old = self.objects.insert(key.clone(), object.clone());
        if let Some(old) = &old {
            self.unindex(&key, old);
        }
        for index in &mut self.indexes {
            for value in (index.values)(&object) {
                index.entries.entry(value).or_default().insert(key.clone());
            }
        }
        old
    }

    fn remove(&mut self, key: &str) -> Option<Arc<K>> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }
}

/// The cache key of an object: `namespace/name`, or `name` for cluster-scoped ones.
pub fn key_of<K: Object>(object: &K) -> String {
    let meta = object.metadata();
    let name = meta.name.as_deref().unwrap_or("");
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_owned(),
    }
}

/// Splits a key into namespace (if any) and name.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// A cached, watched resource. Clones share the cache.
pub struct Informer<K> {
    cache: Arc<RwLock<Cache<K>>>,
    handlers: Arc<Mutex<Vec<Handler<K>>>>,
    synced: watch::Receiver<bool>,
    synced_tx: Arc<watch::Sender<bool>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            cache: self.cache.clone(),
            handlers: self.handlers.clone(),
            synced: self.synced.clone(),
            synced_tx: self.synced_tx.clone(),
        }
    }
}

impl<K: Object> Default for Informer<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Object> Informer<K> {
    /// An empty informer; add indexes and handlers, then `spawn` it.
    pub fn new() -> Self {
        let (tx, rx) = watch::channel(false);
        Informer {
            cache: Arc::new(RwLock::new(Cache {
                objects: BTreeMap::new(),
                indexes: Vec::new(),
            })),
            handlers: Arc::new(Mutex::new(Vec::new())),
            synced: rx,
            synced_tx: Arc::new(tx),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache<K>> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache<K>> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an index: `values` gives the index values of an object (e.g. its node name).
    pub fn index(
        &self,
        name: &'static str,
        values: impl Fn(&K) -> Vec<String> + Send + Sync + 'static,
    ) {
        self.write().indexes.push(Index {
            name,
            values: Box::new(values),
            entries: HashMap::new(),
        });
    }

    /// Calls `handler` for every change (from the informer's task; keep it quick).
    pub fn on_change(&self, handler: impl Fn(&Event<K>) + Send + Sync + 'static) {
        self.handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(handler));
    }

    /// The cached object at `key` (`ns/name` or `name`).
    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().objects.values().cloned().collect()
    }

    /// The cached objects of one namespace.
    pub fn list_namespace(&self, ns: &str) -> Vec<Arc<K>> {
        let from = format!("{ns}/");
        self.read()
            .objects
            .range(from.clone()..)
            .take_while(|(k, _)| k.starts_with(&from))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The cached objects whose index `name` contains `value`.
    pub fn by_index(&self, name: &str, value: &str) -> Vec<Arc<K>> {
        let cache = self.read();
        let Some(index) = cache.indexes.iter().find(|i| i.name == name) else {
            return Vec::new();
        };
        index
            .entries
            .get(value)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| cache.objects.get(k).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the first list has been loaded.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits for the first list.
    pub async fn synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn emit(&self, event: &Event<K>) {
        for handler in self
            .handlers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            handler(event);
        }
    }

    fn apply(&self, change: Change<K>) {
        match change {
            Change::Applied(object) => {
                let new = Arc::new(object);
                let old = self.write().insert(key_of(new.as_ref()), new.clone());
                self.emit(&Event::Applied { new, old });
            }
            Change::Deleted(object) => {
                let key = key_of(&object);
                let last = self
                    .write()
                    .remove(&key)
                    .unwrap_or_else(|| Arc::new(object));
                self.emit(&Event::Deleted(last));
            }
        }
    }

    /// Replaces the cache with a fresh list, reporting what changed.
    fn replace(&self, items: Vec<K>) {
        let fresh: BTreeMap<String, Arc<K>> = items
            .into_iter()
            .map(|o| (key_of(&o), Arc::new(o)))
            .collect();
        let gone: Vec<String> = self
            .read()
            .objects
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(last) = self.write().remove(&key) {
                self.emit(&Event::Deleted(last));
            }
        }
        for (key, new) in fresh {
            let old = self.write().insert(key, new.clone());
            let changed = old
                .as_ref()
                .is_none_or(|o| o.metadata().resource_version != new.metadata().resource_version);
            if changed {
                self.emit(&Event::Applied { new, old });
            }
        }
    }

    /// Runs list-then-watch until the task is aborted.
    pub fn spawn(&self, client: Client) -> JoinHandle<()> {
        let informer = self.clone();
        tokio::spawn(async move {
            loop {
                let list = match client.list::<K>(None, "").await {
                    Ok(list) => list,
                    Err(e) => {
                        tracing::warn!(kind = K::KIND, error = %e, "list failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                informer.replace(list.items);
                informer.synced_tx.send_replace(true);
                let mut stream = match client.watch::<K>(None, list.revision).await {
                    Ok(stream) => Box::pin(stream),
                    Err(e) => {
                        tracing::warn!(kind = K::KIND, error = %e, "watch failed; relisting");
                        continue;
                    }
                };
                while let Some(change) = stream.next().await {
                    match change {
                        Ok(change) => informer.apply(change),
                        Err(e) => {
                            tracing::info!(kind = K::KIND, error = %e, "watch ended; relisting");
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }
}
