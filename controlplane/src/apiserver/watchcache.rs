//! Watch lines shared by every watcher of one API server: a store event that a hundred
//! watches deliver is decoded and encoded once, not a hundred times.
//!
//! A line is keyed by the store revision of its event (one write per revision), the event
//! type it was delivered as (a selector can turn the same write into ADDED for one watcher
//! and DELETED for another) and whether it is a Table row. Only lines that do not depend on
//! the watcher are cached: never a Table's first event (it carries the column definitions).
//! The cache keeps the most recent lines only: watchers deliver an event within moments of
//! each other, and a watcher that misses simply renders the line itself.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

/// What one cached line is the rendering of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineKey {
    pub revision: u64,
    pub kind: &'static str,
    pub table: bool,
}

/// A bounded map from [`LineKey`] to the encoded line; oldest entries leave first.
#[derive(Debug)]
pub struct LineCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    lines: HashMap<LineKey, Bytes>,
    order: VecDeque<LineKey>,
}

impl Default for LineCache {
    fn default() -> Self {
        LineCache::new(4096)
    }
}

impl LineCache {
    pub fn new(capacity: usize) -> LineCache {
        LineCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached line for `key`, if some watcher rendered it recently.
    pub fn get(&self, key: &LineKey) -> Option<Bytes> {
        self.lock().lines.get(key).cloned()
    }

    /// Keeps `line` for `key` (the first rendering wins; they are equal anyway).
    pub fn put(&self, key: LineKey, line: Bytes) {
        let mut inner = self.lock();
        if inner.lines.contains_key(&key) {
            return;
        }
        while inner.order.len() >= self.capacity {
            match inner.order.pop_front() {
                Some(old) => {
                    inner.lines.remove(&old);
                }
                None => break,
            }
        }
        inner.order.push_back(key);
        inner.lines.insert(key, line);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().lines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(revision: u64) -> LineKey {
        LineKey {
            revision,
            kind: "ADDED",
            table: false,
        }
    }

    #[test]
    fn lines_are_found_by_revision_kind_and_form() {
        let cache = LineCache::new(8);
        cache.put(key(1), Bytes::from_static(b"one\n"));
        assert_eq!(cache.get(&key(1)).as_deref(), Some(&b"one\n"[..]));
        let deleted = LineKey {
            kind: "DELETED",
            ..key(1)
        };
        let table = LineKey {
            table: true,
            ..key(1)
        };
        assert!(cache.get(&deleted).is_none());
        assert!(cache.get(&table).is_none());
    }

    #[test]
    fn the_oldest_lines_leave_when_full() {
        let cache = LineCache::new(3);
        for r in 1..=5 {
            cache.put(key(r), Bytes::from(format!("{r}\n")));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key(2)).is_none());
        assert_eq!(cache.get(&key(5)).as_deref(), Some(&b"5\n"[..]));
        // A second put of a cached key changes nothing.
        cache.put(key(5), Bytes::from_static(b"other\n"));
        assert_eq!(cache.get(&key(5)).as_deref(), Some(&b"5\n"[..]));
    }
}
