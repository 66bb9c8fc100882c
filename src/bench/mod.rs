//! `skiff bench …`: whole-system benchmarks that print figures, measure the usual tools in the
//! same run, and write JSON and an SVG plot.

pub mod api;
mod https;
pub mod image;
pub mod plot;
pub mod pod_start;
pub mod registry;
pub mod stats;

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
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Api(bench) => bench.run().await,
        BenchCommand::Image(bench) => bench.run().await,
        BenchCommand::PodStart(bench) => bench.run().await,
    }
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
