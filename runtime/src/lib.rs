//! skiff's Linux runtime: OCI images on disk, and (later) pod sandboxes and containers.
//! It knows Linux, not Kubernetes.

pub mod cgroup;
pub mod image;
