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
    let frames = inbound
        .take_while(|r| std::future::ready(r.is_ok()))
        .filter_map(|r| std::future::ready(r.ok()));
    super::serve(&ctx, offer, Box::pin(frames), tx).await;
}
