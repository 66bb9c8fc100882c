//! Watch streams: chunked `{"type":…,"object":…}\n` events from the store's watch, with
//! replay from `resourceVersion`, synthetic ADDED events when it is unset or 0, selector
//! transitions, BOOKMARKs, `timeoutSeconds`, Table rows, and a 410 ERROR event when the
//! requested history is compacted.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::handlers::{AppState, collect, decode};
use super::registry::ResourceType;
use super::request::{ListQuery, Target};
use super::status::ApiError;
use super::table;
use super::watchcache::{LineCache, LineKey};
use crate::store::{StoreError, WatchEvent, WatchStream};

/// One event to send: `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event type.
    pub kind: &'static str,
    /// The object (with its `resourceVersion`), or a Status for ERROR.
    pub object: Value,
}

/// How the stream renders objects.
#[derive(Debug, Clone, Copy)]
struct Render {
    resource: &'static ResourceType,
    table: bool,
}

impl Render {
    /// The wire form of an event; `first` Table events carry the column definitions.
    fn line(&self, event: &Event, first: bool) -> Bytes {
        let object = if self.table && matches!(event.kind, "ADDED" | "MODIFIED" | "DELETED") {
            let rv = event
                .object
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            let mut meta = Map::new();
            meta.insert("resourceVersion".into(), rv);
            table::table(
                self.resource.printer,
                std::slice::from_ref(&event.object),
                meta,
                Timestamp::now(),
                first,
            )
        } else {
            event.object.clone()
        };
        let mut line =
            serde_json::to_vec(&json!({"type": event.kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

/// The event type of a store event for a watch without selectors — known without decoding
/// the object; `None` when selectors must look at it.
fn plain_kind(event: &WatchEvent, query: &ListQuery) -> Option<&'static str> {
    if !query.labels.0.is_empty() || !query.fields.0.is_empty() {
        return None;
    }
    Some(match event {
        WatchEvent::Put { prev: None, .. } => "ADDED",
        WatchEvent::Put { prev: Some(_), .. } => "MODIFIED",
        WatchEvent::Delete { .. } => "DELETED",
    })
}

/// The API event for a store event under `query`'s selectors (a change that moves an
/// object into or out of the selection is ADDED or DELETED), or `None` if not selected.
pub fn translate(event: &WatchEvent, query: &ListQuery) -> Result<Option<Event>, ApiError> {
    let selected = |o: &Value| query.labels.matches(o) && query.fields.matches(o);
    match event {
        WatchEvent::Put { kv, prev } => {
            let object = decode(kv)?;
            let was = match prev {
                Some(p) => selected(&decode(p)?),
                None => false,
            };
            let kind = match (was, selected(&object)) {
                (false, true) => "ADDED",
                (true, true) => "MODIFIED",
                (true, false) => "DELETED",
                (false, false) => return Ok(None),
            };
            Ok(Some(Event { kind, object }))
        }
        WatchEvent::Delete { prev, revision } => {
            let mut object = decode(prev)?;
            super::admit::set_resource_version(&mut object, *revision);
            Ok(selected(&object).then_some(Event {
                kind: "DELETED",
                object,
            }))
        }
    }
}

/// The `410 Expired` ERROR event of a compacted watch.
pub fn expired_event(requested: u64, compacted: u64) -> Event {
    let status = ApiError::expired(format!(
        "too old resource version: {requested} ({compacted})"
    ));
    Event {
        kind: "ERROR",
        object: status.to_status(),
    }
}

fn bookmark(resource: &ResourceType, revision: u64) -> Event {
    Event {
        kind: "BOOKMARK",
        object: json!({"kind": resource.kind, "apiVersion": resource.api_version(),
            "metadata": {"resourceVersion": revision.to_string()}}),
    }
}

/// Starts a watch: the initial events (for `resourceVersion` unset or 0) and the store
/// stream, or the ERROR event when the revision is compacted.
async fn open(
    state: &AppState,
    target: &Target,
    query: &ListQuery,
) -> Result<(Vec<Event>, u64, Option<WatchStream>), ApiError> {
    let r = target.resource;
    query.fields.check(|f| r.supports_field(f))?;
    let (initial, from) = match query.resource_version {
        Some(rv) if rv > 0 => (Vec::new(), rv),
        _ => {
            let mut all = query.clone();
            all.limit = None;
            let page = collect(state, target, &all).await?;
            let events = page
                .items
                .into_iter()
                .map(|object| Event {
                    kind: "ADDED",
                    object,
                })
                .collect();
            (events, page.revision)
        }
    };
    let prefix = r.list_prefix(target.namespace.as_deref());
    match state.store.watch(&prefix, from).await {
        Ok(stream) => Ok((initial, from, Some(stream))),
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => Ok((vec![expired_event(requested, compacted)], from, None)),
        Err(e) => Err(ApiError::from_store(e, r.group, r.plural, "")),
    }
}

/// `GET …?watch=true`.
pub async fn serve(
    state: &AppState,
    target: &Target,
    query: &ListQuery,
    as_table: bool,
) -> Result<Response, ApiError> {
    let (initial, from, stream) = open(state, target, query).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let render = Render {
        resource: target.resource,
        table: as_table,
    };
    let pump = Pump {
        render,
        query: query.clone(),
        tx,
        first: true,
        lines: state.watch_lines.clone(),
        last_revision: from,
        bookmarks: query.bookmarks.then_some(state.bookmark_interval),
        timeout: query.timeout_seconds.map(Duration::from_secs),
    };
    let guard = state.metrics.watch_started();
    tokio::spawn(async move {
        pump.run(initial, stream).await;
        drop(guard);
    });
    let mut response = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The task feeding one watch response.
struct Pump {
    render: Render,
    query: ListQuery,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    first: bool,
    /// Lines other watchers of this server already rendered.
    lines: Arc<LineCache>,
    last_revision: u64,
    bookmarks: Option<Duration>,
    timeout: Option<Duration>,
}

impl Pump {
    /// Sends one event; false once the client is gone.
    async fn send(&mut self, event: &Event) -> bool {
        let line = self.render.line(event, self.first);
        self.send_line(event.kind, line).await
    }

    async fn send_line(&mut self, kind: &str, line: Bytes) -> bool {
        if matches!(kind, "ADDED" | "MODIFIED" | "DELETED") {
            self.first = false;
        }
        self.tx.send(Ok(line)).await.is_ok()
    }

    /// The shared cache key of a store event's line, when the line is the same for every
    /// watcher (not a Table's first event, which carries the columns).
    fn line_key(&self, revision: u64, kind: &'static str) -> Option<LineKey> {
        let table = self.render.table;
        (!(table && self.first)).then_some(LineKey {
            revision,
            kind,
            table,
        })
    }

    /// Sends a store event: from the shared cache when another watcher rendered it, else
    /// decoded, filtered and rendered here (and shared).
    async fn deliver(&mut self, event: &WatchEvent) -> Result<bool, ApiError> {
        let revision = event.revision();
        if let Some(kind) = plain_kind(event, &self.query)
            && let Some(key) = self.line_key(revision, kind)
            && let Some(line) = self.lines.get(&key)
        {
            return Ok(self.send_line(kind, line).await);
        }
        let Some(api_event) = translate(event, &self.query)? else {
            return Ok(true);
        };
        let key = self.line_key(revision, api_event.kind);
        let line = self.render.line(&api_event, self.first);
        if let Some(key) = key {
            self.lines.put(key, line.clone());
        }
        Ok(self.send_line(api_event.kind, line).await)
    }

    async fn run(mut self, initial: Vec<Event>, stream: Option<WatchStream>) {
        for event in &initial {
            if !self.send(event).await {
                return;
            }
        }
        let Some(mut stream) = stream else {
            return;
        };
        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        let far = Duration::from_secs(365 * 24 * 3600);
        let mut ticker = tokio::time::interval(self.bookmarks.unwrap_or(far));
        ticker.tick().await;
        loop {
            let sleep_until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + far);
            tokio::select! {
                item = stream.next() => {
                    if !self.forward(item).await {
                        return;
                    }
                }
                _ = ticker.tick(), if self.bookmarks.is_some() => {
                    let event = bookmark(self.render.resource, self.last_revision);
                    if !self.send(&event).await {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(sleep_until) => return,
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Forwards one store item; false when the stream is over.
    async fn forward(&mut self, item: Option<Result<WatchEvent, StoreError>>) -> bool {
        match item {
            Some(Ok(event)) => {
                self.last_revision = event.revision();
                match self.deliver(&event).await {
                    Ok(open) => open,
                    Err(err) => {
                        let event = Event {
                            kind: "ERROR",
                            object: err.to_status(),
                        };
                        self.send(&event).await;
                        false
                    }
                }
            }
            Some(Err(StoreError::Compacted {
                requested,
                compacted,
            })) => {
                self.send(&expired_event(requested, compacted)).await;
                false
            }
            Some(Err(err)) => {
                let r = self.render.resource;
                let status = ApiError::from_store(err, r.group, r.plural, "").to_status();
                self.send(&Event {
                    kind: "ERROR",
                    object: status,
                })
                .await;
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::selector::LabelSelector;
    use crate::store::Kv;

    fn kv(rev: u64, labels: Value) -> Kv {
        Kv {
            key: "/registry/core/pods/d/a".into(),
            value: serde_json::to_vec(&json!({"metadata": {"name": "a", "labels": labels}}))
                .unwrap(),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let query = ListQuery {
            labels: LabelSelector::parse("app=web").unwrap(),
            ..Default::default()
        };
        let created = WatchEvent::Put {
            kv: kv(2, json!({"app": "web"})),
            prev: None,
        };
        assert_eq!(translate(&created, &query).unwrap().unwrap().kind, "ADDED");
        let modified = WatchEvent::Put {
            kv: kv(3, json!({"app": "web", "x": "1"})),
            prev: Some(kv(2, json!({"app": "web"}))),
        };
        let event = translate(&modified, &query).unwrap().unwrap();
        assert_eq!(
            (
                event.kind,
                event.object["metadata"]["resourceVersion"].as_str()
            ),
            ("MODIFIED", Some("3"))
        );
        let moved_out = WatchEvent::Put {
            kv: kv(4, json!({"app": "db"})),
            prev: Some(kv(3, json!({"app": "web"}))),
        };
        assert_eq!(
            translate(&moved_out, &query).unwrap().unwrap().kind,
            "DELETED"
        );
        let unrelated = WatchEvent::Put {
            kv: kv(5, json!({"app": "db"})),
            prev: Some(kv(4, json!({"app": "db"}))),
        };
        assert!(translate(&unrelated, &query).unwrap().is_none());
        let deleted = WatchEvent::Delete {
            prev: kv(3, json!({"app": "web"})),
            revision: 9,
        };
        let event = translate(&deleted, &query).unwrap().unwrap();
        assert_eq!(
            (
                event.kind,
                event.object["metadata"]["resourceVersion"].as_str()
            ),
            ("DELETED", Some("9"))
        );
    }

    fn pump(
        table: bool,
        lines: &Arc<LineCache>,
        query: ListQuery,
    ) -> (Pump, mpsc::Receiver<Result<Bytes, Infallible>>) {
        let (tx, rx) = mpsc::channel(8);
        let pump = Pump {
            render: Render {
                resource: crate::apiserver::registry::find("", "v1", "pods").unwrap(),
                table,
            },
            query,
            tx,
            first: true,
            lines: lines.clone(),
            last_revision: 0,
            bookmarks: None,
            timeout: None,
        };
        (pump, rx)
    }

    async fn line(rx: &mut mpsc::Receiver<Result<Bytes, Infallible>>) -> Value {
        let bytes = rx.recv().await.unwrap().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn watchers_share_rendered_lines_but_each_table_starts_with_its_columns() {
        let lines = Arc::new(LineCache::default());
        let created = WatchEvent::Put {
            kv: kv(2, json!({"app": "web"})),
            prev: None,
        };
        let (mut a, mut a_rx) = pump(false, &lines, ListQuery::default());
        assert!(a.deliver(&created).await.unwrap());
        let first = line(&mut a_rx).await;
        assert_eq!(first["type"], "ADDED");
        // Another plain watcher gets the very line the first one rendered.
        assert!(
            lines
                .get(&LineKey {
                    revision: 2,
                    kind: "ADDED",
                    table: false
                })
                .is_some()
        );
        let (mut b, mut b_rx) = pump(false, &lines, ListQuery::default());
        assert!(b.deliver(&created).await.unwrap());
        assert_eq!(line(&mut b_rx).await, first);
        // Table watchers: the first event of each carries the columns, cached or not.
        for _ in 0..2 {
            let (mut t, mut t_rx) = pump(true, &lines, ListQuery::default());
            assert!(t.deliver(&created).await.unwrap());
            let row = line(&mut t_rx).await;
            assert!(
                !row["object"]["columnDefinitions"]
                    .as_array()
                    .unwrap()
                    .is_empty()
            );
            let modified = WatchEvent::Put {
                kv: kv(3, json!({"app": "web"})),
                prev: Some(kv(2, json!({"app": "web"}))),
            };
            assert!(t.deliver(&modified).await.unwrap());
            let next = line(&mut t_rx).await;
            assert_eq!(next["type"], "MODIFIED");
            assert!(
                next["object"]["columnDefinitions"]
                    .as_array()
                    .unwrap()
                    .is_empty()
            );
        }
        // A selector that drops the object: its DELETED line is keyed apart from MODIFIED.
        let query = ListQuery {
            labels: LabelSelector::parse("app=web").unwrap(),
            ..Default::default()
        };
        let (mut s, mut s_rx) = pump(false, &lines, query);
        let moved_out = WatchEvent::Put {
            kv: kv(4, json!({"app": "db"})),
            prev: Some(kv(3, json!({"app": "web"}))),
        };
        assert!(s.deliver(&moved_out).await.unwrap());
        assert_eq!(line(&mut s_rx).await["type"], "DELETED");
        let (mut p, mut p_rx) = pump(false, &lines, ListQuery::default());
        assert!(p.deliver(&moved_out).await.unwrap());
        assert_eq!(line(&mut p_rx).await["type"], "MODIFIED");
    }

    #[test]
    fn lines_are_newline_terminated_json_and_tables_carry_columns_once() {
        let pods = crate::apiserver::registry::find("", "v1", "pods").unwrap();
        let render = Render {
            resource: pods,
            table: true,
        };
        let event = Event {
            kind: "ADDED",
            object: json!({"metadata": {"name": "a", "resourceVersion": "7"}}),
        };
        let first = render.line(&event, true);
        assert!(first.ends_with(b"\n"));
        let parsed: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(parsed["object"]["kind"], "Table");
        assert_eq!(parsed["object"]["metadata"]["resourceVersion"], "7");
        assert!(
            !parsed["object"]["columnDefinitions"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        let later: Value = serde_json::from_slice(&render.line(&event, false)).unwrap();
        assert!(
            later["object"]["columnDefinitions"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        let gone: Value =
            serde_json::from_slice(&render.line(&expired_event(3, 9), false)).unwrap();
        assert_eq!(gone["type"], "ERROR");
        assert_eq!(gone["object"]["code"], 410);
    }
}
