//! The `scale` subresource: an `autoscaling/v1` Scale view of `.spec.replicas` for
//! deployments, replicasets and statefulsets; GET, PUT and PATCH.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::super::admit::{self, resource_version};
use super::super::patch as json_patches;
use super::super::request::{Patch, Target, WriteOptions};
use super::super::status::ApiError;
use super::read::load;
use super::write::guaranteed_update;
use super::{AppState, json};

/// `app=web,tier=x` from `spec.selector.matchLabels` (or a ReplicationController's plain map).
fn selector_string(object: &Value) -> String {
    let selector = object.pointer("/spec/selector");
    selector
        .and_then(|s| s.get("matchLabels").or(Some(s)))
        .and_then(Value::as_object)
        .filter(|m| !m.contains_key("matchExpressions"))
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The Scale of an object.
pub fn scale_of(object: &Value) -> Value {
    let meta = object.get("metadata").cloned().unwrap_or_default();
    let pick = |k: &str| meta.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": pick("name"), "namespace": pick("namespace"), "uid": pick("uid"),
            "resourceVersion": pick("resourceVersion"), "creationTimestamp": pick("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector_string(object),
        },
    })
}

/// The object with the replicas asked for by `scale`, and the revision it requires.
fn apply_scale(old: &Value, scale: &Value) -> Result<(Value, Option<u64>), ApiError> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0 && *r <= i64::from(i32::MAX))
        .ok_or_else(|| {
            ApiError::unprocessable("Scale.spec.replicas must be a non-negative integer")
        })?;
    let expected = resource_version(scale)?;
    let mut next = old.clone();
    admit::metadata_mut(&mut next).remove("resourceVersion");
    if next.pointer("/spec/replicas").and_then(Value::as_i64) != Some(replicas) {
        next["spec"]["replicas"] = json!(replicas);
        let generation = next
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        admit::metadata_mut(&mut next).insert("generation".into(), json!(generation + 1));
    }
    Ok((next, expected))
}

pub(super) async fn get(state: &AppState, target: &Target) -> Result<Response, ApiError> {
    let (object, _) = load(state, target).await?;
    Ok(json(StatusCode::OK, &scale_of(&object)))
}

pub(super) async fn update(
    state: &AppState,
    target: &Target,
    body: Value,
    opts: &WriteOptions,
) -> Result<Response, ApiError> {
    let object = guaranteed_update(state, target, opts, |old| apply_scale(old, &body)).await?;
    Ok(json(StatusCode::OK, &scale_of(&object)))
}

pub(super) async fn patch(
    state: &AppState,
    target: &Target,
    patch: &Patch,
    opts: &WriteOptions,
) -> Result<Response, ApiError> {
    let object = guaranteed_update(state, target, opts, |old| {
        let mut current = scale_of(old);
        admit::metadata_mut(&mut current).remove("resourceVersion");
        let patched = json_patches::apply(&current, patch)?;
        apply_scale(old, &patched)
    })
    .await?;
    Ok(json(StatusCode::OK, &scale_of(&object)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_view_and_apply() {
        let d = json!({"metadata": {"name": "web", "namespace": "d", "resourceVersion": "4", "generation": 1},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}}, "status": {"replicas": 1}});
        let s = scale_of(&d);
        assert_eq!(s["spec"]["replicas"], 1);
        assert_eq!(s["status"]["selector"], "app=web");
        let (next, expected) = apply_scale(&d, &json!({"spec": {"replicas": 3}})).unwrap();
        assert_eq!(expected, None);
        assert_eq!(next["spec"]["replicas"], 3);
        assert_eq!(next["metadata"]["generation"], 2);
        assert_eq!(
            apply_scale(&d, &json!({"spec": {"replicas": -1}}))
                .unwrap_err()
                .code,
            422
        );
    }
}
