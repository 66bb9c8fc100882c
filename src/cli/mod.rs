//! Command-line parsing and dispatch; each subcommand group lives in its own module.

mod controlplane;
mod image;
mod node_proxy;
mod pod;
mod progress;
mod proxy;
mod up;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// skiff — a Kubernetes node runtime on raw Linux primitives.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about)]
pub struct Cli {
    /// Where skiff keeps its state (images, pods).
    #[arg(
        long,
        global = true,
        env = "SKIFF_ROOT",
        default_value = "/var/lib/skiff"
    )]
    pub root: PathBuf,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the node's images (crictl-like).
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Run Pod manifests directly on this node, without a control plane (crictl-like).
    #[command(subcommand)]
    Pod(pod::PodCommand),
    /// Measure skiff against the usual tools, print figures, write JSON and a plot.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Run the Kubernetes API server (HTTPS; writes DATA_DIR/kubeconfig) until SIGTERM.
    Apiserver(controlplane::ApiServerArgs),
    /// A single-node cluster: control plane and this node's kubelet, until SIGTERM.
    Up(up::UpArgs),
    /// This node's agent, joined to a control plane elsewhere, until SIGTERM.
    Kubelet(up::KubeletArgs),
    /// The node's Service proxy (Services into BPF, cluster DNS).
    #[command(subcommand)]
    Proxy(proxy::ProxyCommand),
}

pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Image(cmd) => runtime.block_on(image::run(&cli.root, cmd)),
        Command::Pod(cmd) => pod::run(&cli.root, cmd),
        Command::Bench(cmd) => runtime.block_on(crate::bench::run(cmd)),
        Command::Apiserver(args) => runtime.block_on(controlplane::run(args)),
        Command::Up(args) => runtime.block_on(up::up(args)),
        Command::Kubelet(args) => runtime.block_on(up::kubelet(&cli.root, args)),
        Command::Proxy(cmd) => runtime.block_on(proxy::run(&cli.root, cmd)),
    }
}
