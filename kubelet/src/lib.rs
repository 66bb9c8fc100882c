//! skiff's node agent. Pods come from a control plane (`agent`) or straight from a manifest
//! (`skiff pod …`). `podspec` is the pure translation of a Pod into runtime specs; `local`
//! applies such a plan with the runtime and keeps each pod's record on disk; `join` gets the
//! node its client certificate (mTLS identity) with a join token; `probe` checks containers;
//! `volume` makes a pod's volumes (tmpfs, and the atomically written files of configMap,
//! secret, downwardAPI and projected volumes).
#![forbid(unsafe_code)]

pub mod agent;
pub mod caps;
pub mod discovery;
pub mod images;
pub mod ipam;
pub mod join;
pub mod local;
pub mod podspec;
pub mod probe;
pub mod stream;
pub mod volume;
