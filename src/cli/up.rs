//! `skiff up`: a single-node cluster in one process — the control plane (embedded store,
//! API server, node service, controllers), this machine's kubelet dialling it over the
//! node contract like any other node, and its Service proxy with the cluster DNS. And `skiff kubelet`: the node agent alone, for a
//! node joining a control plane elsewhere.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::Args;
use skiff_controlplane::apiserver::{PortRange, ServiceCidr};
use skiff_kubelet::agent::{self, AgentConfig};
use skiff_kubelet::discovery;
use skiff_kubelet::join::{self, NodeCredentials};
use skiff_runtime::image::PullOptions;

use super::controlplane::{ApiServerArgs, ControlPlane, parse_join_token, terminated};
use super::node_proxy::{self, ProxyOptions};

/// What a node needs to know to run pods.
#[derive(Debug, Clone, Args)]
pub struct NodeOptions {
    /// This node's name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// This node's address (default: the one that routes to the control plane).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Pod cgroups go below this one, relative to the cgroup skiff runs in.
    #[arg(long, env = "SKIFF_CGROUP_PARENT", default_value = "skiff-pods")]
    pub cgroup_parent: PathBuf,
    /// The bridge pods attach to (created if missing; its address is the PodCIDR's first).
    #[arg(long, default_value = "skiffbr0")]
    pub bridge: String,
    /// Registries spoken to over plain HTTP (loopback always is).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Image pulls at once.
    #[arg(long, default_value_t = 3)]
    pub parallel_pulls: usize,
    /// Where the kubelet serves `/metrics` (Prometheus text, plain HTTP): keep it on
    /// loopback. `off` serves none.
    #[arg(long, default_value = "127.0.0.1:10255")]
    pub metrics_listen: String,
}

fn parse_listen(s: &str) -> Result<Option<SocketAddr>> {
    if s == "off" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .with_context(|| format!("--metrics-listen {s:?}: HOST:PORT or off"))
}

/// Options of `skiff up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the control plane's store, certificates and kubeconfig live; the node keeps
    /// its images and pods in DATA_DIR/node.
    #[arg(long, default_value = "/var/lib/skiff")]
    pub data_dir: PathBuf,
    /// The API server's HTTPS address.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Where the node service listens.
    #[arg(long, default_value = "127.0.0.1:6444")]
    pub node_listen: SocketAddr,
    #[arg(long, default_value = "10.96.0.0/12", value_parser = ServiceCidr::parse)]
    pub service_cidr: ServiceCidr,
    /// Extra DNS name or IP for the serving certificate (repeatable): the address other
    /// nodes dial.
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// A join token chosen in advance for the nodes that join later (see `skiff apiserver`).
    #[arg(long, env = "SKIFF_JOIN_TOKEN", hide_env_values = true, value_parser = parse_join_token)]
    pub join_token: Option<String>,
    /// Addresses for `type: LoadBalancer` Services (e.g. 192.0.2.0/28).
    #[arg(long)]
    pub loadbalancer_pool: Option<ipnet::Ipv4Net>,
    /// Run no Service proxy (nor cluster DNS) on this node.
    #[arg(long)]
    pub no_proxy: bool,
    #[command(flatten)]
    pub proxy: ProxyOptions,
    #[command(flatten)]
    pub node: NodeOptions,
}

/// Options of `skiff kubelet`.
#[derive(Debug, Args)]
pub struct KubeletArgs {
    /// The control plane's API server, `https://HOST:6443` (where the node joins).
    #[arg(long)]
    pub api_server: String,
    /// The control plane's node service, `https://HOST:6444`.
    #[arg(long)]
    pub server: String,
    /// A join token (the control plane's DATA_DIR/join-token, or `POST /skiff/v1/jointokens`);
    /// needed only until the node has its certificate (ROOT/pki).
    #[arg(long, env = "SKIFF_JOIN_TOKEN", default_value = "")]
    pub join_token: String,
    /// The cluster CA certificate (PEM): the only one the node trusts.
    #[arg(long, conflicts_with = "ca_cert_hash")]
    pub ca_file: Option<PathBuf>,
    /// Instead of --ca-file: the pin of the cluster CA (`sha256:<hex>`, as the control
    /// plane prints and writes to DATA_DIR/ca-cert-hash). The CA is fetched from the API
    /// server and trusted only if its public key has this hash.
    #[arg(long)]
    pub ca_cert_hash: Option<String>,
    /// Run no Service proxy (nor cluster DNS) on this node.
    #[arg(long)]
    pub no_proxy: bool,
    #[command(flatten)]
    pub proxy: ProxyOptions,
    #[command(flatten)]
    pub node: NodeOptions,
}

pub(super) fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .to_lowercase()
}

/// The node's certificate: the one in ROOT/pki while valid, else a fresh one from joining.
pub(super) async fn credentials(
    root: &std::path::Path,
    api_server: &str,
    join_token: &str,
    ca_pem: &str,
    node_name: &str,
) -> Result<NodeCredentials> {
    join::load_or_join(api_server, join_token, ca_pem, node_name, &root.join("pki"))
        .await
        .with_context(|| format!("joining {api_server} as node {node_name}"))
}

fn agent_config(
    root: &std::path::Path,
    server: String,
    credentials: NodeCredentials,
    node: &NodeOptions,
) -> Result<AgentConfig> {
    Ok(AgentConfig {
        server,
        credentials,
        node_ip: node.node_ip,
        state_dir: root.join("run"),
        image_root: root.to_path_buf(),
        setup_binary: crate::setup_binary().context("finding the skiff binary")?,
        cgroup_parent: node.cgroup_parent.clone(),
        node_netns: None,
        bridge: node.bridge.clone(),
        pull: PullOptions {
            insecure_registries: node.insecure_registries.clone(),
            ..PullOptions::default()
        },
        parallel_pulls: node.parallel_pulls,
        metrics_listen: parse_listen(&node.metrics_listen)?,
    })
}

/// `https://ADDR` for this machine's own connections: a wildcard listen address (`0.0.0.0`,
/// `::`) becomes loopback, which the serving certificate always names.
fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

pub async fn up(args: UpArgs) -> Result<()> {
    let plane_args = ApiServerArgs {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        etcd: Vec::new(),
        tls_san: args.tls_san.clone(),
        no_controllers: false,
        service_cidr: args.service_cidr,
        service_node_port_range: PortRange::default(),
        node_listen: args.node_listen,
        join_token: args.join_token.clone(),
        loadbalancer_pool: args.loadbalancer_pool,
        lifecycle: Default::default(),
    };
    let plane = ControlPlane::start(&plane_args).await?;
    let node_name = args.node.node_name.clone().unwrap_or_else(host_name);
    let node_root = args.data_dir.join("node");
    // This node joins like any other: the join token for a client certificate.
    let credentials = credentials(
        &node_root,
        &local_url(plane.server.addr),
        &plane.server.join_token,
        &plane.server.ca_pem,
        &node_name,
    )
    .await?;
    let server = local_url(plane.nodes.addr);
    let proxy = if args.no_proxy {
        None
    } else {
        let dns = skiff_controlplane::node::NodeSettings::new(args.service_cidr).cluster_dns;
        Some(
            node_proxy::start(
                &node_root,
                &server,
                &credentials,
                &args.proxy,
                &args.node.cgroup_parent,
                args.node.node_ip,
                dns,
            )
            .await?,
        )
    };
    let config = agent_config(&node_root, server, credentials, &args.node)?;
    println!(
        "skiff is up: node {node_name}, API https://{}\n  export KUBECONFIG={}\n  kubectl get nodes\n{}",
        plane.server.addr,
        plane.server.kubeconfig.display(),
        plane.join_hint(&args.data_dir),
    );
    let stop = tokio::sync::Notify::new();
    let agent = agent::run(config, stop.notified());
    tokio::pin!(agent);
    tokio::select! {
        r = &mut agent => r.context("the kubelet stopped")?,
        r = terminated() => {
            r?;
            stop.notify_one();
            agent.await.context("stopping the kubelet")?;
        }
    }
    if let Some(proxy) = proxy {
        proxy.stop().await;
    }
    // Pods keep running: the next `skiff up` with this data dir adopts them.
    plane.shutdown().await
}

/// The CA a joining node trusts: `--ca-file`, or the one the API server offers if its
/// hash is `--ca-cert-hash`.
async fn cluster_ca(args: &KubeletArgs) -> Result<String> {
    match (&args.ca_file, &args.ca_cert_hash) {
        (Some(file), _) => {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
        }
        (None, Some(pin)) => discovery::discover_ca(&args.api_server, pin)
            .await
            .with_context(|| format!("discovering the cluster ca of {}", args.api_server)),
        (None, None) => anyhow::bail!(
            "the node has no certificate yet: give --ca-cert-hash (or --ca-file) and --join-token"
        ),
    }
}

pub async fn kubelet(root: &std::path::Path, args: KubeletArgs) -> Result<()> {
    let node_name = args.node.node_name.clone().unwrap_or_else(host_name);
    // A node that joined before restarts from its credentials, even with the control plane
    // away; discovery and the join token are for the first start.
    let credentials = match NodeCredentials::load(&root.join("pki")) {
        Ok(found) if found.node_name == node_name && found.is_valid_at(SystemTime::now()) => found,
        _ => {
            let ca_pem = cluster_ca(&args).await?;
            credentials(
                root,
                &args.api_server,
                &args.join_token,
                &ca_pem,
                &node_name,
            )
            .await?
        }
    };
    // The agent and the proxy agree on the node's address: the given one, else the one
    // this machine uses toward the control plane (the proxy serves NodePorts there).
    let mut node = args.node.clone();
    node.node_ip = node.node_ip.or_else(|| agent::route_source(&args.server));
    let proxy = if args.no_proxy {
        None
    } else {
        Some(
            node_proxy::start(
                root,
                &args.server,
                &credentials,
                &args.proxy,
                &node.cgroup_parent,
                node.node_ip,
                std::net::Ipv4Addr::new(10, 96, 0, 10),
            )
            .await?,
        )
    };
    let config = agent_config(root, args.server, credentials, &node)?;
    let stop = tokio::sync::Notify::new();
    let agent = agent::run(config, stop.notified());
    tokio::pin!(agent);
    tokio::select! {
        r = &mut agent => r.context("the kubelet stopped")?,
        r = terminated() => {
            r?;
            stop.notify_one();
            agent.await.context("stopping the kubelet")?;
        }
    }
    if let Some(proxy) = proxy {
        proxy.stop().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_dialled_on_loopback() {
        let url = |s: &str| local_url(s.parse().unwrap());
        assert_eq!(url("0.0.0.0:6443"), "https://127.0.0.1:6443");
        assert_eq!(url("[::]:6444"), "https://[::1]:6444");
        assert_eq!(url("192.168.56.10:6443"), "https://192.168.56.10:6443");
    }
}
