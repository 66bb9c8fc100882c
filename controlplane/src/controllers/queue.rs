//! A deduplicating work queue of object keys, as client-go's: a key queued twice is
//! processed once; a key added while a worker holds it is processed again after `done`;
//! failures come back with exponential backoff; delayed adds for time-based requeues.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
struct State {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    processing: HashSet<String>,
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
    shut: bool,
}

/// The queue; clones share it.
#[derive(Clone, Default)]
pub struct Queue {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
}

/// The first retry delay; it doubles per failure up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Queue {
    /// An empty queue.
    pub fn new() -> Queue {
        Queue::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.lock();
        if s.shut {
            return;
        }
        if s.processing.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.ready.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay` (from a tokio task; needs a runtime).
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            return self.add(key);
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Requeues a key whose processing failed, later each time it fails again.
    pub fn retry(&self, key: &str) {
        let failures = {
            let mut s = self.lock();
            let n = s.failures.entry(key.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        self.add_after(key, backoff(failures));
    }

    /// Forgets a key's failures (after it succeeded).
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// The next key to process; `None` once the queue is shut down.
    pub async fn next(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.lock();
                if s.shut {
                    return None;
                }
                if let Some(key) = s.ready.pop_front() {
                    s.queued.remove(&key);
                    s.processing.insert(key.clone());
                    let more = !s.ready.is_empty();
                    drop(s);
                    if more {
                        // Wake the next idle worker for the rest.
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &str) {
        let again = {
            let mut s = self.lock();
            s.processing.remove(key);
            s.dirty.remove(key)
        };
        if again {
            self.add(key);
        }
    }

    /// Wakes every worker with `None`.
    pub fn shut_down(&self) {
        self.lock().shut = true;
        self.notify.notify_waiters();
    }

    /// How many keys wait (not counting those being processed).
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    /// Whether no key waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The delay before retry number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    BASE_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn duplicates_collapse_and_order_is_kept() {
        let q = Queue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(q.next().await.as_deref(), Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_processing_comes_back_after_done() {
        let q = Queue::new();
        q.add("a");
        let key = q.next().await.unwrap();
        q.add("a");
        assert!(
            q.is_empty(),
            "not handed to a second worker at the same time"
        );
        q.done(&key);
        assert_eq!(q.next().await.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_adds_and_retries_arrive_later() {
        let q = Queue::new();
        q.add_after("late", Duration::from_secs(5));
        tokio::task::yield_now().await;
        assert!(q.is_empty());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(q.next().await.as_deref(), Some("late"));
        q.done("late");
        q.retry("late");
        tokio::time::sleep(Duration::from_millis(6)).await;
        assert_eq!(q.next().await.as_deref(), Some("late"));
    }

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn shut_down_releases_waiting_workers() {
        let q = Queue::new();
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
