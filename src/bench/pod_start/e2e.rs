//! `skiff bench pod-start --mode e2e`: pod start through a real cluster — `skiff apiserver`
//! and a `skiff kubelet` joined to it, each its own process, in a network namespace of the
//! bench's (`bench/cluster.rs`). A Pod is timed from its create request (HTTPS, admin token)
//! until a watch on pods, opened before the first create, shows it `Running`: scheduling,
//! the node's watch, sandbox, container and the status write back are all inside. One pod
//! after another, then a burst created at once; the kubelet's RSS is read while the burst's
//! pods run. The pods are deleted between phases, and the next phase waits until they are
//! gone. Figures only: nothing here passes or fails on timing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::bench::cluster::{self, Cluster, IMAGE, Topology};
use crate::bench::https::{Conn, Endpoint};
use crate::bench::plot::{Series, lines};
use crate::bench::stats::{Summary, summarize};

const NAMESPACE: &str = "default";
/// Pods started and deleted before the measured ones (unrecorded).
const WARMUP: u32 = 2;
/// How long one pod may take to run, or a phase's pods to go.
const PATIENCE: Duration = Duration::from_secs(120);

/// The goals printed beside the figures (issue 6).
#[derive(Debug, Serialize)]
struct Goals {
    p50_ms: f64,
    p99_ms: f64,
    burst_of_100_ms: f64,
    kubelet_rss_mib: f64,
}

const GOALS: Goals = Goals {
    p50_ms: 20.0,
    p99_ms: 60.0,
    burst_of_100_ms: 2000.0,
    kubelet_rss_mib: 30.0,
};

/// What the e2e mode needs from the command line.
#[derive(Debug)]
pub struct E2eOptions {
    pub count: u32,
    pub burst: u32,
    pub image_layout: Option<PathBuf>,
    pub mkimage: PathBuf,
    pub kubectl: PathBuf,
    pub json: PathBuf,
    pub plot: PathBuf,
}

#[derive(Debug, Serialize)]
struct Memory {
    /// Whose: the node agent alone (`skiff kubelet`), or `skiff up` as a whole.
    process: String,
    rss_kib: u64,
    peak_rss_kib: u64,
    /// Of the RSS: the heap and stacks…
    rss_anon_kib: u64,
    /// …and mapped files (mostly the pages of the skiff binary it has run).
    rss_file_kib: u64,
    threads: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    build: &'static str,
    topology: &'static str,
    /// /proc/loadavg when the measuring began (the machine may be shared).
    loadavg: String,
    count: u32,
    burst: u32,
    /// Create request sent → `Running` seen on the watch, one pod at a time.
    sequential_ms: Vec<f64>,
    sequential: Summary,
    /// Of that: create request sent → bound to the node (`spec.nodeName`) seen on the watch.
    sequential_bound: Summary,
    sequential_running: usize,
    /// The same for each pod of the burst (from its own create request).
    burst_each_ms: Vec<f64>,
    burst_each: Summary,
    burst_bound: Summary,
    burst_running: usize,
    /// First create request sent → last pod `Running`.
    burst_total_ms: f64,
    /// Read with the burst's pods running.
    kubelet: Memory,
    apiserver: Option<Memory>,
    goals: Goals,
}

/// What the watch saw happen to a pod, and when the event arrived.
#[derive(Debug)]
enum Seen {
    /// First seen with `spec.nodeName`: the scheduler's binding.
    Bound(String, Instant),
    Running(String, Instant),
    Failed(String, String),
    Gone(String),
}

/// Pods as the watch reported them so far.
struct Observed {
    rx: mpsc::UnboundedReceiver<Result<Seen>>,
    bound: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
    gone: HashSet<String>,
}

/// A phase's pods, each from its create request: to bound and to Running (ms).
struct Times {
    bound_ms: Vec<f64>,
    running_ms: Vec<f64>,
    /// How many of the phase's pods were seen Running.
    running: usize,
}

impl Observed {
    /// The times of `names`, created at `sent`.
    fn times(&self, names: &[String], sent: &HashMap<String, Instant>) -> Times {
        let since = |at: Option<&Instant>, name: &String| {
            Some((*at? - *sent.get(name)?).as_secs_f64() * 1e3)
        };
        Times {
            bound_ms: names
                .iter()
                .filter_map(|n| since(self.bound.get(n), n))
                .collect(),
            running_ms: names
                .iter()
                .filter_map(|n| since(self.running.get(n), n))
                .collect(),
            running: names
                .iter()
                .filter(|n| self.running.contains_key(*n))
                .count(),
        }
    }

    /// Takes events until `done` holds; fails on a Failed pod, a broken watch, or timeout.
    async fn until(&mut self, what: &str, done: impl Fn(&Observed) -> bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !done(self) {
            let seen = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| anyhow!("timed out waiting for {what}"))?
                .ok_or_else(|| anyhow!("the pod watch ended"))??;
            match seen {
                Seen::Bound(name, at) => {
                    self.bound.entry(name).or_insert(at);
                }
                Seen::Running(name, at) => {
                    self.running.entry(name).or_insert(at);
                }
                Seen::Gone(name) => {
                    self.running.remove(&name);
                    self.bound.remove(&name);
                    self.gone.insert(name);
                }
                Seen::Failed(name, why) => bail!("pod {name} failed: {why}"),
            }
        }
        Ok(())
    }
}

/// Which pods a watch has shown bound and running (each is reported once).
#[derive(Default)]
struct Tracker {
    bound: HashSet<String>,
    running: HashSet<String>,
}

impl Tracker {
    /// What one watch event, arrived `at`, says that was not said before.
    fn seen(&mut self, event: &Value, at: Instant) -> Result<Vec<Seen>> {
        let pod = &event["object"];
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let mut out = Vec::new();
        match event["type"].as_str() {
            Some("DELETED") => {
                self.bound.remove(name);
                self.running.remove(name);
                out.push(Seen::Gone(name.to_owned()));
                return Ok(out);
            }
            Some("ERROR") => bail!("watch error: {pod}"),
            _ => {}
        }
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        if !node.is_empty() && self.bound.insert(name.to_owned()) {
            out.push(Seen::Bound(name.to_owned(), at));
        }
        match pod["status"]["phase"].as_str() {
            Some("Running") if self.running.insert(name.to_owned()) => {
                out.push(Seen::Running(name.to_owned(), at));
            }
            Some("Failed") => out.push(Seen::Failed(name.to_owned(), pod["status"].to_string())),
            _ => {}
        }
        Ok(out)
    }
}

/// Reads the watch and reports each pod's binding, first `Running`, failure and removal.
async fn watch(ep: Endpoint, resource_version: String, tx: mpsc::UnboundedSender<Result<Seen>>) {
    let run = async {
        let mut conn = ep.connect().await?;
        let path = format!(
            "/api/v1/namespaces/{NAMESPACE}/pods?watch=1&resourceVersion={resource_version}"
        );
        let mut body = conn.stream(&path).await?;
        let mut pending = Vec::new();
        let mut tracker = Tracker::default();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            let at = Instant::now();
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let event: Value = serde_json::from_slice(&line).context("a watch event")?;
                for seen in tracker.seen(&event, at)? {
                    if tx.send(Ok(seen)).is_err() {
                        return Ok(());
                    }
                }
            }
        }
        bail!("the pod watch ended")
    };
    let result: Result<()> = run.await;
    if let Err(e) = result {
        let _ = tx.send(Err(e));
    }
}

fn pod(name: &str) -> Vec<u8> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"skiff-bench": "pod-start"}},
        "spec": {"containers": [{"name": "c", "image": IMAGE,
            "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]},
    });
    serde_json::to_vec(&pod).unwrap_or_default()
}

async fn call(conn: &mut Conn, method: &str, path: &str, body: Vec<u8>) -> Result<Value> {
    let json = "application/json";
    let (status, reply) = conn.call(method, path, json, json, body).await?;
    if !(200..300).contains(&status) {
        bail!(
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&reply)
        );
    }
    Ok(serde_json::from_slice(&reply)?)
}

async fn create(conn: &mut Conn, name: &str) -> Result<()> {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    call(conn, "POST", &path, pod(name)).await.map(drop)
}

/// Deletes `names` (gracefully: the kubelet stops each and then removes it) and waits until
/// the watch has seen every one go.
async fn delete_all(conn: &mut Conn, seen: &mut Observed, names: &[String]) -> Result<()> {
    for name in names {
        let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}");
        call(conn, "DELETE", &path, Vec::new()).await?;
    }
    let what = format!("{} pods to be deleted", names.len());
    seen.until(&what, |s| names.iter().all(|n| s.gone.contains(n)))
        .await
}

/// Creates `names` at once, each over its own connection opened beforehand; when each
/// create request was sent.
async fn create_at_once(ep: &Endpoint, names: &[String]) -> Result<HashMap<String, Instant>> {
    let mut conns = Vec::new();
    for _ in names {
        conns.push(ep.connect().await?);
    }
    let gate = Arc::new(tokio::sync::Barrier::new(names.len()));
    let creates: Vec<_> = conns
        .into_iter()
        .zip(names.to_vec())
        .map(|(mut conn, name)| {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.wait().await;
                let sent = Instant::now();
                create(&mut conn, &name).await?;
                anyhow::Ok((name, sent))
            })
        })
        .collect();
    let mut sent = HashMap::new();
    for task in creates {
        let (name, at) = task.await??;
        sent.insert(name, at);
    }
    Ok(sent)
}

/// VmRSS, VmHWM, RssAnon and RssFile of `pid`, in KiB, and its thread count.
fn memory(pid: u32, process: &str) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("{path} has no {key}"))
    };
    Ok(Memory {
        process: process.to_owned(),
        rss_kib: field("VmRSS:")?,
        peak_rss_kib: field("VmHWM:")?,
        rss_anon_kib: field("RssAnon:")?,
        rss_file_kib: field("RssFile:")?,
        threads: field("Threads:")?,
    })
}

async fn measure(cluster: Arc<Cluster>, count: u32, burst: u32) -> Result<Report> {
    let ep = cluster.admin()?.endpoint()?;
    let mut conn = ep.connect().await?;
    let list = call(
        &mut conn,
        "GET",
        &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
        Vec::new(),
    )
    .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("the pod list has no resourceVersion")?
        .to_owned();
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch(ep.clone(), rv, tx));
    let mut seen = Observed {
        rx,
        bound: HashMap::new(),
        running: HashMap::new(),
        gone: HashSet::new(),
    };

    eprintln!("warm-up: {WARMUP} pods");
    let warm: Vec<String> = (0..WARMUP).map(|i| format!("warm-{i}")).collect();
    for name in &warm {
        create(&mut conn, name).await?;
        seen.until(&format!("{name} to run"), |s| s.running.contains_key(name))
            .await?;
    }
    delete_all(&mut conn, &mut seen, &warm).await?;
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    eprintln!("sequential: {count} pods, one after another");
    let names: Vec<String> = (0..count).map(|i| format!("seq-{i}")).collect();
    let mut sent = HashMap::new();
    for name in &names {
        sent.insert(name.clone(), Instant::now());
        create(&mut conn, name).await?;
        seen.until(&format!("{name} to run"), |s| s.running.contains_key(name))
            .await?;
    }
    let sequential = seen.times(&names, &sent);
    delete_all(&mut conn, &mut seen, &names).await?;

    eprintln!("burst: {burst} pods created at once");
    let names: Vec<String> = (0..burst).map(|i| format!("burst-{i}")).collect();
    let sent = create_at_once(&ep, &names).await?;
    seen.until(&format!("{burst} pods to run"), |s| {
        names.iter().all(|n| s.running.contains_key(n))
    })
    .await?;
    let burst_times = seen.times(&names, &sent);
    let first = sent.values().min().copied().context("an empty burst")?;
    let last = names
        .iter()
        .filter_map(|n| seen.running.get(n))
        .max()
        .copied()
        .unwrap_or(first);
    let node_pid = cluster.node_pid().context("the node is not running")?;
    let (kubelet, apiserver) = match cluster.topology() {
        Topology::Split => (
            memory(node_pid, "skiff kubelet (the node agent alone, --no-proxy)")?,
            match cluster.plane_pid() {
                Some(pid) => Some(memory(pid, "skiff apiserver")?),
                None => None,
            },
        ),
        Topology::Up => (
            memory(node_pid, "skiff up (control plane and node together)")?,
            None,
        ),
    };
    delete_all(&mut conn, &mut seen, &names).await?;
    watcher.abort();

    Ok(Report {
        mode: "e2e",
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        topology: match cluster.topology() {
            Topology::Split => "skiff apiserver + skiff kubelet --no-proxy, separate processes",
            Topology::Up => "skiff up --no-proxy",
        },
        loadavg: loadavg.trim().to_owned(),
        count,
        burst,
        sequential: summarize(&sequential.running_ms),
        sequential_bound: summarize(&sequential.bound_ms),
        sequential_ms: sequential.running_ms,
        sequential_running: sequential.running,
        burst_each: summarize(&burst_times.running_ms),
        burst_bound: summarize(&burst_times.bound_ms),
        burst_each_ms: burst_times.running_ms,
        burst_running: burst_times.running,
        burst_total_ms: (last - first).as_secs_f64() * 1e3,
        kubelet,
        apiserver,
        goals: GOALS,
    })
}

pub async fn run(options: E2eOptions) -> Result<()> {
    let cluster_options = cluster::Options {
        topology: Topology::Split,
        image_layout: options.image_layout.clone(),
        mkimage: options.mkimage.clone(),
        kubectl: options.kubectl.clone(),
    };
    let (count, burst) = (options.count, options.burst);
    let report = cluster::with_cluster(cluster_options, move |c| measure(c, count, burst)).await?;
    print_report(&report);
    write_outputs(&options.json, &options.plot, &report)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

fn print_report(r: &Report) {
    let s = &r.sequential;
    let b = &r.burst_each;
    let g = &r.goals;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "pod start end to end (create request → Running on a watch), busybox sleep, {} build, {}",
        r.build, r.topology
    );
    println!("load average at the start: {}", r.loadavg);
    println!(
        "  sequential, {} pods ({} Running): p50 {:.1} ms  p90 {:.1}  p99 {:.1}  max {:.1}",
        r.count, r.sequential_running, s.p50, s.p90, s.p99, s.max
    );
    let sb = &r.sequential_bound;
    println!(
        "    of which create → bound seen: p50 {:.1} ms  p90 {:.1}  p99 {:.1}  max {:.1}",
        sb.p50, sb.p90, sb.p99, sb.max
    );
    println!(
        "    goal p50 ≤ {:.0} ms: {};  goal p99 ≤ {:.0} ms: {}",
        g.p50_ms,
        verdict(s.p50 <= g.p50_ms),
        g.p99_ms,
        verdict(s.p99 <= g.p99_ms)
    );
    let burst_goal = if r.burst == 100 {
        verdict(r.burst_total_ms <= g.burst_of_100_ms)
    } else {
        "n/a (the goal is for a burst of 100)"
    };
    println!(
        "  burst of {} ({} Running): all Running in {:.0} ms; each p50 {:.1} ms  p90 {:.1}  p99 {:.1}",
        r.burst, r.burst_running, r.burst_total_ms, b.p50, b.p90, b.p99
    );
    let bb = &r.burst_bound;
    println!(
        "    of which create → bound seen: p50 {:.1} ms  p90 {:.1}  p99 {:.1}",
        bb.p50, bb.p90, bb.p99
    );
    println!(
        "    goal burst of 100 ≤ {:.0} ms: {burst_goal}",
        g.burst_of_100_ms
    );
    let k = &r.kubelet;
    println!(
        "  {} with {} pods running: RSS {:.1} MiB (anon {:.1}, file {:.1}; peak {:.1}; \
         {} threads); goal ≤ {:.0} MB: {}",
        k.process,
        r.burst,
        mib(k.rss_kib),
        mib(k.rss_anon_kib),
        mib(k.rss_file_kib),
        mib(k.peak_rss_kib),
        k.threads,
        g.kubelet_rss_mib,
        verdict(mib(k.rss_kib) <= g.kubelet_rss_mib)
    );
    if let Some(a) = &r.apiserver {
        println!(
            "  {}: RSS {:.1} MiB (anon {:.1}, file {:.1}; peak {:.1})",
            a.process,
            mib(a.rss_kib),
            mib(a.rss_anon_kib),
            mib(a.rss_file_kib),
            mib(a.peak_rss_kib)
        );
    }
}

fn write_outputs(json: &Path, plot: &Path, report: &Report) -> Result<()> {
    for path in [json, plot] {
        crate::bench::ensure_parent(path)?;
    }
    std::fs::write(json, serde_json::to_vec_pretty(report)?)?;
    let cdf = |name: String, samples: &[f64]| {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        Series {
            name,
            points: sorted
                .iter()
                .enumerate()
                .map(|(k, ms)| (*ms, (k + 1) as f64 / n))
                .collect(),
        }
    };
    let series = [
        cdf(
            format!("one at a time ({} pods)", report.count),
            &report.sequential_ms,
        ),
        cdf(
            format!(
                "burst of {} (all Running in {:.0} ms)",
                report.burst, report.burst_total_ms
            ),
            &report.burst_each_ms,
        ),
    ];
    lines(
        plot,
        &format!(
            "pod start end to end: create → Running on a watch ({} build)",
            report.build
        ),
        "milliseconds",
        "fraction of pods",
        &series,
    )?;
    println!("wrote {} and {}", json.display(), plot.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(seen: &[Seen]) -> Vec<String> {
        seen.iter()
            .map(|s| match s {
                Seen::Bound(n, _) => format!("bound {n}"),
                Seen::Running(n, _) => format!("running {n}"),
                Seen::Failed(n, _) => format!("failed {n}"),
                Seen::Gone(n) => format!("gone {n}"),
            })
            .collect()
    }

    #[test]
    fn each_pods_binding_and_first_running_are_reported_once() {
        let event = |kind: &str, node: &str, phase: &str| {
            json!({"type": kind, "object": {"metadata": {"name": "p"},
                "spec": {"nodeName": node}, "status": {"phase": phase}}})
        };
        let mut t = Tracker::default();
        let now = Instant::now();
        let mut seen = |e: Value| names(&t.seen(&e, now).unwrap());
        assert!(seen(event("ADDED", "", "Pending")).is_empty());
        assert_eq!(seen(event("MODIFIED", "n", "Pending")), ["bound p"]);
        assert_eq!(seen(event("MODIFIED", "n", "Running")), ["running p"]);
        assert!(seen(event("MODIFIED", "n", "Running")).is_empty());
        assert_eq!(seen(event("DELETED", "n", "Running")), ["gone p"]);
        // Bound and Running in one event (a missed intermediate version): both, in order.
        assert_eq!(
            seen(event("MODIFIED", "n", "Running")),
            ["bound p", "running p"]
        );
        assert_eq!(seen(event("MODIFIED", "n", "Failed")), ["failed p"]);
        let error = json!({"type": "ERROR", "object": {"code": 410}});
        assert!(t.seen(&error, now).is_err());
    }
}
