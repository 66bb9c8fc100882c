//! Pulling from an OCI distribution registry with `oci-client`: resolve the tag to a manifest
//! (choosing linux/amd64 from an index), check every document against its digest, then hand
//! the layers to `ingest`.

use std::path::PathBuf;
use std::sync::{Arc, Once};

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;

use super::ImageError;
use super::auth::AuthFile;
use super::digest::Digest;
use super::ingest::{BlobSource, IngestReport, LayerEvent, Progress, Resolved, ingest};
use super::manifest::{ACCEPTED, Descriptor, ImageConfig, Manifest};
use super::reference::Reference;
use super::store::{ImageStore, io_err};

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Registries (`host` or `host:port`) spoken to over plain HTTP. Loopback always is.
    pub insecure_registries: Vec<String>,
    /// A docker-style auth file; `None` means anonymous.
    pub auth_file: Option<PathBuf>,
    pub max_parallel_fetches: usize,
    pub os: String,
    pub architecture: String,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            insecure_registries: Vec::new(),
            auth_file: AuthFile::default_path(),
            max_parallel_fetches: 4,
            os: "linux".into(),
            architecture: "amd64".into(),
        }
    }
}

impl PullOptions {
    /// Plain HTTP only for loopback and the registries the user listed.
    pub fn is_insecure(&self, reference: &Reference) -> bool {
        let host = reference.registry_host();
        matches!(host, "localhost" | "127.0.0.1" | "::1")
            || self
                .insecure_registries
                .iter()
                .any(|r| r == reference.registry() || r == host)
    }
}

/// Pulls `reference` into the store and returns what was transferred.
pub async fn pull(
    store: &ImageStore,
    reference: &Reference,
    options: &PullOptions,
    progress: Arc<dyn Progress>,
) -> Result<IngestReport, ImageError> {
    let registry = RegistrySource::connect(reference, options)?;
    let resolved = registry.resolve(options).await?;
    let max = options.max_parallel_fetches;
    ingest(
        store,
        reference,
        resolved,
        BlobSource::Registry(registry),
        progress,
        max,
    )
    .await
}

/// One registry repository, with the credentials to read it.
pub(crate) struct RegistrySource {
    client: oci_client::Client,
    image: oci_client::Reference,
    auth: RegistryAuth,
    registry: String,
}

impl RegistrySource {
    fn connect(reference: &Reference, options: &PullOptions) -> Result<RegistrySource, ImageError> {
        static CRYPTO: Once = Once::new();
        CRYPTO.call_once(|| {
            // Another part of the process may have installed one already; either is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let protocol = if options.is_insecure(reference) {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        };
        let client = oci_client::Client::new(ClientConfig {
            protocol,
            platform_resolver: None,
            ..Default::default()
        });
        let auth = match &options.auth_file {
            Some(path) => match AuthFile::load(path)?.lookup(reference.registry()) {
                Some((user, pass)) => RegistryAuth::Basic(user.into(), pass.into()),
                None => RegistryAuth::Anonymous,
            },
            None => RegistryAuth::Anonymous,
        };
        let image = match (reference.tag(), reference.digest()) {
            (_, Some(digest)) => oci_client::Reference::with_digest(
                reference.registry().into(),
                reference.repository().into(),
                digest.to_string(),
            ),
            (tag, None) => oci_client::Reference::with_tag(
                reference.registry().into(),
                reference.repository().into(),
                tag.unwrap_or("latest").into(),
            ),
        };
        Ok(RegistrySource {
            client,
            image,
            auth,
            registry: reference.registry().into(),
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> ImageError {
        ImageError::Registry {
            registry: self.registry.clone(),
            message: e.to_string(),
        }
    }

    /// Fetches one manifest document and checks it against `expected` when it is known.
    async fn fetch_manifest(
        &self,
        image: &oci_client::Reference,
        expected: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest), ImageError> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(image, &self.auth, ACCEPTED)
            .await
            .map_err(|e| self.error(format!("manifest for {}: {e}", image.whole())))?;
        let actual = Digest::of(&bytes);
        if let Some(expected) = expected.filter(|e| **e != actual) {
            return Err(ImageError::DigestMismatch {
                what: "manifest",
                expected: expected.clone(),
                actual,
            });
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Resolves the reference to one image manifest and its config.
    async fn resolve(&self, options: &PullOptions) -> Result<Resolved, ImageError> {
        let pinned = self
            .image
            .digest()
            .map(str::parse::<Digest>)
            .transpose()
            .map_err(|e| self.error(e))?;
        let (mut bytes, mut digest) = self.fetch_manifest(&self.image, pinned.as_ref()).await?;
        let manifest = match Manifest::parse(&bytes)? {
            Manifest::Image(m) => m,
            Manifest::Index(index) => {
                let chosen = index
                    .select(&options.os, &options.architecture)?
                    .digest
                    .clone();
                let image = self.image.clone_with_digest(chosen.to_string());
                (bytes, digest) = self.fetch_manifest(&image, Some(&chosen)).await?;
                match Manifest::parse(&bytes)? {
                    Manifest::Image(m) => m,
                    Manifest::Index(_) => {
                        return Err(ImageError::Manifest {
                            reason: "an index inside an index".into(),
                        });
                    }
                }
            }
        };
        let config_bytes = self.fetch_small_blob(&manifest.config).await?;
        let config = ImageConfig::parse(&config_bytes)?;
        Ok(Resolved {
            manifest_digest: digest,
            manifest_bytes: bytes,
            manifest,
            config_bytes,
            config,
        })
    }

    async fn fetch_small_blob(&self, descriptor: &Descriptor) -> Result<Vec<u8>, ImageError> {
        let mut bytes =
            Vec::with_capacity(usize::try_from(descriptor.size).unwrap_or(0).min(1 << 20));
        self.client
            .pull_blob(&self.image, &oci_descriptor(descriptor), &mut bytes)
            .await
            .map_err(|e| self.error(format!("blob {}: {e}", descriptor.digest)))?;
        let actual = Digest::of(&bytes);
        if actual != descriptor.digest {
            return Err(ImageError::DigestMismatch {
                what: "config",
                expected: descriptor.digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Streams a layer blob into the store; the store checks the digest before publishing it.
    pub(crate) async fn fetch_blob(
        &self,
        store: &ImageStore,
        descriptor: &Descriptor,
        progress: &dyn Progress,
    ) -> Result<u64, ImageError> {
        use std::io::Write;
        let mut stream = self
            .client
            .pull_blob_stream(&self.image, &oci_descriptor(descriptor))
            .await
            .map_err(|e| self.error(format!("blob {}: {e}", descriptor.digest)))?;
        let mut writer = store.blob_writer(&descriptor.digest)?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| match mismatch_in(&e.to_string()) {
                Some(actual) => ImageError::DigestMismatch {
                    what: "blob",
                    expected: descriptor.digest.clone(),
                    actual,
                },
                None => self.error(format!("blob {}: {e}", descriptor.digest)),
            })?;
            writer
                .write_all(&chunk)
                .map_err(io_err(store.root(), "write blob"))?;
            progress.layer(
                &descriptor.digest,
                descriptor.size,
                LayerEvent::Bytes(chunk.len() as u64),
            );
        }
        let written = writer.written();
        writer.commit()?;
        Ok(written)
    }
}

/// oci-client checks streamed blobs too, and reports a mismatch as text
/// ("Invalid digest. Expected sha256:…, got sha256:…"): recover the digest it computed.
fn mismatch_in(message: &str) -> Option<Digest> {
    let (_, rest) = message.split_once("Invalid digest")?;
    rest.rsplit_once("got ")?.1.trim().parse().ok()
}

fn oci_descriptor(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: i64::try_from(d.size).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_the_digest_oci_client_computed() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let msg = format!(
            "Invalid digest. Expected sha256:{}, got {d}",
            "cd".repeat(32)
        );
        assert_eq!(mismatch_in(&msg).map(|d| d.to_string()), Some(d));
        assert_eq!(mismatch_in("connection reset"), None);
    }

    #[test]
    fn loopback_and_listed_registries_are_insecure() {
        let opts = PullOptions {
            insecure_registries: vec!["reg.lan:5000".into(), "other.lan".into()],
            auth_file: None,
            ..Default::default()
        };
        let insecure = |r: &str| opts.is_insecure(&Reference::parse(r).unwrap());
        assert!(insecure("localhost:5000/a"));
        assert!(insecure("127.0.0.1:5000/a"));
        assert!(insecure("[::1]:5000/a"));
        assert!(insecure("reg.lan:5000/a"));
        assert!(insecure("other.lan:1234/a"));
        assert!(!insecure("reg.lan:5001/a"));
        assert!(!insecure("busybox"));
        assert!(!insecure("quay.io/a/b"));
    }
}
