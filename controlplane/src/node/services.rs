//! `WatchServices` (`proto/services.proto`): every Service and EndpointSlice of the cluster
//! as one stream for a node's proxy — a snapshot closed by SYNCED, then every change — from
//! two store watches. Each kind's watch is in revision order but the two are not ordered
//! against each other, so every event carries the stream's position for both kinds and a
//! node resumes each watch from its own revision. A revision the store compacted ends the
//! stream with OUT_OF_RANGE: the node asks again from 0 and gets a fresh snapshot.
//! Any node may read them all (kube-proxy does); the caller must still be a node.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_api::node::service_event::{Kind, Type};
use skiff_api::node::services_server;
use skiff_api::node::{ServiceEvent, WatchServicesRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{encode, identify, status_of};
use crate::apiserver::{Change, Client};

type EventStream = Pin<Box<dyn Stream<Item = Result<ServiceEvent, Status>> + Send + 'static>>;
type Sender = mpsc::Sender<Result<ServiceEvent, Status>>;

/// The `Services` gRPC service; cheap to clone.
#[derive(Clone)]
pub struct ServiceFeed {
    client: Client,
}

impl ServiceFeed {
    pub fn new(client: Client) -> ServiceFeed {
        ServiceFeed { client }
    }
}

#[tonic::async_trait]
impl services_server::Services for ServiceFeed {
    type WatchServicesStream = EventStream;

    async fn watch_services(
        &self,
        request: Request<WatchServicesRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let node = identify(&request)?;
        let r = request.get_ref();
        let from = Position {
            services: r.services_revision,
            slices: r.slices_revision,
        };
        tracing::debug!(%node, ?from, "WatchServices");
        let (tx, rx) = mpsc::channel(256);
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(status) = run(&client, from, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Where the stream stands: the last store revision sent of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    services: u64,
    slices: u64,
}

impl Position {
    /// Resuming needs both revisions; anything else starts over with a snapshot.
    fn resumable(&self) -> bool {
        self.services != 0 && self.slices != 0
    }
}

fn event(kind: Type, what: Kind, object: Vec<u8>, at: Position) -> ServiceEvent {
    ServiceEvent {
        r#type: kind as i32,
        kind: what as i32,
        object,
        services_revision: at.services,
        slices_revision: at.slices,
    }
}

fn revision_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

/// Sends the snapshot; returns its position, or `None` when the node went away.
async fn snapshot(client: &Client, tx: &Sender) -> Result<Option<Position>, Status> {
    let services = client.list::<Service>(None, "").await.map_err(status_of)?;
    let slices = client
        .list::<EndpointSlice>(None, "")
        .await
        .map_err(status_of)?;
    let at = Position {
        services: services.revision,
        slices: slices.revision,
    };
    let objects = services
        .items
        .iter()
        .map(|s| (Kind::Service, encode(s)))
        .chain(
            slices
                .items
                .iter()
                .map(|s| (Kind::EndpointSlice, encode(s))),
        );
    for (what, bytes) in objects {
        if tx
            .send(Ok(event(Type::Snapshot, what, bytes, at)))
            .await
            .is_err()
        {
            return Ok(None);
        }
    }
    let synced = event(Type::Synced, Kind::Service, Vec::new(), at);
    Ok(tx.send(Ok(synced)).await.is_ok().then_some(at))
}

async fn run(client: &Client, from: Position, tx: &Sender) -> Result<(), Status> {
    let mut at = if from.resumable() {
        from
    } else {
        match snapshot(client, tx).await? {
            Some(at) => at,
            None => return Ok(()),
        }
    };
    let mut services = client
        .watch::<Service>(None, at.services)
        .await
        .map_err(status_of)?;
    let mut slices = client
        .watch::<EndpointSlice>(None, at.slices)
        .await
        .map_err(status_of)?;
    loop {
        let (kind, what, bytes) = tokio::select! {
            () = tx.closed() => return Ok(()),
            change = services.next() => {
                let (kind, svc) = split(change)?;
                at.services = revision_of(&svc.metadata);
                (kind, Kind::Service, encode(&svc))
            }
            change = slices.next() => {
                let (kind, slice) = split(change)?;
                at.slices = revision_of(&slice.metadata);
                (kind, Kind::EndpointSlice, encode(&slice))
            }
        };
        if tx.send(Ok(event(kind, what, bytes, at))).await.is_err() {
            return Ok(());
        }
    }
}

/// A store change as the event type and the object (its last state when deleted).
fn split<K>(
    change: Option<Result<Change<K>, crate::apiserver::ApiError>>,
) -> Result<(Type, K), Status> {
    match change {
        None => Err(Status::unavailable("the store's watch ended")),
        Some(Err(e)) => Err(status_of(e)),
        Some(Ok(Change::Applied(object))) => Ok((Type::AddedOrModified, object)),
        Some(Ok(Change::Deleted(object))) => Ok((Type::Deleted, object)),
    }
}
