//! Create, update (PUT), patch and delete of one object, with optimistic concurrency on
//! `resourceVersion`, `dryRun=All`, and retries of unconditional updates that raced; the
//! `binding` and `eviction` subresources of pods. Each returns the HTTP code and the object
//! so that the HTTP layer and the in-process client share them.

use axum::http::StatusCode;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::super::admit::{self, meta_str, set_resource_version};
use super::super::patch as json_patches;
use super::super::registry::{self, Subresource};
use super::super::request::{DeleteOptions, Patch, Target, WriteOptions};
use super::super::status::ApiError;
use super::delete::{self as deletion, Deletion};
use super::read::load;
use super::{AppState, name_of, service};
use crate::store::StoreError;

/// A write's reply: the HTTP code and the object (or Status).
pub(crate) type Written = (StatusCode, Value);

fn encode(object: &Value) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(object).map_err(|e| ApiError::internal(format!("cannot encode object: {e}")))
}

/// 404 unless the namespace of a namespaced write exists; 403 while it terminates.
async fn require_namespace(
    state: &AppState,
    namespace: &str,
    target: &Target,
    name: &str,
) -> Result<(), ApiError> {
    let Some(namespaces) = registry::find("", "v1", "namespaces") else {
        return Ok(());
    };
    let key = namespaces.key(None, namespace);
    let kv = match state.store.get(&key).await {
        Ok(Some(kv)) => kv,
        Ok(None) => return Err(ApiError::not_found("", "namespaces", namespace)),
        Err(e) => return Err(ApiError::from_store(e, "", "namespaces", namespace)),
    };
    let object: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
    if object.pointer("/metadata/deletionTimestamp").is_some() {
        let r = target.resource;
        return Err(ApiError::forbidden(
            r.group,
            r.plural,
            Some(name),
            &format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ),
        ));
    }
    Ok(())
}

pub(crate) async fn create(
    state: &AppState,
    target: &Target,
    body: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    match target.subresource {
        Some(Subresource::Binding) => return bind(state, target, &body, opts).await,
        Some(Subresource::Eviction) => return evict(state, target, &body, opts).await,
        _ => {}
    }
    let r = target.resource;
    let ns = target.namespace.as_deref();
    let mut object = admit::prepare_create(r, body, ns, Timestamp::now(), opts)?;
    let name = meta_str(&object, "name").unwrap_or("").to_owned();
    if let Some(ns) = ns {
        require_namespace(state, ns, target, &name).await?;
    }
    if opts.dry_run {
        return Ok((StatusCode::CREATED, object));
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
    Ok((StatusCode::CREATED, object))
}

fn success(code: StatusCode) -> Written {
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Success", "code": code.as_u16()});
    (code, status)
}

/// `pods/binding`: sets `spec.nodeName` once and marks the pod scheduled.
async fn bind(
    state: &AppState,
    target: &Target,
    body: &Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let name = name_of(target);
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("a Binding needs target.name (the node)"))?
        .to_owned();
    let pod = Target {
        subresource: None,
        ..target.clone()
    };
    guaranteed_update(state, &pod, opts, |old| {
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict("", "pods", name));
        }
        match old.pointer("/spec/nodeName").and_then(Value::as_str) {
            Some(bound) if !bound.is_empty() => {
                let mut err = ApiError::conflict("", "pods", name);
                err.message = format!("pod {name} is already assigned to node \"{bound}\"");
                return Err(err);
            }
            _ => {}
        }
        let mut next = old.clone();
        admit::metadata_mut(&mut next).remove("resourceVersion");
        next["spec"]["nodeName"] = json!(node);
        set_condition(&mut next, "PodScheduled", "True", None, None);
        Ok((next, None))
    })
    .await?;
    Ok(success(StatusCode::CREATED))
}

/// Sets (or replaces) the condition `kind` in `status.conditions`.
pub(crate) fn set_condition(
    object: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let now = admit::rfc3339(Timestamp::now());
    if !object["status"].is_object() {
        object["status"] = json!({});
    }
    let conditions = &mut object["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let mut condition = json!({"type": kind, "status": status, "lastTransitionTime": now});
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    if let Some(message) = message {
        condition["message"] = json!(message);
    }
    if let Some(list) = conditions.as_array_mut() {
        match list.iter_mut().find(|c| c["type"] == kind) {
            Some(existing) => *existing = condition,
            None => list.push(condition),
        }
    }
}

/// `pods/eviction`: a graceful delete with the Eviction's `deleteOptions`.
async fn evict(
    state: &AppState,
    target: &Target,
    body: &Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let options = DeleteOptions {
        grace_period_seconds: body
            .pointer("/deleteOptions/gracePeriodSeconds")
            .and_then(Value::as_i64),
        ..DeleteOptions::default()
    };
    let pod = Target {
        subresource: None,
        ..target.clone()
    };
    delete(state, &pod, &options, opts).await?;
    Ok(success(StatusCode::CREATED))
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
        if deletion::finished(&next) {
            // The last finalizer is gone: the object goes with this write.
            return match state.store.delete(&key, Some(revision)).await {
                Ok(kv) => {
                    service::deleted(state, r, &next).await;
                    set_resource_version(&mut next, kv.mod_revision);
                    Ok(next)
                }
                Err(StoreError::Conflict { .. }) if expected.is_none() => continue,
                Err(e) => Err(ApiError::from_store(e, r.group, r.plural, name)),
            };
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

pub(crate) async fn update(
    state: &AppState,
    target: &Target,
    body: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let r = target.resource;
    let object = guaranteed_update(state, target, opts, |old| {
        admit::prepare_update(r, old, body.clone(), target.subresource, opts)
    })
    .await?;
    Ok((StatusCode::OK, object))
}

pub(crate) async fn patch(
    state: &AppState,
    target: &Target,
    patch: &Patch,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
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
    Ok((StatusCode::OK, object))
}

/// DELETE: removes the object, or marks it for deletion (202) when finalizers,
/// propagation or a pod's grace period hold it.
pub(crate) async fn delete(
    state: &AppState,
    target: &Target,
    options: &DeleteOptions,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let r = target.resource;
    let name = name_of(target);
    let key = r.key(target.namespace.as_deref(), name);
    for _ in 0..16 {
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
        let written = match deletion::plan(r, &object, options, Timestamp::now()) {
            Deletion::Pending => return Ok((StatusCode::ACCEPTED, object)),
            _ if opts.dry_run => return Ok((StatusCode::OK, object)),
            Deletion::Remove => match state.store.delete(&key, Some(revision)).await {
                Ok(kv) => {
                    service::deleted(state, r, &object).await;
                    let mut object = object;
                    set_resource_version(&mut object, kv.mod_revision);
                    Ok((StatusCode::OK, object))
                }
                Err(e) => Err(e),
            },
            Deletion::Mark(mut next) => state
                .store
                .update(&key, encode(&next)?, Some(revision))
                .await
                .map(|kv| {
                    set_resource_version(&mut next, kv.mod_revision);
                    (StatusCode::ACCEPTED, next)
                }),
        };
        match written {
            Ok(written) => return Ok(written),
            Err(StoreError::Conflict { .. }) if options.resource_version.is_none() => continue,
            Err(e) => return Err(ApiError::from_store(e, r.group, r.plural, name)),
        }
    }
    Err(ApiError::conflict(r.group, r.plural, name))
}
