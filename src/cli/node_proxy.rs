//! Running the node's Service proxy (`skiff_proxy::run`): alone (`skiff proxy run`) or
//! beside the kubelet in `skiff up` and `skiff kubelet`. Settings: the cluster DNS address
//! and domain, the upstream resolvers, and the BPF data plane's attach cgroup and pin dir.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use skiff_kubelet::join::NodeCredentials;
use skiff_proxy::dataplane::{Dataplane, DataplaneConfig};
use skiff_proxy::feed::{Consumer, Pacing};
use skiff_proxy::model::NodeInfo;
use skiff_proxy::run::{DnsSettings, ProxyConfig, RunningProxy};
use skiff_proxy::watch::WatchConfig;

use super::controlplane::terminated;

/// The proxy's settings, shared by `skiff proxy run`, `skiff up` and `skiff kubelet`.
#[derive(Debug, Clone, Args)]
pub struct ProxyOptions {
    /// The cluster DNS address this node answers on (what pods' resolv.conf names); default:
    /// the Service range's tenth address (10.96.0.10 for the default range).
    #[arg(long)]
    pub cluster_dns: Option<Ipv4Addr>,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Resolvers for names outside the cluster domain (repeatable, `IP:53`); default: the
    /// nameservers of this node's /etc/resolv.conf.
    #[arg(long = "dns-upstream")]
    pub dns_upstreams: Vec<SocketAddr>,
    /// Serve no cluster DNS on this node.
    #[arg(long)]
    pub no_dns: bool,
    /// Do not translate Service addresses with the BPF data plane. By default the proxy
    /// does (socket hooks on --bpf-cgroup, pins in --bpf-pin-dir, which stay after skiff
    /// exits so Service traffic outlives a restart: `skiff proxy reset --pin-dir DIR`
    /// removes them); where BPF cannot be loaded it says so and serves DNS only.
    #[arg(long)]
    pub no_bpf_dataplane: bool,
    /// The cgroup v2 directory the BPF socket programs attach to. On a dedicated node the
    /// cgroup2 root; default: the pods' parent cgroup below skiff's own (never the root of
    /// a shared machine).
    #[arg(long)]
    pub bpf_cgroup: Option<PathBuf>,
    /// Where the BPF programs and maps are pinned (a bpffs mount is made there if needed);
    /// default: ROOT/bpf.
    #[arg(long)]
    pub bpf_pin_dir: Option<PathBuf>,
    /// The interface NodePort, externalIP and LoadBalancer traffic from other hosts arrives
    /// on: the BPF tc programs go there. Default: the interface holding the node's address
    /// (none when that is a loopback address); `none`: serve those only to this node's own
    /// processes and pods.
    #[arg(long)]
    pub bpf_uplink: Option<String>,
}

/// Options of `skiff proxy run`.
#[derive(Debug, Args)]
pub struct ProxyRunArgs {
    /// The control plane's node service, `https://HOST:6444`.
    #[arg(long)]
    pub server: String,
    /// The API server, to join with a token when ROOT/pki holds no certificate yet.
    #[arg(long)]
    pub api_server: Option<String>,
    /// The cluster CA certificate (PEM), for joining.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    #[arg(long, env = "SKIFF_JOIN_TOKEN", default_value = "")]
    pub join_token: String,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// This node's address (for NodePorts and traffic policy).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// The pods' cgroup, relative to the cgroup skiff runs in (the default attach point).
    #[arg(long, env = "SKIFF_CGROUP_PARENT", default_value = "skiff-pods")]
    pub cgroup_parent: PathBuf,
    #[command(flatten)]
    pub proxy: ProxyOptions,
}

/// What the BPF data plane is opened with (issue 8's `Dataplane::open`).
#[derive(Debug, Clone)]
pub struct DataplaneSettings {
    /// Not `--no-bpf-dataplane`.
    pub enabled: bool,
    pub node_name: String,
    pub node_ip: Option<IpAddr>,
    pub attach_cgroup: PathBuf,
    pub pin_dir: PathBuf,
    /// The tc attach point (see [`uplink`]).
    pub uplink: Option<String>,
}

/// The interface for the tc path: `--bpf-uplink` as given (`none`: no tc path), else the
/// one `holder` says holds the node's IPv4 address — never for a loopback or unspecified
/// address, which no other host can send to.
pub fn uplink(
    flag: Option<&str>,
    node_ip: Option<IpAddr>,
    holder: impl FnOnce(Ipv4Addr) -> Option<String>,
) -> Option<String> {
    match (flag, node_ip) {
        (Some("none"), _) => None,
        (Some(name), _) => Some(name.to_owned()),
        (None, Some(IpAddr::V4(ip))) if !ip.is_loopback() && !ip.is_unspecified() => holder(ip),
        (None, _) => None,
    }
}

/// The interface holding `ip` in this process's network namespace (logged when none does
/// or it cannot be read: the tc path is then off).
fn interface_holding(ip: Ipv4Addr) -> Option<String> {
    match skiff_runtime::net::interface_with_address(ip) {
        Ok(Some(name)) => Some(name),
        Ok(None) => {
            tracing::warn!(%ip, "no interface holds the node address: no tc path, NodePorts are served to this node only (--bpf-uplink)");
            None
        }
        Err(e) => {
            tracing::warn!(%ip, error = %e, "finding the interface of the node address: no tc path (--bpf-uplink)");
            None
        }
    }
}

/// The cgroup the pods run below: `cgroup_parent` under skiff's own cgroup on the cgroup2
/// hierarchy.
fn pods_cgroup(cgroup_parent: &Path) -> Result<PathBuf> {
    let read = |p: &str| std::fs::read_to_string(p).with_context(|| format!("reading {p}"));
    let layout = skiff_runtime::cgroup::Layout::parse(
        &read("/proc/self/mountinfo")?,
        &read("/proc/self/cgroup")?,
    )
    .context("reading the cgroup layout")?;
    let unified = layout
        .unified
        .context("no cgroup2 hierarchy to attach the BPF programs to")?;
    Ok(unified.own_dir().join(cgroup_parent))
}

/// The data plane consumers for `settings`: the BPF data plane (`skiff_proxy::dataplane`),
/// socket hooks on `attach_cgroup` (created if missing: it is below skiff's own cgroup),
/// tc programs on `uplink` (NodePorts, externalIPs and LoadBalancer IPs for other hosts),
/// pins in `pin_dir`. When it cannot be opened (no BPF support, not root) the proxy still
/// serves DNS, and says so: Service addresses then hit the node's unreachable route.
fn data_plane(settings: &DataplaneSettings) -> Result<Vec<Box<dyn Consumer>>> {
    if !settings.enabled {
        tracing::info!(
            "no BPF data plane (--no-bpf-dataplane): Service addresses are not translated"
        );
        return Ok(Vec::new());
    }
    let addresses = match settings.node_ip {
        Some(IpAddr::V4(ip)) => vec![ip],
        _ => Vec::new(),
    };
    let mut config = DataplaneConfig::new(NodeInfo {
        name: settings.node_name.clone(),
        addresses,
    });
    config.pin_dir = settings.pin_dir.clone();
    config.cgroup = Some(settings.attach_cgroup.clone());
    config.uplink = settings.uplink.clone();
    let open = |config: DataplaneConfig| {
        std::fs::create_dir_all(&settings.attach_cgroup)
            .with_context(|| format!("creating {}", settings.attach_cgroup.display()))
            .and_then(|()| Dataplane::open(config).context("opening the BPF data plane"))
    };
    // The tc path needs more of the kernel (TCX links, 6.6) than the socket hooks: without
    // it the node still translates Service addresses for its own processes and pods.
    let opened = match open(config.clone()) {
        Err(e) if config.uplink.is_some() => {
            tracing::warn!(
                uplink = config.uplink.as_deref().unwrap_or_default(),
                "{e:#}: no tc path, NodePorts are served to this node's own processes and pods only"
            );
            config.uplink = None;
            open(config)
        }
        other => other,
    };
    match opened {
        Ok(dataplane) => Ok(vec![Box::new(dataplane)]),
        Err(e) => {
            tracing::warn!(
                attach_cgroup = %settings.attach_cgroup.display(),
                pin_dir = %settings.pin_dir.display(),
                "{e:#}: Service addresses are not translated on this node"
            );
            Ok(Vec::new())
        }
    }
}

/// Starts the proxy towards `server` with `credentials`. `default_dns` is the cluster DNS
/// address when `--cluster-dns` is not given.
pub async fn start(
    root: &Path,
    server: &str,
    credentials: &NodeCredentials,
    options: &ProxyOptions,
    cgroup_parent: &Path,
    node_ip: Option<IpAddr>,
    default_dns: Ipv4Addr,
) -> Result<RunningProxy> {
    let dns = (!options.no_dns).then(|| {
        let address = options.cluster_dns.unwrap_or(default_dns);
        let mut dns = DnsSettings::node_local(address, options.cluster_domain.clone());
        if !options.dns_upstreams.is_empty() {
            dns.upstreams = options.dns_upstreams.clone();
        }
        dns
    });
    let settings = DataplaneSettings {
        enabled: !options.no_bpf_dataplane,
        node_name: credentials.node_name.clone(),
        node_ip,
        attach_cgroup: match &options.bpf_cgroup {
            Some(dir) => dir.clone(),
            None => pods_cgroup(cgroup_parent)?,
        },
        pin_dir: options
            .bpf_pin_dir
            .clone()
            .unwrap_or_else(|| root.join("bpf")),
        uplink: if options.no_bpf_dataplane {
            None
        } else {
            uplink(options.bpf_uplink.as_deref(), node_ip, interface_holding)
        },
    };
    if let Some(uplink) = &settings.uplink {
        tracing::info!(%uplink, "the BPF tc path serves NodePorts to other hosts here");
    }
    let config = ProxyConfig {
        watch: WatchConfig {
            server: server.to_owned(),
            tls: credentials.tonic_client_tls(None),
            window: Duration::from_millis(50),
        },
        dns,
        pacing: Pacing::default(),
    };
    let proxy = skiff_proxy::run::start(config, data_plane(&settings)?)
        .await
        .context("starting the Service proxy")?;
    if let Some(addr) = proxy.dns_addr {
        tracing::info!(%addr, "cluster DNS on this node");
    }
    Ok(proxy)
}

/// `skiff proxy run`.
pub async fn run(root: &Path, args: ProxyRunArgs) -> Result<()> {
    let node_name = args.node_name.clone().unwrap_or_else(super::up::host_name);
    let credentials = match NodeCredentials::load(&root.join("pki")) {
        Ok(c) if c.node_name == node_name && c.is_valid_at(std::time::SystemTime::now()) => c,
        _ => {
            let (Some(api_server), Some(ca_file)) = (&args.api_server, &args.ca_file) else {
                anyhow::bail!(
                    "no node certificate in {}: join first (skiff kubelet) or give --api-server, --ca-file and --join-token",
                    root.join("pki").display()
                );
            };
            let ca_pem = std::fs::read_to_string(ca_file)
                .with_context(|| format!("reading {}", ca_file.display()))?;
            super::up::credentials(root, api_server, &args.join_token, &ca_pem, &node_name).await?
        }
    };
    let proxy = start(
        root,
        &args.server,
        &credentials,
        &args.proxy,
        &args.cgroup_parent,
        args.node_ip,
        Ipv4Addr::new(10, 96, 0, 10),
    )
    .await?;
    terminated().await?;
    proxy.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uplink_is_the_flag_or_the_interface_of_the_node_address() {
        let eth0 = |_: Ipv4Addr| Some("eth0".to_owned());
        let node = Some(IpAddr::V4(Ipv4Addr::new(10, 250, 0, 11)));
        assert_eq!(uplink(Some("bond0"), node, eth0).as_deref(), Some("bond0"));
        assert_eq!(uplink(Some("none"), node, eth0), None);
        assert_eq!(uplink(None, node, eth0).as_deref(), Some("eth0"));
        assert_eq!(uplink(None, node, |_| None), None, "no interface holds it");
        assert_eq!(uplink(None, None, eth0), None, "no node address");
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(uplink(None, lo, eth0), None, "loopback: no other host");
        let v6 = Some("fd00::1".parse().unwrap());
        assert_eq!(uplink(None, v6, eth0), None, "the tc path is IPv4 only");
    }
}
