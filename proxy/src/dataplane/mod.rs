//! The kernel side of the proxy (aya): loads `skiff_ebpf::OBJECT`, pins its maps and
//! programs under a bpffs directory, attaches the socket hooks to a cgroup and the tc
//! programs to the uplink, and applies plans to the maps.
//!
//! Restart-safe: everything lives in pins, so the proxy process can die (even SIGKILL) and
//! traffic keeps flowing. [`Dataplane::open`] re-opens the pinned maps, reads back what they
//! hold, re-attaches only what is missing or from another build, and the first
//! [`Dataplane::sync`] removes what is stale.

mod attach;
mod bpffs;
mod error;
mod maps;
mod sys;

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use aya::{Ebpf, EbpfLoader};

pub use attach::{AttachReport, Attachment, Target};
pub use error::DataplaneError;
pub use maps::{MapWriter, Maps, StateCounts, execute};

use crate::model::{Model, NodeInfo};
use crate::plan::{self, MapContents, OpCounts, Plan};
use crate::state::ClusterState;

/// Where and how the data plane runs on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// Directory on a bpffs for the pins (`maps/`, `progs/`, `links/`); a bpffs is mounted
    /// when none holds it. Default [`DataplaneConfig::DEFAULT_PIN_DIR`].
    pub pin_dir: PathBuf,
    /// The cgroup v2 directory whose processes get socket load balancing: the cgroup2 root
    /// on a real node; on a shared machine, a child cgroup holding the pods. None: no socket
    /// hooks.
    pub cgroup: Option<PathBuf>,
    /// The interface NodePort/LoadBalancer traffic from other hosts arrives on (tc). None:
    /// no tc programs.
    pub uplink: Option<String>,
    /// This node's name (endpoints with this `nodeName` are local) and addresses (NodePorts
    /// are served on each; the first is the SNAT source for backends on other nodes).
    pub node: NodeInfo,
    /// Source ports for SNAT; outside the kernel's ephemeral range so they never collide
    /// with the node's own connections.
    pub snat_ports: RangeInclusive<u16>,
}

impl DataplaneConfig {
    pub const DEFAULT_PIN_DIR: &'static str = "/sys/fs/bpf/skiff";
    pub const DEFAULT_SNAT_PORTS: RangeInclusive<u16> = 61000..=65535;

    pub fn new(node: NodeInfo) -> DataplaneConfig {
        DataplaneConfig {
            pin_dir: PathBuf::from(Self::DEFAULT_PIN_DIR),
            cgroup: None,
            uplink: None,
            node,
            snat_ports: Self::DEFAULT_SNAT_PORTS,
        }
    }

    fn lb_config(&self) -> Result<skiff_ebpf::LbConfig, DataplaneError> {
        let node_addr = self.node.addresses.first().copied();
        if self.uplink.is_some() && node_addr.is_none() {
            return Err(DataplaneError::Config(
                "the tc path (an uplink) needs a node address to SNAT to".into(),
            ));
        }
        if self.snat_ports.is_empty() {
            return Err(DataplaneError::Config(
                "the SNAT port range is empty".into(),
            ));
        }
        Ok(skiff_ebpf::LbConfig {
            node_addr: skiff_ebpf::be_addr(node_addr.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            snat_port_min: *self.snat_ports.start(),
            snat_port_max: *self.snat_ports.end(),
        })
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Service ports served.
    pub service_ports: usize,
    /// Frontend entries and backend slots the maps hold now.
    pub frontends: usize,
    pub backend_slots: usize,
    /// The map writes it took.
    pub ops: OpCounts,
    /// What the model left out, one line each.
    pub warnings: Vec<String>,
}

/// The loaded, attached data plane.
pub struct Dataplane {
    config: DataplaneConfig,
    maps: Maps,
    contents: MapContents,
    attach: AttachReport,
    // The loaded object: its programs stay loaded while the process runs (the pins keep
    // them after).
    _ebpf: Ebpf,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("config", &self.config)
            .field("frontends", &self.contents.frontends.len())
            .field("attach", &self.attach)
            .finish()
    }
}

impl Dataplane {
    /// Loads the programs and maps (re-opening pinned maps), attaches what the
    /// configuration asks for, and reads back what the maps hold.
    pub fn open(config: DataplaneConfig) -> Result<Dataplane, DataplaneError> {
        let lb_config = config.lb_config()?;
        bpffs::ensure(&config.pin_dir)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(config.pin_dir.join("maps"))
            .load(skiff_ebpf::OBJECT)
            .map_err(|e| DataplaneError::Load(Box::new(e)))?;
        let mut maps = Maps::from_ebpf(&mut ebpf)?;
        maps.write_config(lb_config)?;
        let contents = maps.read_contents()?;
        let wanted = attach::wanted(config.cgroup.as_deref(), config.uplink.as_deref());
        let attach = attach::attach_all(&mut ebpf, &config.pin_dir, &wanted)?;
        Ok(Dataplane {
            config,
            maps,
            contents,
            attach,
            _ebpf: ebpf,
        })
    }

    /// Makes the maps serve `state`: plans against what they hold and applies the
    /// difference (new backend sets first, then frontends, then frees old sets).
    pub fn sync(&mut self, state: &ClusterState) -> Result<SyncReport, DataplaneError> {
        let model = Model::build(state, &self.config.node);
        self.apply(&model)
    }

    /// [`Dataplane::sync`] from a model already built.
    pub fn apply(&mut self, model: &Model) -> Result<SyncReport, DataplaneError> {
        let plan = self.plan(model);
        let ops = self.execute(plan)?;
        Ok(SyncReport {
            service_ports: model.ports.len(),
            frontends: self.contents.frontends.len(),
            backend_slots: self.contents.backend_slots(),
            ops,
            warnings: model.warnings.clone(),
        })
    }

    /// The writes that make the maps serve `model` (nothing is written yet).
    pub fn plan(&self, model: &Model) -> Plan {
        plan::plan(model, &self.contents)
    }

    /// Applies a plan made by [`Dataplane::plan`] against the current contents.
    pub fn execute(&mut self, plan: Plan) -> Result<OpCounts, DataplaneError> {
        if let Err((done, err)) = execute(&plan.ops, &mut self.maps) {
            // The maps are part way: learn what they hold so the next sync starts right.
            tracing::warn!(done, total = plan.ops.len(), "sync failed part way: {err}");
            self.contents = self.maps.read_contents()?;
            return Err(*err);
        }
        let ops = plan.counts();
        self.contents = plan.next;
        Ok(ops)
    }

    /// What the frontend and backend maps hold.
    pub fn contents(&self) -> &MapContents {
        &self.contents
    }

    /// What `open` did with each attachment.
    pub fn attach_report(&self) -> &AttachReport {
        &self.attach
    }

    pub fn config(&self) -> &DataplaneConfig {
        &self.config
    }

    /// Detaches everything and removes the pins (and the bpffs mount, when it was made for
    /// the pin directory). Traffic to Services stops being translated.
    pub fn remove(pin_dir: &Path) -> Result<(), DataplaneError> {
        bpffs::remove(pin_dir)
    }
}

/// The feed (`crate::feed::sync_loop`) drives the data plane like any other consumer.
impl crate::feed::Consumer for Dataplane {
    fn name(&self) -> &'static str {
        "bpf data plane"
    }

    fn sync(&mut self, state: &ClusterState) -> Result<(), crate::feed::SyncError> {
        let report = Dataplane::sync(self, state)?;
        for warning in &report.warnings {
            tracing::warn!("{warning}");
        }
        tracing::debug!(
            frontends = report.frontends,
            backends = report.backend_slots,
            ops = ?report.ops,
            "data plane synced"
        );
        Ok(())
    }
}

/// A look at a pinned data plane without loading anything (`skiff proxy show`).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub contents: MapContents,
    pub config: skiff_ebpf::LbConfig,
    pub state: StateCounts,
    /// The pinned links (`program@target`).
    pub links: Vec<String>,
}

impl Snapshot {
    pub fn read(pin_dir: &Path) -> Result<Snapshot, DataplaneError> {
        let maps = Maps::from_pins(pin_dir)?;
        let links_dir = pin_dir.join("links");
        let mut links: Vec<String> = std::fs::read_dir(&links_dir)
            .map_err(DataplaneError::io(&links_dir, "readdir"))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        links.sort();
        Ok(Snapshot {
            contents: maps.read_contents()?,
            config: maps.config()?,
            state: maps.state_counts(),
            links,
        })
    }
}
