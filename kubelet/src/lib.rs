//! skiff's node agent. For now: Pods from a manifest run directly on this node, without a
//! control plane (`skiff pod …`). `podspec` is the pure translation of a Pod into runtime
//! specs; `local` applies such a plan with the runtime and keeps each pod's record on disk.
//! `join` gets the node its client certificate (mTLS identity) with a join token.
#![forbid(unsafe_code)]

pub mod agent;
pub mod caps;
pub mod images;
pub mod ipam;
pub mod join;
pub mod local;
pub mod podspec;
pub mod probe;
