//! The single writer of the embedded store: group commit of queued writes.
//!
//! One thread takes every queued request, applies them in order in one redb transaction
//! (each successful write gets the next revision), commits with `Durability::Immediate`
//! (one fsync for the whole group), then answers each request and broadcasts the events.
//! A request is answered only after its commit is durable.

use std::sync::Arc;

use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::codec::{decode_entry, encode_entry, encode_event};
use super::schema::{COMPACTED, HISTORY, KEYS, META, REVISION, counter};
use crate::store::{Kv, StoreError, WatchEvent};

/// Most requests committed in one transaction.
const MAX_GROUP: usize = 1024;

/// A write the writer applies.
#[derive(Debug)]
pub(crate) enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Option<u64>,
    },
    Delete {
        key: String,
        expected: Option<u64>,
    },
    Compact {
        revision: u64,
    },
}

/// What a write answers: the new entry (create, update), the deleted one, or nothing.
pub(crate) type Outcome = Result<Option<Kv>, StoreError>;

/// A queued write and where to send its outcome.
#[derive(Debug)]
pub(crate) struct WriteRequest {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Outcome>,
}

/// Committed events, one `Arc` per group commit, in revision order.
pub(crate) type EventBatch = Arc<[WatchEvent]>;

/// Owns the write side of the database; runs on its own thread until every sender is gone.
pub(crate) struct Writer {
    pub db: Arc<Database>,
    pub requests: mpsc::Receiver<WriteRequest>,
    pub events: broadcast::Sender<EventBatch>,
}

impl Writer {
    /// Serves requests until the store is dropped.
    pub fn run(mut self) {
        while let Some(first) = self.requests.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match self.requests.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn commit_group(&self, group: Vec<WriteRequest>) {
        let (ops, replies): (Vec<WriteOp>, Vec<oneshot::Sender<Outcome>>) =
            group.into_iter().map(|r| (r.op, r.reply)).unzip();
        match apply_group(&self.db, &ops) {
            Ok((outcomes, events)) => {
                if !events.is_empty() {
                    // No receivers is fine: nobody watches.
                    let _ = self.events.send(Arc::from(events));
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!(%error, writes = ops.len(), "embedded store: group commit failed");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The tables a group of writes touches, and the revision counter as it advances.
struct Group<'txn> {
    keys: Table<'txn, &'static str, &'static [u8]>,
    history: Table<'txn, u64, &'static [u8]>,
    revision: u64,
    compacted: u64,
    events: Vec<WatchEvent>,
}

/// Applies `ops` in one transaction and commits it. The outer error aborts the whole group
/// (nothing was written); the per-op outcomes carry precondition failures.
fn apply_group(
    db: &Database,
    ops: &[WriteOp],
) -> Result<(Vec<Outcome>, Vec<WatchEvent>), StoreError> {
    let mut txn = db
        .begin_write()
        .map_err(StoreError::embedded("begin write"))?;
    txn.set_durability(Durability::Immediate)
        .map_err(StoreError::embedded("set durability"))?;
    let (outcomes, events) = apply_in(&txn, ops)?;
    txn.commit().map_err(StoreError::embedded("commit"))?;
    Ok((outcomes, events))
}

fn apply_in(
    txn: &WriteTransaction,
    ops: &[WriteOp],
) -> Result<(Vec<Outcome>, Vec<WatchEvent>), StoreError> {
    let mut meta = txn
        .open_table(META)
        .map_err(StoreError::embedded("open meta"))?;
    let mut group = Group {
        keys: txn
            .open_table(KEYS)
            .map_err(StoreError::embedded("open keys"))?,
        history: txn
            .open_table(HISTORY)
            .map_err(StoreError::embedded("open history"))?,
        revision: counter(&meta, REVISION)?,
        compacted: counter(&meta, COMPACTED)?,
        events: Vec::new(),
    };
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        outcomes.push(group.apply(op)?);
    }
    meta.insert(REVISION, group.revision)
        .map_err(StoreError::embedded("write revision"))?;
    meta.insert(COMPACTED, group.compacted)
        .map_err(StoreError::embedded("write compacted revision"))?;
    Ok((outcomes, group.events))
}

impl Group<'_> {
    fn apply(&mut self, op: &WriteOp) -> Result<Outcome, StoreError> {
        match op {
            WriteOp::Create { key, value } => match self.current(key)? {
                Some(_) => Ok(Err(StoreError::AlreadyExists { key: key.clone() })),
                None => self.put(key, value, None).map(|kv| Ok(Some(kv))),
            },
            WriteOp::Update {
                key,
                value,
                expected,
            } => match self.checked(key, *expected)? {
                Ok(prev) => self.put(key, value, Some(prev)).map(|kv| Ok(Some(kv))),
                Err(error) => Ok(Err(error)),
            },
            WriteOp::Delete { key, expected } => match self.checked(key, *expected)? {
                Ok(prev) => self.remove(prev).map(|prev| Ok(Some(prev))),
                Err(error) => Ok(Err(error)),
            },
            WriteOp::Compact { revision } => self.compact(*revision),
        }
    }

    fn current(&self, key: &str) -> Result<Option<Kv>, StoreError> {
        match self
            .keys
            .get(key)
            .map_err(StoreError::embedded("read key"))?
        {
            Some(guard) => decode_entry(key, guard.value()).map(Some),
            None => Ok(None),
        }
    }

    /// The current entry if it exists and matches the precondition.
    fn checked(
        &self,
        key: &str,
        expected: Option<u64>,
    ) -> Result<Result<Kv, StoreError>, StoreError> {
        let Some(prev) = self.current(key)? else {
            return Ok(Err(StoreError::NotFound {
                key: key.to_owned(),
            }));
        };
        match expected {
            Some(expected) if expected != prev.mod_revision => Ok(Err(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual: prev.mod_revision,
            })),
            _ => Ok(Ok(prev)),
        }
    }

    fn put(&mut self, key: &str, value: &[u8], prev: Option<Kv>) -> Result<Kv, StoreError> {
        self.revision += 1;
        let kv = Kv {
            key: key.to_owned(),
            value: value.to_vec(),
            create_revision: prev.as_ref().map_or(self.revision, |p| p.create_revision),
            mod_revision: self.revision,
        };
        self.keys
            .insert(key, encode_entry(&kv).as_slice())
            .map_err(StoreError::embedded("write key"))?;
        self.record(WatchEvent::Put {
            kv: kv.clone(),
            prev,
        })?;
        Ok(kv)
    }

    fn remove(&mut self, prev: Kv) -> Result<Kv, StoreError> {
        self.revision += 1;
        self.keys
            .remove(prev.key.as_str())
            .map_err(StoreError::embedded("delete key"))?;
        self.record(WatchEvent::Delete {
            prev: prev.clone(),
            revision: self.revision,
        })?;
        Ok(prev)
    }

    fn record(&mut self, event: WatchEvent) -> Result<(), StoreError> {
        self.history
            .insert(self.revision, encode_event(&event).as_slice())
            .map_err(StoreError::embedded("write history"))?;
        self.events.push(event);
        Ok(())
    }

    fn compact(&mut self, revision: u64) -> Result<Outcome, StoreError> {
        if revision > self.revision {
            return Ok(Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            }));
        }
        if revision > self.compacted {
            self.history
                .retain_in(..=revision, |_, _| false)
                .map_err(StoreError::embedded("compact history"))?;
            self.compacted = revision;
        }
        Ok(Ok(None))
    }
}
