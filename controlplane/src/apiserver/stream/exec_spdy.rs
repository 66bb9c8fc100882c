//! exec and attach over SPDY/3.1 (kubectl 1.29, and later ones with
//! `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`): the client opens one stream per channel,
//! typed by its `streamtype` header — error, stdin, stdout, stderr, resize — and the
//! command starts once all the request asked for are there. The ending goes on the error
//! stream (a JSON `Status` from v4 on), then every stream this side writes is closed.

use std::time::Duration;

use tokio::time::timeout;

use super::options::IoOptions;
use super::remote::{self, Ending, ResizeParser};
use super::spdy::{Connection, Event, rst};
use crate::node::{NodeEvent, Session};

/// How long the client has to open its streams (kubelet's default too).
const STREAM_WAIT: Duration = Duration::from_secs(30);
/// How long the client has to close the connection after the command ended.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The streams of one command, by id.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Streams {
    pub error: Option<u32>,
    pub stdin: Option<u32>,
    pub stdout: Option<u32>,
    pub stderr: Option<u32>,
    pub resize: Option<u32>,
}

impl Streams {
    /// Records a new stream; false for a type this protocol does not have (or a repeat).
    pub fn add(&mut self, id: u32, streamtype: Option<&str>) -> bool {
        let slot = match streamtype {
            Some("error") => &mut self.error,
            Some("stdin") => &mut self.stdin,
            Some("stdout") => &mut self.stdout,
            Some("stderr") => &mut self.stderr,
            Some("resize") => &mut self.resize,
            _ => return false,
        };
        if slot.is_some() {
            return false;
        }
        *slot = Some(id);
        true
    }

    /// Whether every stream the request asked for is open.
    pub fn complete(&self, want: &IoOptions, version: &str) -> bool {
        self.error.is_some()
            && (!want.stdin || self.stdin.is_some())
            && (!want.stdout || self.stdout.is_some())
            && (!want.stderr || want.tty || self.stderr.is_some())
            && (!(want.tty && remote::has_resize(version)) || self.resize.is_some())
    }
}

async fn collect(conn: &mut Connection, want: &IoOptions, version: &str) -> Option<Streams> {
    let mut streams = Streams::default();
    while !streams.complete(want, version) {
        if let Event::Stream { id, headers } = conn.next().await?
            && !streams.add(id, headers.get("streamtype"))
        {
            let _ = conn.handle.reset(id, rst::PROTOCOL_ERROR).await;
        }
    }
    Some(streams)
}

/// Runs one command over `conn`: waits for the client's streams, then bridges them and the
/// node's session until the command ends or the client goes away.
pub async fn run(mut conn: Connection, version: &'static str, want: IoOptions, session: Session) {
    let Ok(Some(streams)) = timeout(STREAM_WAIT, collect(&mut conn, &want, version)).await else {
        tracing::debug!("the client did not open its streams");
        conn.close(CLOSE_GRACE).await;
        return;
    };
    let (tx, mut rx) = session.split();
    let handle = conn.handle.clone();
    let down = async {
        let ending = loop {
            match rx.next().await {
                Some(NodeEvent::Data { channel, data }) => {
                    let id = match channel {
                        2 => streams.stderr.or(streams.stdout),
                        _ => streams.stdout,
                    };
                    if let Some(id) = id
                        && handle.data(id, data).await.is_err()
                    {
                        return;
                    }
                }
                Some(NodeEvent::Exit(exit)) => break Ending::Exit(exit),
                Some(NodeEvent::Broken(why)) => break Ending::Broken(why),
                None => return,
            }
        };
        for id in [streams.stdout, streams.stderr].into_iter().flatten() {
            let _ = handle.fin(id).await;
        }
        if let Some(error) = streams.error {
            let message = if remote::json_status(version) {
                serde_json::to_vec(&remote::status(&ending)).ok()
            } else {
                remote::text_status(&ending).map(String::into_bytes)
            };
            if let Some(message) = message {
                let _ = handle.data(error, message.into()).await;
            }
            let _ = handle.fin(error).await;
        }
    };
    let mut resize = ResizeParser::default();
    let up = async {
        while let Some(event) = conn.next().await {
            let sent = match event {
                Event::Data { id, data } if Some(id) == streams.stdin => tx.data(0, data).await,
                Event::Fin { id } | Event::Reset { id } if Some(id) == streams.stdin => {
                    tx.close(0).await
                }
                Event::Data { id, data } if Some(id) == streams.resize => {
                    let mut result = Ok(());
                    for (width, height) in resize.push(&data) {
                        result = result.and(tx.resize(width, height).await);
                    }
                    result
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                // The node's side is gone; its ending comes through `down`.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = down => {}
        () = up => {} // the client went away: dropping the session cancels the node's work
    }
    drop((tx, rx));
    conn.close(CLOSE_GRACE).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(stdin: bool, tty: bool) -> IoOptions {
        IoOptions {
            stdin,
            stdout: true,
            stderr: !tty,
            tty,
            ..IoOptions::default()
        }
    }

    #[test]
    fn a_command_starts_when_the_streams_it_asked_for_are_open() {
        let v4 = "v4.channel.k8s.io";
        let mut s = Streams::default();
        assert!(s.add(1, Some("error")));
        assert!(!s.complete(&want(false, false), v4));
        assert!(s.add(3, Some("stdout")));
        assert!(s.add(5, Some("stderr")));
        assert!(s.complete(&want(false, false), v4));
        assert!(!s.complete(&want(true, false), v4));
        assert!(!s.add(7, Some("stdout")), "a second stdout");
        assert!(!s.add(9, Some("data")), "not a remote-command stream");
        assert!(!s.add(9, None));

        let mut t = Streams::default();
        for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout")] {
            assert!(t.add(id, Some(kind)));
        }
        assert!(
            !t.complete(&want(true, true), v4),
            "a terminal needs its resize stream"
        );
        assert!(t.complete(&want(true, true), "v2.channel.k8s.io"));
        assert!(t.add(7, Some("resize")));
        assert!(t.complete(&want(true, true), v4));
    }
}
