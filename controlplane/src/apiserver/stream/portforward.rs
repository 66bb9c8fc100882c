//! port-forward over a SPDY connection (plain SPDY/3.1, or carried in WebSocket messages):
//! for each local connection kubectl opens an error stream and a data stream with the same
//! `requestid` and `port`; each pair becomes one `Streams` offer (`port_forward`) to the
//! node, so connections are independent and many run at once over one forward. A failure
//! (the node cannot connect, the offer fails) is written on the pair's error stream, which
//! kubectl prints.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use skiff_api::node::{PodRef, PortForwardOffer, offer};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::spdy::{Connection, Event, Handle, Headers, rst};
use crate::node::{NodeEvent, Tunnels};

/// Client bytes queued per connection before the client is slowed down.
const INPUT_BUFFER: usize = 16;
/// How long the client has to close the connection once we are done.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What one forwarded connection hears from the client.
#[derive(Debug)]
enum Input {
    Data(Bytes),
    Fin,
}

/// The streams of one forwarded connection, as they arrive.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pair {
    pub port: String,
    pub error: Option<u32>,
    pub data: Option<u32>,
}

/// Which pair a new stream belongs to, and as what. kubectl sends `requestid`; clients
/// from before it pair a data stream with the error stream opened just before it.
pub fn classify(id: u32, headers: &Headers) -> Option<(String, bool, String)> {
    let is_data = match headers.get("streamtype") {
        Some("data") => true,
        Some("error") => false,
        _ => return None,
    };
    let request = match headers.get("requestid") {
        Some(r) => r.to_owned(),
        None if is_data => id.saturating_sub(2).to_string(),
        None => id.to_string(),
    };
    let port = headers.get("port").unwrap_or_default().to_owned();
    Some((request, is_data, port))
}

/// The port a pair asks for: 1–65535.
pub fn port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "invalid port {text:?}: it must be a number from 1 to 65535"
        )),
    }
}

/// Where a forward goes.
#[derive(Clone)]
pub struct Target {
    pub tunnels: Arc<Tunnels>,
    pub node: String,
    pub pod: PodRef,
}

/// Serves one port-forward connection until the client closes it.
pub async fn run(mut conn: Connection, target: Target) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut routes: HashMap<u32, mpsc::Sender<Input>> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let event = tokio::select! {
            event = conn.next() => event,
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
        };
        let Some(event) = event else { break };
        match event {
            Event::Stream { id, headers } => {
                let Some((request, is_data, port)) = classify(id, &headers) else {
                    let _ = conn.handle.reset(id, rst::PROTOCOL_ERROR).await;
                    continue;
                };
                let pair = pairs.entry(request.clone()).or_default();
                let slot = if is_data {
                    &mut pair.data
                } else {
                    &mut pair.error
                };
                if slot.replace(id).is_some() {
                    let _ = conn.handle.reset(id, rst::PROTOCOL_ERROR).await;
                    continue;
                }
                if is_data {
                    pair.port = port;
                }
                if let Some(Pair {
                    port,
                    error: Some(error),
                    data: Some(data),
                }) = pairs.get(&request).cloned()
                {
                    pairs.remove(&request);
                    let (tx, rx) = mpsc::channel(INPUT_BUFFER);
                    routes.insert(data, tx);
                    let handle = conn.handle.clone();
                    forwards.spawn(forward(handle, target.clone(), port, error, data, rx));
                }
            }
            Event::Data { id, data } => {
                if let Some(route) = routes.get(&id)
                    && route.send(Input::Data(data)).await.is_err()
                {
                    routes.remove(&id);
                }
            }
            Event::Fin { id } => {
                if let Some(route) = routes.get(&id) {
                    let _ = route.send(Input::Fin).await;
                }
            }
            // A reset data stream ends its connection (dropping the route tells the task).
            Event::Reset { id } => {
                routes.remove(&id);
            }
            Event::GoAway => {}
        }
    }
    forwards.abort_all();
    conn.close(CLOSE_GRACE).await;
}

/// Writes `message` on the error stream and ends both streams of a pair.
async fn fail(handle: &Handle, error: u32, data: u32, message: String) {
    let _ = handle.fin(data).await;
    let _ = handle.data(error, message.into()).await;
    let _ = handle.fin(error).await;
}

/// One forwarded connection: an offer to the node, then bytes both ways until the node's
/// side ends (its connection in the pod closed) or the client resets the data stream.
async fn forward(
    handle: Handle,
    target: Target,
    port_text: String,
    error: u32,
    data: u32,
    mut input: mpsc::Receiver<Input>,
) {
    let port = match port(&port_text) {
        Ok(p) => p,
        Err(why) => return fail(&handle, error, data, why).await,
    };
    let kind = offer::Kind::PortForward(PortForwardOffer {
        port: u32::from(port),
    });
    let pod = target.pod.clone();
    let session = match target.tunnels.offer(&target.node, pod.clone(), kind).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "port-forward offer failed");
            let why = format!(
                "error forwarding port {port} to pod {}/{}: {e}",
                pod.namespace, pod.name
            );
            return fail(&handle, error, data, why).await;
        }
    };
    let (tx, mut rx) = session.split();
    let up = async {
        while let Some(input) = input.recv().await {
            let sent = match input {
                Input::Data(bytes) => tx.data(0, bytes).await,
                Input::Fin => tx.close(0).await,
            };
            if sent.is_err() {
                // The node's side ended; `down` reports how.
                std::future::pending::<()>().await;
            }
        }
    };
    let down = async {
        loop {
            match rx.next().await {
                Some(NodeEvent::Data { data: bytes, .. }) => {
                    if handle.data(data, bytes).await.is_err() {
                        return None;
                    }
                }
                Some(NodeEvent::Exit(exit)) => return Some(exit.error),
                Some(NodeEvent::Broken(why)) => return Some(why),
                None => return None,
            }
        }
    };
    tokio::select! {
        ended = down => {
            let why = ended.unwrap_or_default();
            let _ = handle.fin(data).await;
            if !why.is_empty() {
                let _ = handle.data(error, why.into()).await;
            }
            let _ = handle.fin(error).await;
        }
        () = up => {
            // The client reset the data stream: stop the node's side; kubectl still reads
            // the error stream to its end.
            let _ = handle.fin(error).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_pair_by_request_id() {
        let h = |pairs: &[(&str, &str)]| Headers::from_pairs(pairs);
        assert_eq!(
            classify(
                1,
                &h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")])
            ),
            Some(("0".into(), false, "80".into()))
        );
        assert_eq!(
            classify(
                3,
                &h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")])
            ),
            Some(("0".into(), true, "80".into()))
        );
        // Without request ids: a data stream pairs with the error stream two ids before.
        assert_eq!(
            classify(5, &h(&[("streamtype", "error"), ("port", "80")])),
            Some(("5".into(), false, "80".into()))
        );
        assert_eq!(
            classify(7, &h(&[("streamtype", "data"), ("port", "80")])),
            Some(("5".into(), true, "80".into()))
        );
        assert_eq!(classify(9, &h(&[("streamtype", "stdin")])), None);
        assert_eq!(port("8080"), Ok(8080));
        assert!(port("0").is_err() && port("70000").is_err() && port("").is_err());
    }
}
