//! Reads of the embedded store: get, consistent paginated lists, history for watchers.
//!
//! A list at an older revision `R` (a continue token, or `ListOptions::revision`) is the
//! current key table with every key written after `R` put back as it was at `R`: the first
//! history event after `R` for a key carries the key's state before it (`prev`). That is
//! exact as long as the history after `R` is complete, i.e. `R >= compacted`.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase};

use super::codec::{decode_entry, decode_event};
use super::schema::{COMPACTED, HISTORY, KEYS, META, REVISION, counter};
use crate::store::token::ContinueToken;
use crate::store::{Kv, ListOptions, ListResult, StoreError, WatchEvent, in_prefix};

type KeysTable = ReadOnlyTable<&'static str, &'static [u8]>;
type HistoryTable = ReadOnlyTable<u64, &'static [u8]>;

/// A read snapshot with its two counters.
struct Snapshot {
    txn: ReadTransaction,
    revision: u64,
    compacted: u64,
}

impl Snapshot {
    fn take(db: &Database) -> Result<Self, StoreError> {
        let txn = db
            .begin_read()
            .map_err(StoreError::embedded("begin read"))?;
        let meta = txn
            .open_table(META)
            .map_err(StoreError::embedded("open meta"))?;
        let revision = counter(&meta, REVISION)?;
        let compacted = counter(&meta, COMPACTED)?;
        Ok(Snapshot {
            txn,
            revision,
            compacted,
        })
    }

    fn keys(&self) -> Result<KeysTable, StoreError> {
        self.txn
            .open_table(KEYS)
            .map_err(StoreError::embedded("open keys"))
    }

    fn history(&self) -> Result<HistoryTable, StoreError> {
        self.txn
            .open_table(HISTORY)
            .map_err(StoreError::embedded("open history"))
    }

    /// Fails unless the state at `revision` can be rebuilt from this snapshot.
    fn check_readable(&self, revision: u64) -> Result<(), StoreError> {
        if revision < self.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        if revision > self.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        Ok(())
    }
}

/// The revision of the last committed write.
pub(crate) fn current_revision(db: &Database) -> Result<u64, StoreError> {
    Snapshot::take(db).map(|s| s.revision)
}

/// The compacted revision (0 if never compacted).
pub(crate) fn compacted_revision(db: &Database) -> Result<u64, StoreError> {
    Snapshot::take(db).map(|s| s.compacted)
}

/// The current entry at `key`.
pub(crate) fn get(db: &Database, key: &str) -> Result<Option<Kv>, StoreError> {
    let snapshot = Snapshot::take(db)?;
    let keys = snapshot.keys()?;
    let found = keys.get(key).map_err(StoreError::embedded("read key"))?;
    found
        .map(|guard| decode_entry(key, guard.value()))
        .transpose()
}

/// One page of the entries under `prefix`, consistent at one revision across pages.
pub(crate) fn list(
    db: &Database,
    prefix: &str,
    options: &ListOptions,
) -> Result<ListResult, StoreError> {
    let token = options
        .continue_token
        .as_deref()
        .map(|token| ContinueToken::decode(token, prefix))
        .transpose()?;
    let snapshot = Snapshot::take(db)?;
    let revision = match (&token, options.revision) {
        (Some(token), _) => token.revision,
        (None, Some(revision)) if revision > 0 => revision,
        (None, _) => snapshot.revision,
    };
    snapshot.check_readable(revision)?;
    let start = token.map_or_else(|| prefix.to_owned(), |t| t.start_key());
    let overrides = rewound_keys(&snapshot.history()?, revision, prefix, &start)?;
    let limit = options.limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
    let (items, remaining) = collect_page(&snapshot.keys()?, overrides, prefix, &start, limit)?;
    Ok(ListResult::page(items, revision, remaining > 0, remaining))
}

/// For each key in range written after `revision`: its state at `revision` (`None`: absent).
fn rewound_keys(
    history: &HistoryTable,
    revision: u64,
    prefix: &str,
    start: &str,
) -> Result<BTreeMap<String, Option<Kv>>, StoreError> {
    let mut rewound = BTreeMap::new();
    let later = history
        .range(revision + 1..)
        .map_err(StoreError::embedded("read history"))?;
    for item in later {
        let (_, bytes) = item.map_err(StoreError::embedded("read history"))?;
        let event = decode_event(bytes.value())?;
        let key = event.key();
        if !in_prefix(key, prefix) || key < start {
            continue;
        }
        if let Entry::Vacant(slot) = rewound.entry(key.to_owned()) {
            slot.insert(match event {
                WatchEvent::Put { prev, .. } => prev,
                WatchEvent::Delete { prev, .. } => Some(prev),
            });
        }
    }
    Ok(rewound)
}

/// Merges the key table with the rewound keys; returns the first `limit` entries and how
/// many more follow.
fn collect_page(
    keys: &KeysTable,
    rewound: BTreeMap<String, Option<Kv>>,
    prefix: &str,
    start: &str,
    limit: usize,
) -> Result<(Vec<Kv>, u64), StoreError> {
    let mut current = CurrentKeys::new(keys, prefix, start)?;
    let mut rewound = rewound.into_iter().peekable();
    let mut next_current = current.next()?;
    let (mut items, mut remaining) = (Vec::new(), 0u64);
    loop {
        let entry = match (next_current.take(), rewound.peek()) {
            (None, None) => break,
            (Some(kv), Some((key, _))) if kv.key < *key => {
                next_current = current.next()?;
                Some(kv)
            }
            (Some(kv), None) => {
                next_current = current.next()?;
                Some(kv)
            }
            (cur, Some(_)) => {
                let Some((key, state)) = rewound.next() else {
                    break;
                };
                // The rewound state replaces the current one of the same key.
                next_current = match cur {
                    Some(kv) if kv.key == key => current.next()?,
                    other => other,
                };
                state
            }
        };
        if let Some(kv) = entry {
            if items.len() < limit {
                items.push(kv);
            } else {
                remaining += 1;
            }
        }
    }
    Ok((items, remaining))
}

/// The key table from `start`, stopping at the end of `prefix`.
struct CurrentKeys<'a> {
    range: redb::Range<'static, &'static str, &'static [u8]>,
    prefix: &'a str,
}

impl<'a> CurrentKeys<'a> {
    fn new(keys: &KeysTable, prefix: &'a str, start: &str) -> Result<Self, StoreError> {
        let range = keys
            .range(start..)
            .map_err(StoreError::embedded("read keys"))?;
        Ok(CurrentKeys { range, prefix })
    }

    fn next(&mut self) -> Result<Option<Kv>, StoreError> {
        match self.range.next() {
            Some(item) => {
                let (key, value) = item.map_err(StoreError::embedded("read keys"))?;
                let key = key.value();
                if !in_prefix(key, self.prefix) {
                    return Ok(None);
                }
                decode_entry(key, value.value()).map(Some)
            }
            None => Ok(None),
        }
    }
}

/// Events after `after` under `prefix`, read in bounded chunks by watchers.
pub(crate) struct HistoryChunk {
    /// Matching events, in revision order.
    pub events: Vec<WatchEvent>,
    /// The last revision examined (matching or not).
    pub last: u64,
    /// True when `last` was the current revision of the snapshot.
    pub caught_up: bool,
}

/// Reads up to `max` history events after `after`; `Compacted` if some are gone.
pub(crate) fn history_after(
    db: &Database,
    prefix: &str,
    after: u64,
    max: usize,
) -> Result<HistoryChunk, StoreError> {
    let snapshot = Snapshot::take(db)?;
    if after < snapshot.compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted: snapshot.compacted,
        });
    }
    let mut chunk = HistoryChunk {
        events: Vec::new(),
        last: after.max(snapshot.revision),
        caught_up: true,
    };
    if after >= snapshot.revision {
        return Ok(chunk);
    }
    let history = snapshot.history()?;
    let range = history
        .range(after + 1..=snapshot.revision)
        .map_err(StoreError::embedded("read history"))?;
    for (scanned, item) in range.enumerate() {
        let (revision, bytes) = item.map_err(StoreError::embedded("read history"))?;
        if scanned == max {
            chunk.last = revision.value() - 1;
            chunk.caught_up = false;
            break;
        }
        let event = decode_event(bytes.value())?;
        if in_prefix(event.key(), prefix) {
            chunk.events.push(event);
        }
    }
    Ok(chunk)
}
