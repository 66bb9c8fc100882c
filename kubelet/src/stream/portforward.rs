//! `kubectl port-forward` on the node: one offer is one TCP connection to `127.0.0.1:<port>`
//! made inside the pod's network namespace (`LocalPods::connect_in_pod`), copied both ways:
//! channel 0 to the pod, the pod's bytes on channel 1. The user's close of channel 0 is a
//! half-close (the pod reads end of file and may still answer); the pod closing its side
//! ends the session at once — the node's `exit` is the only end of output the contract can
//! say, and a client reading a `Connection: close` response waits for exactly that (waiting
//! for the user's close first, as containerd does for a second, would add that second to
//! every such request). A refused connection is the error users read.

use futures::Stream;
use skiff_api::node::{PortForwardOffer, StreamFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::PodTarget;
use super::frames::{CHUNK, End, Gone, Inbound, Input, Outbound, STDIN, STDOUT};
use crate::local::LocalError;

/// Serves one forwarded connection; `Err(Gone)` when the user left first.
pub async fn serve<S>(
    pod: &PodTarget,
    offer: &PortForwardOffer,
    inbound: &mut Inbound<S>,
    out: &Outbound,
) -> Result<End, Gone>
where
    S: Stream<Item = StreamFrame> + Unpin,
{
    let Some(port) = u16::try_from(offer.port).ok().filter(|p| *p > 0) else {
        return Ok(End::Error(format!("invalid port {}", offer.port)));
    };
    let (pods, record) = (pod.pods.clone(), pod.record.clone());
    let connected = tokio::task::spawn_blocking(move || pods.connect_in_pod(&record, port)).await;
    let failed = |why: String| {
        End::Error(format!(
            "error forwarding port {port} to pod {}, uid {}: {why}",
            pod.name, pod.uid
        ))
    };
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(LocalError::Connect { source, .. })) => {
            let why = match source.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                _ => source.to_string(),
            };
            return Ok(failed(format!(
                "failed to connect to localhost:{port} inside the pod's network namespace: {why}"
            )));
        }
        Ok(Err(e)) => return Ok(failed(e.to_string())),
        Err(e) => return Ok(failed(e.to_string())),
    };
    let stream = match stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpStream::from_std(stream))
    {
        Ok(s) => s,
        Err(e) => return Ok(failed(e.to_string())),
    };
    let (mut from_pod, mut to_pod) = stream.into_split();
    // The user's bytes to the pod; returns only when the call ends.
    let upstream = async {
        let mut to_pod = Some(&mut to_pod);
        loop {
            match inbound.next().await {
                Err(gone) => return gone,
                Ok(Input::Data(STDIN, data)) => {
                    if let Some(w) = to_pod.as_mut()
                        && w.write_all(&data).await.is_err()
                    {
                        to_pod = None;
                    }
                }
                Ok(Input::Close(STDIN)) => {
                    if let Some(w) = to_pod.take() {
                        let _ = w.shutdown().await;
                    }
                }
                Ok(_) => {}
            }
        }
    };
    // The pod's bytes to the user, until the pod closes its side.
    let downstream = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => out.data(STDOUT, &buf[..n]).await?,
            }
        }
    };
    tokio::select! {
        gone = upstream => Err(gone),
        done = downstream => done.map(|()| End::Code(0)),
    }
}
