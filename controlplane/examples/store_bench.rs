//! Throughput and watch-latency check of a store, run by hand:
//! `cargo run --release -p skiff-controlplane --example store_bench -- [--creates N]
//! [--concurrency C] [--watchers W] [--rate PER_SECOND] [--etcd http://127.0.0.1:2379]`.
//!
//! Creates N keys from C concurrent tasks while W watchers follow the prefix, then prints
//! creates/s and the watch delivery latency (event received − write acknowledged).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use skiff_controlplane::store::{EmbeddedStore, EtcdStore, Store};

struct Args {
    creates: usize,
    concurrency: usize,
    watchers: usize,
    /// Creates per second in total; unset means as fast as the tasks go.
    rate: Option<f64>,
    etcd: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        creates: 20_000,
        concurrency: 256,
        watchers: 100,
        rate: None,
        etcd: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--creates" => args.creates = value.parse()?,
            "--concurrency" => args.concurrency = value.parse()?,
            "--watchers" => args.watchers = value.parse()?,
            "--rate" => args.rate = Some(value.parse()?),
            "--etcd" => args.etcd = Some(value),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// Nanoseconds since `base`, 0 reserved for "not yet".
fn nanos(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1e6
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = match &args.etcd {
        Some(endpoint) => Arc::new(EtcdStore::connect(&[endpoint.as_str()], "/skiff-bench").await?),
        None => Arc::new(EmbeddedStore::open(dir.path())?),
    };
    let base = Instant::now();
    let acked: Arc<Vec<AtomicU64>> =
        Arc::new((0..args.creates).map(|_| AtomicU64::new(0)).collect());
    let start = store.current_revision().await?;

    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        let mut watch = store.watch("/bench/", start).await?;
        let (acked, total) = (acked.clone(), args.creates);
        watchers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total);
            while latencies.len() < total {
                let event = watch.next().await.context("watch ended")??;
                let received = nanos(base);
                let index: usize = event.key().trim_start_matches("/bench/").parse()?;
                let ack = acked[index].load(Ordering::Acquire);
                latencies.push(if ack == 0 {
                    0
                } else {
                    received.saturating_sub(ack)
                });
            }
            anyhow::Ok(latencies)
        }));
    }

    // With a rate, each of the C tasks writes every C/rate seconds; without, flat out.
    let period = args
        .rate
        .map(|rate| std::time::Duration::from_secs_f64(args.concurrency as f64 / rate));
    let next = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..args.concurrency {
        let (store, next, acked, total) =
            (store.clone(), next.clone(), acked.clone(), args.creates);
        let mut pace = period.map(tokio::time::interval);
        writers.push(tokio::spawn(async move {
            loop {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                if index >= total {
                    return anyhow::Ok(());
                }
                store
                    .create(&format!("/bench/{index:09}"), vec![b'x'; 512])
                    .await?;
                acked[index].store(nanos(base), Ordering::Release);
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let elapsed = began.elapsed();
    let mut latencies = Vec::new();
    for watcher in watchers {
        latencies.extend(watcher.await??);
    }
    let watch_done = began.elapsed();
    latencies.sort_unstable();
    println!(
        "{} creates ({} B values) from {} tasks in {:.2}s: {:.0} creates/s",
        args.creates,
        512,
        args.concurrency,
        elapsed.as_secs_f64(),
        args.creates as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{} watchers: all events delivered after {:.2}s; ack→event latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.watchers,
        watch_done.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    Ok(())
}
