//! `CgroupError`: every way the cgroup layer can fail, with the path and operation involved.

use std::io;
use std::path::PathBuf;

/// An error from the cgroup layer. Each variant names the path (or cgroup) and what was tried.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A filesystem operation on a cgroup file or directory failed.
    #[error("cgroup {op} {path}: {source}")]
    Io {
        /// The operation, e.g. `read`, `write`, `mkdir`, `rmdir`, `kill`.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file had content we could not understand.
    #[error("parse {path}: {reason}")]
    Parse {
        /// The file that was parsed.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// No usable cgroup hierarchy was found in the mount table.
    #[error("no usable cgroup hierarchy found: {reason}")]
    NoHierarchy {
        /// Why detection failed.
        reason: String,
    },
    /// A configured parent lies above or beside the process's own cgroup.
    #[error(
        "parent cgroup {parent} is not at or below this process's own cgroup {own} \
         in the {hierarchy} hierarchy: refusing to create cgroups outside it"
    )]
    ParentOutsideOwn {
        /// The configured parent (a cgroup path).
        parent: PathBuf,
        /// The process's own cgroup in that hierarchy.
        own: PathBuf,
        /// The hierarchy, e.g. `memory` or `unified`.
        hierarchy: String,
    },
    /// A configured parent path is malformed.
    #[error("invalid parent cgroup path {path}: {reason}")]
    InvalidParent {
        /// The configured path.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A cgroup (or interface file) name is malformed.
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A resource value is out of range or cannot be expressed on this layout.
    #[error("invalid resource {field}: {reason}")]
    InvalidResource {
        /// The `Resources` field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither cgroup v2 nor a v1 hierarchy provides a controller that is needed.
    #[error(
        "controller {controller} is not available (neither cgroup v2 nor a v1 hierarchy provides it)"
    )]
    ControllerMissing {
        /// The controller, e.g. `memory`.
        controller: &'static str,
    },
    /// The cgroup to open does not exist in some hierarchy.
    #[error("cgroup {path} does not exist")]
    NotFound {
        /// The missing directory.
        path: PathBuf,
    },
    /// Processes were still in the cgroup when the kill deadline passed.
    #[error("cgroup {path} still has {remaining} process(es) after {waited_ms} ms of killing")]
    KillTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// How many processes were left (0 if unknown but still populated).
        remaining: usize,
        /// How long we tried.
        waited_ms: u128,
    },
}

impl CgroupError {
    /// Wraps an `io::Error` with the operation and path.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when this is an I/O error with the given errno.
    pub fn is_errno(&self, errno: i32) -> bool {
        matches!(self, Self::Io { source, .. } if source.raw_os_error() == Some(errno))
    }
}
