//! `skiff bench …`: whole-system benchmarks that print figures, measure the usual tools in the
//! same run, and write JSON and an SVG plot.

pub mod api;
pub mod cluster;
pub mod control_plane;
mod https;
pub mod image;
pub mod plot;
pub mod pod_start;
pub mod proxy;
pub mod proxy_probe;
pub mod registry;
pub mod stats;
pub mod stream;

use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The API server over HTTPS: creates/s, gets/s, a Table list, watch delivery latency.
    Api(api::ApiBench),
    /// Pull + unpack of a multi-layer image from a local registry, against skopeo + umoci.
    Image(image::ImageBench),
    /// Pod start latency (sequential and burst) against `crun run` and `runc run`.
    PodStart(pod_start::PodStartBench),
    /// Scheduler throughput and Deployment rollouts at scale, with hollow nodes.
    ControlPlane(control_plane::ControlPlaneBench),
    /// The eBPF Service data plane: programming time, connect() latency through a ClusterIP
    /// at 10 to 10,000 Services, against kube-proxy's iptables rules.
    Proxy(proxy::ProxyBench),
    /// (internal) the measuring process of `bench proxy`.
    #[command(hide = true)]
    ProxyProbe(proxy_probe::ProbeArgs),
    /// kubectl port-forward and exec -i throughput through the node tunnel, against TCP.
    Stream(stream::StreamBench),
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Api(bench) => bench.run().await,
        BenchCommand::Image(bench) => bench.run().await,
        BenchCommand::PodStart(bench) => bench.run().await,
        BenchCommand::ControlPlane(bench) => bench.run().await,
        BenchCommand::Proxy(bench) => bench.run().await,
        BenchCommand::ProxyProbe(args) => proxy_probe::run(args),
        BenchCommand::Stream(bench) => bench.run().await,
    }
}

/// Creates the directory `path` will be written in.
pub(crate) fn ensure_parent(path: &std::path::Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    Ok(())
}

/// Runs `cmd` to completion, discarding its output; a failure carries its stderr.
pub(crate) fn run_quiet(cmd: &mut std::process::Command) -> Result<()> {
    use anyhow::Context;
    let out = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
