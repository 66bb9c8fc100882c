//! The control plane's end of the `Streams` service (`proto/stream.proto`): a node keeps an
//! `Offers` call open and answers each offer with an `Open` call whose first frame names
//! the offer. Identity is the node's client certificate, as for the `Node` service; the
//! registry of connected nodes and waiting offers is `tunnels.rs`, shared with the API
//! server, which makes the offers.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use skiff_api::node::streams_server;
use skiff_api::node::{OffersRequest, StreamFrame, stream_frame};
use tonic::{Request, Response, Status, Streaming};

use super::tunnels::{OfferStream, Opened, Tunnels};
use super::{NodeService, node_identity};

/// How long a node has to send its `open` frame after dialling `Open`.
const FIRST_FRAME: Duration = Duration::from_secs(10);

/// Frames to a node on its `Open` call.
type FrameStream = Pin<Box<dyn Stream<Item = Result<StreamFrame, Status>> + Send>>;

/// The `Streams` service; cheap to clone.
#[derive(Clone)]
pub struct StreamsService {
    tunnels: Arc<Tunnels>,
}

impl StreamsService {
    pub fn new(tunnels: Arc<Tunnels>) -> StreamsService {
        StreamsService { tunnels }
    }

    /// The service of the same registry as a node service.
    pub fn of(nodes: &NodeService) -> StreamsService {
        StreamsService::new(nodes.tunnels.clone())
    }
}

#[tonic::async_trait]
impl streams_server::Streams for StreamsService {
    type OffersStream = OfferStream;

    async fn offers(
        &self,
        request: Request<OffersRequest>,
    ) -> Result<Response<OfferStream>, Status> {
        let identity = node_identity(&request)?;
        NodeService::same_node(&identity, &request.get_ref().node_name)?;
        Ok(Response::new(self.tunnels.connect(&identity)))
    }

    type OpenStream = FrameStream;

    async fn open(
        &self,
        request: Request<Streaming<StreamFrame>>,
    ) -> Result<Response<FrameStream>, Status> {
        let identity = node_identity(&request)?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(FIRST_FRAME, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no `open` frame came"))??;
        let id = match first.and_then(|f| f.frame) {
            Some(stream_frame::Frame::Open(id)) => id,
            Some(_) => return Err(Status::invalid_argument("the first frame must be `open`")),
            None => {
                return Err(Status::invalid_argument(
                    "the call ended before its `open` frame",
                ));
            }
        };
        let (outbound, rx) = tokio::sync::mpsc::channel(32);
        let opened = Opened {
            inbound: Box::pin(inbound),
            outbound,
        };
        self.tunnels.accept(&identity, &id, opened)?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
