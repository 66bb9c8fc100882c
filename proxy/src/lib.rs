//! skiff's Service proxy (kube-proxy's job, without iptables): it follows the cluster's
//! Services and EndpointSlices through the node contract, turns them into the contents of
//! the BPF maps that the programs in `ebpf/` read when a socket connects, and answers
//! cluster DNS from the same picture.
//!
//! The picture of the cluster the proxy works from is [`ClusterState`]: the data plane plans
//! its maps from it, the DNS server its records.
// Unsafe code is denied everywhere but in dataplane/sys.rs, the one bpf(2) call site.
#![deny(unsafe_code)]

pub mod dataplane;
pub mod model;
pub mod objects;
pub mod plan;
pub mod state;

pub use state::{ClusterState, ObjectKey};
