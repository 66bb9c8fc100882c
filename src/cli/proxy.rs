//! `skiff proxy …`: the node's Service proxy (`run`, following the control plane; see
//! `node_proxy.rs`), and its eBPF data plane by hand — program Services and EndpointSlices
//! from a file into the BPF maps (`apply`), look at what the maps hold (`show`), and take it
//! all down (`reset`). The data plane outlives these commands: its programs and maps are
//! pinned in bpffs.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use skiff_proxy::dataplane::{Dataplane, DataplaneConfig, Snapshot, SyncReport};
use skiff_proxy::model::{NodeInfo, Protocol};

use super::node_proxy::{self, ProxyRunArgs};

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Run the proxy alone on this node (Services into BPF, cluster DNS), with the node's
    /// credentials from joining, until SIGTERM.
    Run(ProxyRunArgs),
    /// Program the Services and EndpointSlices of a file (YAML or JSON) into the data plane;
    /// what the file no longer has is removed.
    Apply(ApplyArgs),
    /// Print what the data plane's maps hold.
    Show(ShowArgs),
    /// Detach the programs and remove the pins: Service addresses stop being translated.
    Reset {
        #[arg(long, env = "SKIFF_PROXY_PIN_DIR", default_value = DataplaneConfig::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

/// Where the data plane runs (shared by every command that opens it).
#[derive(Debug, Clone, Args)]
pub struct DataplaneArgs {
    /// The bpffs directory for pins (a bpffs is mounted there when none holds it).
    #[arg(long, env = "SKIFF_PROXY_PIN_DIR", default_value = DataplaneConfig::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// The cgroup v2 directory whose processes get socket load balancing (default: the
    /// cgroup2 root at /sys/fs/cgroup on a unified host; `none`: no socket hooks).
    #[arg(long, env = "SKIFF_PROXY_CGROUP")]
    pub cgroup: Option<PathBuf>,
    /// The interface NodePort and LoadBalancer traffic from other hosts arrives on (tc).
    #[arg(long, env = "SKIFF_PROXY_UPLINK")]
    pub uplink: Option<String>,
    /// This node's name: endpoints with this nodeName are local (default: the hostname).
    #[arg(long, env = "SKIFF_NODE_NAME")]
    pub node_name: Option<String>,
    /// A node address NodePorts are served on; the first is the SNAT source (repeatable).
    #[arg(long = "node-ip", env = "SKIFF_NODE_IP", value_delimiter = ',')]
    pub node_ips: Vec<Ipv4Addr>,
    /// Source ports for SNAT to backends on other nodes (MIN-MAX).
    #[arg(long, default_value = "61000-65535", value_parser = parse_range)]
    pub snat_ports: RangeInclusive<u16>,
}

fn parse_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').ok_or("expected MIN-MAX")?;
    let (a, b): (u16, u16) = (
        a.parse().map_err(|e| format!("{a}: {e}"))?,
        b.parse().map_err(|e| format!("{b}: {e}"))?,
    );
    if a == 0 || a > b {
        return Err(format!("{s}: not a port range"));
    }
    Ok(a..=b)
}

/// `CGROUP2_SUPER_MAGIC`
const CGROUP2_MAGIC: u64 = 0x6367_7270;

impl DataplaneArgs {
    pub fn config(&self) -> Result<DataplaneConfig> {
        let cgroup = match &self.cgroup {
            Some(p) if p.as_os_str() == "none" => None,
            Some(p) => Some(p.clone()),
            None => {
                let root = Path::new("/sys/fs/cgroup");
                let unified =
                    rustix::fs::statfs(root).is_ok_and(|s| s.f_type as u64 == CGROUP2_MAGIC);
                if !unified {
                    bail!(
                        "/sys/fs/cgroup is not a cgroup2 root (a hybrid or v1 host): pass \
                         --cgroup with the cgroup v2 directory that holds the pods, or none"
                    );
                }
                Some(root.to_path_buf())
            }
        };
        let name = match &self.node_name {
            Some(n) => n.clone(),
            None => rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
        };
        Ok(DataplaneConfig {
            pin_dir: self.pin_dir.clone(),
            cgroup,
            uplink: self.uplink.clone(),
            node: NodeInfo {
                name,
                addresses: self.node_ips.clone(),
            },
            snat_ports: self.snat_ports.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Services and EndpointSlices (YAML documents, JSON, or a List).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Keep running: apply again whenever the file changes, until SIGTERM/SIGINT (the data
    /// plane stays in place after).
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    dataplane: DataplaneArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[arg(long, env = "SKIFF_PROXY_PIN_DIR", default_value = DataplaneConfig::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Output format: table or json.
    #[arg(short = 'o', long, default_value = "table")]
    output: String,
}

pub async fn run(root: &Path, cmd: ProxyCommand) -> Result<()> {
    match cmd {
        ProxyCommand::Run(args) => node_proxy::run(root, args).await,
        ProxyCommand::Apply(args) => apply(args).await,
        ProxyCommand::Show(args) => show(&args),
        ProxyCommand::Reset { pin_dir } => Dataplane::remove(&pin_dir)
            .with_context(|| format!("removing the data plane at {}", pin_dir.display())),
    }
}

async fn apply(args: ApplyArgs) -> Result<()> {
    let config = args.dataplane.config()?;
    read_objects(&args.file)?; // a bad file fails before anything is loaded
    let mut dataplane = Dataplane::open(config).context("opening the data plane")?;
    let attach = dataplane.attach_report();
    if !attach.attached.is_empty() || !attach.removed.is_empty() {
        eprintln!(
            "attached: {}; kept: {}; removed: {}",
            attach.attached.join(" "),
            attach.kept.join(" "),
            attach.removed.join(" ")
        );
    }
    let mut seen = apply_file(&mut dataplane, &args.file)?;
    if !args.watch {
        return Ok(());
    }
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tick.tick() => {}
        }
        let modified = modified(&args.file);
        if modified != seen.0 {
            match apply_file(&mut dataplane, &args.file) {
                Ok(now) => seen = now,
                Err(e) => {
                    eprintln!("skiff: error: {e:#}");
                    seen.0 = modified;
                }
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads the file and syncs; returns the modification time it read.
fn apply_file(dataplane: &mut Dataplane, file: &Path) -> Result<(Option<SystemTime>, SyncReport)> {
    let modified = modified(file);
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let state = skiff_proxy::objects::parse(&text).with_context(|| file.display().to_string())?;
    let report = dataplane
        .sync(&state)
        .context("programming the data plane")?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    println!(
        "{} service ports: {} frontends, {} backend slots ({} frontend and {} backend writes, {} + {} deletes)",
        report.service_ports,
        report.frontends,
        report.backend_slots,
        report.ops.frontend_puts,
        report.ops.backend_puts,
        report.ops.frontend_deletes,
        report.ops.backend_deletes
    );
    Ok((modified, report))
}

fn read_objects(file: &Path) -> Result<skiff_proxy::ClusterState> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    skiff_proxy::objects::parse(&text).with_context(|| file.display().to_string())
}

fn show(args: &ShowArgs) -> Result<()> {
    let snap = Snapshot::read(&args.pin_dir)
        .with_context(|| format!("reading the data plane at {}", args.pin_dir.display()))?;
    let rows = rows(&snap);
    match args.output.as_str() {
        "json" => {
            let json = serde_json::json!({
                "frontends": rows.iter().map(|r| serde_json::json!({
                    "frontend": r.frontend, "protocol": r.protocol, "flags": r.flags,
                    "svcId": r.svc_id, "backends": r.backends, "localBackends": r.local,
                })).collect::<Vec<_>>(),
                "links": snap.links,
                "state": snap.state,
                "nodeAddress": skiff_ebpf::addr_of(snap.config.node_addr).to_string(),
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        "table" => {
            println!(
                "{:<22} {:<5} {:<24} {:>6}  BACKENDS",
                "FRONTEND", "PROTO", "FLAGS", "SVC"
            );
            for r in &rows {
                let backends = if r.backends.is_empty() {
                    "(none: refused)".to_string()
                } else {
                    r.backends.join(" ")
                };
                println!(
                    "{:<22} {:<5} {:<24} {:>6}  {backends}",
                    r.frontend, r.protocol, r.flags, r.svc_id
                );
            }
            println!(
                "links: {}\nstate: {} affinity, {} sockets, {} tracked flows",
                snap.links.join(" "),
                snap.state.affinity,
                snap.state.sockets,
                snap.state.conntrack
            );
        }
        other => bail!("unknown output format {other:?} (table or json)"),
    }
    Ok(())
}

struct Row {
    frontend: String,
    protocol: String,
    flags: String,
    svc_id: u32,
    backends: Vec<String>,
    local: Vec<String>,
}

fn rows(snap: &Snapshot) -> Vec<Row> {
    let set = |id: u32, count: u16| -> Vec<String> {
        let slots = snap
            .contents
            .sets
            .get(&id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        slots
            .iter()
            .take(count as usize)
            .map(|b| {
                let local = if b.flags & skiff_ebpf::BE_LOCAL != 0 {
                    "*"
                } else {
                    ""
                };
                format!(
                    "{}:{}{local}",
                    skiff_ebpf::addr_of(b.addr),
                    skiff_ebpf::port_of(b.port)
                )
            })
            .collect()
    };
    let mut rows: Vec<Row> = snap
        .contents
        .frontends
        .iter()
        .map(|(k, v)| {
            let names = [
                (skiff_ebpf::FE_EXTERNAL, "external"),
                (skiff_ebpf::FE_NODEPORT, "nodeport"),
                (skiff_ebpf::FE_ETP_LOCAL, "etp-local"),
                (skiff_ebpf::FE_ITP_LOCAL, "itp-local"),
                (skiff_ebpf::FE_AFFINITY, "affinity"),
            ];
            let mut flags: Vec<String> = names
                .iter()
                .filter(|(bit, _)| v.flags & bit != 0)
                .map(|(_, n)| n.to_string())
                .collect();
            if v.flags & skiff_ebpf::FE_AFFINITY != 0 {
                flags.push(format!("{}s", v.affinity_timeout));
            }
            Row {
                frontend: format!(
                    "{}:{}",
                    skiff_ebpf::addr_of(k.addr),
                    skiff_ebpf::port_of(k.port)
                ),
                protocol: Protocol::from_number(k.proto)
                    .map_or_else(|| k.proto.to_string(), |p| p.to_string()),
                flags: if flags.is_empty() {
                    "-".into()
                } else {
                    flags.join(",")
                },
                svc_id: v.svc_id,
                backends: set(v.set_id, v.count),
                local: set(v.local_set_id, v.local_count),
            }
        })
        .collect();
    rows.sort_by(|a, b| (a.svc_id, &a.frontend).cmp(&(b.svc_id, &b.frontend)));
    rows
}
