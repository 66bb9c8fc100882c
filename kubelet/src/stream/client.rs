//! The node's end of the `Streams` service over the agent's mutual-TLS channel: it keeps the
//! `Offers` call open (redialled with back-off while the agent's connection lives) and
//! answers each offer in its own task by dialling `Open` — first frame `open: <offer id>` —
//! and serving the session (`super::serve`) on that call.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use skiff_api::node::stream_frame::Frame;
use skiff_api::node::streams_client::StreamsClient;
use skiff_api::node::{Offer, OffersRequest, StreamFrame};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::StreamContext;

/// Frames in flight from the node per session (each at most `frames::CHUNK` bytes).
const OUTBOUND_FRAMES: usize = 8;
/// How long a finished session waits for the control plane to end its call.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Takes offers until the task is aborted (the agent's connection is gone).
pub async fn run(channel: Channel, ctx: Arc<StreamContext>, node_name: String) {
    let mut delay = Duration::from_millis(200);
    loop {
        match offers(channel.clone(), &ctx, &node_name).await {
            Ok(()) => delay = Duration::from_millis(200),
            Err(e) if e.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    "the control plane serves no streams: logs/exec/port-forward are off"
                );
                return;
            }
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "stream offers lost"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn offers(
    channel: Channel,
    ctx: &Arc<StreamContext>,
    node_name: &str,
) -> Result<(), tonic::Status> {
    let mut client = StreamsClient::new(channel).max_decoding_message_size(4 * 1024 * 1024);
    let request = OffersRequest {
        node_name: node_name.to_owned(),
    };
    let mut offers = client.offers(request).await?.into_inner();
    while let Some(offer) = offers.message().await? {
        tokio::spawn(answer(client.clone(), ctx.clone(), offer));
    }
    Ok(())
}

/// Dials `Open` for one offer and serves it.
async fn answer(mut client: StreamsClient<Channel>, ctx: Arc<StreamContext>, offer: Offer) {
    let (tx, rx) = mpsc::channel(OUTBOUND_FRAMES);
    let open = StreamFrame {
        frame: Some(Frame::Open(offer.id.clone())),
    };
    if tx.send(open).await.is_err() {
        return;
    }
    let request = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    });
    let inbound = match client.open(request).await {
        Ok(response) => response.into_inner(),
        Err(e) => {
            tracing::warn!(offer = %offer.id, error = %e, "opening a stream");
            return;
        }
    };
    let mut frames = Box::pin(
        inbound
            .take_while(|r| std::future::ready(r.is_ok()))
            .filter_map(|r| std::future::ready(r.ok())),
    );
    super::serve(&ctx, offer, &mut frames, tx).await;
    // The call stays until the control plane ends it (it has our `exit` then): dropping it
    // first would cancel the HTTP/2 stream, and frames still in flight — the exit among them
    // — could be lost.
    let _ =
        tokio::time::timeout(CLOSE_WAIT, async { while frames.next().await.is_some() {} }).await;
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures::Stream;
    use skiff_api::node::streams_server::{Streams, StreamsServer};
    use skiff_api::node::{LogsOffer, PodRef, offer};
    use tokio::sync::Mutex;
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::local::{LocalConfig, LocalPods};
    use crate::stream::PodIndex;

    type Frames = Pin<Box<dyn Stream<Item = Result<StreamFrame, Status>> + Send>>;
    type Offers = Pin<Box<dyn Stream<Item = Result<Offer, Status>> + Send>>;

    /// A control plane that makes the offers it is given and records what each `Open` call
    /// carried.
    struct FakeControlPlane {
        offers: Mutex<Option<mpsc::Receiver<Offer>>>,
        node: mpsc::Sender<String>,
        opened: mpsc::Sender<Vec<StreamFrame>>,
    }

    #[tonic::async_trait]
    impl Streams for FakeControlPlane {
        type OffersStream = Offers;
        async fn offers(
            &self,
            request: Request<OffersRequest>,
        ) -> Result<Response<Offers>, Status> {
            let _ = self.node.send(request.into_inner().node_name).await;
            let rx = self
                .offers
                .lock()
                .await
                .take()
                .ok_or_else(|| Status::unavailable("once"))?;
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|o| (Ok(o), rx))
            });
            Ok(Response::new(Box::pin(stream)))
        }

        type OpenStream = Frames;
        async fn open(
            &self,
            request: Request<Streaming<StreamFrame>>,
        ) -> Result<Response<Frames>, Status> {
            let mut inbound = request.into_inner();
            let opened = self.opened.clone();
            tokio::spawn(async move {
                let mut frames = Vec::new();
                while let Ok(Some(frame)) = inbound.message().await {
                    let last = matches!(frame.frame, Some(Frame::Exit(_)));
                    frames.push(frame);
                    if last {
                        break;
                    }
                }
                let _ = opened.send(frames).await;
            });
            // The call stays open until the node is done with it.
            Ok(Response::new(Box::pin(futures::stream::pending())))
        }
    }

    #[tokio::test]
    async fn offers_are_answered_by_dialling_open_with_the_offer_id_then_the_session() {
        let (offer_tx, offer_rx) = mpsc::channel(1);
        let (node_tx, mut node_rx) = mpsc::channel(1);
        let (opened_tx, mut opened_rx) = mpsc::channel(1);
        let fake = FakeControlPlane {
            offers: Mutex::new(Some(offer_rx)),
            node: node_tx,
            opened: opened_tx,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = futures::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(StreamsServer::new(fake))
                .serve_with_incoming(incoming),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pods = LocalPods::open(LocalConfig {
            state_dir: dir.path().join("run"),
            image_root: dir.path().to_path_buf(),
            setup_binary: "/bin/false".into(),
            cgroup_parent: "unused".into(),
            node_netns: None,
            pod_cidr: "10.0.0.0/24".parse().unwrap(),
            bridge: "unused".into(),
            cluster_dns: None,
            host_ips: vec![],
        })
        .unwrap();
        let ctx = Arc::new(StreamContext {
            pods: Arc::new(pods),
            index: Arc::new(PodIndex::default()),
        });
        let node = tokio::spawn(run(channel, ctx, "node-1".into()));
        assert_eq!(node_rx.recv().await.unwrap(), "node-1");
        let offer = Offer {
            id: "offer-1".into(),
            pod: Some(PodRef {
                namespace: "default".into(),
                name: "elsewhere".into(),
                uid: "u-1".into(),
            }),
            kind: Some(offer::Kind::Logs(LogsOffer::default())),
        };
        offer_tx.send(offer).await.unwrap();
        let frames = tokio::time::timeout(Duration::from_secs(10), opened_rx.recv())
            .await
            .unwrap()
            .unwrap();
        let frames: Vec<_> = frames.into_iter().filter_map(|f| f.frame).collect();
        assert_eq!(
            frames,
            [
                Frame::Open("offer-1".into()),
                Frame::Exit(skiff_api::node::Exit {
                    code: 0,
                    error: "pod default/elsewhere (uid u-1) does not run on this node".into(),
                }),
            ]
        );
        node.abort();
        server.abort();
    }
}
