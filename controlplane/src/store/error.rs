//! `StoreError`: what a store operation can fail with, and the context to act on it.

use std::sync::Arc;

/// Errors of the `Store` operations. Cloneable, so one failed group commit can answer
/// every request in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// `create` of a key that exists.
    #[error("key {key} already exists")]
    AlreadyExists { key: String },

    /// `update` or `delete` of a key that does not exist.
    #[error("key {key} not found")]
    NotFound { key: String },

    /// The precondition on `mod_revision` did not hold.
    #[error("conflict on {key}: expected mod revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: u64,
        actual: u64,
    },

    /// The requested revision is older than the compacted one (Kubernetes: 410 Gone).
    #[error("revision {requested} has been compacted (compacted revision {compacted})")]
    Compacted { requested: u64, compacted: u64 },

    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: u64, current: u64 },

    /// A continue token that this store did not hand out for this prefix.
    #[error("invalid continue token: {reason}")]
    InvalidContinue { reason: String },

    /// The embedded database failed.
    #[error("embedded store: {op} failed")]
    Embedded {
        op: &'static str,
        #[source]
        source: Arc<redb::Error>,
    },

    /// A record in the embedded database could not be decoded.
    #[error("embedded store: corrupt {what}")]
    Corrupt { what: String },

    /// Creating or opening the data directory failed.
    #[error("embedded store: cannot use data dir {path}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A request to etcd failed.
    #[error("etcd: {op} failed")]
    Etcd {
        op: &'static str,
        #[source]
        source: Arc<etcd_client::Error>,
    },

    /// etcd answered something this store cannot use.
    #[error("etcd: unexpected response to {op}: {detail}")]
    EtcdResponse { op: &'static str, detail: String },

    /// A blocking task of the embedded store ended without an answer.
    #[error("embedded store: {op} task did not finish")]
    Task { op: &'static str },

    /// The store is shutting down (its writer is gone).
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// Wraps a redb error of operation `op`.
    pub(crate) fn embedded<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
        move |source| StoreError::Embedded {
            op,
            source: Arc::new(source.into()),
        }
    }

    /// Wraps an etcd client error of operation `op`.
    pub(crate) fn etcd(op: &'static str) -> impl FnOnce(etcd_client::Error) -> StoreError {
        move |source| StoreError::Etcd {
            op,
            source: Arc::new(source),
        }
    }
}
