//! `NsError`: every way pinning, opening, joining or removing a namespace can fail, with the
//! namespace kind, the path and the call involved.

use std::io;
use std::path::PathBuf;

use super::NsKind;

/// An error from the namespace layer.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// A filesystem or mount operation on a pin path failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. `bind mount`, `unmount`, `create pin file`.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `unshare(2)` or `setns(2)` failed.
    #[error("{call} {kind} namespace: {source}")]
    Syscall {
        /// `unshare` or `setns`.
        call: &'static str,
        /// The namespace kind.
        kind: NsKind,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The caller's setup closure failed inside the new namespace.
    #[error("setup of new {kind} namespace for {path}: {source}")]
    Setup {
        /// The namespace kind.
        kind: NsKind,
        /// The pin path that was to be created.
        path: PathBuf,
        /// The closure's error.
        #[source]
        source: io::Error,
    },
    /// Something already exists at the pin path.
    #[error("{kind} namespace pin {path} already exists")]
    Exists {
        /// The namespace kind.
        kind: NsKind,
        /// The pin path.
        path: PathBuf,
    },
    /// The path exists but no namespace is mounted on it.
    #[error("{path} is not a pinned namespace (nothing mounted on it)")]
    NotPinned {
        /// The path opened.
        path: PathBuf,
    },
    /// The helper thread could not be started or panicked.
    #[error("namespace helper thread for {what}: {reason}")]
    Thread {
        /// What the thread was for.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}

impl NsError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when this is an I/O or syscall error with the given errno.
    pub fn is_errno(&self, errno: i32) -> bool {
        match self {
            Self::Io { source, .. } | Self::Syscall { source, .. } | Self::Setup { source, .. } => {
                source.raw_os_error() == Some(errno)
            }
            _ => false,
        }
    }
}
