//! Events for `kubectl describe` (Scheduled, FailedScheduling, SuccessfulCreate,
//! ScalingReplicaSet, Killing, …). As client-go's broadcaster: a recorder queues them and
//! one background writer stores them a few at a time, so events never hold up a reconcile
//! nor crowd out the writes that matter (bindings, scaling); when the queue is full an
//! event is dropped, with a log line.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::apiserver::{Client, Object};

/// Events queued and not yet written, per recorder.
const QUEUE: usize = 16_384;
/// Event writes in flight at once.
const WRITERS: usize = 8;

/// Writes events as one component (`default-scheduler`, `replicaset-controller`, …).
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Event>,
    component: &'static str,
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// A reference to `object` for `involvedObject`.
pub fn reference<K: Object>(object: &K) -> ObjectReference {
    let meta = object.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.to_owned()),
        kind: Some(K::KIND.to_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// The event object (pure; the recorder writes it).
pub fn event(
    involved: ObjectReference,
    kind: Kind,
    reason: &str,
    message: &str,
    component: &str,
    now: Timestamp,
) -> Event {
    let namespace = involved
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let name = format!(
        "{}.{:x}",
        involved.name.as_deref().unwrap_or("object"),
        now.as_nanosecond()
    );
    let time = Time(now);
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        involved_object: involved,
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        type_: Some(
            match kind {
                Kind::Normal => "Normal",
                Kind::Warning => "Warning",
            }
            .to_owned(),
        ),
        source: Some(EventSource {
            component: Some(component.to_owned()),
            host: None,
        }),
        reporting_component: Some(component.to_owned()),
        first_timestamp: Some(time.clone()),
        last_timestamp: Some(time),
        count: Some(1),
        ..Event::default()
    }
}

impl Recorder {
    /// A recorder for `component`, with its writer task (it ends with the last clone).
    pub fn new(client: Client, component: &'static str) -> Recorder {
        let (queue, events) = mpsc::channel::<Event>(QUEUE);
        tokio::spawn(
            ReceiverStream::new(events)
                .map(move |event| {
                    let client = client.clone();
                    async move {
                        if let Err(e) = client.create(&event).await {
                            tracing::debug!(error = %e, "event not recorded");
                        }
                    }
                })
                .buffer_unordered(WRITERS)
                .for_each(|()| async {}),
        );
        Recorder { queue, component }
    }

    /// Records an event about `object` in the background.
    pub fn record<K: Object>(&self, object: &K, kind: Kind, reason: &str, message: &str) {
        let event = event(
            reference(object),
            kind,
            reason,
            message,
            self.component,
            Timestamp::now(),
        );
        if self.queue.try_send(event).is_err() {
            tracing::info!(
                component = self.component,
                reason,
                "event queue full; event dropped"
            );
        }
    }
}
