//! `skiff bench pod-start --mode node`: pod start latency on this node. skiff pods (pinned
//! net/IPC/UTS namespaces, a pod cgroup, a veth + IP on a bridge, one busybox container) are
//! timed from the call until the workload has exec'd — one after another running `/bin/true`,
//! and as a concurrent burst running `sleep`. In the same run, `crun run` and `runc run` on a
//! bundle of the same rootfs, when installed. Prints p50/p90/p99/max, writes JSON and an SVG
//! (CDF of the sequential starts). Everything lives in namespaces, cgroups and temp dirs the
//! bench creates, and is removed again, also on error. `--mode e2e` (`e2e.rs`) times pods
//! through a real cluster instead: API create to Running on a watch.

mod e2e;
mod oci;
mod skiff;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use skiff_runtime::image::{ImageStore, NoProgress, Reference};

use super::plot::{Series, lines};
use super::stats::{Summary, summarize};
use oci::Oci;
use skiff::{Node, Phases, start_skiff_pod};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The runtime in-process on this node (no CRI, no kubelet).
    Node,
    /// Through a real cluster (`skiff apiserver` + `skiff kubelet` in a network namespace of
    /// the bench's): API create → Running on a watch, and the kubelet's RSS.
    E2e,
}

#[derive(Debug, clap::Args)]
pub struct PodStartBench {
    #[arg(long, value_enum, default_value = "node")]
    mode: Mode,
    /// Pods started one after another (per system).
    #[arg(long, default_value_t = 100)]
    count: u32,
    /// Pods started at once (per system); default 50 for `node`, 100 for `e2e`.
    #[arg(long)]
    burst: Option<u32>,
    /// An OCI layout of the busybox test image (default: built with tests/image/mkimage.py).
    #[arg(long, alias = "image-layout")]
    image_dir: Option<PathBuf>,
    /// The test-image generator.
    #[arg(long, default_value = "tests/image/mkimage.py")]
    mkimage: PathBuf,
    /// Each skiff pod opens its own netlink handle in the node netns (default: handles are
    /// reused from a pool, and new ones opened only when all are in use).
    #[arg(long)]
    net_handle_per_pod: bool,
    /// Pod networks (netns + veth on the bridge) made ahead for a second skiff burst, as a node
    /// would keep a pool refilled in the background; 0: no pooled burst.
    #[arg(long, default_value_t = 50)]
    pool: u32,
    /// Start each burst at once, without first waiting for the kernel to finish freeing the
    /// network namespaces of the pods and containers removed before it.
    #[arg(long)]
    no_settle: bool,
    /// The kubectl `e2e` deletes leftover pods with (default: kubectl 1.33 from the machine
    /// image if present, else `kubectl`).
    #[arg(long)]
    kubectl: Option<PathBuf>,
    /// Default bench-out/pod-start.json (`node`), bench-out/pod-start-e2e.json (`e2e`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Default bench-out/pod-start.svg (`node`), bench-out/pod-start-e2e.svg (`e2e`).
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// One system's figures, in milliseconds.
#[derive(Debug, Serialize)]
struct SystemReport {
    name: String,
    /// One start at a time: to exec for skiff, to exit (`run`) or return (`run -d`) for OCI.
    sequential_ms: Vec<f64>,
    sequential: Summary,
    /// The whole burst: first call to the last workload started.
    burst_total_ms: Option<f64>,
    burst_each_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct PhaseReport {
    ns: Summary,
    cgroup: Summary,
    net: Summary,
    net_handle: Summary,
    create: Summary,
    start: Summary,
}

#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    count: u32,
    burst: u32,
    systems: Vec<SystemReport>,
    skiff_phases_sequential: PhaseReport,
    skiff_phases_burst: PhaseReport,
    /// skiff p50 / `crun run` p50 (the goal: ≤ 0.5).
    ratio_p50_vs_crun_run: Option<f64>,
    /// skiff p50 / `crun run -d` p50 (both to the workload started, neither with teardown).
    ratio_p50_vs_crun_detached: Option<f64>,
    /// skiff burst total / crun burst total (the goal: ≤ 0.7).
    ratio_burst_vs_crun: Option<f64>,
    /// A second skiff burst whose pod networks came from a pool made ahead (`--pool`).
    pooled_burst: Option<PooledBurst>,
    /// That burst's total / crun burst total.
    ratio_pooled_burst_vs_crun: Option<f64>,
    /// What entering crun's cgroup-view mount namespace with `nsenter` adds to each crun start
    /// (included in the crun figures above; 0 when not needed).
    crun_nsenter_overhead_ms: f64,
    /// skiff p50 / (`crun run` p50 − that overhead): the conservative ratio.
    ratio_p50_vs_crun_run_less_nsenter: Option<f64>,
}

#[derive(Debug, Serialize)]
struct PooledBurst {
    /// Pod networks made ahead (not timed).
    pool: u32,
    /// Pods of the burst that got one (the rest made theirs, cold).
    from_pool: usize,
    total_ms: f64,
    each: Summary,
    phases: PhaseReport,
}

/// How many starts of each system run first, unrecorded.
const WARMUP: u32 = 3;

impl PodStartBench {
    pub async fn run(self) -> Result<()> {
        ensure!(
            rustix::process::geteuid().is_root(),
            "skiff bench pod-start must run as root (it creates namespaces, cgroups and mounts)"
        );
        let burst = self.burst();
        ensure!(
            self.count >= 1 && (1..=1000).contains(&burst),
            "--count must be ≥ 1 and --burst 1..=1000"
        );
        let stem = match self.mode {
            Mode::Node => "bench-out/pod-start",
            Mode::E2e => "bench-out/pod-start-e2e",
        };
        let json = self.json.clone().unwrap_or(format!("{stem}.json").into());
        let plot = self.plot.clone().unwrap_or(format!("{stem}.svg").into());
        if self.mode == Mode::E2e {
            return e2e::run(e2e::E2eOptions {
                count: self.count,
                burst,
                image_layout: self.image_dir,
                mkimage: self.mkimage,
                kubectl: self.kubectl.unwrap_or_else(super::cluster::default_kubectl),
                json,
                plot,
            })
            .await;
        }
        let work = tempfile::Builder::new()
            .prefix("skiff-bench-pod-")
            .tempdir()?;
        let layers = self.import_image(work.path()).await?;
        // The rest blocks: threads, processes and sleeps, no async.
        let report = tokio::task::block_in_place(|| self.measure(work.path(), layers))?;
        print_report(&report);
        write_outputs(&json, &plot, &report)
    }

    fn burst(&self) -> u32 {
        self.burst.unwrap_or(match self.mode {
            Mode::Node => 50,
            Mode::E2e => 100,
        })
    }

    async fn import_image(&self, work: &Path) -> Result<Vec<PathBuf>> {
        let layout = match &self.image_dir {
            Some(dir) => dir.clone(),
            None => {
                let out = work.join("layout");
                let status = Command::new("python3")
                    .arg(&self.mkimage)
                    .arg(&out)
                    .args(["--variant", "single"])
                    .status()
                    .context("running python3 (the test-image generator)")?;
                if !status.success() {
                    bail!(
                        "{} failed (needs python3 and busybox-static's /bin/busybox)",
                        self.mkimage.display()
                    );
                }
                out
            }
        };
        let store = ImageStore::open(work.join("images"))?;
        let name = Reference::parse("skiff.bench/busybox:latest")?;
        let report =
            skiff_runtime::image::import(&store, &layout, Some(&name), Arc::new(NoProgress))
                .await
                .with_context(|| format!("importing {}", layout.display()))?;
        Ok(store.layer_dirs(&report.record))
    }

    fn measure(&self, work: &Path, layers: Vec<PathBuf>) -> Result<Report> {
        let node = Node::new(work, layers.clone(), self.net_handle_per_pod)?;
        let mut baselines = Vec::new();
        for name in ["crun", "runc"] {
            if oci::installed(name) {
                baselines.push(Oci::prepare(name, work, &layers)?);
            } else {
                eprintln!("{name} is not installed: skipped (apt-get install -y {name})");
            }
        }

        let mut nsenter = 0.0;
        if let Some(crun) = baselines.iter().find(|o| o.name == "crun") {
            nsenter = crun.nsenter_overhead_ms()?;
        }
        eprintln!("warm-up: {WARMUP} starts of each system");
        for i in 0..WARMUP {
            drop(start_skiff_pod(&node, 60_000 + i, &["/bin/true"], false)?);
            for oci in &baselines {
                oci.run_true(i + 60_000)?;
                oci.run_detached("warm", i, false)?;
                oci.delete_all()?;
            }
        }

        eprintln!("sequential: {} starts of each system", self.count);
        let mut skiff_seq = Vec::new();
        let mut run_seq = vec![Vec::new(); baselines.len()];
        let mut detached_seq = vec![Vec::new(); baselines.len()];
        for i in 0..self.count {
            // Alternate skiff first / baselines first, so neither always follows the other.
            if i % 2 == 1 {
                time_baselines(&baselines, i, &mut run_seq, &mut detached_seq)?;
            }
            let (pod, phases) = start_skiff_pod(&node, i, &["/bin/true"], false)?;
            drop(pod); // teardown, not timed
            skiff_seq.push(phases);
            if i % 2 == 0 {
                time_baselines(&baselines, i, &mut run_seq, &mut detached_seq)?;
            }
        }

        eprintln!("burst: {} at once, each system", self.burst());
        let first = self.count + 100;
        self.settle("skiff burst");
        let (skiff_total, skiff_burst) = burst(self.burst(), |j| {
            start_skiff_pod(&node, first + j, &["/bin/sleep", "1000"], false)
        })?;
        let skiff_burst_phases: Vec<Phases> = skiff_burst.iter().map(|((_, p), _)| *p).collect();
        drop(skiff_burst); // teardown of every pod, not timed
        let mut pooled = None;
        if self.pool > 0 {
            self.settle("skiff burst with pooled networks");
            let filled = Instant::now();
            node.fill_pool(self.pool as usize)?;
            eprintln!(
                "netns pool: {} pod networks made ahead in {:.0} ms (not timed)",
                self.pool,
                filled.elapsed().as_secs_f64() * 1e3
            );
            self.settle("skiff burst with pooled networks");
            let first = first + self.burst();
            let (total, pods) = burst(self.burst(), |j| {
                start_skiff_pod(&node, first + j, &["/bin/sleep", "1000"], true)
            })?;
            let phases: Vec<Phases> = pods.iter().map(|((_, p), _)| *p).collect();
            drop(pods);
            pooled = Some((total, phases));
        }
        let mut oci_bursts = Vec::new();
        for oci in &baselines {
            self.settle(&format!("{} burst", oci.name));
            let result = burst(self.burst(), |j| oci.run_detached("burst", j, true));
            oci.delete_all()?;
            oci_bursts.push(result?);
        }

        let mut systems = vec![SystemReport::new(
            "skiff".into(),
            skiff_seq.iter().map(Phases::total).collect(),
            Some((
                skiff_total,
                skiff_burst_phases.iter().map(Phases::total).collect(),
            )),
        )];
        for (k, oci) in baselines.iter().enumerate() {
            let (total, each) = &oci_bursts[k];
            systems.push(SystemReport::new(
                format!("{} run", oci.name),
                std::mem::take(&mut run_seq[k]),
                None,
            ));
            systems.push(SystemReport::new(
                format!("{} run -d", oci.name),
                std::mem::take(&mut detached_seq[k]),
                Some((*total, each.iter().map(|(ms, _)| *ms).collect())),
            ));
        }
        let find = |name: &str| systems.iter().find(|s| s.name == name);
        let skiff = &systems[0];
        let ratio = |other: Option<&SystemReport>, f: fn(&SystemReport) -> Option<f64>| {
            Some(f(skiff)? / f(other?)?)
        };
        let p50 = |s: &SystemReport| Some(s.sequential.p50);
        let total = |s: &SystemReport| s.burst_total_ms;
        let less_nsenter = |s: &SystemReport| Some(s.sequential.p50 - nsenter);
        Ok(Report {
            crun_nsenter_overhead_ms: nsenter,
            ratio_p50_vs_crun_run_less_nsenter: find("crun run")
                .and_then(less_nsenter)
                .map(|c| skiff.sequential.p50 / c),
            mode: "node",
            count: self.count,
            burst: self.burst(),
            ratio_p50_vs_crun_run: ratio(find("crun run"), p50),
            ratio_p50_vs_crun_detached: ratio(find("crun run -d"), p50),
            ratio_burst_vs_crun: ratio(find("crun run -d"), total),
            ratio_pooled_burst_vs_crun: pooled
                .as_ref()
                .zip(find("crun run -d").and_then(total))
                .map(|((t, _), crun)| t / crun),
            pooled_burst: pooled.map(|(total_ms, phases)| PooledBurst {
                pool: self.pool,
                from_pool: phases.iter().filter(|p| p.pooled).count(),
                total_ms,
                each: summarize(&phases.iter().map(Phases::total).collect::<Vec<_>>()),
                phases: PhaseReport::of(&phases),
            }),
            skiff_phases_sequential: PhaseReport::of(&skiff_seq),
            skiff_phases_burst: PhaseReport::of(&skiff_burst_phases),
            systems,
        })
    }
}

impl PodStartBench {
    /// Waits until the kernel has freed the network namespaces and cgroups of what was removed
    /// before (kernel workers destroy them, holding the rtnl lock and cgroup_mutex that a
    /// burst then waits for), so that each system's burst starts from the same quiet kernel
    /// rather than in the previous one's wake.
    fn settle(&self, what: &str) {
        if self.no_settle {
            return;
        }
        let began = Instant::now();
        let deadline = began + Duration::from_secs(20);
        let mut last = live_netns();
        let mut steady = 0;
        while steady < 6 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let now = live_netns();
            steady = if now == last { steady + 1 } else { 0 };
            last = now;
        }
        eprintln!(
            "before the {what}: {:.0} ms for freed network namespaces and cgroups to settle",
            began.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// What the kernel still holds of removed pods: network namespaces (/proc/slabinfo) and
/// cgroups not yet freed (/proc/cgroups `num_cgroups` per hierarchy).
fn live_netns() -> Option<(u64, u64)> {
    let slab = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let line = slab.lines().find(|l| l.starts_with("net_namespace "))?;
    let netns = line.split_whitespace().nth(1)?.parse().ok()?;
    let cgroups = std::fs::read_to_string("/proc/cgroups").ok()?;
    let cgroups = cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum();
    Some((netns, cgroups))
}

/// One sequential start of each baseline, both ways: `run` (to exit) and `run -d` (to return).
fn time_baselines(
    baselines: &[Oci],
    i: u32,
    run: &mut [Vec<f64>],
    detached: &mut [Vec<f64>],
) -> Result<()> {
    for (k, oci) in baselines.iter().enumerate() {
        run[k].push(oci.run_true(i)?);
        detached[k].push(oci.run_detached("seq-d", i, false)?);
        oci.delete_all()?; // not timed
    }
    Ok(())
}

/// Runs `start(0..n)` on `n` threads released together. Returns the total milliseconds from the
/// first start called to the last start returning, and each result with its own duration.
fn burst<T: Send>(n: u32, start: impl Fn(u32) -> Result<T> + Sync) -> Result<(f64, Vec<(T, f64)>)> {
    let gate = Barrier::new(n as usize + 1);
    let (t0, results) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|j| {
                let (gate, start) = (&gate, &start);
                s.spawn(move || {
                    gate.wait();
                    let begin = Instant::now();
                    let result = start(j);
                    (result, begin, Instant::now())
                })
            })
            .collect();
        gate.wait();
        let t0 = Instant::now();
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        (t0, results)
    });
    let mut out = Vec::new();
    // The release: whichever thread ran first after the barrier (the main thread can be
    // scheduled well after the workers on 2 cores, and its own clock reading would then hide
    // the start of the burst).
    let mut first = t0;
    let mut last = t0;
    let mut first_err = None;
    for joined in results {
        match joined {
            Ok((Ok(value), begin, end)) => {
                first = first.min(begin);
                last = last.max(end);
                out.push((value, (end - begin).as_secs_f64() * 1e3));
            }
            Ok((Err(e), ..)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(anyhow::anyhow!("a burst thread panicked"));
            }
        }
    }
    // Dropping `out` on error tears down what did start.
    if let Some(e) = first_err {
        return Err(e.context("burst"));
    }
    Ok(((last - first).as_secs_f64() * 1e3, out))
}

impl SystemReport {
    fn new(name: String, sequential_ms: Vec<f64>, burst: Option<(f64, Vec<f64>)>) -> Self {
        let (burst_total_ms, burst_each_ms) = match burst {
            Some((total, each)) => (Some(total), each),
            None => (None, Vec::new()),
        };
        SystemReport {
            name,
            sequential: summarize(&sequential_ms),
            sequential_ms,
            burst_total_ms,
            burst_each_ms,
        }
    }
}

impl PhaseReport {
    fn of(phases: &[Phases]) -> Self {
        let pick = |f: fn(&Phases) -> f64| summarize(&phases.iter().map(f).collect::<Vec<_>>());
        PhaseReport {
            ns: pick(|p| p.ns),
            cgroup: pick(|p| p.cgroup),
            net: pick(|p| p.net),
            net_handle: pick(|p| p.net_handle),
            create: pick(|p| p.create),
            start: pick(|p| p.start),
        }
    }
}

fn print_report(r: &Report) {
    println!(
        "pod start, busybox, {} sequential + burst of {} (milliseconds):",
        r.count, r.burst
    );
    println!(
        "{:<14} {:>8} {:>8} {:>8} {:>8}   {:>11} {:>12}",
        "system", "p50", "p90", "p99", "max", "burst total", "burst p50 each"
    );
    for s in &r.systems {
        let q = &s.sequential;
        let total = s
            .burst_total_ms
            .map_or("-".to_string(), |t| format!("{t:.1}"));
        let each = summarize(&s.burst_each_ms).p50;
        let each = if each.is_nan() {
            "-".to_string()
        } else {
            format!("{each:.1}")
        };
        println!(
            "{:<14} {:>8.2} {:>8.2} {:>8.2} {:>8.2}   {total:>11} {each:>12}",
            s.name, q.p50, q.p90, q.p99, q.max
        );
    }
    if let Some(p) = &r.pooled_burst {
        println!(
            "{:<14} {:>8} {:>8} {:>8} {:>8}   {:>11.1} {:>12.1}   ({} of {} networks from a pool of {})",
            "skiff pooled",
            "-",
            "-",
            "-",
            "-",
            p.total_ms,
            p.each.p50,
            p.from_pool,
            r.burst,
            p.pool
        );
    }
    println!("skiff phases, p50 / p90 (sequential | burst | burst, pooled networks):");
    let (a, b) = (&r.skiff_phases_sequential, &r.skiff_phases_burst);
    let c = r.pooled_burst.as_ref().map(|p| &p.phases);
    type Pick = fn(&PhaseReport) -> &Summary;
    let rows: [(&str, Pick); 6] = [
        ("netns+ipc+uts", |p| &p.ns),
        ("cgroup", |p| &p.cgroup),
        ("veth+ip", |p| &p.net),
        ("  node handle", |p| &p.net_handle),
        ("create", |p| &p.create),
        ("start", |p| &p.start),
    ];
    for (name, pick) in rows {
        let (x, y) = (pick(a), pick(b));
        let z = c.map_or(String::new(), |c| {
            format!("   | {:>7.2} / {:>7.2}", pick(c).p50, pick(c).p90)
        });
        println!(
            "  {name:<14} {:>7.2} / {:>7.2}   | {:>7.2} / {:>7.2}{z}",
            x.p50, x.p90, y.p50, y.p90
        );
    }
    let show = |label: &str, v: Option<f64>| match v {
        Some(v) => println!("{label}: {v:.2}x"),
        None => println!("{label}: - (crun not measured)"),
    };
    show(
        "skiff p50 / crun run p50 (goal ≤ 0.5)",
        r.ratio_p50_vs_crun_run,
    );
    if r.crun_nsenter_overhead_ms > 0.0 {
        println!(
            "crun figures include nsenter's exec into crun's cgroup view: +{:.2} ms p50",
            r.crun_nsenter_overhead_ms
        );
        show(
            "skiff p50 / (crun run p50 - nsenter)",
            r.ratio_p50_vs_crun_run_less_nsenter,
        );
    }
    show("skiff p50 / crun run -d p50", r.ratio_p50_vs_crun_detached);
    show(
        "skiff burst / crun run -d burst (goal ≤ 0.7)",
        r.ratio_burst_vs_crun,
    );
    if r.pooled_burst.is_some() {
        show(
            "skiff burst, pooled networks / crun run -d burst",
            r.ratio_pooled_burst_vs_crun,
        );
    }
}

fn write_outputs(json: &Path, plot: &Path, report: &Report) -> Result<()> {
    for path in [json, plot] {
        super::ensure_parent(path)?;
    }
    std::fs::write(json, serde_json::to_vec_pretty(report)?)?;
    let series: Vec<Series> = report
        .systems
        .iter()
        .map(|s| {
            let mut sorted = s.sequential_ms.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len() as f64;
            let name = match s.burst_total_ms {
                Some(t) => format!("{} (burst of {}: {t:.0} ms)", s.name, report.burst),
                None => s.name.clone(),
            };
            Series {
                name,
                points: sorted
                    .iter()
                    .enumerate()
                    .map(|(k, ms)| (*ms, (k + 1) as f64 / n))
                    .collect(),
            }
        })
        .collect();
    lines(
        plot,
        &format!("pod start, {} sequential (CDF)", report.count),
        "milliseconds",
        "fraction of starts",
        &series,
    )?;
    println!("wrote {} and {}", json.display(), plot.display());
    Ok(())
}
