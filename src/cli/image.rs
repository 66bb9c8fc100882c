//! `skiff image …`: pull, import, list, inspect, remove and prune images in the node's store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use skiff_runtime::image::{
    self, ImageRecord, ImageStore, IngestReport, NoProgress, Progress, PullOptions, Reference,
};

use super::progress::Bars;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry.
    Pull {
        reference: String,
        /// Speak plain HTTP to this registry (host or host:port); loopback always is.
        #[arg(long = "insecure-registry")]
        insecure: Vec<String>,
        /// A docker-style auth file (default: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json,
        /// ~/.docker/config.json).
        #[arg(long)]
        auth_file: Option<PathBuf>,
        /// No progress bars.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Import an OCI layout directory, an OCI archive or a `docker save` archive.
    Import {
        path: PathBuf,
        /// The name to store the image under (required when the source names none).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, short)]
        quiet: bool,
    },
    /// List images.
    #[command(alias = "list")]
    Ls,
    /// Show an image's record and config as JSON.
    Inspect { reference: String },
    /// Remove images, and the blobs and layers no other image uses.
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Remove content no image uses and leftovers of interrupted pulls; with --all, every image.
    Prune {
        #[arg(long)]
        all: bool,
    },
    /// Verify every stored blob against its digest and that every layer is unpacked.
    Check,
}

pub async fn run(root: &Path, cmd: ImageCommand) -> Result<()> {
    let store = ImageStore::open(root)
        .with_context(|| format!("opening image store {}", root.display()))?;
    match cmd {
        ImageCommand::Pull {
            reference,
            insecure,
            auth_file,
            quiet,
        } => {
            let reference = Reference::parse(&reference)?;
            let mut options = PullOptions {
                insecure_registries: insecure,
                ..Default::default()
            };
            if auth_file.is_some() {
                options.auth_file = auth_file;
            }
            let (progress, bars) = progress(quiet);
            let report = image::pull(&store, &reference, &options, progress).await;
            finish(bars);
            print_report(
                "pulled",
                &report.with_context(|| format!("pulling {reference}"))?,
            );
        }
        ImageCommand::Import { path, name, quiet } => {
            let name = name.as_deref().map(Reference::parse).transpose()?;
            let (progress, bars) = progress(quiet);
            let report = image::import(&store, &path, name.as_ref(), progress).await;
            finish(bars);
            print_report("imported", &report?);
        }
        ImageCommand::Ls => print_list(&store.list_images()?),
        ImageCommand::Inspect { reference } => {
            let record = find(&store, &reference)?;
            let config: serde_json::Value =
                serde_json::from_slice(&store.read_blob(&record.config_digest)?)?;
            let out = serde_json::json!({ "image": record, "config": config });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ImageCommand::Rm { references } => {
            let references = references
                .iter()
                .map(|r| Reference::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            for reference in &references {
                find(&store, &reference.to_string())?;
            }
            for reference in &references {
                store.remove_image(reference)?;
                println!("removed {reference}");
            }
            let gc = store.gc()?;
            println!("freed {} blobs, {} layers", gc.blobs, gc.layers);
        }
        ImageCommand::Prune { all } => {
            if all {
                for record in store.list_images()? {
                    store.remove_image(&Reference::parse(&record.reference)?)?;
                    println!("removed {}", record.reference);
                }
            }
            let gc = store.gc()?;
            println!(
                "freed {} blobs, {} layers, {} leftovers",
                gc.blobs, gc.layers, gc.temp
            );
        }
        ImageCommand::Check => {
            let problems = store.check()?;
            for p in &problems {
                println!("{}: {}", p.path.display(), p.what);
            }
            if !problems.is_empty() {
                bail!("{} problems in the image store", problems.len());
            }
            println!("ok: {} images", store.list_images()?.len());
        }
    }
    Ok(())
}

fn progress(quiet: bool) -> (Arc<dyn Progress>, Option<Arc<Bars>>) {
    if quiet {
        return (Arc::new(NoProgress), None);
    }
    let bars = Arc::new(Bars::default());
    (bars.clone(), Some(bars))
}

fn finish(bars: Option<Arc<Bars>>) {
    if let Some(bars) = bars {
        bars.clear();
    }
}

fn find(store: &ImageStore, reference: &str) -> Result<ImageRecord> {
    let parsed = Reference::parse(reference)?;
    if let Some(record) = store.get_image(&parsed)? {
        return Ok(record);
    }
    // An image ID (or its prefix) works too, as with docker and crictl.
    let by_id: Vec<ImageRecord> = store
        .list_images()?
        .into_iter()
        .filter(|r| {
            reference.len() >= 4
                && r.id()
                    .hex()
                    .starts_with(reference.trim_start_matches("sha256:"))
        })
        .collect();
    match by_id.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("image {parsed} not found"),
        _ => bail!("image ID {reference} is ambiguous"),
    }
}

fn print_report(verb: &str, report: &IngestReport) {
    let layers = report.record.layers.len();
    println!(
        "{verb} {} {} (fetched {} of {layers} layers, {} bytes; unpacked {})",
        report.record.reference,
        report.record.id(),
        report.fetched_layers,
        report.fetched_bytes,
        report.unpacked_layers,
    );
}

fn print_list(records: &[ImageRecord]) {
    println!(
        "{:<60} {:<14} {:>10} {:>6}",
        "REFERENCE", "IMAGE ID", "SIZE", "LAYERS"
    );
    for r in records {
        println!(
            "{:<60} {:<14} {:>10} {:>6}",
            r.reference,
            r.id().short(),
            human_size(r.size()),
            r.layers.len()
        );
    }
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
