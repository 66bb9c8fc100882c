//! The node's image store as the planner's [`ImageSource`]: a reference resolves to the
//! image's unpacked layers, its process config and its /etc/passwd and /etc/group.

use std::path::PathBuf;

use skiff_runtime::image::manifest::ImageConfig;
use skiff_runtime::image::{ImageStore, Reference};

use crate::podspec::{ImageInfo, ImageLookupError, ImageSource};

#[derive(Debug, Clone)]
pub struct StoreImages {
    store: ImageStore,
}

impl StoreImages {
    pub fn new(store: ImageStore) -> StoreImages {
        StoreImages { store }
    }
}

impl ImageSource for StoreImages {
    fn lookup(&self, reference: &str) -> Result<ImageInfo, ImageLookupError> {
        let other = |e: &dyn std::fmt::Display| ImageLookupError::Other(e.to_string());
        let parsed = Reference::parse(reference).map_err(|e| other(&e))?;
        let record = self
            .store
            .get_image(&parsed)
            .map_err(|e| other(&e))?
            .ok_or_else(|| ImageLookupError::NotFound(parsed.to_string()))?;
        let config = self
            .store
            .read_blob(&record.config_digest)
            .and_then(|bytes| ImageConfig::parse(&bytes))
            .map_err(|e| other(&format!("image {parsed}: {e}")))?;
        let layers = self.store.layer_dirs(&record);
        Ok(ImageInfo {
            reference: parsed.to_string(),
            etc_passwd: top_file(&layers, "etc/passwd"),
            etc_group: top_file(&layers, "etc/group"),
            layers,
            config: config.config.unwrap_or_default(),
        })
    }
}

/// A file as the merged rootfs shows it: from the topmost layer that has it.
fn top_file(layers: &[PathBuf], path: &str) -> Option<String> {
    layers
        .iter()
        .rev()
        .find_map(|l| std::fs::read_to_string(l.join(path)).ok())
}
