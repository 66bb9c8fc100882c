//! The DNS server's sockets: one UDP socket and one TCP listener on the same address, a
//! task per UDP query and per TCP connection, answers from the records in memory
//! ([`answer`](super::answer)), the rest relayed upstream ([`forward`](super::forward)).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, ResponseCode};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::answer::{self, Outcome};
use super::forward::{self, Transport};
use super::records::Records;

/// A TCP connection idle this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Without EDNS a UDP answer must fit 512 bytes (RFC 1035); with it, what the client says,
/// up to this.
const UDP_MAX: u16 = 1232;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("binding DNS {transport:?} on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        transport: Transport,
        source: std::io::Error,
    },
}

/// What every query task shares.
struct Ctx {
    records: watch::Receiver<Arc<Records>>,
    upstreams: Vec<SocketAddr>,
}

/// A running DNS server; its tasks stop when it is dropped.
pub struct DnsServer {
    /// Where it answers (UDP and TCP on the same address).
    pub addr: SocketAddr,
    records: watch::Sender<Arc<Records>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl DnsServer {
    /// Binds UDP and TCP on `listen` (port 0: one free port for both) and serves `records`
    /// until dropped; queries outside the cluster domain go to `upstreams`.
    pub async fn start(
        listen: SocketAddr,
        records: Records,
        upstreams: Vec<SocketAddr>,
    ) -> Result<DnsServer, DnsError> {
        let (udp, tcp) = bind_both(listen).await?;
        let addr = udp.local_addr().map_err(|source| DnsError::Bind {
            addr: listen,
            transport: Transport::Udp,
            source,
        })?;
        let (tx, rx) = watch::channel(Arc::new(records));
        let ctx = Arc::new(Ctx {
            records: rx,
            upstreams,
        });
        let tasks = vec![
            tokio::spawn(serve_udp(Arc::new(udp), ctx.clone())),
            tokio::spawn(serve_tcp(tcp, ctx)),
        ];
        tracing::info!(%addr, "cluster DNS listening (UDP and TCP)");
        Ok(DnsServer {
            addr,
            records: tx,
            tasks,
        })
    }

    /// Answers from `records` from now on.
    pub fn set_records(&self, records: Records) {
        self.records.send_replace(Arc::new(records));
    }

    /// A handle that replaces the records (for the proxy's sync loop).
    pub fn records_handle(&self) -> watch::Sender<Arc<Records>> {
        self.records.clone()
    }
}

async fn bind_both(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let bind_err = |transport| {
        move |source| DnsError::Bind {
            addr: listen,
            transport,
            source,
        }
    };
    // With port 0 the UDP port may be taken for TCP: try a few.
    let mut attempts = if listen.port() == 0 { 20 } else { 1 };
    loop {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(bind_err(Transport::Udp))?;
        let addr = udp.local_addr().map_err(bind_err(Transport::Udp))?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if attempts > 1 && e.kind() == std::io::ErrorKind::AddrInUse => {
                attempts -= 1;
            }
            Err(e) => return Err(bind_err(Transport::Tcp)(e)),
        }
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, ctx: Arc<Ctx>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "DNS UDP receive");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let (socket, ctx) = (socket.clone(), ctx.clone());
        tokio::spawn(async move {
            if let Some(reply) = handle(&ctx, &query, Transport::Udp).await
                && let Err(e) = socket.send_to(&reply, peer).await
            {
                tracing::debug!(%peer, error = %e, "DNS UDP send");
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, ctx: Arc<Ctx>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &ctx).await {
                        tracing::debug!(%peer, error = %e, "DNS TCP connection");
                    }
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "DNS TCP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Queries on one TCP connection, answered in order, until the client closes or idles.
async fn connection(mut stream: TcpStream, ctx: &Ctx) -> std::io::Result<()> {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, forward::read_frame(&mut stream)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        };
        if let Some(reply) = handle(ctx, &query, Transport::Tcp).await {
            forward::write_frame(&mut stream, &reply).await?;
        }
    }
}

/// The answer to one query (as bytes), or `None` when nothing should be sent back.
async fn handle(ctx: &Ctx, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return form_error(query),
    };
    let records = ctx.records.borrow().clone();
    match answer::answer(&records, &request) {
        Outcome::Reply(reply) => encode(reply, &request, transport),
        Outcome::Forward => match forward::forward(&ctx.upstreams, query, transport).await {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::info!(error = %e, "forwarding a DNS query");
                encode(
                    answer::response_to(&request, ResponseCode::ServFail),
                    &request,
                    transport,
                )
            }
        },
        Outcome::Chase {
            mut reply,
            target,
            query_type,
        } => {
            let chase = answer::chase_query(target, query_type);
            let upstream = match chase.to_vec() {
                Ok(bytes) => forward::forward(&ctx.upstreams, &bytes, transport)
                    .await
                    .ok(),
                Err(_) => None,
            };
            if let Some(found) = upstream.and_then(|b| Message::from_vec(&b).ok()) {
                reply.add_answers(found.answers);
            }
            encode(reply, &request, transport)
        }
    }
}

/// FORMERR for a message that does not parse, if it has at least a header id.
fn form_error(query: &[u8]) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
    let mut reply = Message::error_msg(id, hickory_proto::op::OpCode::Query, ResponseCode::FormErr);
    reply.metadata.recursion_available = true;
    reply.to_vec().ok()
}

/// Encodes `reply`; over UDP an answer larger than the client can take is sent truncated
/// (TC set), so the client asks again over TCP.
fn encode(mut reply: Message, request: &Message, transport: Transport) -> Option<Vec<u8>> {
    let limit = match &request.edns {
        Some(edns) => {
            let mut ours = Edns::new();
            ours.set_max_payload(UDP_MAX);
            reply.set_edns(ours);
            edns.max_payload().clamp(512, UDP_MAX)
        }
        None => 512,
    };
    let bytes = reply.to_vec().ok()?;
    if transport == Transport::Udp && bytes.len() > usize::from(limit) {
        return reply.truncate().to_vec().ok();
    }
    Some(bytes)
}
