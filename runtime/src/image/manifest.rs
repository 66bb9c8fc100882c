//! OCI and Docker schema-2 manifests, image indexes and image configs: parsing, and choosing the
//! linux/amd64 entry of an index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ImageError;
use super::digest::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest media types a pull accepts, in the `Accept` header.
pub const ACCEPTED: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// The annotation an OCI layout uses to name an image.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation with the full image name, written by `ctr export` and others.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A manifest document: an image, or an index of images.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
}

impl Manifest {
    /// Parses a manifest or index, told apart by `mediaType` (or, when absent, by shape).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ImageError> {
        let bad = |reason: String| ImageError::Manifest { reason };
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not a JSON manifest: {e}")))?;
        if probe.schema_version != Some(2) {
            return Err(bad(format!(
                "schemaVersion {:?} is not supported (only 2: OCI or Docker schema 2)",
                probe.schema_version
            )));
        }
        let is_index = match probe.media_type.as_deref() {
            Some(OCI_INDEX | DOCKER_LIST) => true,
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
            Some(other) => return Err(bad(format!("unsupported manifest media type {other:?}"))),
            None => probe.manifests.is_some() && probe.layers.is_none(),
        };
        if is_index {
            serde_json::from_slice(bytes)
                .map(Manifest::Index)
                .map_err(|e| bad(format!("index: {e}")))
        } else {
            serde_json::from_slice(bytes)
                .map(Manifest::Image)
                .map_err(|e| bad(format!("manifest: {e}")))
        }
    }
}

impl ImageIndex {
    /// The entry for `os/architecture`, as containerd chooses (variant ignored for amd64).
    pub fn select(&self, os: &str, architecture: &str) -> Result<&Descriptor, ImageError> {
        self.manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == os && p.architecture == architecture)
            })
            .ok_or_else(|| {
                let available: Vec<String> = self
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(|p| format!("{}/{}", p.os, p.architecture))
                    .collect();
                ImageError::Platform {
                    wanted: format!("{os}/{architecture}"),
                    available,
                }
            })
    }
}

/// The parts of an image config skiff reads: platform, process defaults and the diffIDs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ProcessConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, ImageError> {
        serde_json::from_slice(bytes).map_err(|e| ImageError::Manifest {
            reason: format!("image config: {e}"),
        })
    }
}

/// Checks that a manifest and its config agree (one diffID per layer).
pub fn check_layers(manifest: &ImageManifest, config: &ImageConfig) -> Result<(), ImageError> {
    if manifest.layers.len() != config.rootfs.diff_ids.len() {
        return Err(ImageError::Manifest {
            reason: format!(
                "manifest has {} layers but the config lists {} diff_ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn index_json() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":1,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":2,"platform":{{"architecture":"amd64","os":"windows"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":3,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d(1),
            d(2),
            d(3)
        )
    }

    #[test]
    fn selects_linux_amd64_from_an_index() {
        let Manifest::Index(index) = Manifest::parse(index_json().as_bytes()).unwrap() else {
            panic!("expected an index");
        };
        assert_eq!(
            index.select("linux", "amd64").unwrap().digest.to_string(),
            d(3)
        );
        let err = index.select("linux", "s390x").unwrap_err().to_string();
        assert!(
            err.contains("linux/arm64") && err.contains("windows/amd64"),
            "{err}"
        );
    }

    #[test]
    fn parses_oci_and_docker_manifests() {
        for media_type in [
            format!(r#""mediaType":"{OCI_MANIFEST}","#),
            String::new(),
            format!(r#""mediaType":"{DOCKER_MANIFEST}","#),
        ] {
            let json = format!(
                r#"{{"schemaVersion":2,{media_type}"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":10}},
                "layers":[{{"mediaType":"{OCI_LAYER_GZIP}","digest":"{}","size":20}}]}}"#,
                d(4),
                d(5)
            );
            let Manifest::Image(m) = Manifest::parse(json.as_bytes()).unwrap() else {
                panic!("expected an image manifest for {media_type}");
            };
            assert_eq!(m.layers[0].digest.to_string(), d(5));
        }
        let oci_index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}","size":1}}]}}"#,
            d(6)
        );
        assert!(matches!(
            Manifest::parse(oci_index.as_bytes()).unwrap(),
            Manifest::Index(_)
        ));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let schema1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(
            Manifest::parse(schema1)
                .unwrap_err()
                .to_string()
                .contains("schemaVersion")
        );
        let other = br#"{"schemaVersion":2,"mediaType":"text/plain"}"#;
        assert!(
            Manifest::parse(other)
                .unwrap_err()
                .to_string()
                .contains("text/plain")
        );
        assert!(Manifest::parse(b"nope").is_err());
        let bad_digest =
            br#"{"schemaVersion":2,"config":{"digest":"sha256:12","size":1},"layers":[]}"#;
        assert!(Manifest::parse(bad_digest).is_err());
    }

    #[test]
    fn config_must_match_layers() {
        let config: ImageConfig = serde_json::from_str(&format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"],"Env":["A=1"]}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            d(7)
        ))
        .unwrap();
        assert_eq!(
            config.config.as_ref().unwrap().cmd,
            Some(vec!["sh".to_string()])
        );
        let manifest: ImageManifest = serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":1}},"layers":[]}}"#,
            d(8)
        ))
        .unwrap();
        assert!(check_layers(&manifest, &config).is_err());
    }
}
