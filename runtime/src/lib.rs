//! skiff's Linux runtime: OCI images on disk, pod sandboxes (pinned namespaces, cgroups, the
//! pod network) and containers.
//! It knows Linux, not Kubernetes.

pub mod cgroup;
pub mod container;
pub mod fdio;
pub mod image;
pub mod net;
pub mod ns;
pub mod sandbox;
