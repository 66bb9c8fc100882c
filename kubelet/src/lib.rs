//! skiff's node agent. For now: Pods from a manifest run directly on this node, without a
//! control plane (`skiff pod …`). `podspec` is the pure translation of a Pod into runtime
//! specs; `local` applies such a plan with the runtime and keeps each pod's record on disk;
//! `volume` makes a pod's volumes (tmpfs, and the atomically written files of configMap,
//! secret, downwardAPI and projected volumes).
#![forbid(unsafe_code)]

pub mod caps;
pub mod images;
pub mod ipam;
pub mod local;
pub mod podspec;
pub mod volume;
