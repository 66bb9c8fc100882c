//! `skiff apiserver`: runs the Kubernetes API server with the scheduler and controllers
//! until SIGTERM or ctrl-c.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use skiff_controlplane::apiserver::{self, ApiServerConfig, PortRange, ServiceCidr};
use skiff_controlplane::controllers::{self, leader};
use skiff_controlplane::node;

/// Options of `skiff apiserver`.
#[derive(Debug, Args)]
pub struct ApiServerArgs {
    /// Where the store, certificates, token and kubeconfig live.
    #[arg(long, default_value = "/var/lib/skiff/apiserver")]
    pub data_dir: PathBuf,
    /// HTTPS listen address.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// etcd endpoint (repeatable); without it the embedded store in --data-dir is used.
    #[arg(long)]
    pub etcd: Vec<String>,
    /// Extra DNS name or IP for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// Serve the API only: no scheduler, no controllers.
    #[arg(long)]
    pub no_controllers: bool,
    /// The range Service ClusterIPs come from; the `kubernetes` Service gets its first IP.
    #[arg(long, default_value = "10.96.0.0/12", value_parser = ServiceCidr::parse)]
    pub service_cidr: ServiceCidr,
    /// The range NodePorts come from.
    #[arg(long, default_value = "30000-32767", value_parser = PortRange::parse)]
    pub service_node_port_range: PortRange,
    /// Where nodes dial the node service (gRPC over TLS).
    #[arg(long, default_value = "127.0.0.1:6444")]
    pub node_listen: SocketAddr,
    /// Addresses for `type: LoadBalancer` Services (e.g. 192.0.2.0/28); without it they
    /// stay pending.
    #[arg(long)]
    pub loadbalancer_pool: Option<ipnet::Ipv4Net>,
    /// A join token chosen in advance (`abcdef.0123456789abcdef`), stored hashed and valid
    /// for 24 hours from each start; without it one is generated. Written to DATA_DIR/join-token.
    #[arg(long, env = "SKIFF_JOIN_TOKEN", hide_env_values = true, value_parser = parse_join_token)]
    pub join_token: Option<String>,
    #[command(flatten)]
    pub lifecycle: NodeLifecycleArgs,
}

/// How quickly a silent node is given up on (kube-controller-manager's and kube-apiserver's
/// settings of the same meaning).
#[derive(Debug, Clone, Args)]
pub struct NodeLifecycleArgs {
    /// How often nodes renew their Lease (whole seconds, well below the grace period).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub node_heartbeat_interval: Duration,
    /// A node whose heartbeat has not moved for this long is NotReady (`Ready=Unknown`),
    /// tainted unreachable, and its pods are taken out of Services
    /// (`--node-monitor-grace-period`).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How long pods stay on an unreachable node before they are evicted and replaced
    /// elsewhere, unless they tolerate the taint for a time of their own
    /// (`--default-unreachable-toleration-seconds`).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub pod_eviction_timeout: Duration,
}

impl Default for NodeLifecycleArgs {
    fn default() -> Self {
        NodeLifecycleArgs {
            node_heartbeat_interval: Duration::from_secs(10),
            node_monitor_grace_period: Duration::from_secs(40),
            pod_eviction_timeout: Duration::from_secs(300),
        }
    }
}

impl NodeLifecycleArgs {
    fn check(&self) -> Result<()> {
        let beat = self.node_heartbeat_interval;
        if beat.subsec_nanos() != 0 || beat.is_zero() {
            anyhow::bail!(
                "--node-heartbeat-interval {beat:?}: a whole number of seconds, at least 1s"
            );
        }
        if beat * 2 > self.node_monitor_grace_period {
            anyhow::bail!(
                "--node-monitor-grace-period {:?} must be at least twice --node-heartbeat-interval {beat:?}, \
                 or a late heartbeat makes a node NotReady",
                self.node_monitor_grace_period
            );
        }
        Ok(())
    }
}

/// A duration as Kubernetes flags write them: numbers with units, `500ms`, `40s`, `5m`,
/// `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{s:?}: expected a number at {rest:?}"));
        }
        let n: u64 = rest[..digits].parse().map_err(|e| format!("{s:?}: {e}"))?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let one = match &rest[..unit] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "" => return Err(format!("{s:?}: a unit is needed (ms, s, m, h)")),
            other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h)")),
        };
        rest = &rest[unit..];
        let part = u32::try_from(n)
            .ok()
            .and_then(|n| one.checked_mul(n))
            .ok_or_else(|| format!("{s:?}: too long"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{s:?}: too long"))?;
    }
    Ok(total)
}

/// A `--join-token` value: `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn parse_join_token(s: &str) -> Result<String, String> {
    let token = s.trim();
    apiserver::check_join_token(token)?;
    Ok(token.to_owned())
}

/// A running control plane: API server, node service, and (unless disabled) the
/// controllers campaigning for leadership.
pub struct ControlPlane {
    pub server: apiserver::RunningApiServer,
    pub nodes: node::NodeServer,
    controllers: Option<tokio::task::JoinHandle<()>>,
}

impl ControlPlane {
    pub async fn start(args: &ApiServerArgs) -> Result<ControlPlane> {
        args.lifecycle.check()?;
        let mut config = ApiServerConfig::new(&args.data_dir);
        config.listen = args.listen;
        config.etcd = args.etcd.clone();
        config.extra_sans = args.tls_san.clone();
        config.service_cidr = args.service_cidr;
        config.node_ports = args.service_node_port_range;
        config.join_token = args.join_token.clone();
        let server = apiserver::start(config)
            .await
            .context("starting the API server")?;
        let mut settings = node::NodeSettings::new(args.service_cidr);
        settings.heartbeat = args.lifecycle.node_heartbeat_interval;
        node::dns::ensure_service(&server.client(), settings.cluster_dns)
            .await
            .map_err(|e| anyhow::anyhow!("creating the cluster DNS Service: {}", e.message))?;
        let service = node::NodeService::new(server.client(), settings);
        let nodes = node::serve(
            args.node_listen,
            service,
            server.node_tls.tonic_server_tls(),
        )
        .await
        .context("starting the node service")?;
        // Every control-plane process campaigns; the Lease holder runs the controllers.
        // The identity is stable across restarts of this process, so a restart resumes
        // at once.
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let identity = format!("{host}_{}", args.listen);
        let controllers = (!args.no_controllers).then(|| {
            leader::run(
                server.client(),
                leader::Election::new(identity),
                controllers::Config {
                    loadbalancer_pool: args.loadbalancer_pool,
                    node_monitor_grace: args.lifecycle.node_monitor_grace_period,
                    default_toleration: args.lifecycle.pod_eviction_timeout,
                    ..controllers::Config::default()
                },
            )
        });
        Ok(ControlPlane {
            server,
            nodes,
            controllers,
        })
    }

    /// How a node joins: the command line with the CA hash, and where the token is.
    pub fn join_hint(&self, data_dir: &std::path::Path) -> String {
        format!(
            "ca-cert-hash: {hash} (also in {hash_file})\n\
             join a node: skiff kubelet --api-server https://{api} --server https://{nodes} \\\n  \
             --ca-cert-hash {hash} --join-token $(cat {token})",
            hash = self.server.ca_cert_hash,
            hash_file = data_dir.join(apiserver::CA_HASH_FILE).display(),
            api = self.server.addr,
            nodes = self.nodes.addr,
            token = data_dir.join(apiserver::JOIN_TOKEN_FILE).display(),
        )
    }

    pub async fn shutdown(self) -> Result<()> {
        if let Some(task) = self.controllers {
            task.abort();
        }
        self.nodes
            .shutdown()
            .await
            .context("stopping the node service")?;
        self.server
            .shutdown()
            .await
            .context("stopping the API server")
    }
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn terminated() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

pub async fn run(args: ApiServerArgs) -> Result<()> {
    let plane = ControlPlane::start(&args).await?;
    eprintln!(
        "skiff apiserver listening on https://{}; nodes dial https://{}; kubeconfig: {}\n{}",
        plane.server.addr,
        plane.nodes.addr,
        plane.server.kubeconfig.display(),
        plane.join_hint(&args.data_dir),
    );
    terminated().await?;
    plane.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_kubernetes_flags_write_them() {
        let d = |s| parse_duration(s);
        assert_eq!(d("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(d("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("1s500ms"), Ok(Duration::from_millis(1500)));
        assert!(d("").is_err());
        assert!(d("40").unwrap_err().contains("a unit is needed"));
        assert!(d("3d").unwrap_err().contains("unknown unit"));
        assert!(d("s").unwrap_err().contains("expected a number"));
        assert!(d("99999999999h").unwrap_err().contains("too long"));
    }

    #[test]
    fn the_grace_must_outlast_two_heartbeats() {
        let mut l = NodeLifecycleArgs::default();
        assert!(l.check().is_ok());
        l.node_heartbeat_interval = Duration::from_secs(1);
        l.node_monitor_grace_period = Duration::from_secs(2);
        assert!(l.check().is_ok());
        l.node_monitor_grace_period = Duration::from_millis(1500);
        assert!(
            l.check()
                .unwrap_err()
                .to_string()
                .contains("at least twice")
        );
        l.node_heartbeat_interval = Duration::from_millis(500);
        assert!(l.check().unwrap_err().to_string().contains("whole number"));
    }
}
