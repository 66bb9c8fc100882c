//! Importing images from disk: an OCI image layout directory, an OCI archive (a tar of a
//! layout), or a `docker save` archive. Archives are extracted with the same beneath-the-root
//! unpacker as layers, into the store's temp area, then read as directories.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::ImageError;
use super::digest::{Digest, HashingReader};
use super::ingest::{BlobSource, IngestReport, Progress, Resolved, ingest};
use super::manifest::{
    CONTAINERD_NAME_ANNOTATION, Descriptor, ImageConfig, ImageIndex, ImageManifest, Manifest,
    OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST, REF_NAME_ANNOTATION,
};
use super::reference::Reference;
use super::store::{ImageStore, io_err};
use super::unpack::{self, Compression};

/// Imports the image at `path` (a layout directory or an archive file). `name` overrides the
/// name the source carries; it is required when the source carries none.
pub async fn import(
    store: &ImageStore,
    path: &Path,
    name: Option<&Reference>,
    progress: Arc<dyn Progress>,
) -> Result<IngestReport, ImageError> {
    let meta = fs::metadata(path).map_err(io_err(path, "open"))?;
    let _extracted;
    let dir = if meta.is_dir() {
        path.to_path_buf()
    } else {
        _extracted = TempDir::extract(store, path)?;
        _extracted.0.clone()
    };
    let (reference, resolved, blobs) = if dir.join("index.json").is_file() {
        read_layout(&dir, path, name)?
    } else if dir.join("manifest.json").is_file() {
        read_docker_archive(&dir, path, name)?
    } else {
        return Err(import_err(
            path,
            "neither an OCI layout (index.json) nor a docker archive (manifest.json)",
        ));
    };
    ingest(
        store,
        &reference,
        resolved,
        BlobSource::Files(blobs),
        progress,
        4,
    )
    .await
}

type Source = (Reference, Resolved, HashMap<Digest, PathBuf>);

fn read_layout(dir: &Path, origin: &Path, name: Option<&Reference>) -> Result<Source, ImageError> {
    let index_path = dir.join("index.json");
    let index_bytes = fs::read(&index_path).map_err(io_err(&index_path, "read"))?;
    let index = match Manifest::parse(&index_bytes)? {
        Manifest::Index(index) => index,
        Manifest::Image(_) => return Err(import_err(origin, "index.json is not an image index")),
    };
    let entry = choose_entry(&index, origin, name)?;
    let reference = match name {
        Some(name) => name.clone(),
        None => name_from_annotations(&entry.annotations, origin)?,
    };
    let blob_path = |d: &Digest| dir.join("blobs/sha256").join(d.hex());
    let read_blob = |d: &Digest| -> Result<Vec<u8>, ImageError> {
        let path = blob_path(d);
        let bytes = fs::read(&path).map_err(io_err(&path, "read blob"))?;
        check(d, &bytes, "blob")?;
        Ok(bytes)
    };
    let mut manifest_digest = entry.digest.clone();
    let mut manifest_bytes = read_blob(&manifest_digest)?;
    let manifest = loop {
        match Manifest::parse(&manifest_bytes)? {
            Manifest::Image(m) => break m,
            Manifest::Index(nested) => {
                manifest_digest = nested.select("linux", "amd64")?.digest.clone();
                manifest_bytes = read_blob(&manifest_digest)?;
            }
        }
    };
    let config_bytes = read_blob(&manifest.config.digest)?;
    let config = ImageConfig::parse(&config_bytes)?;
    let blobs = manifest
        .layers
        .iter()
        .map(|l| (l.digest.clone(), blob_path(&l.digest)))
        .collect();
    let resolved = Resolved {
        manifest_digest,
        manifest_bytes,
        manifest,
        config_bytes,
        config,
    };
    Ok((reference, resolved, blobs))
}

fn choose_entry<'a>(
    index: &'a ImageIndex,
    origin: &Path,
    name: Option<&Reference>,
) -> Result<&'a Descriptor, ImageError> {
    match index.manifests.as_slice() {
        [] => Err(import_err(origin, "the layout holds no image")),
        [only] => Ok(only),
        many => {
            let wanted = name.and_then(|n| n.tag()).unwrap_or("latest");
            many.iter()
                .find(|d| {
                    d.annotations
                        .get(REF_NAME_ANNOTATION)
                        .is_some_and(|r| r == wanted || r.ends_with(&format!(":{wanted}")))
                })
                .ok_or_else(|| {
                    import_err(
                        origin,
                        &format!(
                            "the layout holds {} images and none is tagged {wanted:?}",
                            many.len()
                        ),
                    )
                })
        }
    }
}

fn name_from_annotations(
    annotations: &std::collections::BTreeMap<String, String>,
    origin: &Path,
) -> Result<Reference, ImageError> {
    if let Some(full) = annotations.get(CONTAINERD_NAME_ANNOTATION) {
        return Ok(Reference::parse(full)?);
    }
    match annotations.get(REF_NAME_ANNOTATION) {
        Some(r) if r.contains('/') || r.contains(':') => Ok(Reference::parse(r)?),
        Some(tag) => Err(import_err(
            origin,
            &format!("the layout names only the tag {tag:?}; pass --name"),
        )),
        None => Err(import_err(
            origin,
            "the layout does not name the image; pass --name",
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// `docker save`: a `manifest.json` naming a config file and layer tars. The result is turned
/// into an OCI manifest, with each layer's digest computed from its file.
fn read_docker_archive(
    dir: &Path,
    origin: &Path,
    name: Option<&Reference>,
) -> Result<Source, ImageError> {
    let path = dir.join("manifest.json");
    let bytes = fs::read(&path).map_err(io_err(&path, "read"))?;
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| import_err(origin, &format!("manifest.json: {e}")))?;
    let entry = entries
        .first()
        .ok_or_else(|| import_err(origin, "manifest.json lists no image"))?;
    let reference = match (name, entry.repo_tags.as_ref().and_then(|t| t.first())) {
        (Some(name), _) => name.clone(),
        (None, Some(tag)) => Reference::parse(tag)?,
        (None, None) => {
            return Err(import_err(
                origin,
                "the archive does not name the image; pass --name",
            ));
        }
    };
    let config_path = inside(dir, &entry.config, origin)?;
    let config_bytes = fs::read(&config_path).map_err(io_err(&config_path, "read config"))?;
    let config = ImageConfig::parse(&config_bytes)?;
    let mut blobs = HashMap::new();
    let mut layers = Vec::new();
    for layer in &entry.layers {
        let layer_path = inside(dir, layer, origin)?;
        let (digest, size, compression) = digest_file(&layer_path)?;
        let media_type = if compression == Compression::Gzip {
            OCI_LAYER_GZIP
        } else {
            OCI_LAYER_TAR
        };
        layers.push(Descriptor {
            media_type: media_type.into(),
            digest: digest.clone(),
            size,
            platform: None,
            annotations: Default::default(),
        });
        blobs.insert(digest, layer_path);
    }
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: Digest::of(&config_bytes),
            size: config_bytes.len() as u64,
            platform: None,
            annotations: Default::default(),
        },
        layers,
    };
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| import_err(origin, &e.to_string()))?;
    let resolved = Resolved {
        manifest_digest: Digest::of(&manifest_bytes),
        manifest_bytes,
        manifest,
        config_bytes,
        config,
    };
    Ok((reference, resolved, blobs))
}

/// A path named inside an archive, which must stay inside it.
fn inside(dir: &Path, name: &str, origin: &Path) -> Result<PathBuf, ImageError> {
    match unpack::entry::layer_path(Path::new(name)) {
        Ok(Some(rel)) => Ok(dir.join(rel.as_path())),
        _ => Err(import_err(
            origin,
            &format!("manifest.json names {name:?}, outside the archive"),
        )),
    }
}

fn digest_file(path: &Path) -> Result<(Digest, u64, Compression), ImageError> {
    use std::io::Read;
    let mut file = fs::File::open(path).map_err(io_err(path, "open layer"))?;
    let mut head = [0u8; 4];
    let n = file.read(&mut head).map_err(io_err(path, "read layer"))?;
    let compression = Compression::sniff(&head[..n]);
    let file = fs::File::open(path).map_err(io_err(path, "open layer"))?;
    let (digest, size) = HashingReader::new(file)
        .finish()
        .map_err(io_err(path, "read layer"))?;
    Ok((digest, size, compression))
}

fn check(expected: &Digest, bytes: &[u8], what: &'static str) -> Result<(), ImageError> {
    let actual = Digest::of(bytes);
    if actual == *expected {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            what,
            expected: expected.clone(),
            actual,
        })
    }
}

fn import_err(path: &Path, reason: &str) -> ImageError {
    ImageError::Import {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// An archive extracted into the store's temp area; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn extract(store: &ImageStore, archive: &Path) -> Result<TempDir, ImageError> {
        let nonce: u64 = rand::random();
        let dir = TempDir(
            store
                .root()
                .join("tmp")
                .join(format!("import-{}-{nonce:016x}", std::process::id())),
        );
        fs::create_dir(&dir.0).map_err(io_err(&dir.0, "create"))?;
        let file = fs::File::open(archive).map_err(io_err(archive, "open"))?;
        unpack::unpack_layer(file, &dir.0).map_err(|e| import_err(archive, &e.to_string()))?;
        Ok(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
