//! A WebSocket as a byte stream, for port-forward's `SPDY/3.1+portforward.k8s.io`: kubectl
//! (client-go's TunnelingConnection) writes SPDY bytes as binary messages with no framing of
//! their own, and reads ours the same way; message boundaries mean nothing. A pump task
//! copies between the socket and one end of an in-memory pipe; the SPDY connection runs on
//! the other end.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Buffer of the pipe in each direction.
const PIPE: usize = 256 * 1024;
/// The largest message written to the client.
const MESSAGE: usize = 64 * 1024;
/// How long the client has to answer our close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The byte stream carried by `socket`.
pub fn over_websocket(socket: WebSocket) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(PIPE);
    tokio::spawn(pump(socket, theirs));
    ours
}

async fn pump(socket: WebSocket, pipe: DuplexStream) {
    let (mut sink, mut stream) = socket.split();
    let (mut from_pipe, mut to_pipe) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(Ok(message)) = stream.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            if to_pipe.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to_pipe.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; MESSAGE];
        loop {
            match from_pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    tokio::pin!(inbound);
    tokio::select! {
        () = &mut inbound => {}
        () = outbound => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut inbound).await;
        }
    }
}
