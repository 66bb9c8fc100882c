//! `skiff bench control-plane`: the scheduler and controllers at scale, in this process
//! over a real API server and embedded store (in a temp dir), with hollow nodes standing in
//! for kubelets (they mark bound pods Ready at once).
//!
//! 1. Scheduling: N pods created unbound onto M registered nodes, then the scheduler starts;
//!    time until every pod is bound (its informer's initial list included).
//! 2. Rollout: a Deployment of R replicas created (time until complete), then its image
//!    changed (time until the rolling update completes), with the process CPU time per
//!    store write over the rollout.
//!
//! There is no kube-scheduler or kube-controller-manager on these machines to measure in
//! the same run; the goals (< 2 s, < 10 s) are the yardstick.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use serde::Serialize;
use serde_json::json;
use skiff_controlplane::apiserver::{self, ApiServerConfig, Client, RunningApiServer};
use skiff_controlplane::controllers::informer::{Event, Informer};
use skiff_controlplane::controllers::scheduler::Scheduler;
use skiff_controlplane::controllers::{Config, ControllerManager};
use skiff_controlplane::hollow::{self, HollowNodes};

use super::plot::{Series, lines};

/// Options of `skiff bench control-plane`.
#[derive(Debug, Args)]
pub struct ControlPlaneBench {
    /// Nodes to register.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Pods to schedule.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Replicas of the rolled-out Deployment.
    #[arg(long, default_value_t = 1_000)]
    replicas: usize,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench-out/control-plane.json")]
    json: PathBuf,
    /// Where to write the plot.
    #[arg(long, default_value = "bench-out/control-plane.svg")]
    plot: PathBuf,
}

#[derive(Debug, Serialize)]
struct Report {
    nodes: usize,
    pods: usize,
    replicas: usize,
    create_pods_seconds: f64,
    schedule_seconds: f64,
    pods_bound_per_second: f64,
    rollout_create_seconds: f64,
    rollout_update_seconds: f64,
    rollout_writes: u64,
    cpu_microseconds_per_write: f64,
    /// (seconds since the scheduler started, pods bound).
    schedule_timeline: Vec<(f64, usize)>,
    /// (seconds since the image change, updated and available replicas).
    rollout_timeline: Vec<(f64, usize)>,
}

/// This process's CPU time (all threads).
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

async fn server(dir: &std::path::Path) -> Result<RunningApiServer> {
    let mut config = ApiServerConfig::new(dir);
    config.listen = "127.0.0.1:0".parse()?;
    apiserver::start(config)
        .await
        .context("starting the API server")
}

async fn revision(client: &Client) -> Result<u64> {
    Ok(client.list::<Namespace>(None, "").await?.revision)
}

fn unbound_pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("bench-{i}"), "namespace": "default", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "bench:1",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    }))
    .unwrap_or_default()
}

fn node_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("hollow-{i}")).collect()
}

impl ControlPlaneBench {
    async fn schedule(&self, report: &mut Report) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let server = server(dir.path()).await?;
        let client = server.client();
        for name in node_names(self.nodes) {
            client.create(&hollow::node(&name, "64", "256Gi")).await?;
        }
        let started = Instant::now();
        let created: Vec<_> = futures::stream::iter(0..self.pods)
            .map(|i| {
                let client = client.clone();
                async move { client.create(&unbound_pod(i)).await }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        if let Some(Err(e)) = created.into_iter().find(Result::is_err) {
            bail!("creating pods: {e}");
        }
        report.create_pods_seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "created {} unbound pods in {:.2} s",
            self.pods, report.create_pods_seconds
        );

        let pods: Informer<Pod> = Informer::new();
        let nodes: Informer<Node> = Informer::new();
        let bound = Arc::new(AtomicUsize::new(0));
        let counter = bound.clone();
        pods.on_change(move |event| {
            if let Event::Applied { new, old } = event {
                let is_bound =
                    |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                if is_bound(new) && !old.as_deref().is_some_and(is_bound) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let start = Instant::now();
        let scheduler = Scheduler::start(client.clone(), &pods, &nodes);
        let informers = [pods.spawn(client.clone()), nodes.spawn(client.clone())];
        let mut timeline = Vec::new();
        loop {
            let n = bound.load(Ordering::Relaxed);
            timeline.push((start.elapsed().as_secs_f64(), n));
            if n >= self.pods {
                break;
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!("only {n} of {} pods bound after 300 s", self.pods);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        report.schedule_seconds = start.elapsed().as_secs_f64();
        report.pods_bound_per_second = self.pods as f64 / report.schedule_seconds;
        report.schedule_timeline = timeline;
        scheduler.abort();
        for task in informers {
            task.abort();
        }
        server.shutdown().await?;
        Ok(())
    }

    /// Waits until the Deployment's rollout is complete; samples updated+available.
    async fn wait_complete(
        &self,
        client: &Client,
        timeline: &mut Vec<(f64, usize)>,
    ) -> Result<f64> {
        let start = Instant::now();
        let want = self.replicas as i32;
        loop {
            let d = client.get::<Deployment>(Some("default"), "bench").await?;
            let s = d.status.clone().unwrap_or_default();
            let updated_available = s
                .updated_replicas
                .unwrap_or(0)
                .min(s.available_replicas.unwrap_or(0));
            timeline.push((
                start.elapsed().as_secs_f64(),
                updated_available.max(0) as usize,
            ));
            let done = s.observed_generation >= d.metadata.generation
                && s.updated_replicas == Some(want)
                && s.available_replicas == Some(want)
                && s.replicas == Some(want);
            if done {
                return Ok(start.elapsed().as_secs_f64());
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!("rollout not complete after 300 s: {s:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn rollout(&self, report: &mut Report) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let server = server(dir.path()).await?;
        let client = server.client();
        let controllers = ControllerManager::start(client.clone(), Config::default());
        let names = node_names(self.nodes);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let _nodes = HollowNodes::start(client.clone(), &refs, "64", "256Gi", Duration::ZERO).await;
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "bench", "namespace": "default"},
            "spec": {"replicas": self.replicas, "selector": {"matchLabels": {"app": "bench"}},
                "template": {"metadata": {"labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "c", "image": "bench:1"}]}}}
        }))?;
        client.create(&deployment).await?;
        let mut ignored = Vec::new();
        report.rollout_create_seconds = self.wait_complete(&client, &mut ignored).await?;
        eprintln!(
            "deployment of {} replicas complete in {:.2} s",
            self.replicas, report.rollout_create_seconds
        );
        let (cpu0, rev0) = (cpu_time(), revision(&client).await?);
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "bench:2"}]}}}});
        client
            .merge_patch::<Deployment>(Some("default"), "bench", patch, false)
            .await?;
        let mut timeline = Vec::new();
        report.rollout_update_seconds = self.wait_complete(&client, &mut timeline).await?;
        let (cpu1, rev1) = (cpu_time(), revision(&client).await?);
        report.rollout_writes = rev1.saturating_sub(rev0);
        report.cpu_microseconds_per_write =
            (cpu1 - cpu0).as_secs_f64() * 1e6 / report.rollout_writes.max(1) as f64;
        report.rollout_timeline = timeline;
        drop(controllers);
        server.shutdown().await?;
        Ok(())
    }

    pub async fn run(self) -> Result<()> {
        let mut report = Report {
            nodes: self.nodes,
            pods: self.pods,
            replicas: self.replicas,
            create_pods_seconds: 0.0,
            schedule_seconds: 0.0,
            pods_bound_per_second: 0.0,
            rollout_create_seconds: 0.0,
            rollout_update_seconds: 0.0,
            rollout_writes: 0,
            cpu_microseconds_per_write: 0.0,
            schedule_timeline: Vec::new(),
            rollout_timeline: Vec::new(),
        };
        self.schedule(&mut report).await?;
        self.rollout(&mut report).await?;
        println!("control plane, {} nodes (hollow):", self.nodes);
        println!(
            "  schedule {} pods:            {:.2} s  ({:.0} pods/s; goal < 2 s)",
            self.pods, report.schedule_seconds, report.pods_bound_per_second
        );
        println!(
            "  create a {}-replica Deployment: {:.2} s",
            self.replicas, report.rollout_create_seconds
        );
        println!(
            "  roll it to a new image:          {:.2} s  (goal < 10 s)",
            report.rollout_update_seconds
        );
        println!(
            "  CPU per store write in the rollout: {:.0} µs ({} writes)",
            report.cpu_microseconds_per_write, report.rollout_writes
        );
        super::ensure_parent(&self.json)?;
        super::ensure_parent(&self.plot)?;
        std::fs::write(&self.json, serde_json::to_vec_pretty(&report)?)?;
        let series = |name: &str, points: &[(f64, usize)], total: usize| Series {
            name: name.into(),
            points: points
                .iter()
                .map(|(t, n)| (*t, *n as f64 * 100.0 / total.max(1) as f64))
                .collect(),
        };
        lines(
            &self.plot,
            "skiff control plane: progress over time",
            "seconds",
            "% done",
            &[
                series(
                    &format!("{} pods bound", self.pods),
                    &report.schedule_timeline,
                    self.pods,
                ),
                series(
                    &format!("{} replicas updated + available", self.replicas),
                    &report.rollout_timeline,
                    self.replicas,
                ),
            ],
        )?;
        println!("wrote {} and {}", self.json.display(), self.plot.display());
        Ok(())
    }
}
