//! Writes of Services: ClusterIP and NodePort allocation around the generic create,
//! update, patch and delete (`services/` holds the allocators).

use axum::http::StatusCode;
use serde_json::Value;

use super::super::admit;
use super::super::patch as json_patches;
use super::super::registry::ResourceType;
use super::super::request::{Patch, Target, WriteOptions};
use super::super::services::{self, PortFill, Reservation};
use super::super::status::ApiError;
use super::read::load;
use super::write::guaranteed_update;
use super::{AppState, Written};

fn is_services(r: &ResourceType) -> bool {
    r.group.is_empty() && r.plural == "services"
}

/// Whether a request is about a Service (main resource).
pub(super) fn is_service(target: &Target) -> bool {
    is_services(target.resource) && target.subresource.is_none()
}

/// Before a create: claims the Service's cluster IP and node ports, written into `object`.
pub(super) async fn reserve(
    state: &AppState,
    r: &ResourceType,
    object: &mut Value,
) -> Result<Reservation, ApiError> {
    if !is_services(r) {
        return Ok(Reservation::default());
    }
    state.services.reserve(state.store.as_ref(), object).await
}

/// After a create failed: gives the claim back.
pub(super) async fn release(state: &AppState, reserved: Reservation) {
    state
        .services
        .release(state.store.as_ref(), &reserved)
        .await;
}

/// After a delete: releases what the Service held.
pub(super) async fn deleted(state: &AppState, r: &ResourceType, object: &Value) {
    if is_services(r) {
        state
            .services
            .release_object(state.store.as_ref(), object)
            .await;
    }
}

/// PUT of a Service.
pub(super) async fn update(
    state: &AppState,
    target: &Target,
    body: Value,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let r = target.resource;
    let transform = |old: &Value| admit::prepare_update(r, old, body.clone(), None, opts);
    write(state, target, opts, transform).await
}

/// PATCH of a Service.
pub(super) async fn patch(
    state: &AppState,
    target: &Target,
    patch: &Patch,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    let r = target.resource;
    let transform = |old: &Value| {
        let mut base = old.clone();
        admit::metadata_mut(&mut base).remove("resourceVersion");
        let patched = json_patches::apply(&base, patch)?;
        admit::prepare_update(r, old, patched, None, opts)
    };
    write(state, target, opts, transform).await
}

/// The update as the generic path does it, with node ports claimed for the new object
/// before it is stored (a taken explicit port is a 422 and nothing is written), and
/// ports it no longer uses released after.
pub(super) async fn write<F>(
    state: &AppState,
    target: &Target,
    opts: &WriteOptions,
    transform: F,
) -> Result<Written, ApiError>
where
    F: Fn(&Value) -> Result<(Value, Option<u64>), ApiError>,
{
    let store = state.store.as_ref();
    let alloc = &state.services;
    let (old, _) = load(state, target).await?;
    let (candidate, _) = transform(&old)?;
    if opts.dry_run {
        let object = guaranteed_update(state, target, opts, transform).await?;
        return Ok((StatusCode::OK, object));
    }
    let claimed = alloc.claim_new_ports(store, &old, &candidate).await?;
    let (fills, filled) = match alloc.fill_missing(store, &candidate).await {
        Ok(result) => result,
        Err(e) => {
            alloc.release(store, &claimed).await;
            return Err(e);
        }
    };
    let mut before = services::node_ports_of(&old);
    before.extend(claimed.ports());
    before.extend(filled.ports());
    let result = guaranteed_update(state, target, opts, |current| {
        let (mut next, expected) = transform(current)?;
        PortFill::apply(&fills, &mut next);
        Ok((next, expected))
    })
    .await;
    match result {
        Ok(object) => {
            alloc.release_unused(store, &before, &object).await;
            Ok((StatusCode::OK, object))
        }
        Err(e) => {
            let (now, _) = load(state, target).await.unwrap_or((old, 0));
            alloc.release_unused(store, &before, &now).await;
            Err(e)
        }
    }
}
