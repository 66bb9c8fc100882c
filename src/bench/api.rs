//! `skiff bench api`: the API server through its real HTTPS API — ConfigMap creates per
//! second and gets per second with N concurrent keep-alive connections, a Table list of
//! everything created, and watch delivery latency (write acknowledged → event read) with
//! W watchers. The server runs in process on the embedded store (or `--etcd`).

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
    /// ConfigMaps to create (then to get, and to list as a Table).
    #[arg(long, default_value_t = 2000)]
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
    /// Use this etcd instead of the embedded store.
    #[arg(long)]
    etcd: Option<String>,
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

fn configmap(name: &str, extra: Value) -> Vec<u8> {
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "data": {"greeting": "hello", "index": name}});
    if let (Some(meta), Some(extra)) = (cm["metadata"].as_object_mut(), extra.as_object()) {
        meta.extend(extra.clone());
    }
    serde_json::to_vec(&cm).unwrap_or_default()
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
        let dir = tempfile::Builder::new()
            .prefix("skiff-bench-api-")
            .tempdir()?;
        let mut config = ApiServerConfig::new(dir.path());
        config.listen = "127.0.0.1:0".parse()?;
        config.bookmark_interval = Duration::from_secs(3600);
        if let Some(etcd) = &self.etcd {
            config.etcd = vec![etcd.clone()];
        }
        let server = apiserver::start(config)
            .await
            .context("starting the API server")?;
        let ep = Endpoint::new(server.addr, &server.ca_pem, &server.token)?;
        let ns = format!("bench-{:06x}", rand::rng().random_range(0..0xffffffu32));
        let mut admin = ep.connect().await?;
        for name in [ns.clone(), format!("{ns}-watch")] {
            let body = serde_json::to_vec(&json!({"metadata": {"name": name}}))?;
            expect(&mut admin, "POST", "/api/v1/namespaces", body, 201).await?;
        }
        let store = if self.etcd.is_some() {
            "etcd"
        } else {
            "embedded"
        };
        println!(
            "skiff bench api: {store} store, {} creates over {} connections, {} watchers x {} events",
            self.creates, self.concurrency, self.watchers, self.events
        );

        let collection = format!("/api/v1/namespaces/{ns}/configmaps");
        let create_path = collection.clone();
        let creates = phase(&ep, self.creates, self.concurrency, move |mut c, i| {
            let path = create_path.clone();
            async move {
                expect(
                    &mut c,
                    "POST",
                    &path,
                    configmap(&format!("cm-{i}"), json!({})),
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
            let path = format!(
                "{get_path}/cm-{}",
                rand::rng().random_range(0..total.max(1))
            );
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
        println!("Table list of {items}: p50 {:.1} ms", list.p50);

        let watch_ns = format!("{ns}-watch");
        let watch_path =
            format!("/api/v1/namespaces/{watch_ns}/configmaps?watch=true&resourceVersion=0");
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
        let writes = format!("/api/v1/namespaces/{watch_ns}/configmaps");
        for i in 0..self.events {
            let sent = json!({"annotations": {"bench/sent": now_nanos().to_string()}});
            expect(
                &mut admin,
                "POST",
                &writes,
                configmap(&format!("w-{i}"), sent),
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
            store: store.into(),
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
        self.write(&report)?;
        drop(admin);
        server.shutdown().await?;
        Ok(())
    }

    fn write(&self, report: &Report) -> Result<()> {
        for path in [&self.json, &self.plot] {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
        }
        std::fs::write(&self.json, serde_json::to_vec_pretty(report)?)?;
        let quantiles =
            |s: &Summary| vec![(50.0, s.p50), (90.0, s.p90), (99.0, s.p99), (100.0, s.max)];
        lines(
            &self.plot,
            &format!(
                "skiff API server ({} store, {} build)",
                report.store, report.build
            ),
            "percentile",
            "latency (ms)",
            &[
                Series {
                    name: format!("create ({:.0}/s)", report.creates.per_second),
                    points: quantiles(&report.creates.latency_ms),
                },
                Series {
                    name: format!("get ({:.0}/s)", report.gets.per_second),
                    points: quantiles(&report.gets.latency_ms),
                },
                Series {
                    name: format!("watch delivery ({} watchers)", report.watchers),
                    points: quantiles(&report.watch_delivery_ms),
                },
            ],
        )?;
        println!("wrote {} and {}", self.json.display(), self.plot.display());
        Ok(())
    }
}
