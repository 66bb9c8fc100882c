//! The stand-in node of `skiff bench stream` (the default, `--node stand-in`): the API
//! server and node service run in this process (loopback, a temp dir); a stand-in node joins
//! with a real certificate and answers offers over real gRPC — exec as an in-process `cat`
//! (stdin echoed to stdout), port-forward by dialling a loopback echo server — so the
//! figures are the path kubectl → API server → tunnel → node, not a container's.

use std::path::PathBuf;

use anyhow::{Context, Result};
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

use super::POD;

const NODE: &str = "bench-node";

/// A TCP server on loopback that sends back what it reads.
pub async fn echo_server() -> Result<u16> {
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
pub struct Cluster {
    _dir: tempfile::TempDir,
    server: RunningApiServer,
    nodes: NodeServer,
    /// The stand-in node's loop over offers: it holds the node's gRPC connection open.
    offers: tokio::task::JoinHandle<()>,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    pub async fn shutdown(self) -> Result<()> {
        // The node service's graceful shutdown waits for every connection to end: the
        // stand-in node's first (its open Offers call would hold it forever).
        self.offers.abort();
        let _ = self.offers.await;
        self.nodes.shutdown().await?;
        self.server.shutdown().await?;
        Ok(())
    }
}

pub async fn cluster(echo_port: u16) -> Result<Cluster> {
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
    let offers = tokio::spawn(async move {
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
        offers,
        kubeconfig: server.kubeconfig.clone(),
        _dir: dir,
        server,
        nodes,
    })
}
