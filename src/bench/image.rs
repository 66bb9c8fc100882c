//! `skiff bench image`: pull + unpack of a ~100 MB, 5-layer image from a local registry with
//! skiff, against `skopeo copy` + `umoci unpack` of the same image, alternating, in one run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use super::plot::{Series, lines};
use super::registry::Registry;
use super::run_quiet as run;
use super::stats::{Summary, summarize};

#[derive(Debug, clap::Args)]
pub struct ImageBench {
    /// Uncompressed size of the generated image, in MB.
    #[arg(long, default_value_t = 100)]
    mb: u32,
    #[arg(long, default_value_t = 5)]
    layers: u32,
    /// Measured runs of each system.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The test-image generator.
    #[arg(long, default_value = "tests/image/mkimage.py")]
    mkimage: PathBuf,
    #[arg(long, default_value = "bench-out/image.json")]
    json: PathBuf,
    #[arg(long, default_value = "bench-out/image.svg")]
    plot: PathBuf,
}

#[derive(Debug, Serialize)]
struct Report {
    image_mb: u32,
    layers: u32,
    compressed_bytes: u64,
    skiff_seconds: Vec<f64>,
    skopeo_umoci_seconds: Vec<f64>,
    skopeo_seconds: Vec<f64>,
    umoci_seconds: Vec<f64>,
    skiff: Summary,
    skopeo_umoci: Summary,
    ratio_p50: f64,
}

impl ImageBench {
    pub async fn run(self) -> Result<()> {
        let work = tempfile::Builder::new()
            .prefix("skiff-bench-image-")
            .tempdir()?;
        let layout = work.path().join("layout");
        run(Command::new("python3")
            .arg(&self.mkimage)
            .arg(&layout)
            .args([
                "--variant",
                "bench",
                "--bench-mb",
                &self.mb.to_string(),
                "--bench-layers",
                &self.layers.to_string(),
            ]))
        .context("building the bench image")?;
        let registry = Registry::start(&work.path().join("registry"))?;
        registry.push_layout(&layout, "latest", "bench/image:latest")?;
        let reference = format!("{}/bench/image:latest", registry.host());
        let compressed_bytes = dir_size(&layout.join("blobs"))?;
        eprintln!(
            "image: {} MB in {} layers, {compressed_bytes} bytes in the registry",
            self.mb, self.layers
        );

        let (mut skiff, mut skopeo, mut umoci) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..self.runs + 1 {
            let dir = work.path().join(format!("run-{i}"));
            std::fs::create_dir_all(&dir)?;
            // Alternate which goes first so neither always gets the warmer cache.
            let (s, (c, u)) = if i % 2 == 0 {
                (
                    time_skiff(&dir, &reference)?,
                    time_baseline(&dir, &reference)?,
                )
            } else {
                let b = time_baseline(&dir, &reference)?;
                (time_skiff(&dir, &reference)?, b)
            };
            std::fs::remove_dir_all(&dir)?;
            if i == 0 {
                continue; // warm-up
            }
            eprintln!(
                "run {i}: skiff {s:.3}s, skopeo {c:.3}s + umoci {u:.3}s = {:.3}s",
                c + u
            );
            skiff.push(s);
            skopeo.push(c);
            umoci.push(u);
        }
        let baseline: Vec<f64> = skopeo.iter().zip(&umoci).map(|(c, u)| c + u).collect();
        let report = Report {
            image_mb: self.mb,
            layers: self.layers,
            compressed_bytes,
            skiff: summarize(&skiff),
            skopeo_umoci: summarize(&baseline),
            ratio_p50: summarize(&skiff).p50 / summarize(&baseline).p50,
            skiff_seconds: skiff,
            skopeo_umoci_seconds: baseline,
            skopeo_seconds: skopeo,
            umoci_seconds: umoci,
        };
        println!(
            "pull + unpack, {} MB / {} layers, {} runs (seconds):",
            self.mb, self.layers, self.runs
        );
        println!("{:<16} {:>8} {:>8} {:>8}", "system", "p50", "min", "max");
        for (name, s) in [
            ("skiff", &report.skiff),
            ("skopeo+umoci", &report.skopeo_umoci),
        ] {
            println!("{name:<16} {:>8.3} {:>8.3} {:>8.3}", s.p50, s.min, s.max);
        }
        println!("skiff / (skopeo+umoci) at p50: {:.2}x", report.ratio_p50);
        write_outputs(&self.json, &self.plot, &report)
    }
}

fn write_outputs(json: &Path, plot: &Path, report: &Report) -> Result<()> {
    for path in [json, plot] {
        super::ensure_parent(path)?;
    }
    std::fs::write(json, serde_json::to_vec_pretty(report)?)?;
    let series = |name: &str, v: &[f64]| Series {
        name: name.into(),
        points: v
            .iter()
            .enumerate()
            .map(|(i, s)| ((i + 1) as f64, *s))
            .collect(),
    };
    lines(
        plot,
        &format!(
            "pull + unpack of a {} MB, {}-layer image",
            report.image_mb, report.layers
        ),
        "run",
        "seconds",
        &[
            series("skiff", &report.skiff_seconds),
            series("skopeo + umoci", &report.skopeo_umoci_seconds),
        ],
    )?;
    println!("wrote {} and {}", json.display(), plot.display());
    Ok(())
}

fn time_skiff(dir: &Path, reference: &str) -> Result<f64> {
    sync();
    let exe = std::env::current_exe()?;
    let start = Instant::now();
    run(Command::new(exe)
        .arg("--root")
        .arg(dir.join("skiff"))
        .args(["image", "pull", "--quiet", reference]))?;
    Ok(start.elapsed().as_secs_f64())
}

fn time_baseline(dir: &Path, reference: &str) -> Result<(f64, f64)> {
    sync();
    let layout = dir.join("oci");
    let start = Instant::now();
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:latest", layout.display())))?;
    let copy = start.elapsed().as_secs_f64();
    let start = Instant::now();
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(dir.join("bundle")))?;
    Ok((copy, start.elapsed().as_secs_f64()))
}

fn sync() {
    rustix::fs::sync();
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
