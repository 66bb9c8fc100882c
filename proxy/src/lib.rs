//! skiff's Service proxy (kube-proxy's job, without iptables): it follows the cluster's
//! Services and EndpointSlices through the node contract, turns them into the contents of
//! the BPF maps that the programs in `ebpf/` read when a socket connects, and answers
//! cluster DNS from the same picture.
//!
//! The picture of the cluster the proxy works from is [`ClusterState`]: the data plane plans
//! its maps from it, the DNS server its records. `watch` keeps it from `WatchServices`;
//! `feed` hands each new one to the [`Consumer`]s (the data plane, `dns::DnsRecords`);
//! `nodelocal` puts the cluster DNS address on the node; `run` is the proxy process.
//!
//! ## The data plane's API
//!
//! ```no_run
//! use skiff_proxy::dataplane::{Dataplane, DataplaneConfig};
//! use skiff_proxy::model::NodeInfo;
//! # fn main() -> Result<(), skiff_proxy::dataplane::DataplaneError> {
//! let mut config = DataplaneConfig::new(NodeInfo {
//!     name: "node-1".into(),                          // endpoints with this nodeName are local
//!     addresses: vec!["192.168.1.10".parse().unwrap()], // NodePorts; the first is the SNAT source
//! });
//! config.cgroup = Some("/sys/fs/cgroup".into());   // socket hooks for every process below
//! config.uplink = Some("eth0".into());             // tc: NodePort/LB traffic from other hosts
//! // config.pin_dir defaults to /sys/fs/bpf/skiff
//! let mut dataplane = Dataplane::open(config)?;    // loads or re-opens the pins
//! let state = skiff_proxy::ClusterState::default(); // from WatchServices
//! let report = dataplane.sync(&state)?;             // call again on every change
//! println!("{} frontends, {:?}", report.frontends, report.ops);
//! # Ok(()) }
//! ```
//!
//! - [`dataplane::Dataplane::open`] is idempotent across process restarts: maps, programs and
//!   links live in bpffs pins; it keeps what already runs this build, re-attaches the rest,
//!   and reads back what the maps hold. Never attach to a cgroup hierarchy root on a shared
//!   machine (tests: a child of the test's own cgroup).
//! - [`dataplane::Dataplane::sync`] plans against that and writes the difference; the first
//!   sync after a start removes what the state no longer has. It is cheap when nothing changed
//!   (no writes), so calling it per watch event or batch of events is fine. `Dataplane` is a
//!   [`Consumer`], so the feed drives it.
//! - [`dataplane::Dataplane::remove`] detaches and unpins everything (`skiff proxy reset`).
//! - Pure pieces: [`model::Model::build`] (what is served) and [`plan::plan`] (the writes).
// Unsafe code is denied everywhere but in dataplane/sys.rs, the one bpf(2) call site.
#![deny(unsafe_code)]

pub mod dataplane;
pub mod dns;
pub mod feed;
pub mod model;
pub mod nodelocal;
pub mod objects;
pub mod plan;
pub mod run;
pub mod state;
pub mod watch;

pub use feed::{Consumer, SyncError};
pub use state::{ClusterState, ObjectKey};
