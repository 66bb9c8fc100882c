//! OCI images on a node: references, pulling from registries, importing layouts and archives,
//! the content store, safe layer unpacking, and garbage collection.
//!
//! Pull and import both end in `ingest`: a resolved manifest + config, and a source of blobs.

mod auth;
pub mod digest;
mod import;
mod ingest;
pub mod manifest;
mod pull;
pub mod reference;
pub mod store;
pub mod unpack;

use std::io;
use std::path::PathBuf;

pub use auth::AuthFile;
pub use digest::Digest;
pub use import::import;
pub use ingest::{IngestReport, LayerEvent, NoProgress, Progress};
pub use pull::{PullOptions, pull};
pub use reference::{Reference, ReferenceError};
pub use store::{GcReport, ImageRecord, ImageStore, LayerRecord, Problem};

/// Why an image operation failed. Each variant says what it was working on.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("{what} digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: &'static str,
        expected: Digest,
        actual: Digest,
    },
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    #[error("bad manifest: {reason}")]
    Manifest { reason: String },
    #[error("no {wanted} image in the index (it has: {})", available.join(", "))]
    Platform {
        wanted: String,
        available: Vec<String>,
    },
    #[error("unpacking layer {layer}: {source}")]
    Unpack {
        layer: Digest,
        #[source]
        source: unpack::UnpackError,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("image record {}: {reason}", path.display())]
    Record { path: PathBuf, reason: String },
    #[error("import {}: {reason}", path.display())]
    Import { path: PathBuf, reason: String },
    #[error("auth file {}: {reason}", path.display())]
    Auth { path: PathBuf, reason: String },
    #[error("image {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Task(String),
}
