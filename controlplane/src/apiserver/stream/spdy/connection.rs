//! One SPDY/3.1 connection, server side, over any byte stream (an upgraded HTTPS connection,
//! or WebSocket messages carrying SPDY for port-forward). A reader task decodes frames,
//! answers each SYN_STREAM with a SYN_REPLY at once (kubectl waits for it before it uses a
//! stream) and echoes PINGs; what the protocol above needs arrives as `Event`s. A writer
//! task owns the sending header deflater and writes frames in the order they are queued.
//! Like kubectl's spdystream, no flow-control windows are kept: TCP's backpressure is the
//! flow control.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::frame::{Decoder, Encoder, Frame, goaway};
use super::headers::Headers;

/// The largest DATA payload this side writes.
pub const MAX_CHUNK: usize = 128 * 1024;
/// Bytes queued towards the peer before the writer writes them out.
const WRITE_BATCH: usize = 256 * 1024;

/// What the peer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new stream (already answered with SYN_REPLY) and its headers.
    Stream { id: u32, headers: Headers },
    /// Bytes on a stream.
    Data { id: u32, data: Bytes },
    /// The peer's half of a stream ended (FIN).
    Fin { id: u32 },
    /// The peer reset a stream.
    Reset { id: u32 },
    /// The peer will open no more streams.
    GoAway,
}

enum Out {
    Frame(Frame),
    GoAway(u32),
    Shutdown,
}

/// The connection went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the SPDY connection is closed")]
pub struct Closed;

/// Queues frames to the peer; cheap to clone.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Out>,
}

impl Handle {
    async fn frame(&self, frame: Frame) -> Result<(), Closed> {
        self.tx.send(Out::Frame(frame)).await.map_err(|_| Closed)
    }

    /// Bytes on stream `id`, in frames of at most `MAX_CHUNK`.
    pub async fn data(&self, id: u32, mut data: Bytes) -> Result<(), Closed> {
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_CHUNK));
            self.frame(Frame::Data {
                stream_id: id,
                fin: false,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Ends this side of stream `id`.
    pub async fn fin(&self, id: u32) -> Result<(), Closed> {
        self.frame(Frame::Data {
            stream_id: id,
            fin: true,
            data: Bytes::new(),
        })
        .await
    }

    /// Resets stream `id`.
    pub async fn reset(&self, id: u32, status: u32) -> Result<(), Closed> {
        self.frame(Frame::RstStream {
            stream_id: id,
            status,
        })
        .await
    }

    /// Tells the peer no more streams will be accepted.
    pub async fn goaway(&self, status: u32) -> Result<(), Closed> {
        self.tx.send(Out::GoAway(status)).await.map_err(|_| Closed)
    }
}

/// A running connection. Dropping it stops both tasks and closes the byte stream.
pub struct Connection {
    pub handle: Handle,
    events: mpsc::Receiver<Event>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Connection {
    /// Starts the reader and writer tasks over `io`.
    pub fn start<IO>(io: IO) -> Connection
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (event_tx, events) = mpsc::channel(64);
        let last = Arc::new(AtomicU32::new(0));
        let handle = Handle { tx: out_tx };
        let reader = tokio::spawn(read_loop(rd, handle.clone(), event_tx, last.clone()));
        let writer = tokio::spawn(write_loop(wr, out_rx, last));
        Connection {
            handle,
            events,
            reader,
            writer,
        }
    }

    /// The next event; `None` once the peer closed the connection (or broke the protocol).
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Says GOAWAY, flushes and closes the sending side, then waits up to `grace` for the
    /// peer to close its side (discarding what it still sends).
    pub async fn close(mut self, grace: Duration) {
        let _ = self.handle.goaway(goaway::OK).await;
        let _ = self.handle.tx.send(Out::Shutdown).await;
        let _ = tokio::time::timeout(grace, async { while self.events.recv().await.is_some() {} })
            .await;
    }
}

async fn read_loop<R: AsyncRead>(
    rd: R,
    handle: Handle,
    events: mpsc::Sender<Event>,
    last: Arc<AtomicU32>,
) {
    tokio::pin!(rd);
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    if !dispatch(frame, &handle, &events, &last).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY protocol error; going away");
                    let _ = handle.goaway(goaway::PROTOCOL_ERROR).await;
                    let _ = handle.tx.send(Out::Shutdown).await;
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Acts on one frame; false when the protocol above is gone.
async fn dispatch(
    frame: Frame,
    handle: &Handle,
    events: &mpsc::Sender<Event>,
    last: &AtomicU32,
) -> bool {
    let event = match frame {
        Frame::SynStream {
            stream_id,
            fin,
            headers,
            ..
        } => {
            last.fetch_max(stream_id, Ordering::Relaxed);
            let reply = Frame::SynReply {
                stream_id,
                fin: false,
                headers: Headers::default(),
            };
            if handle.frame(reply).await.is_err() {
                return false;
            }
            let opened = Event::Stream {
                id: stream_id,
                headers,
            };
            if events.send(opened).await.is_err() {
                return false;
            }
            if !fin {
                return true;
            }
            Event::Fin { id: stream_id }
        }
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            if !data.is_empty() {
                let event = Event::Data {
                    id: stream_id,
                    data,
                };
                if events.send(event).await.is_err() {
                    return false;
                }
            }
            if !fin {
                return true;
            }
            Event::Fin { id: stream_id }
        }
        Frame::RstStream { stream_id, .. } => Event::Reset { id: stream_id },
        // Odd ids are the client's pings: answer them with the same frame.
        Frame::Ping { id } if id % 2 == 1 => {
            return handle.frame(Frame::Ping { id }).await.is_ok();
        }
        Frame::GoAway { .. } => Event::GoAway,
        // SETTINGS, WINDOW_UPDATE (no windows are kept), HEADERS, replies, our own pings.
        _ => return true,
    };
    events.send(event).await.is_ok()
}

async fn write_loop<W: AsyncWrite>(wr: W, mut rx: mpsc::Receiver<Out>, last: Arc<AtomicU32>) {
    tokio::pin!(wr);
    let mut encoder = match Encoder::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "SPDY header compression unavailable");
            return;
        }
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut shutdown = false;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next.take() {
            let frame = match out {
                Out::Frame(frame) => frame,
                Out::GoAway(status) => Frame::GoAway {
                    last_good: last.load(Ordering::Relaxed),
                    status,
                },
                Out::Shutdown => {
                    shutdown = true;
                    break;
                }
            };
            if let Err(e) = encoder.encode(&frame, &mut buf) {
                tracing::warn!(error = %e, "cannot encode a SPDY frame");
            }
            if buf.len() >= WRITE_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
            return;
        }
        buf.clear();
        if shutdown {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::frame::rst;

    /// A client side over an in-memory pipe: its own encoder/decoder.
    struct Client {
        io: tokio::io::DuplexStream,
        encoder: Encoder,
        decoder: Decoder,
        buf: BytesMut,
    }

    impl Client {
        async fn send(&mut self, frame: Frame) {
            let mut out = BytesMut::new();
            self.encoder.encode(&frame, &mut out).expect("encode");
            self.io.write_all(&out).await.expect("write");
        }

        async fn recv(&mut self) -> Option<Frame> {
            loop {
                if let Some(f) = self.decoder.decode(&mut self.buf).expect("decode") {
                    return Some(f);
                }
                if self.io.read_buf(&mut self.buf).await.expect("read") == 0 {
                    return None;
                }
            }
        }
    }

    fn pair() -> (Connection, Client) {
        let (a, b) = tokio::io::duplex(1024 * 1024);
        let client = Client {
            io: b,
            encoder: Encoder::new().expect("encoder"),
            decoder: Decoder::default(),
            buf: BytesMut::new(),
        };
        (Connection::start(a), client)
    }

    #[tokio::test]
    async fn streams_are_answered_pings_echoed_and_data_delivered() {
        let (mut conn, mut client) = pair();
        let headers = Headers::from_pairs(&[("streamtype", "stdin")]);
        client
            .send(Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: headers.clone(),
            })
            .await;
        assert_eq!(
            client.recv().await,
            Some(Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Headers::default()
            })
        );
        assert_eq!(conn.next().await, Some(Event::Stream { id: 1, headers }));
        client.send(Frame::Ping { id: 7 }).await;
        assert_eq!(client.recv().await, Some(Frame::Ping { id: 7 }));
        client
            .send(Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::from_static(b"abc"),
            })
            .await;
        client
            .send(Frame::WindowUpdate {
                stream_id: 1,
                delta: 10,
            })
            .await;
        client
            .send(Frame::RstStream {
                stream_id: 1,
                status: rst::CANCEL,
            })
            .await;
        assert_eq!(
            conn.next().await,
            Some(Event::Data {
                id: 1,
                data: Bytes::from_static(b"abc")
            })
        );
        assert_eq!(conn.next().await, Some(Event::Fin { id: 1 }));
        assert_eq!(conn.next().await, Some(Event::Reset { id: 1 }));

        // Big writes are split into chunks; FIN; then GOAWAY naming the last stream.
        let big = Bytes::from(vec![7u8; MAX_CHUNK + 10]);
        conn.handle.data(1, big).await.expect("data");
        conn.handle.fin(1).await.expect("fin");
        let closing = tokio::spawn(conn.close(Duration::from_secs(5)));
        let mut sizes = Vec::new();
        loop {
            match client.recv().await.expect("a frame") {
                Frame::Data { data, fin, .. } => {
                    sizes.push((data.len(), fin));
                }
                Frame::GoAway { last_good, status } => {
                    assert_eq!((last_good, status), (1, goaway::OK));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sizes, vec![(MAX_CHUNK, false), (10, false), (0, true)]);
        assert_eq!(client.recv().await, None, "the server closed its side");
        drop(client);
        closing.await.expect("close");
    }

    #[tokio::test]
    async fn garbage_gets_a_protocol_error_goaway_and_the_end() {
        let (mut conn, mut client) = pair();
        client
            .io
            .write_all(b"\x80\x07\x00\x01\x00\x00\x00\x00")
            .await
            .expect("write");
        assert_eq!(
            client.recv().await,
            Some(Frame::GoAway {
                last_good: 0,
                status: goaway::PROTOCOL_ERROR
            })
        );
        assert_eq!(client.recv().await, None);
        assert_eq!(conn.next().await, None);
    }
}
