//! The registry of the stream tunnels nodes hold open to the control plane: which nodes have
//! an `Offers` call open, and the offers waiting for their node to `Open` them. The API
//! server asks for a session with `Tunnels::offer` (pods/log, exec, attach, portforward);
//! the node service's `Streams` handlers (`streams.rs`) connect nodes and hand their `Open`
//! calls to the waiting offer. An offer is one-shot, has an unguessable id, expires after
//! `open_timeout`, and only the node it was made to may open it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use rand::Rng;
use skiff_api::node::{Data, Exit, Offer, PodRef, StreamFrame, TerminalSize, offer, stream_frame};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

/// How long an offer waits for its node's `Open` unless configured otherwise.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames buffered towards a node per session (gRPC flow control does the rest).
const SESSION_BUFFER: usize = 32;
/// Offers buffered towards a node.
const OFFER_BUFFER: usize = 64;

/// Why a session could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    #[error(
        "node {node:?} has no stream connection to the control plane (is its kubelet running?)"
    )]
    NotConnected { node: String },
    #[error("node {node:?} did not answer the stream offer within {after:?}")]
    Timeout { node: String, after: Duration },
    #[error("node {node:?} went away before it answered the stream offer")]
    NodeGone { node: String },
}

/// Frames from a node, as the node's `Open` call delivers them.
pub type Inbound = Pin<Box<dyn Stream<Item = Result<StreamFrame, Status>> + Send>>;
/// Frames to a node: the response stream of its `Open` call.
pub type Outbound = mpsc::Sender<Result<StreamFrame, Status>>;

/// A node's answer to an offer: both directions of its `Open` call.
pub struct Opened {
    pub inbound: Inbound,
    pub outbound: Outbound,
}

impl Opened {
    /// A pair of in-memory channels standing in for an `Open` call (tests, and benches of
    /// the API side): the `Opened` to hand to `accept`, the node's sender and receiver.
    pub fn in_memory() -> (
        Opened,
        Outbound,
        mpsc::Receiver<Result<StreamFrame, Status>>,
    ) {
        let (node_tx, node_rx) = mpsc::channel(SESSION_BUFFER);
        let (cp_tx, cp_rx) = mpsc::channel(SESSION_BUFFER);
        let inbound = Box::pin(tokio_stream::wrappers::ReceiverStream::new(node_rx));
        (
            Opened {
                inbound,
                outbound: cp_tx,
            },
            node_tx,
            cp_rx,
        )
    }
}

struct Connected {
    generation: u64,
    offers: mpsc::Sender<Result<Offer, Status>>,
}

struct Pending {
    node: String,
    opened: oneshot::Sender<Opened>,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<String, Connected>,
    pending: HashMap<String, Pending>,
    generation: u64,
}

/// The registry; share it behind an `Arc` (the API server's state holds one).
pub struct Tunnels {
    inner: Mutex<Inner>,
    open_timeout: Duration,
}

impl std::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Tunnels")
            .field("nodes", &inner.nodes.keys().collect::<Vec<_>>())
            .field("pending", &inner.pending.len())
            .finish()
    }
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels::new(DEFAULT_OPEN_TIMEOUT)
    }
}

/// 128 random bits, hex: an offer id nobody can guess.
fn new_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

impl Tunnels {
    pub fn new(open_timeout: Duration) -> Tunnels {
        Tunnels {
            inner: Mutex::new(Inner::default()),
            open_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves maps that are still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `node` has an `Offers` call open.
    pub fn is_connected(&self, node: &str) -> bool {
        self.lock().nodes.contains_key(node)
    }

    /// How many offers wait for their node (for tests and metrics).
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Registers `node`'s `Offers` call: the stream of offers it receives. A second call of
    /// the same node replaces the first (whose stream then ends); dropping the stream
    /// unregisters the node and fails the offers still waiting for it.
    pub fn connect(self: &Arc<Self>, node: &str) -> OfferStream {
        let (tx, rx) = mpsc::channel(OFFER_BUFFER);
        let mut inner = self.lock();
        inner.generation += 1;
        let generation = inner.generation;
        inner.nodes.insert(
            node.to_owned(),
            Connected {
                generation,
                offers: tx,
            },
        );
        tracing::debug!(node, "node connected its stream tunnel");
        OfferStream {
            rx,
            tunnels: Arc::downgrade(self),
            node: node.to_owned(),
            generation,
        }
    }

    fn disconnect(&self, node: &str, generation: u64) {
        let mut inner = self.lock();
        if inner.nodes.get(node).map(|c| c.generation) != Some(generation) {
            return; // replaced by a newer connection of the same node
        }
        inner.nodes.remove(node);
        // Dropping the pending senders tells their waiters at once.
        inner.pending.retain(|_, p| p.node != node);
        tracing::debug!(node, "node's stream tunnel closed");
    }

    /// Offers `node` a stream for `pod` and waits (at most the open timeout) for the node
    /// to open it.
    pub async fn offer(
        &self,
        node: &str,
        pod: PodRef,
        kind: offer::Kind,
    ) -> Result<Session, TunnelError> {
        let id = new_id();
        let (opened_tx, opened_rx) = oneshot::channel();
        let offers = {
            let mut inner = self.lock();
            let Some(connected) = inner.nodes.get(node) else {
                return Err(TunnelError::NotConnected { node: node.into() });
            };
            let offers = connected.offers.clone();
            inner.pending.insert(
                id.clone(),
                Pending {
                    node: node.to_owned(),
                    opened: opened_tx,
                },
            );
            offers
        };
        // Whatever happens below, the offer does not outlive this call: it expires.
        let _expire = Expire {
            tunnels: self,
            id: &id,
        };
        let deadline = Instant::now() + self.open_timeout;
        let timeout = || TunnelError::Timeout {
            node: node.into(),
            after: self.open_timeout,
        };
        let offer = Offer {
            id: id.clone(),
            pod: Some(pod),
            kind: Some(kind),
        };
        match tokio::time::timeout_at(deadline, offers.send(Ok(offer))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(TunnelError::NotConnected { node: node.into() }),
            Err(_) => return Err(timeout()),
        }
        match tokio::time::timeout_at(deadline, opened_rx).await {
            Ok(Ok(opened)) => Ok(Session::new(node, opened)),
            Ok(Err(_)) => Err(TunnelError::NodeGone { node: node.into() }),
            Err(_) => Err(timeout()),
        }
    }

    /// Hands `node`'s `Open` call for offer `id` to the offer's waiter. Unknown or expired
    /// ids are NotFound; an offer made to another node is PermissionDenied (and stays
    /// valid for its own node).
    #[allow(clippy::result_large_err)] // tonic's Status is what the handler returns
    pub fn accept(&self, node: &str, id: &str, opened: Opened) -> Result<(), Status> {
        let pending = {
            let mut inner = self.lock();
            match inner.pending.get(id) {
                None => {
                    return Err(Status::not_found(format!(
                        "stream offer {id:?} is unknown or expired"
                    )));
                }
                Some(p) if p.node != node => {
                    return Err(Status::permission_denied(format!(
                        "node {node:?} cannot open a stream offered to another node"
                    )));
                }
                Some(_) => inner.pending.remove(id),
            }
        };
        match pending {
            Some(p) => p
                .opened
                .send(opened)
                .map_err(|_| Status::not_found(format!("stream offer {id:?} expired"))),
            None => Err(Status::not_found(format!("stream offer {id:?} expired"))),
        }
    }
}

/// Removes an offer from the pending map when its `offer` call ends.
struct Expire<'a> {
    tunnels: &'a Tunnels,
    id: &'a str,
}

impl Drop for Expire<'_> {
    fn drop(&mut self) {
        self.tunnels.lock().pending.remove(self.id);
    }
}

/// The offers of one connected node: the response stream of its `Offers` call.
pub struct OfferStream {
    rx: mpsc::Receiver<Result<Offer, Status>>,
    tunnels: std::sync::Weak<Tunnels>,
    node: String,
    generation: u64,
}

impl Stream for OfferStream {
    type Item = Result<Offer, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for OfferStream {
    fn drop(&mut self) {
        if let Some(tunnels) = self.tunnels.upgrade() {
            tunnels.disconnect(&self.node, self.generation);
        }
    }
}

/// What a node sent on a session.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    /// Bytes on a channel (1 stdout, 2 stderr; logs and port-forward data on 1).
    Data { channel: u32, data: Bytes },
    /// The work ended: an exit code, or an error without one.
    Exit(Exit),
    /// The stream broke or ended without an `exit` frame.
    Broken(String),
}

/// Marks a session done once the node said `exit`; if the user side goes away first, the
/// node's `Open` call ends with CANCELLED so the node stops the work.
struct Cancel {
    outbound: Outbound,
    exited: AtomicBool,
}

impl Drop for Cancel {
    fn drop(&mut self) {
        if !self.exited.load(Ordering::Acquire) {
            let _ = self
                .outbound
                .try_send(Err(Status::cancelled("the user closed the stream")));
        }
    }
}

/// One opened stream to a node, split into halves that can live in different tasks.
pub struct Session {
    pub node: String,
    pub sender: SessionSender,
    pub receiver: SessionReceiver,
}

impl Session {
    fn new(node: &str, opened: Opened) -> Session {
        let cancel = Arc::new(Cancel {
            outbound: opened.outbound.clone(),
            exited: AtomicBool::new(false),
        });
        Session {
            node: node.to_owned(),
            sender: SessionSender {
                tx: opened.outbound,
                _cancel: cancel.clone(),
            },
            receiver: SessionReceiver {
                inbound: opened.inbound,
                cancel,
                done: false,
            },
        }
    }

    /// Both halves.
    pub fn split(self) -> (SessionSender, SessionReceiver) {
        (self.sender, self.receiver)
    }
}

/// The node went away (its `Open` call ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the node's stream ended")]
pub struct SessionClosed;

/// Frames to the node; cheap to clone.
#[derive(Clone)]
pub struct SessionSender {
    tx: Outbound,
    _cancel: Arc<Cancel>,
}

impl SessionSender {
    async fn send(&self, frame: stream_frame::Frame) -> Result<(), SessionClosed> {
        self.tx
            .send(Ok(StreamFrame { frame: Some(frame) }))
            .await
            .map_err(|_| SessionClosed)
    }

    /// Bytes on `channel` (0 stdin; port-forward input).
    pub async fn data(&self, channel: u32, data: Bytes) -> Result<(), SessionClosed> {
        let data = Data {
            channel,
            data: data.to_vec(),
        };
        self.send(stream_frame::Frame::Data(data)).await
    }

    /// The end of `channel` (the user closed stdin).
    pub async fn close(&self, channel: u32) -> Result<(), SessionClosed> {
        self.send(stream_frame::Frame::Close(channel)).await
    }

    /// The terminal's new size.
    pub async fn resize(&self, width: u32, height: u32) -> Result<(), SessionClosed> {
        self.send(stream_frame::Frame::Resize(TerminalSize { width, height }))
            .await
    }
}

/// Frames from the node.
pub struct SessionReceiver {
    inbound: Inbound,
    cancel: Arc<Cancel>,
    done: bool,
}

impl SessionReceiver {
    /// The next event; `None` after `Exit` or `Broken`.
    pub async fn next(&mut self) -> Option<NodeEvent> {
        if self.done {
            return None;
        }
        loop {
            let event = match self.inbound.next().await {
                None => {
                    NodeEvent::Broken("the node ended the stream without an exit status".into())
                }
                Some(Err(status)) => {
                    NodeEvent::Broken(format!("the node's stream failed: {}", status.message()))
                }
                Some(Ok(StreamFrame { frame })) => match frame {
                    Some(stream_frame::Frame::Data(d)) => {
                        return Some(NodeEvent::Data {
                            channel: d.channel,
                            data: Bytes::from(d.data),
                        });
                    }
                    Some(stream_frame::Frame::Exit(exit)) => {
                        self.cancel.exited.store(true, Ordering::Release);
                        NodeEvent::Exit(exit)
                    }
                    // Frames only the control plane sends, or empty ones: ignored.
                    _ => continue,
                },
            };
            self.done = true;
            return Some(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "p".into(),
            uid: "u".into(),
        }
    }

    fn exec() -> offer::Kind {
        offer::Kind::Exec(skiff_api::node::ExecOffer {
            container: "c".into(),
            command: vec!["true".into()],
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_node_that_is_not_connected_gets_no_offer() {
        let tunnels = Arc::new(Tunnels::default());
        let err = tunnels.offer("n1", pod(), exec()).await.err();
        assert_eq!(err, Some(TunnelError::NotConnected { node: "n1".into() }));
        assert_eq!(tunnels.pending(), 0);
    }

    #[tokio::test]
    async fn an_offer_is_opened_by_its_node_once_and_frames_flow_both_ways() {
        let tunnels = Arc::new(Tunnels::default());
        let mut offers = tunnels.connect("n1");
        let t = tunnels.clone();
        let user = tokio::spawn(async move { t.offer("n1", pod(), exec()).await });
        let offer = offers.next().await.expect("an offer").expect("ok");
        assert_eq!(offer.id.len(), 32);
        assert_eq!(offer.pod.as_ref().map(|p| p.name.as_str()), Some("p"));

        // Another node may not take it, and trying does not spend it.
        let (opened, _, _) = Opened::in_memory();
        let denied = tunnels.accept("n2", &offer.id, opened).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);

        let (opened, node_tx, mut node_rx) = Opened::in_memory();
        tunnels.accept("n1", &offer.id, opened).expect("accepted");
        let (opened, _, _) = Opened::in_memory();
        let again = tunnels.accept("n1", &offer.id, opened).unwrap_err();
        assert_eq!(again.code(), tonic::Code::NotFound, "offers are one-shot");
        assert_eq!(tunnels.pending(), 0);

        let session = user.await.expect("join").expect("a session");
        let (tx, mut rx) = session.split();
        tx.data(0, Bytes::from_static(b"in")).await.expect("send");
        tx.resize(80, 24).await.expect("send");
        let frame = node_rx.recv().await.expect("frame").expect("ok");
        assert_eq!(
            frame.frame,
            Some(stream_frame::Frame::Data(Data {
                channel: 0,
                data: b"in".to_vec()
            }))
        );
        let frame = node_rx.recv().await.expect("frame").expect("ok");
        assert!(matches!(
            frame.frame,
            Some(stream_frame::Frame::Resize(TerminalSize {
                width: 80,
                height: 24
            }))
        ));
        let out = |f| Ok(StreamFrame { frame: Some(f) });
        node_tx
            .send(out(stream_frame::Frame::Data(Data {
                channel: 1,
                data: b"out".to_vec(),
            })))
            .await
            .expect("node send");
        node_tx
            .send(out(stream_frame::Frame::Exit(Exit {
                code: 3,
                error: String::new(),
            })))
            .await
            .expect("node send");
        assert_eq!(
            rx.next().await,
            Some(NodeEvent::Data {
                channel: 1,
                data: Bytes::from_static(b"out")
            })
        );
        assert!(matches!(
            rx.next().await,
            Some(NodeEvent::Exit(Exit { code: 3, .. }))
        ));
        assert_eq!(rx.next().await, None);
        drop((tx, rx));
        // The node said exit: the call ends without a cancellation.
        assert!(node_rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn the_user_going_away_cancels_the_node_side() {
        let tunnels = Arc::new(Tunnels::default());
        let mut offers = tunnels.connect("n1");
        let t = tunnels.clone();
        let user = tokio::spawn(async move { t.offer("n1", pod(), exec()).await });
        let offer = offers.next().await.expect("offer").expect("ok");
        let (opened, _node_tx, mut node_rx) = Opened::in_memory();
        tunnels.accept("n1", &offer.id, opened).expect("accept");
        let session = user.await.expect("join").expect("session");
        drop(session);
        let last = node_rx.recv().await.expect("a last item");
        assert_eq!(last.unwrap_err().code(), tonic::Code::Cancelled);
        assert!(node_rx.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_offer_times_out_and_expires() {
        let tunnels = Arc::new(Tunnels::new(Duration::from_secs(3)));
        let mut offers = tunnels.connect("n1");
        let t = tunnels.clone();
        let user = tokio::spawn(async move { t.offer("n1", pod(), exec()).await });
        let offer = offers.next().await.expect("offer").expect("ok");
        let err = user.await.expect("join").err();
        assert_eq!(
            err,
            Some(TunnelError::Timeout {
                node: "n1".into(),
                after: Duration::from_secs(3)
            })
        );
        let (opened, _, _) = Opened::in_memory();
        let late = tunnels.accept("n1", &offer.id, opened).unwrap_err();
        assert_eq!(late.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn a_node_that_disconnects_fails_its_waiting_offers_at_once() {
        let tunnels = Arc::new(Tunnels::new(Duration::from_secs(3600)));
        let mut offers = tunnels.connect("n1");
        let t = tunnels.clone();
        let user = tokio::spawn(async move { t.offer("n1", pod(), exec()).await });
        let _offer = offers.next().await.expect("offer").expect("ok");
        drop(offers);
        assert_eq!(
            user.await.expect("join").err(),
            Some(TunnelError::NodeGone { node: "n1".into() })
        );
        assert!(!tunnels.is_connected("n1"));
        assert_eq!(tunnels.pending(), 0);
    }

    #[tokio::test]
    async fn a_reconnect_replaces_the_old_call_which_then_ends() {
        let tunnels = Arc::new(Tunnels::default());
        let mut old = tunnels.connect("n1");
        let new = tunnels.connect("n1");
        assert!(old.next().await.is_none(), "the old call ends");
        drop(old);
        assert!(
            tunnels.is_connected("n1"),
            "dropping the old one keeps the new"
        );
        drop(new);
        assert!(!tunnels.is_connected("n1"));
    }
}
