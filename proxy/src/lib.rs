//! skiff's Service proxy (kube-proxy's job, without iptables): it follows the cluster's
//! Services and EndpointSlices through the node contract, turns them into the contents of
//! the BPF maps that the programs in `ebpf/` read when a socket connects, and answers
//! cluster DNS from the same picture.
//!
//! The picture of the cluster the proxy works from is [`ClusterState`]: the data plane plans
//! its maps from it, the DNS server its records. `watch` keeps it from `WatchServices`;
//! `feed` hands each new one to the [`Consumer`]s (the data plane, `dns::DnsRecords`);
//! `nodelocal` puts the cluster DNS address on the node; `run` is the proxy process.
#![forbid(unsafe_code)]

pub mod dns;
pub mod feed;
pub mod nodelocal;
pub mod run;
pub mod state;
pub mod watch;

pub use feed::{Consumer, SyncError};
pub use state::{ClusterState, ObjectKey};
