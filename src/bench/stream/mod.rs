//! `skiff bench stream`: throughput of `kubectl port-forward` and `kubectl exec -i` through
//! the API server and a node's stream tunnel, against a direct TCP connection, in one run.
//! The API server and node service run in this process (loopback, a temp dir); a stand-in
//! node joins with a real certificate and answers offers over real gRPC — exec as an
//! in-process `cat` (stdin echoed to stdout), port-forward by dialling a loopback echo
//! server — so the figures are the path kubectl → API server → tunnel → node, not a
//! container's. Every byte goes up and comes back; MB/s counts each byte once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use skiff_api::node::node_client::NodeClient;
use skiff_api::node::streams_client::StreamsClient;
use skiff_api::node::{
    Data, Exit, Offer, OffersRequest, PodStatusRequest, RegisterRequest, StreamFrame, offer,
    stream_frame::Frame,
};
use skiff_controlplane::apiserver::{self, ApiServerConfig, RunningApiServer, ServiceCidr};
use skiff_controlplane::node::{self, NodeServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::plot::{Series, lines};
use super::stats::{Summary, summarize};

/// Options of `skiff bench stream`.
#[derive(Debug, Args)]
pub struct StreamBench {
    /// Megabytes sent (and echoed back) per run.
    #[arg(long, default_value_t = 64)]
    mb: usize,
    /// Runs of each path.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The kubectl to drive (1.31+ speaks WebSocket for both).
    #[arg(long, default_value = "kubectl")]
    kubectl: PathBuf,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "bench-out/stream.json")]
    json: PathBuf,
    /// Where to write the plot.
    #[arg(long, default_value = "bench-out/stream.svg")]
    plot: PathBuf,
}

const NODE: &str = "bench-node";
const POD: &str = "bench";
const POD_PORT: u32 = 7000;

#[derive(Debug, Serialize)]
struct Figure {
    name: String,
    mb_per_second: Summary,
}

#[derive(Debug, Serialize)]
struct Report {
    megabytes: usize,
    runs: usize,
    kubectl: String,
    paths: Vec<Figure>,
}

/// A TCP server on loopback that sends back what it reads.
async fn echo_server() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = conn.into_split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            });
        }
    });
    Ok(port)
}

/// Sends `bytes` to 127.0.0.1:`port` and reads as many back; MB/s.
async fn through_tcp(port: u16, bytes: usize) -> Result<f64> {
    let start = Instant::now();
    let conn = TcpStream::connect(("127.0.0.1", port)).await?;
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
        bail!("{got} of {bytes} bytes came back");
    }
    Ok(bytes as f64 / 1e6 / start.elapsed().as_secs_f64())
}

fn frame(f: Frame) -> StreamFrame {
    StreamFrame { frame: Some(f) }
}

/// The stand-in node's answer to one offer.
async fn answer(channel: Channel, offer: Offer, echo_port: u16) -> Result<()> {
    let (out, rx) = mpsc::channel(32);
    out.send(frame(Frame::Open(offer.id.clone()))).await?;
    let mut inbound = StreamsClient::new(channel)
        .open(ReceiverStream::new(rx))
        .await?
        .into_inner();
    match offer.kind {
        // `cat`: stdin back as stdout, exit 0 when stdin closes.
        Some(offer::Kind::Exec(_)) => {
            while let Some(f) = inbound.message().await? {
                match f.frame {
                    Some(Frame::Data(d)) => {
                        let data = Data {
                            channel: 1,
                            data: d.data,
                        };
                        out.send(frame(Frame::Data(data))).await?;
                    }
                    Some(Frame::Close(0)) => break,
                    _ => {}
                }
            }
            out.send(frame(Frame::Exit(Exit::default()))).await?;
        }
        Some(offer::Kind::PortForward(_)) => {
            let (mut rd, mut wr) = TcpStream::connect(("127.0.0.1", echo_port))
                .await?
                .into_split();
            let up = async {
                while let Some(f) = inbound.message().await? {
                    match f.frame {
                        Some(Frame::Data(d)) => wr.write_all(&d.data).await?,
                        Some(Frame::Close(0)) => wr.shutdown().await?,
                        _ => {}
                    }
                }
                anyhow::Ok(())
            };
            let down = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = rd.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    let data = Data {
                        channel: 1,
                        data: buf[..n].to_vec(),
                    };
                    out.send(frame(Frame::Data(data))).await?;
                }
                out.send(frame(Frame::Exit(Exit::default()))).await?;
                anyhow::Ok(())
            };
            tokio::select! {
                r = down => r?,
                r = up => r?,
            }
        }
        _ => out.send(frame(Frame::Exit(Exit::default()))).await?,
    }
    // Keep the call until the control plane ends it, so no frame is lost in a reset.
    while inbound.message().await.ok().flatten().is_some() {}
    Ok(())
}

/// The API server, its node service, and a stand-in node answering offers.
struct Cluster {
    _dir: tempfile::TempDir,
    server: RunningApiServer,
    nodes: NodeServer,
    kubeconfig: PathBuf,
}

async fn cluster(echo_port: u16) -> Result<Cluster> {
    let dir = tempfile::tempdir()?;
    let mut config = ApiServerConfig::new(dir.path().join("cp"));
    config.listen = "127.0.0.1:0".parse()?;
    let server = apiserver::start(config).await.context("the API server")?;
    let cidr = ServiceCidr::parse("10.96.0.0/12").map_err(anyhow::Error::msg)?;
    let service = node::NodeService::new(server.client(), node::NodeSettings::new(cidr));
    let nodes = node::serve(
        "127.0.0.1:0".parse()?,
        service,
        server.node_tls.tonic_server_tls(),
    )
    .await?;
    let creds = skiff_kubelet::join::join(
        &format!("https://{}", server.addr),
        &server.join_token,
        &server.ca_pem,
        NODE,
        &dir.path().join("node"),
    )
    .await?;
    let channel = Endpoint::from_shared(format!("https://{}", nodes.addr))?
        .tls_config(creds.tonic_client_tls(Some("127.0.0.1")))?
        .connect()
        .await?;
    let mut client = NodeClient::new(channel.clone());
    let node = json!({"metadata": {"name": NODE}});
    client
        .register(RegisterRequest {
            node: serde_json::to_vec(&node)?,
        })
        .await?;
    let mut offers = StreamsClient::new(channel.clone())
        .offers(OffersRequest {
            node_name: NODE.into(),
        })
        .await?
        .into_inner();
    let answering = channel.clone();
    tokio::spawn(async move {
        while let Ok(Some(offer)) = offers.message().await {
            let channel = answering.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(channel, offer, echo_port).await {
                    tracing::warn!(error = %e, "bench node: a session failed");
                }
            });
        }
    });
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": POD, "namespace": "default"},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "bench"}]},
    }))?;
    let pod = server.client().create(&pod).await?;
    client
        .update_pod_status(PodStatusRequest {
            namespace: "default".into(),
            name: POD.into(),
            uid: pod.metadata.uid.unwrap_or_default(),
            status: serde_json::to_vec(&json!({"phase": "Running"}))?,
        })
        .await?;
    Ok(Cluster {
        kubeconfig: server.kubeconfig.clone(),
        _dir: dir,
        server,
        nodes,
    })
}

impl StreamBench {
    fn kubectl(&self, kubeconfig: &Path, websockets: bool) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(kubeconfig);
        let flag = if websockets { "true" } else { "false" };
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", flag)
            .env("PORT_FORWARD_WEBSOCKETS", flag)
            .kill_on_drop(true);
        cmd
    }

    /// `kubectl exec -i POD -- cat` of the payload; MB/s (kubectl's start included).
    async fn exec(&self, kubeconfig: &Path, websockets: bool, payload: &Path) -> Result<f64> {
        let bytes = self.mb * 1_000_000;
        let start = Instant::now();
        let mut child = self
            .kubectl(kubeconfig, websockets)
            .args(["exec", "-i", POD, "--", "cat"])
            .stdin(std::fs::File::open(payload)?)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
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
    async fn port_forward(&self, kubeconfig: &Path, websockets: bool) -> Result<f64> {
        let mut child = self
            .kubectl(kubeconfig, websockets)
            .args([
                "port-forward",
                &format!("pod/{POD}"),
                &format!(":{POD_PORT}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
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
        let rate = through_tcp(local, self.mb * 1_000_000).await;
        let _ = child.kill().await;
        rate
    }

    pub async fn run(self) -> Result<()> {
        let echo = echo_server().await?;
        let cluster = cluster(echo).await?;
        let payload = tempfile::NamedTempFile::new()?;
        std::fs::write(payload.path(), vec![0xa5u8; self.mb * 1_000_000])?;
        let names = [
            "direct TCP (loopback)",
            "port-forward, WebSocket",
            "port-forward, SPDY",
            "exec -i cat, WebSocket",
            "exec -i cat, SPDY",
        ];
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        let kc = cluster.kubeconfig.clone();
        for run in 0..self.runs {
            samples[0].push(through_tcp(echo, self.mb * 1_000_000).await?);
            samples[1].push(self.port_forward(&kc, true).await?);
            samples[2].push(self.port_forward(&kc, false).await?);
            samples[3].push(self.exec(&kc, true, payload.path()).await?);
            samples[4].push(self.exec(&kc, false, payload.path()).await?);
            eprintln!("run {}/{} done", run + 1, self.runs);
        }
        println!(
            "stream throughput, {} MB each way, median of {} runs (MB/s):",
            self.mb, self.runs
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
                name: (*name).to_owned(),
                mb_per_second: summary,
            });
        }
        let report = Report {
            megabytes: self.mb,
            runs: self.runs,
            kubectl: self.kubectl.display().to_string(),
            paths,
        };
        super::ensure_parent(&self.json)?;
        super::ensure_parent(&self.plot)?;
        std::fs::write(&self.json, serde_json::to_vec_pretty(&report)?)?;
        let series: Vec<Series> = names
            .iter()
            .zip(&samples)
            .map(|(name, s)| Series {
                name: (*name).to_owned(),
                points: s
                    .iter()
                    .enumerate()
                    .map(|(i, v)| ((i + 1) as f64, *v))
                    .collect(),
            })
            .collect();
        lines(
            &self.plot,
            &format!("Stream throughput, {} MB each way", self.mb),
            "run",
            "MB/s",
            &series,
        )?;
        println!("wrote {} and {}", self.json.display(), self.plot.display());
        cluster.nodes.shutdown().await?;
        cluster.server.shutdown().await?;
        Ok(())
    }
}
