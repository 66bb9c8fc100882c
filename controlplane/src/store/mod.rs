//! The revisioned key-value store behind the API server: one `Store` trait, two backends.
//!
//! Every write bumps one global revision (like etcd); the API server uses it as the
//! Kubernetes `resourceVersion`. `embedded` (redb, one file, the default) and `etcd` (a real
//! etcd cluster shared by several API servers) implement the same contract, which
//! `tests/store_conformance.rs` checks against both. See `docs/design/001-store.md`.

mod error;
mod token;

pub mod embedded;
pub mod etcd;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use error::StoreError;
pub use etcd::EtcdStore;

/// One stored entry as of some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The full key, e.g. `/registry/pods/default/web-1`.
    pub key: String,
    /// Opaque bytes (the API server stores JSON).
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: u64,
    /// Revision of the last write to the key.
    pub mod_revision: u64,
}

/// A change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created (`prev` is `None`) or updated.
    Put { kv: Kv, prev: Option<Kv> },
    /// The key was deleted at `revision`; `prev` is its last state.
    Delete { prev: Kv, revision: u64 },
}

impl WatchEvent {
    /// The revision of the write that caused this event.
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }

    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put { kv, .. } => &kv.key,
            WatchEvent::Delete { prev, .. } => &prev.key,
        }
    }
}

/// How to page through a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// At most this many items per page; `None` or `Some(0)` means all.
    pub limit: Option<usize>,
    /// The token of the previous page; the page then reflects that page's revision.
    pub continue_token: Option<String>,
    /// List as of this revision instead of the current one (ignored with a continue token).
    pub revision: Option<u64>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// Entries in key order.
    pub items: Vec<Kv>,
    /// The revision the whole list (all its pages) reflects.
    pub revision: u64,
    /// Present when more items follow; pass it back in `ListOptions::continue_token`.
    pub continue_token: Option<String>,
    /// How many items follow this page, when the backend knows.
    pub remaining: Option<u64>,
}

impl ListResult {
    /// One page of a list at `revision`; when `more` items follow, the continue token resumes
    /// after this page's last key at the same revision.
    pub fn page(items: Vec<Kv>, revision: u64, more: bool, remaining: u64) -> ListResult {
        let continue_token = match (more, items.last()) {
            (true, Some(last)) => Some(
                token::ContinueToken {
                    revision,
                    after_key: last.key.clone(),
                }
                .encode(),
            ),
            _ => None,
        };
        ListResult {
            items,
            revision,
            continue_token,
            remaining: Some(remaining),
        }
    }
}

/// The events after a revision, then live ones. Ends with an error item if the watch
/// cannot go on (for example its next revision was compacted).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// A revisioned key-value store with optimistic concurrency and watch-from-revision.
///
/// `Arc<dyn Store>` is the intended handle; every method may be called concurrently.
#[async_trait]
pub trait Store: Send + Sync {
    /// The entry at `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Kv>, StoreError>;

    /// Entries whose key starts with `prefix`, in key order, paged by `options`.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError>;

    /// Creates `key`; fails with `AlreadyExists` if it exists.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Kv, StoreError>;

    /// Replaces the value of an existing `key`. With `expected_mod_revision`, fails with
    /// `Conflict` unless the entry's `mod_revision` equals it.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: Option<u64>,
    ) -> Result<Kv, StoreError>;

    /// Deletes `key` and returns its last state; same precondition as `update`.
    async fn delete(&self, key: &str, expected_mod_revision: Option<u64>)
    -> Result<Kv, StoreError>;

    /// Every event under `prefix` with a revision greater than `from_revision`, then live
    /// events. Fails with `Compacted` if `from_revision` is older than the compacted revision.
    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<WatchStream, StoreError>;

    /// Forgets the history before `revision`: afterwards a watch from, or a list at, a
    /// revision older than `revision` fails with `Compacted`; `revision` itself still works.
    /// Compacting to a revision at or below the compacted one does nothing.
    async fn compact(&self, revision: u64) -> Result<(), StoreError>;

    /// The revision of the last committed write.
    async fn current_revision(&self) -> Result<u64, StoreError>;
}

/// The key range of a prefix list or watch: keys `k` with `k.starts_with(prefix)`.
pub(crate) fn in_prefix(key: &str, prefix: &str) -> bool {
    key.starts_with(prefix)
}
