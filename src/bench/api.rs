//! `skiff bench api`: the API server through its real HTTPS API — Pod creates per second
//! and gets per second with N concurrent keep-alive connections, a Table list of every pod
//! (`kubectl get pods`), and watch delivery latency (write sent → event read) with W
//! watchers; on the embedded store and on a real etcd (started by the bench, when
//! /usr/bin/etcd is installed) in the same run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::BodyExt;
use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};
use skiff_controlplane::apiserver::{self, ApiServerConfig};

use super::https::{Conn, Endpoint};
use super::plot::{Series, lines};
use super::stats::{Summary, summarize};

#[derive(Debug, clap::Args)]
pub struct ApiBench {
    /// Pods to create (then to get, and to list as a Table).
    #[arg(long, default_value_t = 10_000)]
    creates: usize,
    /// Concurrent connections for creates and gets.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Writes each watcher must see.
    #[arg(long, default_value_t = 100)]
    events: usize,
    /// Stores to measure: `embedded`, `etcd` (started from --etcd-binary), or both.
    #[arg(long, value_delimiter = ',', default_value = "embedded,etcd")]
    stores: Vec<String>,
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd_binary: PathBuf,
    #[arg(long, default_value = "bench-out/api.json")]
    json: PathBuf,
    #[arg(long, default_value = "bench-out/api.svg")]
    plot: PathBuf,
}

#[derive(Debug, Serialize)]
struct Phase {
    ops: usize,
    concurrency: usize,
    seconds: f64,
    per_second: f64,
    latency_ms: Summary,
}

#[derive(Debug, Serialize)]
struct Report {
    store: String,
    build: &'static str,
    creates: Phase,
    gets: Phase,
    table_list_ms: Summary,
    table_list_items: usize,
    watchers: usize,
    watch_events: usize,
    watch_delivery_ms: Summary,
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn pod(name: &str, extra: Value) -> Vec<u8> {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
            "ports": [{"containerPort": 80}], "resources": {"requests": {"cpu": "10m"}}}]}});
    if let (Some(meta), Some(extra)) = (pod["metadata"].as_object_mut(), extra.as_object()) {
        meta.extend(extra.clone());
    }
    serde_json::to_vec(&pod).unwrap_or_default()
}

/// Runs `ops` operations over `concurrency` connections; `op(conn, i)` does the i-th.
async fn phase<F, Fut>(ep: &Endpoint, ops: usize, concurrency: usize, op: F) -> Result<Phase>
where
    F: Fn(Conn, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<Conn>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, op, ep) = (next.clone(), op.clone(), ep.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = ep.connect().await?;
            let mut samples = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    return Ok::<_, anyhow::Error>(samples);
                }
                let t = Instant::now();
                conn = op(conn, i).await?;
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Phase {
        ops,
        concurrency,
        seconds,
        per_second: ops as f64 / seconds,
        latency_ms: summarize(&latencies),
    })
}

async fn expect(conn: &mut Conn, method: &str, path: &str, body: Vec<u8>, want: u16) -> Result<()> {
    let (status, reply) = conn
        .call(method, path, "application/json", "application/json", body)
        .await?;
    if status != want {
        bail!(
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&reply)
        );
    }
    Ok(())
}

/// One watcher: reads events until it has seen `events` ADDED objects carrying a send
/// time, and returns the delivery latencies in ms.
async fn watcher(
    ep: Endpoint,
    path: String,
    events: usize,
    ready: Arc<AtomicUsize>,
) -> Result<Vec<f64>> {
    let mut conn = ep.connect().await?;
    let mut body = conn.stream(&path).await?;
    ready.fetch_add(1, Ordering::Relaxed);
    let mut pending = Vec::new();
    let mut out = Vec::new();
    while out.len() < events {
        let frame = body
            .frame()
            .await
            .ok_or_else(|| anyhow!("watch ended early"))??;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let received = now_nanos();
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let event: Value = serde_json::from_slice(&line).context("a watch event")?;
            let sent = event
                .pointer("/object/metadata/annotations/bench~1sent")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u128>().ok());
            if let Some(sent) = sent {
                out.push(received.saturating_sub(sent) as f64 / 1e6);
            }
        }
    }
    Ok(out)
}

impl ApiBench {
    pub async fn run(self) -> Result<()> {
        let mut reports = Vec::new();
        for store in &self.stores {
            let dir = tempfile::Builder::new()
                .prefix("skiff-bench-api-")
                .tempdir()?;
            let mut config = ApiServerConfig::new(dir.path().join("apiserver"));
            config.listen = "127.0.0.1:0".parse()?;
            config.bookmark_interval = Duration::from_secs(3600);
            let _etcd = match store.as_str() {
                "embedded" => None,
                "etcd" if !self.etcd_binary.exists() => {
                    println!(
                        "skipping etcd: {} not found (apt-get install etcd-server)",
                        self.etcd_binary.display()
                    );
                    continue;
                }
                "etcd" => {
                    let etcd = Etcd::start(&self.etcd_binary, dir.path())?;
                    config.etcd = vec![etcd.endpoint.clone()];
                    Some(etcd)
                }
                other => bail!("unknown store {other:?}: embedded or etcd"),
            };
            reports.push(self.measure(store, config).await?);
        }
        if reports.is_empty() {
            bail!("no store measured");
        }
        self.write(&reports)
    }

    async fn measure(&self, store: &str, config: ApiServerConfig) -> Result<Report> {
        // etcd may take a moment to listen: retry the start for a while.
        let deadline = Instant::now() + Duration::from_secs(20);
        let server = loop {
            match apiserver::start(config.clone()).await {
                Ok(server) => break server,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("API server not up yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e).context("starting the API server"),
            }
        };
        let ep = Endpoint::new(server.addr, &server.ca_pem, &server.token)?;
        let ns = format!("bench-{:06x}", rand::rng().random_range(0..0xffffffu32));
        let mut admin = ep.connect().await?;
        for name in [ns.clone(), format!("{ns}-watch")] {
            let body = serde_json::to_vec(&json!({"metadata": {"name": name}}))?;
            expect(&mut admin, "POST", "/api/v1/namespaces", body, 201).await?;
        }
        println!(
            "skiff bench api: {store} store, {} creates over {} connections, {} watchers x {} events",
            self.creates, self.concurrency, self.watchers, self.events
        );

        let collection = format!("/api/v1/namespaces/{ns}/pods");
        let create_path = collection.clone();
        let creates = phase(&ep, self.creates, self.concurrency, move |mut c, i| {
            let path = create_path.clone();
            async move {
                expect(
                    &mut c,
                    "POST",
                    &path,
                    pod(&format!("p-{i}"), json!({})),
                    201,
                )
                .await?;
                Ok(c)
            }
        })
        .await?;
        println!(
            "creates: {:>8.0}/s  p50 {:.2} ms  p99 {:.2} ms",
            creates.per_second, creates.latency_ms.p50, creates.latency_ms.p99
        );

        let total = self.creates;
        let get_path = collection.clone();
        let gets = phase(&ep, self.creates * 2, self.concurrency, move |mut c, _| {
            let path = format!("{get_path}/p-{}", rand::rng().random_range(0..total.max(1)));
            async move {
                expect(&mut c, "GET", &path, Vec::new(), 200).await?;
                Ok(c)
            }
        })
        .await?;
        println!(
            "gets:    {:>8.0}/s  p50 {:.2} ms  p99 {:.2} ms",
            gets.per_second, gets.latency_ms.p50, gets.latency_ms.p99
        );

        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
        let mut list_ms = Vec::new();
        let mut items = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let (status, body) = admin
                .call("GET", &collection, table, "application/json", Vec::new())
                .await?;
            list_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if status != 200 {
                bail!("Table list: {status}");
            }
            let doc: Value = serde_json::from_slice(&body)?;
            items = doc["rows"].as_array().map_or(0, Vec::len);
        }
        let list = summarize(&list_ms);
        println!("Table list of {items} pods: p50 {:.1} ms", list.p50);

        let watch_ns = format!("{ns}-watch");
        let watch_path = format!("/api/v1/namespaces/{watch_ns}/pods?watch=true&resourceVersion=0");
        let ready = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..self.watchers)
            .map(|_| {
                tokio::spawn(watcher(
                    ep.clone(),
                    watch_path.clone(),
                    self.events,
                    ready.clone(),
                ))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while ready.load(Ordering::Relaxed) < self.watchers {
            if Instant::now() > deadline {
                bail!("watchers did not start");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let writes = format!("/api/v1/namespaces/{watch_ns}/pods");
        for i in 0..self.events {
            let sent = json!({"annotations": {"bench/sent": now_nanos().to_string()}});
            expect(
                &mut admin,
                "POST",
                &writes,
                pod(&format!("w-{i}"), sent),
                201,
            )
            .await?;
            // Paced, so that the figure is delivery latency, not queueing behind a burst.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut delivery = Vec::new();
        for task in tasks {
            delivery.extend(tokio::time::timeout(Duration::from_secs(60), task).await???);
        }
        let watch = summarize(&delivery);
        println!(
            "watch delivery ({} watchers): p50 {:.2} ms  p99 {:.2} ms",
            self.watchers, watch.p50, watch.p99
        );

        let report = Report {
            store: store.to_owned(),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            creates,
            gets,
            table_list_ms: list,
            table_list_items: items,
            watchers: self.watchers,
            watch_events: self.events,
            watch_delivery_ms: watch,
        };
        drop(admin);
        server.shutdown().await?;
        Ok(report)
    }

    fn write(&self, reports: &[Report]) -> Result<()> {
        for path in [&self.json, &self.plot] {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
        }
        std::fs::write(&self.json, serde_json::to_vec_pretty(reports)?)?;
        let quantiles = |s: &Summary| vec![(50.0, s.p50), (90.0, s.p90), (99.0, s.p99)];
        let mut series = Vec::new();
        for r in reports {
            series.push(Series {
                name: format!("{}: create ({:.0}/s)", r.store, r.creates.per_second),
                points: quantiles(&r.creates.latency_ms),
            });
            series.push(Series {
                name: format!("{}: get ({:.0}/s)", r.store, r.gets.per_second),
                points: quantiles(&r.gets.latency_ms),
            });
            series.push(Series {
                name: format!("{}: watch delivery ({} watchers)", r.store, r.watchers),
                points: quantiles(&r.watch_delivery_ms),
            });
        }
        let build = reports.first().map_or("", |r| r.build);
        lines(
            &self.plot,
            &format!("skiff API server over HTTPS ({build} build)"),
            "percentile",
            "latency (ms)",
            &series,
        )?;
        println!("wrote {} and {}", self.json.display(), self.plot.display());
        Ok(())
    }
}

/// A real etcd on 127.0.0.1 for the run, killed on drop.
struct Etcd {
    child: std::process::Child,
    endpoint: String,
}

impl Etcd {
    fn start(binary: &std::path::Path, dir: &std::path::Path) -> Result<Etcd> {
        let port = || -> Result<u16> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port())
        };
        let client = format!("http://127.0.0.1:{}", port()?);
        let peer = format!("http://127.0.0.1:{}", port()?);
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = std::process::Command::new(binary)
            .arg("--name=bench")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=bench={peer}"))
            .args(["--logger=zap", "--log-outputs=stderr", "--log-level=warn"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Etcd {
            child,
            endpoint: client,
        })
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
