//! Create, update (PUT), patch and delete of one object, with optimistic concurrency on
//! `resourceVersion`, `dryRun=All`, and retries of unconditional updates that raced.

use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;
use serde_json::Value;

use super::super::admit::{self, meta_str, set_resource_version};
use super::super::patch as json_patches;
use super::super::registry::{self, Subresource};
use super::super::request::{DeleteOptions, Patch, Target, WriteOptions};
use super::super::status::ApiError;
use super::read::load;
use super::{AppState, json, name_of, service};
use crate::store::StoreError;

fn encode(object: &Value) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(object).map_err(|e| ApiError::internal(format!("cannot encode object: {e}")))
}

/// 404 unless the namespace of a namespaced write exists.
async fn require_namespace(state: &AppState, namespace: &str) -> Result<(), ApiError> {
    let Some(namespaces) = registry::find("", "v1", "namespaces") else {
        return Ok(());
    };
    let key = namespaces.key(None, namespace);
    match state.store.get(&key).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ApiError::not_found("", "namespaces", namespace)),
        Err(e) => Err(ApiError::from_store(e, "", "namespaces", namespace)),
    }
}

pub(super) async fn create(
    state: &AppState,
    target: &Target,
    body: Value,
    opts: &WriteOptions,
) -> Result<Response, ApiError> {
    let r = target.resource;
    let ns = target.namespace.as_deref();
    let mut object = admit::prepare_create(r, body, ns, Timestamp::now(), opts)?;
    if let Some(ns) = ns {
        require_namespace(state, ns).await?;
    }
    let name = meta_str(&object, "name").unwrap_or("").to_owned();
    if opts.dry_run {
        return Ok(json(StatusCode::CREATED, &object));
    }
    let reserved = service::reserve(state, r, &mut object).await?;
    let created = state
        .store
        .create(&r.key(ns, &name), encode(&object)?)
        .await;
    if created.is_err() {
        service::release(state, reserved).await;
    }
    let kv = created.map_err(|e| ApiError::from_store(e, r.group, r.plural, &name))?;
    set_resource_version(&mut object, kv.mod_revision);
    Ok(json(StatusCode::CREATED, &object))
}

/// Read, transform, compare-and-swap; retried while an unconditional write races.
/// `transform` returns the new object and the revision the client required, if any.
pub(super) async fn guaranteed_update<F>(
    state: &AppState,
    target: &Target,
    opts: &WriteOptions,
    mut transform: F,
) -> Result<Value, ApiError>
where
    F: FnMut(&Value) -> Result<(Value, Option<u64>), ApiError>,
{
    let r = target.resource;
    let name = name_of(target);
    let key = r.key(target.namespace.as_deref(), name);
    for _ in 0..16 {
        let (old, revision) = load(state, target).await?;
        let (mut next, expected) = transform(&old)?;
        if expected.is_some_and(|e| e != revision) {
            return Err(ApiError::conflict(r.group, r.plural, name));
        }
        set_resource_version(&mut next, revision);
        if admit::same_content(&old, &next) || opts.dry_run {
            return Ok(if opts.dry_run { next } else { old });
        }
        match state
            .store
            .update(&key, encode(&next)?, Some(revision))
            .await
        {
            Ok(kv) => {
                set_resource_version(&mut next, kv.mod_revision);
                return Ok(next);
            }
            Err(StoreError::Conflict { .. }) if expected.is_none() => continue,
            Err(e) => return Err(ApiError::from_store(e, r.group, r.plural, name)),
        }
    }
    Err(ApiError::conflict(r.group, r.plural, name))
}

pub(super) async fn update(
    state: &AppState,
    target: &Target,
    body: Value,
    opts: &WriteOptions,
) -> Result<Response, ApiError> {
    let r = target.resource;
    let object = guaranteed_update(state, target, opts, |old| {
        admit::prepare_update(r, old, body.clone(), target.subresource, opts)
    })
    .await?;
    Ok(json(StatusCode::OK, &object))
}

pub(super) async fn patch(
    state: &AppState,
    target: &Target,
    patch: &Patch,
    opts: &WriteOptions,
) -> Result<Response, ApiError> {
    let r = target.resource;
    let object = guaranteed_update(state, target, opts, |old| {
        let mut base = old.clone();
        admit::metadata_mut(&mut base).remove("resourceVersion");
        let mut patched = json_patches::apply(&base, patch)?;
        if target.subresource == Some(Subresource::Status) {
            // Through /status only the status changes; the rest stays as stored.
            let status = patched.get("status").cloned();
            patched = old.clone();
            if let Some(status) = status {
                patched["status"] = status;
            }
            admit::metadata_mut(&mut patched).remove("resourceVersion");
        }
        admit::prepare_update(r, old, patched, target.subresource, opts)
    })
    .await?;
    Ok(json(StatusCode::OK, &object))
}

pub(super) async fn delete(
    state: &AppState,
    target: &Target,
    options: &DeleteOptions,
    opts: &WriteOptions,
) -> Result<Response, ApiError> {
    let r = target.resource;
    let name = name_of(target);
    let (object, revision) = load(state, target).await?;
    if let Some(uid) = &options.uid {
        let actual = meta_str(&object, "uid").unwrap_or("");
        if uid != actual {
            return Err(ApiError::conflict(r.group, r.plural, name));
        }
    }
    if options.resource_version.is_some_and(|rv| rv != revision) {
        return Err(ApiError::conflict(r.group, r.plural, name));
    }
    if !opts.dry_run {
        let key = r.key(target.namespace.as_deref(), name);
        state
            .store
            .delete(&key, Some(revision))
            .await
            .map_err(|e| ApiError::from_store(e, r.group, r.plural, name))?;
        service::deleted(state, r, &object).await;
    }
    Ok(json(StatusCode::OK, &object))
}
