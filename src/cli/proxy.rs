//! `skiff proxy …`: the node's Service proxy.

use std::path::Path;

use anyhow::Result;
use clap::Subcommand;

use super::node_proxy::{self, ProxyRunArgs};

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Run the proxy alone on this node (Services into BPF, cluster DNS), with the node's
    /// credentials from joining, until SIGTERM.
    Run(ProxyRunArgs),
}

pub async fn run(root: &Path, command: ProxyCommand) -> Result<()> {
    match command {
        ProxyCommand::Run(args) => node_proxy::run(root, args).await,
    }
}
