//! `kubectl attach` on the node: a connection to the container's attach socket (served by
//! its skiff-init, so it works the same after the kubelet restarted; docs/design/013). Output
//! from the moment of attaching goes to channels 1 and 2 (a tty's to 1); input reaches the
//! workload's stdin when the container has `stdin: true`, resizes its terminal when it has
//! `tty: true`. With `stdinOnce`, the container's stdin is closed when the user closes
//! theirs or leaves. The session ends with the workload's exit code when it ends.

use futures::Stream;
use skiff_api::node::{AttachOffer, StreamFrame};
use skiff_runtime::container::attach::{self, AttachConnection};
use skiff_runtime::container::{ContainerError, State};

use super::Target;
use super::frames::{End, Gone, Inbound, Input, Outbound, STDERR, STDIN, STDOUT};
use crate::local::LocalError;

/// Serves one attach; `Err(Gone)` when the user left first (the workload keeps running).
pub async fn serve<S>(
    target: &Target,
    offer: &AttachOffer,
    inbound: &mut Inbound<S>,
    out: &Outbound,
) -> Result<End, Gone>
where
    S: Stream<Item = StreamFrame> + Unpin,
{
    let spec = target.spec();
    let flag = |f: fn(&k8s_openapi::api::core::v1::Container) -> Option<bool>| {
        spec.and_then(f).unwrap_or(false)
    };
    let stdin = offer.stdin && flag(|c| c.stdin);
    let stdin_once = flag(|c| c.stdin_once);
    let tty = flag(|c| c.tty);
    let (pods, record, name) = (
        target.pod.pods.clone(),
        target.pod.record.clone(),
        target.container.name.clone(),
    );
    let connected = tokio::task::spawn_blocking(move || pods.attach(&record, &name)).await;
    let conn = match connected {
        Ok(Ok(fd)) => match AttachConnection::new(fd) {
            Ok(conn) => conn,
            Err(e) => return Ok(End::Error(format!("attach: {e}"))),
        },
        Ok(Err(e)) => return Ok(End::Error(attach_error(target, &e))),
        Err(e) => return Ok(End::Error(format!("attach: {e}"))),
    };
    let output = async {
        loop {
            match conn.recv().await {
                Ok(Some(msg)) => match msg.kind {
                    attach::STDOUT if offer.stdout => out.data(STDOUT, &msg.data).await?,
                    attach::STDERR if offer.stderr => out.data(STDERR, &msg.data).await?,
                    _ => {}
                },
                Ok(None) | Err(_) => return Ok::<(), Gone>(()),
            }
        }
    };
    let input = async {
        loop {
            let input = match inbound.next().await {
                Ok(input) => input,
                Err(gone) => return gone,
            };
            let sent = match input {
                Input::Data(STDIN, data) if stdin => conn.send(attach::STDIN, &data).await,
                Input::Close(STDIN) if stdin && stdin_once => {
                    conn.send(attach::CLOSE_STDIN, &[]).await
                }
                Input::Resize { width, height } if tty => conn.resize(width, height).await,
                _ => Ok(()),
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, "attach input");
            }
        }
    };
    tokio::pin!(output, input);
    tokio::select! {
        gone = &mut input => {
            if stdin && stdin_once {
                let _ = conn.send(attach::CLOSE_STDIN, &[]).await;
            }
            return Err(gone);
        }
        done = &mut output => done?,
    }
    Ok(ended(target).await)
}

/// How the session ends once the attach socket closed: the workload's exit code, or the
/// reason init let go of this client while the workload still runs.
async fn ended(target: &Target) -> End {
    let (pods, record, name) = (
        target.pod.pods.clone(),
        target.pod.record.clone(),
        target.container.name.clone(),
    );
    let status = tokio::task::spawn_blocking(move || pods.container_status(&record, &name)).await;
    match status {
        Ok(Ok(status)) => match status.state {
            State::Exited(exit) => End::Code(exit.shell_code()),
            _ => End::Error(format!(
                "attach to container {:?} ended: its output came faster than it could be sent; attach again",
                target.container.name
            )),
        },
        _ => End::Code(0),
    }
}

fn attach_error(target: &Target, e: &LocalError) -> String {
    let c = &target.container.name;
    match e {
        LocalError::Container { source, .. } => match source.as_ref() {
            ContainerError::State { .. } | ContainerError::NotFound(_) => format!(
                "container {c:?} in pod {:?} is not running",
                target.pod.name
            ),
            other => other.to_string(),
        },
        other => format!("attach to container {c:?}: {other}"),
    }
}
