//! Watchers of the embedded store: replay from the history table, then follow the
//! in-memory broadcast of committed events.
//!
//! Each watcher is one task feeding a bounded channel. It subscribes to the broadcast
//! before reading history, so no commit falls between the two; events it already sent are
//! skipped by revision. Revisions are contiguous (one event each), so a watcher that lags
//! behind the broadcast, or sees a gap, re-reads the missing events from history — it never
//! drops one. If they were compacted meanwhile, the stream ends with `Compacted`.

use std::sync::Arc;

use redb::Database;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::read;
use super::writer::EventBatch;
use crate::store::{StoreError, WatchEvent, WatchStream, in_prefix};

/// History events read per blocking read while replaying.
const REPLAY_CHUNK: usize = 1024;

/// What a watcher does after following the broadcast.
enum Next {
    Replay,
    Stop,
}

/// Starts a watcher of `prefix` after `from_revision`; `live` must be subscribed already.
pub(crate) fn spawn(
    db: Arc<Database>,
    prefix: String,
    from_revision: u64,
    live: broadcast::Receiver<EventBatch>,
    buffer: usize,
) -> WatchStream {
    let (tx, rx) = mpsc::channel(buffer);
    tokio::spawn(async move {
        let mut watcher = Watcher {
            db,
            prefix,
            last: from_revision,
            live,
            tx,
        };
        if let Err(error) = watcher.run().await {
            let _ = watcher.tx.send(Err(error)).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

struct Watcher {
    db: Arc<Database>,
    prefix: String,
    /// Every event up to this revision was sent (or did not match the prefix).
    last: u64,
    live: broadcast::Receiver<EventBatch>,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
}

impl Watcher {
    async fn run(&mut self) -> Result<(), StoreError> {
        loop {
            if !self.replay().await? {
                return Ok(());
            }
            match self.follow().await {
                Next::Replay => continue,
                Next::Stop => return Ok(()),
            }
        }
    }

    /// Sends history after `last` up to the current revision; false if the consumer left.
    async fn replay(&mut self) -> Result<bool, StoreError> {
        loop {
            let (db, prefix, after) = (self.db.clone(), self.prefix.clone(), self.last);
            let chunk = tokio::task::spawn_blocking(move || {
                read::history_after(&db, &prefix, after, REPLAY_CHUNK)
            })
            .await
            .map_err(|_| StoreError::Task { op: "watch replay" })??;
            for event in chunk.events {
                if self.tx.send(Ok(event)).await.is_err() {
                    return Ok(false);
                }
            }
            self.last = chunk.last;
            if chunk.caught_up {
                return Ok(true);
            }
        }
    }

    /// Sends live events until the watcher lags, sees a gap, or the consumer or store left.
    async fn follow(&mut self) -> Next {
        loop {
            let batch = tokio::select! {
                received = self.live.recv() => match received {
                    Ok(batch) => batch,
                    Err(RecvError::Lagged(_)) => return Next::Replay,
                    Err(RecvError::Closed) => return Next::Stop,
                },
                () = self.tx.closed() => return Next::Stop,
            };
            for event in batch.iter() {
                let revision = event.revision();
                if revision <= self.last {
                    continue;
                }
                if revision != self.last + 1 {
                    return Next::Replay;
                }
                self.last = revision;
                if in_prefix(event.key(), &self.prefix)
                    && self.tx.send(Ok(event.clone())).await.is_err()
                {
                    return Next::Stop;
                }
            }
        }
    }
}
