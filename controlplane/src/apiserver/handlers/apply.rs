//! Server-side apply (`PATCH` with `application/apply-patch+yaml`): creates the object
//! when it is absent, else merges the configuration with field ownership (`managed.rs`).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::super::admit::{self, meta_str};
use super::super::managed;
use super::super::request::{Target, WriteOptions};
use super::super::status::ApiError;
use super::read::load;
use super::{AppState, Written, name_of, service, write};
use axum::http::StatusCode;

pub(super) async fn apply(
    state: &AppState,
    target: &Target,
    config: &Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let r = target.resource;
    let name = name_of(target);
    let manager = opts
        .field_manager
        .clone()
        .ok_or_else(|| ApiError::bad_request("fieldManager is required for apply requests"))?;
    match meta_str(config, "name") {
        Some(given) if given == name => {}
        Some(given) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        None => return Err(ApiError::bad_request("metadata.name is required")),
    }
    let version = r.api_version();
    // The pipeline below must not record an `Update` for this write.
    let plain = WriteOptions {
        field_manager: None,
        ..opts.clone()
    };
    match load(state, target).await {
        Err(e) if e.code == 404 => {
            let mut body = config.clone();
            let empty = json!({});
            let owned =
                managed::apply(&empty, config, &manager, &version, false, Timestamp::now())?;
            if let Some(fields) = owned.pointer("/metadata/managedFields") {
                admit::metadata_mut(&mut body).insert("managedFields".into(), fields.clone());
            }
            write::create(state, target, body, &plain).await
        }
        Err(e) => Err(e),
        Ok(_) => {
            let transform = |old: &Value| {
                let mut live = old.clone();
                admit::metadata_mut(&mut live).remove("resourceVersion");
                let next = managed::apply(
                    &live,
                    config,
                    &manager,
                    &version,
                    opts.force,
                    Timestamp::now(),
                )?;
                admit::prepare_update(r, old, next, None, &plain)
            };
            if service::is_service(target) {
                return service::write(state, target, &plain, transform).await;
            }
            let object = write::guaranteed_update(state, target, &plain, transform).await?;
            Ok((StatusCode::OK, object))
        }
    }
}
