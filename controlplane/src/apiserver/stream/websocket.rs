//! exec and attach over WebSocket (`v5.channel.k8s.io`, what kubectl 1.30+ speaks, and
//! `v4.channel.k8s.io`): binary messages whose first byte is the channel — 0 stdin,
//! 1 stdout, 2 stderr, 3 the ending `Status`, 4 terminal size — and, in v5, `255, <channel>`
//! closing a channel (stdin's end). The node's session is bridged message by message.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};

use super::remote::{self, Ending, ResizeParser};
use crate::node::{NodeEvent, Session};

/// The subprotocols served, preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// How long the client has to answer our close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Which channel protocol was negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V4,
    V5,
}

impl Protocol {
    pub fn from_name(name: &str) -> Option<Protocol> {
        match name {
            "v5.channel.k8s.io" => Some(Protocol::V5),
            "v4.channel.k8s.io" => Some(Protocol::V4),
            _ => None,
        }
    }
}

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Stdin(Bytes),
    Resize(Bytes),
    /// v5: the client closed a channel (0: stdin).
    Close(u8),
    /// Empty, or on a channel the client does not write.
    Ignored,
}

/// Reads one binary message from the client.
pub fn decode(protocol: Protocol, message: &Bytes) -> ClientFrame {
    let Some(&channel) = message.first() else {
        return ClientFrame::Ignored;
    };
    let payload = message.slice(1..);
    match channel {
        STDIN => ClientFrame::Stdin(payload),
        RESIZE => ClientFrame::Resize(payload),
        CLOSE if protocol == Protocol::V5 => match payload.first() {
            Some(&closed) => ClientFrame::Close(closed),
            None => ClientFrame::Ignored,
        },
        _ => ClientFrame::Ignored,
    }
}

/// One message to the client on `channel`.
pub fn encode(channel: u8, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + data.len());
    out.put_u8(channel);
    out.put_slice(data);
    out.freeze()
}

/// Bridges the socket and the node's session until the command ends or the client goes.
pub async fn run(socket: WebSocket, protocol: Protocol, session: Session) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = session.split();
    let down = async {
        let ending = loop {
            match rx.next().await {
                Some(NodeEvent::Data { channel, data }) => {
                    let channel = if channel == 2 { STDERR } else { STDOUT };
                    let message = Message::Binary(encode(channel, &data));
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
                Some(NodeEvent::Exit(exit)) => break Ending::Exit(exit),
                Some(NodeEvent::Broken(why)) => break Ending::Broken(why),
                None => return,
            }
        };
        let status = serde_json::to_vec(&remote::status(&ending)).unwrap_or_default();
        let _ = sink.send(Message::Binary(encode(ERROR, &status))).await;
        let close = CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
    };
    let mut resize = ResizeParser::default();
    let up = async {
        while let Some(Ok(message)) = stream.next().await {
            let sent = match message {
                Message::Binary(bytes) => match decode(protocol, &bytes) {
                    ClientFrame::Stdin(data) if !data.is_empty() => tx.data(0, data).await,
                    ClientFrame::Close(STDIN) => tx.close(0).await,
                    ClientFrame::Resize(data) => {
                        let mut result = Ok(());
                        for (width, height) in resize.push(&data) {
                            result = result.and(tx.resize(width, height).await);
                        }
                        result
                    }
                    _ => Ok(()),
                },
                Message::Close(_) => break,
                _ => Ok(()),
            };
            if sent.is_err() {
                // The node's side is gone; its ending comes through `down`.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::pin!(up);
    tokio::select! {
        () = down => {
            // Let the client read the status and answer the close.
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut up).await;
        }
        () = &mut up => {} // the client went away: dropping the session cancels the node's work
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_map_as_kubectl_numbers_them() {
        let b = |s: &'static [u8]| Bytes::from_static(s);
        assert_eq!(
            decode(Protocol::V5, &b(b"\x00data\n")),
            ClientFrame::Stdin(b(b"data\n"))
        );
        assert_eq!(
            decode(Protocol::V5, &b(b"\x04{\"Width\":80,\"Height\":24}")),
            ClientFrame::Resize(b(b"{\"Width\":80,\"Height\":24}"))
        );
        assert_eq!(decode(Protocol::V5, &b(b"\xff\x00")), ClientFrame::Close(0));
        assert_eq!(decode(Protocol::V4, &b(b"\xff\x00")), ClientFrame::Ignored);
        assert_eq!(decode(Protocol::V5, &b(b"\xff")), ClientFrame::Ignored);
        assert_eq!(decode(Protocol::V5, &b(b"")), ClientFrame::Ignored);
        assert_eq!(decode(Protocol::V5, &b(b"\x01out")), ClientFrame::Ignored);
        assert_eq!(&encode(STDOUT, b"hi")[..], b"\x01hi");
        assert_eq!(&encode(ERROR, b"{}")[..], b"\x03{}");
        assert_eq!(Protocol::from_name("v5.channel.k8s.io"), Some(Protocol::V5));
        assert_eq!(Protocol::from_name("base64.channel.k8s.io"), None);
    }
}
