//! Image pulls for the node agent: by `imagePullPolicy` (`Always`, `IfNotPresent`,
//! `Never`), at most a few at once, the registry's own message in the error.

use std::sync::Arc;

use skiff_runtime::image::{self, ImageStore, NoProgress, PullOptions, Reference};
use tokio::sync::Semaphore;

pub struct Images {
    store: ImageStore,
    options: PullOptions,
    slots: Semaphore,
}

impl Images {
    pub fn new(store: ImageStore, options: PullOptions, parallel: usize) -> Images {
        Images {
            store,
            options,
            slots: Semaphore::new(parallel.max(1)),
        }
    }

    /// Makes `reference` present as `policy` asks, pulling with the credentials of
    /// `auth_file` (the pod's pull secrets) when given; the error is what the user reads. A
    /// pull returns how long it took.
    pub async fn ensure(
        &self,
        reference: &str,
        policy: &str,
        auth_file: Option<&std::path::Path>,
    ) -> Result<Option<std::time::Duration>, String> {
        let parsed = Reference::parse(reference)
            .map_err(|e| format!("Failed to pull image \"{reference}\": {e}"))?;
        let present = self
            .store
            .get_image(&parsed)
            .map_err(|e| e.to_string())?
            .is_some();
        match (policy, present) {
            ("Never", true) | ("IfNotPresent", true) => return Ok(None),
            ("Never", false) => {
                return Err(format!(
                    "Container image \"{reference}\" is not present with pull policy of Never"
                ));
            }
            _ => {}
        }
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let begun = std::time::Instant::now();
        let mut options = self.options.clone();
        if let Some(file) = auth_file {
            options.auth_file = Some(file.to_path_buf());
        }
        image::pull(&self.store, &parsed, &options, Arc::new(NoProgress))
            .await
            .map(|_| Some(begun.elapsed()))
            .map_err(|e| format!("Failed to pull image \"{reference}\": {e}"))
    }
}
