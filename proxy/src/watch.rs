//! The proxy's watch client: `WatchServices` on the node contract (`proto/services.proto`),
//! dialled with the node's credentials, keeping a [`ClusterState`]. [`Tracker`] is the state
//! machine (pure, unit-tested without a server): a snapshot is gathered aside and replaces
//! the state only when SYNCED closes it, so nothing downstream ever sees half a snapshot;
//! changes after it apply one by one; the position (a revision per kind) is what a
//! reconnect resumes from, and OUT_OF_RANGE (the store compacted it) starts over with a
//! fresh snapshot. [`run`] redials with back-off and publishes the state at most once per
//! window, so a burst of changes is one publish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_api::node::service_event::{Kind, Type};
use skiff_api::node::services_client::ServicesClient;
use skiff_api::node::{ServiceEvent, WatchServicesRequest};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::ClientTlsConfig;

use crate::state::{ClusterState, ObjectKey};

/// What went wrong with one event.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("undecodable {kind} in a WatchServices event: {source}")]
    Decode {
        kind: &'static str,
        source: serde_json::Error,
    },
    #[error("WatchServices event of unknown type {0}")]
    UnknownType(i32),
    #[error(transparent)]
    Dial(#[from] skiff_api::dial::DialError),
    #[error("WatchServices: {0}")]
    Rpc(#[from] tonic::Status),
}

/// The stream's position: the last store revision seen of each kind (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub services: u64,
    pub slices: u64,
}

/// The watch's state machine.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The last complete picture (shared with the consumers; copied on write).
    state: Arc<ClusterState>,
    /// Whether `state` is complete (a snapshot has been closed by SYNCED).
    synced: bool,
    /// A snapshot being received.
    pending: Option<ClusterState>,
    position: Position,
}

fn decode_service(bytes: &[u8]) -> Result<Service, WatchError> {
    serde_json::from_slice(bytes).map_err(|source| WatchError::Decode {
        kind: "Service",
        source,
    })
}

fn decode_slice(bytes: &[u8]) -> Result<EndpointSlice, WatchError> {
    serde_json::from_slice(bytes).map_err(|source| WatchError::Decode {
        kind: "EndpointSlice",
        source,
    })
}

/// Puts (or removes) the event's object in `state`.
fn put(state: &mut ClusterState, kind: Kind, bytes: &[u8], delete: bool) -> Result<(), WatchError> {
    match kind {
        Kind::Service => {
            let svc = decode_service(bytes)?;
            let key = ObjectKey::of(&svc.metadata);
            if delete {
                state.services.remove(&key);
            } else {
                state.services.insert(key, svc);
            }
        }
        Kind::EndpointSlice => {
            let slice = decode_slice(bytes)?;
            let key = ObjectKey::of(&slice.metadata);
            if delete {
                state.slices.remove(&key);
            } else {
                state.slices.insert(key, slice);
            }
        }
    }
    Ok(())
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// The complete picture, once the first snapshot is in.
    pub fn state(&self) -> Option<&Arc<ClusterState>> {
        self.synced.then_some(&self.state)
    }

    pub fn position(&self) -> Position {
        self.position
    }

    /// The request of the next call: resume from the position, or a snapshot.
    pub fn request(&self) -> WatchServicesRequest {
        WatchServicesRequest {
            services_revision: self.position.services,
            slices_revision: self.position.slices,
        }
    }

    /// A new call starts (after [`Tracker::request`]): a snapshot is expected unless it
    /// resumes. A snapshot cut short by a broken call is dropped.
    pub fn begin(&mut self) {
        let resumes = self.position.services != 0 && self.position.slices != 0;
        self.pending = (!resumes).then(ClusterState::default);
    }

    /// The server said the position was compacted away: start over with a snapshot. The
    /// current state stays in force until that snapshot is complete.
    pub fn out_of_range(&mut self) {
        self.position = Position::default();
        self.pending = None;
    }

    /// Applies one event; `Ok(true)` when the complete state changed.
    pub fn apply(&mut self, event: &ServiceEvent) -> Result<bool, WatchError> {
        let kind =
            Type::try_from(event.r#type).map_err(|_| WatchError::UnknownType(event.r#type))?;
        let what = Kind::try_from(event.kind).unwrap_or(Kind::Service);
        let at = Position {
            services: event.services_revision,
            slices: event.slices_revision,
        };
        match kind {
            Type::Snapshot => {
                let pending = self.pending.get_or_insert_with(ClusterState::default);
                put(pending, what, &event.object, false)?;
                Ok(false)
            }
            Type::Synced => {
                let fresh = self.pending.take().unwrap_or_default();
                self.state = Arc::new(fresh);
                self.synced = true;
                self.position = at;
                Ok(true)
            }
            Type::AddedOrModified | Type::Deleted => {
                let result = put(
                    Arc::make_mut(&mut self.state),
                    what,
                    &event.object,
                    kind == Type::Deleted,
                );
                // Past this event either way: an undecodable object is not asked for again.
                self.position = at;
                result.map(|()| self.synced)
            }
        }
    }
}

/// Where and how the watch dials.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The node service, `https://host:6444`.
    pub server: String,
    /// The cluster CA and the node's certificate (`NodeCredentials::tonic_client_tls`).
    pub tls: ClientTlsConfig,
    /// Changes are published at most once per this window.
    pub window: Duration,
}

/// Follows the cluster's Services until `shutdown` resolves, publishing each new complete
/// state on `publish`.
pub async fn run(
    config: WatchConfig,
    publish: watch::Sender<Option<Arc<ClusterState>>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tracker = Tracker::new();
    let mut delay = Duration::from_millis(200);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            result = session(&config, &mut tracker, &publish) => {
                match result {
                    Ok(()) => tracing::info!("WatchServices ended; redialling"),
                    Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "WatchServices failed"),
                }
            }
        }
        if tracker.state().is_some() {
            delay = delay.min(Duration::from_secs(1));
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// One call: dial, watch until the stream breaks; the state is published at most once per
/// window and once more when the call ends.
async fn session(
    config: &WatchConfig,
    tracker: &mut Tracker,
    publish: &watch::Sender<Option<Arc<ClusterState>>>,
) -> Result<(), WatchError> {
    let channel = skiff_api::dial::channel(&config.server, config.tls.clone()).await?;
    let mut client = ServicesClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let request = tracker.request();
    let started = match client.watch_services(request).await {
        Ok(s) => s,
        Err(status) => {
            if status.code() == tonic::Code::OutOfRange {
                tracker.out_of_range();
            }
            return Err(status.into());
        }
    };
    tracker.begin();
    let mut stream = started.into_inner();
    let mut due: Option<Instant> = None;
    let publish_now = |tracker: &Tracker| {
        if let Some(state) = tracker.state() {
            publish.send_replace(Some(state.clone()));
        }
    };
    let result = loop {
        let next = tokio::select! {
            next = stream.next() => next,
            () = sleep_until(due), if due.is_some() => {
                publish_now(tracker);
                due = None;
                continue;
            }
        };
        let event = match next {
            None => break Ok(()),
            Some(Err(status)) => {
                if status.code() == tonic::Code::OutOfRange {
                    tracker.out_of_range();
                }
                break Err(status.into());
            }
            Some(Ok(event)) => event,
        };
        match tracker.apply(&event) {
            Ok(true) if due.is_none() => due = Some(Instant::now() + config.window),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "skipping a WatchServices event"),
        }
    };
    if due.is_some() {
        publish_now(tracker);
    }
    result
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
