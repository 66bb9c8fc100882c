//! The frames of one stream session (`proto/stream.proto`), both ways: what the control plane
//! sends (stdin data, half-close, resize, or the end of the call) read as [`Input`], and the
//! node's output sent as bounded chunks of `Data` and a final `Exit`. Output waits for room in
//! a small channel, so a slow user slows the source down instead of filling memory.

use futures::{Stream, StreamExt};
use skiff_api::node::stream_frame::Frame;
use skiff_api::node::{Data, Exit, StreamFrame};
use tokio::sync::mpsc;

/// The largest `Data` payload the node sends.
pub const CHUNK: usize = 32 * 1024;

/// Kubernetes' channel numbers.
pub const STDIN: u32 = 0;
pub const STDOUT: u32 = 1;
pub const STDERR: u32 = 2;

/// The user went away (the call ended): the session stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// One thing the control plane said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Data(u32, Vec<u8>),
    /// The user closed this channel (stdin EOF).
    Close(u32),
    Resize {
        width: u16,
        height: u16,
    },
}

/// The control plane's frames of one session.
pub struct Inbound<S> {
    frames: S,
}

impl<S: Stream<Item = StreamFrame> + Unpin> Inbound<S> {
    pub fn new(frames: S) -> Inbound<S> {
        Inbound { frames }
    }

    /// The next input; `Err(Gone)` once the call has ended. Frames the node does not expect
    /// from the control plane (`open`, `exit`, empty) are skipped.
    pub async fn next(&mut self) -> Result<Input, Gone> {
        loop {
            let frame = self.frames.next().await.ok_or(Gone)?;
            if let Some(input) = decode(frame) {
                return Ok(input);
            }
        }
    }

    /// Waits for the end of the call, ignoring input (logs: nothing comes in).
    pub async fn closed(&mut self) -> Gone {
        loop {
            if self.next().await.is_err() {
                return Gone;
            }
        }
    }
}

/// A frame as input, if it is one the control plane may send.
pub fn decode(frame: StreamFrame) -> Option<Input> {
    match frame.frame? {
        Frame::Data(d) => Some(Input::Data(d.channel, d.data)),
        Frame::Close(channel) => Some(Input::Close(channel)),
        Frame::Resize(size) => Some(Input::Resize {
            width: clamp_u16(size.width),
            height: clamp_u16(size.height),
        }),
        Frame::Open(_) | Frame::Exit(_) => None,
    }
}

fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// The node's side of the session.
#[derive(Debug, Clone)]
pub struct Outbound {
    tx: mpsc::Sender<StreamFrame>,
}

impl Outbound {
    pub fn new(tx: mpsc::Sender<StreamFrame>) -> Outbound {
        Outbound { tx }
    }

    async fn send(&self, frame: Frame) -> Result<(), Gone> {
        self.tx
            .send(StreamFrame { frame: Some(frame) })
            .await
            .map_err(|_| Gone)
    }

    /// Sends `bytes` on `channel` in chunks of at most [`CHUNK`].
    pub async fn data(&self, channel: u32, bytes: &[u8]) -> Result<(), Gone> {
        for chunk in bytes.chunks(CHUNK) {
            self.send(Frame::Data(Data {
                channel,
                data: chunk.to_vec(),
            }))
            .await?;
        }
        Ok(())
    }

    /// The last frame: how the work ended.
    pub async fn exit(&self, end: End) -> Result<(), Gone> {
        let (code, error) = match end {
            End::Code(code) => (code, String::new()),
            End::Error(error) => (0, error),
        };
        self.send(Frame::Exit(Exit { code, error })).await
    }
}

/// How a session's work ended, as the user will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Code(i32),
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::node::TerminalSize;

    fn frame(f: Frame) -> StreamFrame {
        StreamFrame { frame: Some(f) }
    }

    #[test]
    fn control_plane_frames_decode_and_node_frames_are_ignored() {
        let data = Data {
            channel: 0,
            data: b"hi".to_vec(),
        };
        assert_eq!(
            decode(frame(Frame::Data(data))),
            Some(Input::Data(0, b"hi".to_vec()))
        );
        assert_eq!(decode(frame(Frame::Close(0))), Some(Input::Close(0)));
        let huge = TerminalSize {
            width: 100_000,
            height: 40,
        };
        assert_eq!(
            decode(frame(Frame::Resize(huge))),
            Some(Input::Resize {
                width: u16::MAX,
                height: 40
            })
        );
        assert_eq!(decode(frame(Frame::Open("x".into()))), None);
        assert_eq!(decode(StreamFrame { frame: None }), None);
    }

    #[tokio::test]
    async fn data_goes_out_in_bounded_chunks_and_the_end_of_the_call_is_gone() {
        let (tx, mut rx) = mpsc::channel(8);
        let out = Outbound::new(tx);
        let payload = vec![7u8; CHUNK * 2 + 5];
        let sender = tokio::spawn(async move {
            out.data(STDOUT, &payload).await.unwrap();
            out.exit(End::Code(3)).await.unwrap();
            out
        });
        let mut sizes = Vec::new();
        while let Some(StreamFrame { frame: Some(f) }) = rx.recv().await {
            match f {
                Frame::Data(d) => sizes.push(d.data.len()),
                Frame::Exit(e) => {
                    assert_eq!((e.code, e.error.as_str()), (3, ""));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 5]);
        let out = sender.await.unwrap();
        drop(rx);
        assert_eq!(out.data(STDOUT, b"x").await, Err(Gone));

        let (tx, rx) = mpsc::channel(2);
        tx.send(frame(Frame::Close(0))).await.unwrap();
        drop(tx);
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let mut inbound = Inbound::new(Box::pin(stream));
        assert_eq!(inbound.next().await, Ok(Input::Close(0)));
        assert_eq!(inbound.next().await, Err(Gone));
    }
}
