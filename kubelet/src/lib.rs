//! skiff's node agent. For now: Pods from a manifest run directly on this node, without a
//! control plane (`skiff pod …`). `podspec` is the pure translation of a Pod into runtime
//! specs; `local` applies such a plan with the runtime and keeps each pod's record on disk.
#![forbid(unsafe_code)]

pub mod caps;
pub mod images;
pub mod ipam;
pub mod local;
pub mod podspec;
pub mod probe;
