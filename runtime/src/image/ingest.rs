//! The one path by which images enter the store, shared by pull and import: store the manifest
//! and config, fetch the missing layer blobs in parallel (each checked against its digest),
//! unpack the missing layers in parallel (each checked against its diffID), then publish the
//! image record — last, so an interrupted ingest leaves no image that is not whole.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::try_join_all;
use tokio::sync::Semaphore;

use super::ImageError;
use super::digest::Digest;
use super::manifest::{Descriptor, ImageConfig, ImageManifest, check_layers};
use super::pull::RegistrySource;
use super::reference::Reference;
use super::store::{ImageRecord, ImageStore, LayerRecord, copy_into_blob};

/// What happens to a layer during an ingest, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerEvent {
    /// Blob and unpacked layer were already in the store.
    Cached,
    Fetching,
    /// This many more bytes of the blob arrived.
    Bytes(u64),
    Unpacking,
    Done,
}

/// Receives layer progress; the CLI draws bars from it.
pub trait Progress: Send + Sync {
    fn layer(&self, digest: &Digest, size: u64, event: LayerEvent);
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn layer(&self, _: &Digest, _: u64, _: LayerEvent) {}
}

/// What an ingest did.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub record: ImageRecord,
    /// Layer blob bytes transferred into the store (0 on a full cache hit).
    pub fetched_bytes: u64,
    pub fetched_layers: usize,
    pub unpacked_layers: usize,
}

/// A manifest and config that have been fetched and checked.
pub(crate) struct Resolved {
    pub manifest_digest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub manifest: ImageManifest,
    pub config_bytes: Vec<u8>,
    pub config: ImageConfig,
}

/// Where layer blobs come from.
pub(crate) enum BlobSource {
    Registry(RegistrySource),
    /// Blob files on local disk (an OCI layout or an unpacked archive), by digest.
    Files(HashMap<Digest, PathBuf>),
}

struct LayerOutcome {
    fetched_bytes: u64,
    fetched: bool,
    unpacked: bool,
}

/// What an ingest published, to undo if it fails.
#[derive(Default)]
struct Published {
    blobs: Vec<Digest>,
    layers: Vec<Digest>,
}

pub(crate) async fn ingest(
    store: &ImageStore,
    reference: &Reference,
    resolved: Resolved,
    source: BlobSource,
    progress: Arc<dyn Progress>,
    max_parallel_fetches: usize,
) -> Result<IngestReport, ImageError> {
    check_layers(&resolved.manifest, &resolved.config)?;
    let published = Arc::new(Mutex::new(Published::default()));
    let lock = store.lock_shared()?;
    store.remove_stale_temp()?;
    let source = Arc::new(source);
    let result = ingest_locked(
        store,
        reference,
        resolved,
        source,
        progress,
        max_parallel_fetches,
        &published,
    )
    .await;
    drop(lock);
    if result.is_err() {
        // Leave the store as it was: drop what this ingest added and nothing uses.
        let published = std::mem::take(&mut *lock_published(&published));
        store.remove_unreferenced(&published.blobs, &published.layers)?;
    }
    result
}

fn lock_published(published: &Mutex<Published>) -> std::sync::MutexGuard<'_, Published> {
    published.lock().unwrap_or_else(|e| e.into_inner())
}

async fn ingest_locked(
    store: &ImageStore,
    reference: &Reference,
    resolved: Resolved,
    source: Arc<BlobSource>,
    progress: Arc<dyn Progress>,
    max_parallel_fetches: usize,
    published: &Arc<Mutex<Published>>,
) -> Result<IngestReport, ImageError> {
    let fetches = Arc::new(Semaphore::new(max_parallel_fetches.max(1)));
    let unpacks = Arc::new(Semaphore::new(
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    ));
    let layers = resolved
        .manifest
        .layers
        .iter()
        .zip(&resolved.config.rootfs.diff_ids);
    let tasks = layers.map(|(layer, diff_id)| {
        let job = LayerJob {
            store: store.clone(),
            layer: layer.clone(),
            diff_id: diff_id.clone(),
            source: Arc::clone(&source),
            progress: Arc::clone(&progress),
            fetches: Arc::clone(&fetches),
            unpacks: Arc::clone(&unpacks),
            published: Arc::clone(published),
        };
        async move { job.run().await }
    });
    let outcomes = try_join_all(tasks).await?;

    // The documents that name the layers go in last, then the record that names them.
    let config_digest = resolved.manifest.config.digest.clone();
    for (digest, bytes) in [
        (&resolved.manifest_digest, &resolved.manifest_bytes),
        (&config_digest, &resolved.config_bytes),
    ] {
        if store.write_blob(digest, bytes)? {
            lock_published(published).blobs.push(digest.clone());
        }
    }
    let record = ImageRecord {
        reference: reference.to_string(),
        manifest_digest: resolved.manifest_digest,
        config_digest,
        layers: resolved
            .manifest
            .layers
            .iter()
            .zip(&resolved.config.rootfs.diff_ids)
            .map(|(l, diff_id)| LayerRecord {
                digest: l.digest.clone(),
                diff_id: diff_id.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
            })
            .collect(),
        stored_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    store.put_image(&record)?;
    Ok(IngestReport {
        record,
        fetched_bytes: outcomes.iter().map(|o| o.fetched_bytes).sum(),
        fetched_layers: outcomes.iter().filter(|o| o.fetched).count(),
        unpacked_layers: outcomes.iter().filter(|o| o.unpacked).count(),
    })
}

struct LayerJob {
    store: ImageStore,
    layer: Descriptor,
    diff_id: Digest,
    source: Arc<BlobSource>,
    progress: Arc<dyn Progress>,
    fetches: Arc<Semaphore>,
    unpacks: Arc<Semaphore>,
    published: Arc<Mutex<Published>>,
}

impl LayerJob {
    async fn run(self) -> Result<LayerOutcome, ImageError> {
        let digest = &self.layer.digest;
        let (have_blob, have_layer) = (
            self.store.has_blob(digest),
            self.store.has_layer(&self.diff_id),
        );
        if have_blob && have_layer {
            self.progress
                .layer(digest, self.layer.size, LayerEvent::Cached);
            return Ok(LayerOutcome {
                fetched_bytes: 0,
                fetched: false,
                unpacked: false,
            });
        }
        let mut fetched_bytes = 0;
        if !have_blob {
            let _permit = self
                .fetches
                .acquire()
                .await
                .map_err(|e| ImageError::Task(e.to_string()))?;
            self.progress
                .layer(digest, self.layer.size, LayerEvent::Fetching);
            fetched_bytes = self.fetch().await?;
            lock_published(&self.published).blobs.push(digest.clone());
        }
        let mut unpacked = false;
        if !have_layer {
            let _permit = self
                .unpacks
                .acquire()
                .await
                .map_err(|e| ImageError::Task(e.to_string()))?;
            self.progress
                .layer(digest, self.layer.size, LayerEvent::Unpacking);
            let (store, blob, diff_id) = (self.store.clone(), digest.clone(), self.diff_id.clone());
            unpacked = tokio::task::spawn_blocking(move || store.unpack_blob(&blob, &diff_id))
                .await
                .map_err(|e| ImageError::Task(format!("unpack task: {e}")))??;
            if unpacked {
                lock_published(&self.published)
                    .layers
                    .push(self.diff_id.clone());
            }
        }
        self.progress
            .layer(digest, self.layer.size, LayerEvent::Done);
        Ok(LayerOutcome {
            fetched_bytes,
            fetched: !have_blob,
            unpacked,
        })
    }

    async fn fetch(&self) -> Result<u64, ImageError> {
        match &*self.source {
            BlobSource::Registry(registry) => {
                registry
                    .fetch_blob(&self.store, &self.layer, self.progress.as_ref())
                    .await
            }
            BlobSource::Files(files) => {
                let path =
                    files
                        .get(&self.layer.digest)
                        .cloned()
                        .ok_or_else(|| ImageError::Manifest {
                            reason: format!("blob {} is missing", self.layer.digest),
                        })?;
                let (store, digest) = (self.store.clone(), self.layer.digest.clone());
                let progress = Arc::clone(&self.progress);
                let size = self.layer.size;
                tokio::task::spawn_blocking(move || {
                    let mut file = std::fs::File::open(&path)
                        .map_err(super::store::io_err(&path, "open blob"))?;
                    let n = copy_into_blob(&store, &digest, &mut file)?;
                    progress.layer(&digest, size, LayerEvent::Bytes(n));
                    Ok(n)
                })
                .await
                .map_err(|e| ImageError::Task(format!("copy task: {e}")))?
            }
        }
    }
}
