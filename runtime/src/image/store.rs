//! The content store on disk: verified blobs by digest, layers unpacked once by diffID, and image
//! records by reference. Every write goes to a temporary name under `tmp/` and is renamed into
//! place, so a killed pull leaves nothing half-visible.
//!
//! ```text
//! ROOT/lock                        flock: shared while ingesting, exclusive for GC
//! ROOT/blobs/sha256/<hex>          manifests, configs, layer blobs
//! ROOT/layers/sha256/<hex>/        an unpacked layer (an overlayfs lowerdir), named by diffID
//! ROOT/images/<sha256 of ref>.json an image record
//! ROOT/tmp/                        work in progress
//! ```

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use super::ImageError;
use super::digest::{Digest, HashingWriter};
use super::reference::Reference;
use super::unpack;

/// An image the store holds: what `skiff image ls` lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub reference: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub layers: Vec<LayerRecord>,
    /// Seconds since the epoch when the image was stored.
    pub stored_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: Digest,
    pub diff_id: Digest,
    pub media_type: String,
    pub size: u64,
}

impl ImageRecord {
    /// The image ID, as Docker and containerd show it: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config_digest
    }

    /// Compressed size of the layers.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// What a GC removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs: usize,
    pub layers: usize,
    pub temp: usize,
}

/// A problem `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub what: String,
}

#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// A held store lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<ImageStore, ImageError> {
        let store = ImageStore { root: root.into() };
        for dir in ["blobs/sha256", "layers/sha256", "images", "tmp"] {
            let path = store.root.join(dir);
            fs::create_dir_all(&path).map_err(io_err(&path, "create store directory"))?;
        }
        drop(store.lock_shared()?); // creates the lock file, so reads change nothing later
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Held while adding content, so GC never deletes what an ingest has not yet recorded.
    pub fn lock_shared(&self) -> Result<StoreLock, ImageError> {
        self.lock(FlockOperation::LockShared)
    }

    pub fn lock_exclusive(&self) -> Result<StoreLock, ImageError> {
        self.lock(FlockOperation::LockExclusive)
    }

    fn lock(&self, op: FlockOperation) -> Result<StoreLock, ImageError> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path, "open lock"))?;
        rustix::fs::flock(&file, op).map_err(|e| io_err(&path, "lock")(e.into()))?;
        Ok(StoreLock { _file: file })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers/sha256").join(diff_id.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).is_dir()
    }

    /// Reads a (small) blob and checks it against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(io_err(&path, "read blob"))?;
        verify(digest, &Digest::of(&bytes), "blob")?;
        Ok(bytes)
    }

    /// Stores a blob held in memory after checking its digest; `true` if it was new.
    pub fn write_blob(&self, expected: &Digest, bytes: &[u8]) -> Result<bool, ImageError> {
        if self.has_blob(expected) {
            return Ok(false);
        }
        let mut writer = self.blob_writer(expected)?;
        writer
            .write_all(bytes)
            .map_err(io_err(&writer.tmp, "write blob"))?;
        writer.commit()?;
        Ok(true)
    }

    /// A writer for a blob that arrives in pieces; `commit` checks the digest and publishes it.
    pub fn blob_writer(&self, expected: &Digest) -> Result<BlobWriter, ImageError> {
        let tmp = self.temp_path("blob");
        let file = File::create(&tmp).map_err(io_err(&tmp, "create temp blob"))?;
        Ok(BlobWriter {
            inner: HashingWriter::new(io::BufWriter::with_capacity(256 * 1024, file)),
            published: false,
            tmp,
            dest: self.blob_path(expected),
            expected: expected.clone(),
        })
    }

    /// Unpacks a stored layer blob into `layers/<diffID>`, checking the diffID; a no-op when the
    /// layer is already there.
    pub fn unpack_blob(&self, blob: &Digest, diff_id: &Digest) -> Result<bool, ImageError> {
        let dest = self.layer_path(diff_id);
        if dest.is_dir() {
            return Ok(false);
        }
        let tmp = self.temp_path("layer");
        fs::create_dir(&tmp).map_err(io_err(&tmp, "create temp layer"))?;
        let result = self.unpack_into(blob, diff_id, &tmp);
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match fs::rename(&tmp, &dest) {
            Ok(()) => Ok(true),
            // Another pull unpacked the same layer first: keep theirs.
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(false)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                Err(io_err(&dest, "publish layer")(e))
            }
        }
    }

    fn unpack_into(&self, blob: &Digest, diff_id: &Digest, tmp: &Path) -> Result<(), ImageError> {
        let path = self.blob_path(blob);
        let file = File::open(&path).map_err(io_err(&path, "open layer blob"))?;
        let unpacked = unpack::unpack_layer(file, tmp).map_err(|source| ImageError::Unpack {
            layer: blob.clone(),
            source,
        })?;
        verify(diff_id, &unpacked.diff_id, "layer diffID")
    }

    pub fn put_image(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| ImageError::Record {
            path: self.record_path(&record.reference),
            reason: e.to_string(),
        })?;
        let dest = self.record_path(&record.reference);
        let tmp = self.temp_path("record");
        write_synced(&tmp, &bytes)?;
        fs::rename(&tmp, &dest).map_err(io_err(&dest, "publish image record"))
    }

    pub fn get_image(&self, reference: &Reference) -> Result<Option<ImageRecord>, ImageError> {
        let path = self.record_path(&reference.to_string());
        match fs::read(&path) {
            Ok(bytes) => parse_record(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, "read image record")(e)),
        }
    }

    /// All image records, sorted by reference.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let dir = self.root.join("images");
        let mut records = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir, "list images"))? {
            let path = entry.map_err(io_err(&dir, "list images"))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = fs::read(&path).map_err(io_err(&path, "read image record"))?;
                records.push(parse_record(&path, &bytes)?);
            }
        }
        records.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(records)
    }

    /// Forgets an image; its content goes at the next `gc`.
    pub fn remove_image(&self, reference: &Reference) -> Result<bool, ImageError> {
        let path = self.record_path(&reference.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path, "remove image record")(e)),
        }
    }

    /// Removes blobs and layers no image record uses, and leftovers of killed writes. Takes the
    /// exclusive lock, so it waits for ingests in progress.
    pub fn gc(&self) -> Result<GcReport, ImageError> {
        let _lock = self.lock_exclusive()?;
        let (keep_blobs, keep_layers) = self.referenced()?;
        Ok(GcReport {
            blobs: self.sweep(&self.root.join("blobs/sha256"), &keep_blobs)?,
            layers: self.sweep(&self.root.join("layers/sha256"), &keep_layers)?,
            temp: self.sweep(&self.root.join("tmp"), &HashSet::new())?,
        })
    }

    /// Undoes a failed ingest: removes the blobs and layers it published that no image record
    /// uses. Takes the exclusive lock, so an ingest that found them cached has recorded its
    /// image first.
    pub fn remove_unreferenced(
        &self,
        blobs: &[Digest],
        layers: &[Digest],
    ) -> Result<(), ImageError> {
        let _lock = self.lock_exclusive()?;
        let (keep_blobs, keep_layers) = self.referenced()?;
        for blob in blobs.iter().filter(|b| !keep_blobs.contains(b.hex())) {
            let path = self.blob_path(blob);
            fs::remove_file(&path)
                .or_else(ignore_missing)
                .map_err(io_err(&path, "remove"))?;
        }
        for layer in layers.iter().filter(|l| !keep_layers.contains(l.hex())) {
            let path = self.layer_path(layer);
            fs::remove_dir_all(&path)
                .or_else(ignore_missing)
                .map_err(io_err(&path, "remove"))?;
        }
        Ok(())
    }

    /// The blob and layer names (hex) that image records use.
    fn referenced(&self) -> Result<(HashSet<String>, HashSet<String>), ImageError> {
        let mut blobs = HashSet::new();
        let mut layers = HashSet::new();
        for record in self.list_images()? {
            blobs.insert(record.manifest_digest.hex().to_string());
            blobs.insert(record.config_digest.hex().to_string());
            for layer in &record.layers {
                blobs.insert(layer.digest.hex().to_string());
                layers.insert(layer.diff_id.hex().to_string());
            }
        }
        Ok((blobs, layers))
    }

    fn sweep(&self, dir: &Path, keep: &HashSet<String>) -> Result<usize, ImageError> {
        let mut removed = 0;
        for entry in fs::read_dir(dir).map_err(io_err(dir, "list"))? {
            let entry = entry.map_err(io_err(dir, "list"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            let path = entry.path();
            let is_dir = entry.file_type().map_err(io_err(&path, "stat"))?.is_dir();
            let result = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            result.map_err(io_err(&path, "remove"))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes what killed writers left in `tmp/` (their process is gone); work of live
    /// processes is left alone.
    pub fn remove_stale_temp(&self) -> Result<usize, ImageError> {
        let dir = self.root.join("tmp");
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(io_err(&dir, "list"))? {
            let entry = entry.map_err(io_err(&dir, "list"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| Path::new("/proc").join(pid.to_string()).exists()) {
                continue;
            }
            let path = entry.path();
            let result = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            result.map_err(io_err(&path, "remove stale temp"))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Verifies every recorded image: blobs present and matching their digests, layers present.
    pub fn check(&self) -> Result<Vec<Problem>, ImageError> {
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for record in self.list_images()? {
            let mut blobs = vec![record.manifest_digest.clone(), record.config_digest.clone()];
            blobs.extend(record.layers.iter().map(|l| l.digest.clone()));
            for blob in blobs {
                if seen.insert(blob.clone()) {
                    let path = self.blob_path(&blob);
                    match digest_file(&path) {
                        Ok(actual) if actual == blob => {}
                        Ok(actual) => problems.push(Problem {
                            path,
                            what: format!("digest is {actual}"),
                        }),
                        Err(e) => problems.push(Problem {
                            path,
                            what: e.to_string(),
                        }),
                    }
                }
            }
            for layer in &record.layers {
                let path = self.layer_path(&layer.diff_id);
                if !path.is_dir() {
                    problems.push(Problem {
                        path,
                        what: format!("layer of {} missing", record.reference),
                    });
                }
            }
        }
        Ok(problems)
    }

    /// The layer directories of an image, lowest first (overlayfs wants them reversed).
    pub fn layer_dirs(&self, record: &ImageRecord) -> Vec<PathBuf> {
        record
            .layers
            .iter()
            .map(|l| self.layer_path(&l.diff_id))
            .collect()
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", Digest::of(reference.as_bytes()).hex()))
    }

    fn temp_path(&self, kind: &str) -> PathBuf {
        let nonce: u64 = rand::random();
        self.root
            .join("tmp")
            .join(format!("{kind}-{}-{nonce:016x}", std::process::id()))
    }
}

/// A blob being written; nothing is visible under `blobs/` until `commit` has checked it.
pub struct BlobWriter {
    inner: HashingWriter<io::BufWriter<File>>,
    published: bool,
    tmp: PathBuf,
    dest: PathBuf,
    expected: Digest,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.inner.written()
    }

    /// Checks the digest, syncs and renames the blob into place; on a mismatch the temp file is
    /// removed and the store is unchanged.
    pub fn commit(mut self) -> Result<(), ImageError> {
        self.inner
            .flush()
            .map_err(io_err(&self.tmp, "flush blob"))?;
        let actual = self.inner.digest();
        verify(&self.expected, &actual, "blob")?;
        self.inner
            .get_ref()
            .get_ref()
            .sync_all()
            .map_err(io_err(&self.tmp, "sync blob"))?;
        fs::rename(&self.tmp, &self.dest).map_err(io_err(&self.dest, "publish blob"))?;
        self.published = true;
        Ok(())
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // An abandoned or refused blob leaves no temp file behind.
        if !self.published {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

fn verify(expected: &Digest, actual: &Digest, what: &'static str) -> Result<(), ImageError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            what,
            expected: expected.clone(),
            actual: actual.clone(),
        })
    }
}

fn digest_file(path: &Path) -> io::Result<Digest> {
    let mut reader = super::digest::HashingReader::new(File::open(path)?);
    io::copy(&mut reader, &mut io::sink())?;
    reader.finish().map(|(d, _)| d)
}

fn parse_record(path: &Path, bytes: &[u8]) -> Result<ImageRecord, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Record {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut file = File::create(path).map_err(io_err(path, "create"))?;
    file.write_all(bytes).map_err(io_err(path, "write"))?;
    file.sync_all().map_err(io_err(path, "sync"))
}

pub(crate) fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { path, op, source }
}

/// Reads all of `reader` into the store as a blob with the given digest.
pub(crate) fn copy_into_blob(
    store: &ImageStore,
    expected: &Digest,
    reader: &mut impl Read,
) -> Result<u64, ImageError> {
    let mut writer = store.blob_writer(expected)?;
    let n = io::copy(reader, &mut writer).map_err(io_err(&writer.tmp, "write blob"))?;
    writer.commit()?;
    Ok(n)
}
