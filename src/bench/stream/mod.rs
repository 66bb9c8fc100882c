//! `skiff bench stream`: throughput of `kubectl port-forward` and `kubectl exec -i` through
//! the API server and a node's stream tunnel, against a direct TCP connection, in one run.
//! Two nodes to measure through: a stand-in answering in this process (`standin.rs`, the
//! default: the API path alone), or a real cluster and a real pod (`pod.rs`, `--node pod`:
//! the kubelet's exec into the container and its connection from the pod's netns too).
//! Every byte goes up and comes back; MB/s counts each byte once.

mod pod;
mod standin;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::plot::{Series, lines};
use super::stats::{Summary, summarize};

/// Which node answers the streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeKind {
    /// A stand-in node in this process (exec: an in-process cat; port-forward: a loopback
    /// echo server).
    StandIn,
    /// A real `skiff up` in a network namespace of the bench's, and a busybox pod (`cat`,
    /// `nc -ll -e cat`).
    Pod,
}

/// Options of `skiff bench stream`.
#[derive(Debug, Args)]
pub struct StreamBench {
    /// Megabytes sent (and echoed back) per run.
    #[arg(long, default_value_t = 64)]
    mb: usize,
    /// Runs of each path.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The node the streams end at.
    #[arg(long, value_enum, default_value = "stand-in")]
    node: NodeKind,
    /// The kubectl to drive (1.31+ speaks WebSocket for both; default: kubectl 1.33 from
    /// the machine image if present, else `kubectl`).
    #[arg(long)]
    kubectl: Option<PathBuf>,
    /// `--node pod`: an OCI layout of the busybox test image (default: built with --mkimage).
    #[arg(long)]
    image_layout: Option<PathBuf>,
    /// `--node pod`: the test-image generator.
    #[arg(long, default_value = "tests/image/mkimage.py")]
    mkimage: PathBuf,
    /// Where to write the figures as JSON (default bench-out/stream.json, or
    /// bench-out/stream-pod.json with `--node pod`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where to write the plot (default bench-out/stream.svg, or bench-out/stream-pod.svg).
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// The pod the streams go to, in namespace default.
const POD: &str = "bench";
/// The port of its echo server.
const POD_PORT: u16 = 7000;

#[derive(Debug, Serialize)]
struct Figure {
    name: String,
    mb_per_second: Summary,
}

#[derive(Debug, Serialize)]
struct Report {
    /// `stand-in` or `pod`.
    node: &'static str,
    build: &'static str,
    megabytes: usize,
    runs: usize,
    kubectl: String,
    paths: Vec<Figure>,
}

/// Sends `bytes` to `addr` and reads as many back; MB/s.
async fn through_tcp(addr: SocketAddr, bytes: usize) -> Result<f64> {
    let start = Instant::now();
    let conn = TcpStream::connect(addr).await?;
    let (mut rd, mut wr) = conn.into_split();
    let send = async move {
        let chunk = vec![0x5au8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            wr.write_all(&chunk[..n]).await?;
            left -= n;
        }
        wr.shutdown().await?;
        anyhow::Ok(())
    };
    let receive = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < bytes {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        anyhow::Ok(got)
    };
    let (sent, got) = tokio::join!(send, receive);
    sent?;
    let got = got?;
    if got != bytes {
        bail!("{got} of {bytes} bytes came back from {addr}");
    }
    Ok(bytes as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// Runs kubectl against one cluster.
struct Kubectl {
    program: PathBuf,
    kubeconfig: PathBuf,
    mb: usize,
}

impl Kubectl {
    fn command(&self, websockets: bool) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        let flag = if websockets { "true" } else { "false" };
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", flag)
            .env("PORT_FORWARD_WEBSOCKETS", flag)
            .kill_on_drop(true);
        cmd
    }

    /// `kubectl exec -i POD -- cat` of the payload; MB/s (kubectl's start included).
    async fn exec(&self, websockets: bool, payload: &Path) -> Result<f64> {
        let bytes = self.mb * 1_000_000;
        let start = Instant::now();
        let mut child = self
            .command(websockets)
            .args(["exec", "-i", POD, "--", "cat"])
            .stdin(std::fs::File::open(payload)?)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.program.display()))?;
        let mut stdout = child.stdout.take().context("stdout")?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        loop {
            let n = stdout.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let out = child.wait_with_output().await?;
        if !out.status.success() || got != bytes {
            bail!(
                "kubectl exec: {got} of {bytes} bytes: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(bytes as f64 / 1e6 / start.elapsed().as_secs_f64())
    }

    /// Through one `kubectl port-forward`; MB/s of the transfer (the forward is up first).
    async fn port_forward(&self, websockets: bool) -> Result<f64> {
        let mut child = self
            .command(websockets)
            .args([
                "port-forward",
                &format!("pod/{POD}"),
                &format!(":{POD_PORT}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("running {}", self.program.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout);
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(60),
            tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line),
        )
        .await
        .context("kubectl port-forward did not start")??;
        let local: u16 = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no local port in {line:?}"))?;
        // Keep draining kubectl's stdout (a line per connection; a closed pipe kills it).
        tokio::spawn(async move {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut lines, &mut sink).await;
        });
        let rate = through_tcp(([127, 0, 0, 1], local).into(), self.mb * 1_000_000).await;
        let _ = child.kill().await;
        rate
    }

    /// Each path `runs` times, interleaved: direct TCP to `direct`, port-forward and exec
    /// over WebSocket and SPDY. Samples in MB/s, in the order of `PATHS`.
    async fn measure(&self, direct: SocketAddr, runs: usize) -> Result<Vec<Vec<f64>>> {
        let payload = tempfile::NamedTempFile::new()?;
        std::fs::write(payload.path(), vec![0xa5u8; self.mb * 1_000_000])?;
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); PATHS.len()];
        for run in 0..runs {
            samples[0].push(through_tcp(direct, self.mb * 1_000_000).await?);
            samples[1].push(self.port_forward(true).await?);
            samples[2].push(self.port_forward(false).await?);
            samples[3].push(self.exec(true, payload.path()).await?);
            samples[4].push(self.exec(false, payload.path()).await?);
            eprintln!("run {}/{runs} done", run + 1);
        }
        Ok(samples)
    }
}

/// The paths measured, after the direct connection (named by node kind in the report).
const PATHS: [&str; 5] = [
    "direct TCP",
    "port-forward, WebSocket",
    "port-forward, SPDY",
    "exec -i cat, WebSocket",
    "exec -i cat, SPDY",
];

impl StreamBench {
    pub async fn run(self) -> Result<()> {
        let program = self
            .kubectl
            .clone()
            .unwrap_or_else(super::cluster::default_kubectl);
        let (samples, direct_name) = match self.node {
            NodeKind::StandIn => {
                let echo = standin::echo_server().await?;
                let cluster = standin::cluster(echo).await?;
                let kubectl = Kubectl {
                    program: program.clone(),
                    kubeconfig: cluster.kubeconfig.clone(),
                    mb: self.mb,
                };
                let samples = kubectl
                    .measure(([127, 0, 0, 1], echo).into(), self.runs)
                    .await;
                cluster.shutdown().await?;
                (samples?, "direct TCP (loopback)")
            }
            NodeKind::Pod => {
                let options = super::cluster::Options {
                    topology: super::cluster::Topology::Up,
                    image_layout: self.image_layout.clone(),
                    mkimage: self.mkimage.clone(),
                    kubectl: program.clone(),
                };
                let samples = pod::measure(options, program.clone(), self.mb, self.runs).await?;
                (samples, "direct TCP to the pod IP")
            }
        };
        let node = match self.node {
            NodeKind::StandIn => "stand-in",
            NodeKind::Pod => "pod",
        };
        let names: Vec<String> = PATHS
            .iter()
            .enumerate()
            .map(|(i, p)| if i == 0 { direct_name } else { p }.to_owned())
            .collect();
        println!(
            "stream throughput, {} node, {} MB each way, median of {} runs (MB/s):",
            node, self.mb, self.runs
        );
        let direct = summarize(&samples[0]).p50;
        let mut paths = Vec::new();
        for (name, s) in names.iter().zip(&samples) {
            let summary = summarize(s);
            println!(
                "  {name:<26} {:>8.1}   ({:.0}% of direct; min {:.1}, max {:.1})",
                summary.p50,
                100.0 * summary.p50 / direct,
                summary.min,
                summary.max
            );
            paths.push(Figure {
                name: name.clone(),
                mb_per_second: summary,
            });
        }
        let report = Report {
            node,
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            megabytes: self.mb,
            runs: self.runs,
            kubectl: program.display().to_string(),
            paths,
        };
        self.write(&report, &names, &samples)
    }

    fn write(&self, report: &Report, names: &[String], samples: &[Vec<f64>]) -> Result<()> {
        let stem = match self.node {
            NodeKind::StandIn => "bench-out/stream",
            NodeKind::Pod => "bench-out/stream-pod",
        };
        let json = self.json.clone().unwrap_or(format!("{stem}.json").into());
        let plot = self.plot.clone().unwrap_or(format!("{stem}.svg").into());
        super::ensure_parent(&json)?;
        super::ensure_parent(&plot)?;
        std::fs::write(&json, serde_json::to_vec_pretty(report)?)?;
        let series: Vec<Series> = names
            .iter()
            .zip(samples)
            .map(|(name, s)| Series {
                name: name.clone(),
                points: s
                    .iter()
                    .enumerate()
                    .map(|(i, v)| ((i + 1) as f64, *v))
                    .collect(),
            })
            .collect();
        let through = match self.node {
            NodeKind::StandIn => "a stand-in node",
            NodeKind::Pod => "a real node and pod",
        };
        lines(
            &plot,
            &format!(
                "Stream throughput through {through}, {} MB each way ({} build)",
                self.mb, report.build
            ),
            "run",
            "MB/s",
            &series,
        )?;
        println!("wrote {} and {}", json.display(), plot.display());
        Ok(())
    }
}
