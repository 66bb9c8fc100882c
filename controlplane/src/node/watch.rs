//! `WatchPods`: the pods bound to one node as a stream — a snapshot closed by SYNCED, then
//! every change — from the store's watch, so a node resumes from the revision it last saw.
//! A revision the store compacted ends the stream with OUT_OF_RANGE: the node asks again
//! from 0 and gets a fresh snapshot.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use skiff_api::node::{PodEvent, pod_event::Type};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{PodStream, encode, status_of};
use crate::apiserver::{Change, Client};

fn bound(pod: &Pod, node: &str) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

fn event(kind: Type, pod: Option<&Pod>, revision: u64) -> PodEvent {
    PodEvent {
        r#type: kind as i32,
        pod: pod.map(encode).unwrap_or_default(),
        resource_version: revision,
    }
}

/// Starts the stream of `node`'s pods after `from` (0: with a snapshot).
pub(super) async fn pods(client: Client, node: String, from: u64) -> Result<PodStream, Status> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(status) = run(&client, &node, from, &tx).await {
            let _ = tx.send(Err(status)).await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

type Sender = mpsc::Sender<Result<PodEvent, Status>>;

async fn run(client: &Client, node: &str, from: u64, tx: &Sender) -> Result<(), Status> {
    let mut revision = from;
    if revision == 0 {
        let list = client.list::<Pod>(None, "").await.map_err(status_of)?;
        for pod in list.items.iter().filter(|p| bound(p, node)) {
            if tx
                .send(Ok(event(Type::Snapshot, Some(pod), list.revision)))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        if tx
            .send(Ok(event(Type::Synced, None, list.revision)))
            .await
            .is_err()
        {
            return Ok(());
        }
        revision = list.revision;
    }
    let mut changes = client
        .watch::<Pod>(None, revision)
        .await
        .map_err(status_of)?;
    loop {
        let change = tokio::select! {
            () = tx.closed() => return Ok(()),
            change = changes.next() => change,
        };
        let (kind, pod) = match change {
            None => return Err(Status::unavailable("the store's watch ended")),
            Some(Err(e)) => return Err(status_of(e)),
            Some(Ok(Change::Applied(pod))) => (Type::AddedOrModified, pod),
            Some(Ok(Change::Deleted(pod))) => (Type::Deleted, pod),
        };
        if !bound(&pod, node) {
            continue;
        }
        let revision = pod
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        if tx
            .send(Ok(event(kind, Some(&pod), revision)))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}
