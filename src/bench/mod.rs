//! `skiff bench …`: whole-system benchmarks that print figures, measure the usual tools in the
//! same run, and write JSON and an SVG plot.

pub mod image;
pub mod plot;
pub mod pod_start;
pub mod registry;
pub mod stats;

use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Pull + unpack of a multi-layer image from a local registry, against skopeo + umoci.
    Image(image::ImageBench),
    /// Pod start latency (sequential and burst) against `crun run` and `runc run`.
    PodStart(pod_start::PodStartBench),
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Image(bench) => bench.run().await,
        BenchCommand::PodStart(bench) => bench.run().await,
    }
}
