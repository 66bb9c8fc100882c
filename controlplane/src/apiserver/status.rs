//! `ApiError`: every failed request as a Kubernetes `Status` object with the right code.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::store::StoreError;

/// One field-level problem of an invalid object (`Status.details.causes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueInvalid`.
    pub reason: &'static str,
    /// The human-readable problem, e.g. `Invalid value: "A": ...`.
    pub message: String,
    /// The JSON path of the field, e.g. `metadata.name`.
    pub field: String,
}

/// A request that failed; rendered as a `Status` with `code`, `reason` and `message`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// The HTTP status code.
    pub code: u16,
    /// The Kubernetes `StatusReason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// What the user reads.
    pub message: String,
    /// `Status.details` (name, group, kind, causes), when there is one.
    pub details: Option<Value>,
}

/// The group/resource an error is about, as kube-apiserver names it (`deployments.apps`).
fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 404: `deployments.apps "web" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 404 for a path that names no served resource.
    pub fn no_route(path: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409: `configmaps "a" already exists`.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 409 on a stale `resourceVersion`.
    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                qualified(group, plural)
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    /// 409 of a server-side apply that would change fields other managers own.
    pub fn apply_conflict(message: String, causes: Vec<Cause>) -> Self {
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        ApiError::new(409, "Conflict", message).with_details(json!({"causes": causes}))
    }

    /// 422 with one cause per invalid field: `Pod "A" is invalid: metadata.name: ...`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let causes_json: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let message = match summary.len() {
            1 => format!("{kind} \"{name}\" is invalid: {}", summary[0]),
            _ => format!("{kind} \"{name}\" is invalid: [{}]", summary.join(", ")),
        };
        ApiError::new(422, "Invalid", message).with_details(
            json!({"name": name, "group": group, "kind": kind, "causes": causes_json}),
        )
    }

    /// 400 for a request that cannot be understood.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    /// 422 for a request that is well-formed but cannot be applied (a failed JSON patch).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        ApiError::new(422, "Invalid", message)
    }

    /// 401: no or unknown bearer token.
    pub fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403: `pods "x" is forbidden: User … cannot get resource "pods" …`.
    pub fn forbidden(group: &str, plural: &str, name: Option<&str>, why: &str) -> Self {
        let what = match name {
            Some(name) => format!("{} \"{name}\"", qualified(group, plural)),
            None => qualified(group, plural),
        };
        ApiError::new(403, "Forbidden", format!("{what} is forbidden: {why}"))
            .with_details(json!({"name": name.unwrap_or(""), "group": group, "kind": plural}))
    }

    /// 403 for a non-resource path: `forbidden: User … cannot get path "/metrics"`.
    pub fn new_forbidden_path(why: &str) -> Self {
        ApiError::new(403, "Forbidden", format!("forbidden: {why}"))
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed(method: &str, what: &str) -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({method} {what})"
            ),
        )
    }

    /// 410: a `resourceVersion` or continue token older than the compacted history.
    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    /// 413: a body over the limit.
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("request entity too large: limit is {limit} bytes"),
        )
    }

    /// 415: a body encoding the server does not decode.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, not {content_type}"
            ),
        )
    }

    /// 406: an `Accept` the server cannot produce.
    pub fn not_acceptable(accept: &str) -> Self {
        ApiError::new(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: application/json, not {accept}"),
        )
    }

    /// 503: a backend (a node's stream tunnel) cannot be reached now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    /// 500 without Rust internals: the message names the operation that failed.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", message)
    }

    /// Maps a store failure on the object `name` of `group`/`plural`.
    pub fn from_store(err: StoreError, group: &str, plural: &str, name: &str) -> Self {
        match err {
            StoreError::AlreadyExists { .. } => ApiError::already_exists(group, plural, name),
            StoreError::NotFound { .. } => ApiError::not_found(group, plural, name),
            StoreError::Conflict { .. } => ApiError::conflict(group, plural, name),
            StoreError::Compacted {
                requested,
                compacted,
            } => ApiError::expired(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            StoreError::InvalidContinue { reason } => {
                ApiError::bad_request(format!("invalid continue token: {reason}"))
            }
            StoreError::FutureRevision { requested, current } => ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal(format!("storage error: {other}"))
            }
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut response = (code, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_group_qualified_resource() {
        let err = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(err.message, "deployments.apps \"web\" not found");
        let status = err.to_status();
        assert_eq!(status["code"], 404);
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["details"]["kind"], "deployments");
    }

    #[test]
    fn invalid_lists_causes() {
        let err = ApiError::invalid(
            "",
            "ConfigMap",
            "A",
            vec![Cause {
                reason: "FieldValueInvalid",
                message: "Invalid value: \"A\": bad".into(),
                field: "metadata.name".into(),
            }],
        );
        assert_eq!(
            err.message,
            "ConfigMap \"A\" is invalid: metadata.name: Invalid value: \"A\": bad"
        );
        assert_eq!(
            err.to_status()["details"]["causes"][0]["field"],
            "metadata.name"
        );
    }

    #[test]
    fn store_errors_map_to_codes() {
        let gone = ApiError::from_store(
            StoreError::Compacted {
                requested: 3,
                compacted: 9,
            },
            "",
            "pods",
            "",
        );
        assert_eq!((gone.code, gone.reason), (410, "Expired"));
        let conflict = ApiError::from_store(
            StoreError::Conflict {
                key: "k".into(),
                expected: 1,
                actual: 2,
            },
            "",
            "pods",
            "p",
        );
        assert_eq!(conflict.code, 409);
        assert!(
            !ApiError::internal("x").to_status()["message"]
                .as_str()
                .unwrap()
                .contains("Conflict")
        );
    }
}
