//! The embedded store (the default): one redb file in the data dir, durable on every
//! acknowledged write, with group commit and an in-memory watch fan-out.
//!
//! `writer` owns all writes (group commit on one thread), `read` serves gets and lists from
//! read snapshots, `watch` replays history then follows the broadcast of commits.

mod codec;
mod read;
mod schema;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::Database;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{Kv, ListOptions, ListResult, Store, StoreError, WatchStream};
use writer::{EventBatch, Outcome, WriteOp, WriteRequest, Writer};

/// Name of the database file inside the data dir.
pub const FILE_NAME: &str = "store.redb";
/// Writes queued for the writer before callers wait.
const WRITE_QUEUE: usize = 8192;

/// Tuning of the embedded store's in-memory buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Group commits kept in the broadcast to watchers; a watcher further behind re-reads
    /// the history table instead.
    pub event_buffer: usize,
    /// Events buffered per watcher for its consumer.
    pub watch_buffer: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            event_buffer: 4096,
            watch_buffer: 1024,
        }
    }
}

/// The embedded, single-process store.
pub struct EmbeddedStore {
    db: Arc<Database>,
    writes: mpsc::Sender<WriteRequest>,
    events: broadcast::Sender<EventBatch>,
    options: EmbeddedOptions,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir`, recovering it after a crash if needed.
    /// Starts the writer thread; call from a context that may block briefly.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, EmbeddedOptions::default())
    }

    /// `open` with explicit buffer sizes (each at least 1).
    pub fn open_with(data_dir: &Path, options: EmbeddedOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source: Arc::new(source),
        })?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(StoreError::embedded("open database"))?;
        schema::create_tables(&db)?;
        let db = Arc::new(db);
        let (writes, requests) = mpsc::channel(WRITE_QUEUE);
        let (events, _) = broadcast::channel(options.event_buffer.max(1));
        let writer = Writer {
            db: db.clone(),
            requests,
            events: events.clone(),
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::DataDir {
                path: path.clone(),
                source: Arc::new(source),
            })?;
        Ok(EmbeddedStore {
            db,
            writes,
            events,
            options,
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write(&self, op: WriteOp) -> Outcome {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteRequest { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn write_kv(&self, op: WriteOp) -> Result<Kv, StoreError> {
        self.write(op).await?.ok_or(StoreError::Closed)
    }

    /// Runs a read on the blocking pool.
    async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|_| StoreError::Task { op })?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Kv>, StoreError> {
        let key = key.to_owned();
        self.read("get", move |db| read::get(db, &key)).await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
        let prefix = prefix.to_owned();
        self.read("list", move |db| read::list(db, &prefix, &options))
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Kv, StoreError> {
        let key = key.to_owned();
        self.write_kv(WriteOp::Create { key, value }).await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> Result<Kv, StoreError> {
        let key = key.to_owned();
        self.write_kv(WriteOp::Update {
            key,
            value,
            expected,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<u64>) -> Result<Kv, StoreError> {
        let key = key.to_owned();
        self.write_kv(WriteOp::Delete { key, expected }).await
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<WatchStream, StoreError> {
        // Subscribe before checking, so no commit slips between the check and the replay.
        let live = self.events.subscribe();
        let compacted = self.read("watch", read::compacted_revision).await?;
        if from_revision < compacted {
            return Err(StoreError::Compacted {
                requested: from_revision,
                compacted,
            });
        }
        Ok(watch::spawn(
            self.db.clone(),
            prefix.to_owned(),
            from_revision,
            live,
            self.options.watch_buffer.max(1),
        ))
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.write(WriteOp::Compact { revision }).await.map(|_| ())
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        self.read("current revision", read::current_revision).await
    }
}
