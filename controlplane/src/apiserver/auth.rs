//! Bearer-token authentication: the admin token from the data dir, or a node token
//! (`nodetoken.rs`); anything else is 401. The caller's `Identity` goes into the request's
//! extensions for the authorizer (`authz.rs`). Health endpoints and the CA discovery
//! document (`clusterinfo.rs`) stay open, and `POST /skiff/v1/join` reaches its handler,
//! which checks a join token (`join.rs`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use skiff_api::join::{CLUSTER_INFO_PATH, JOIN_PATH};

use super::authz::Identity;
use super::nodetoken;
use super::status::ApiError;
use crate::store::Store;

/// Paths served without a token (liveness and readiness probes, CA discovery).
pub fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | CLUSTER_INFO_PATH)
}

/// Compares without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an `Authorization` header value carries `token`.
pub fn authorized(header_value: Option<&str>, token: &str) -> bool {
    bearer(header_value).is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

/// The token of a `Bearer` authorization header.
pub fn bearer(header_value: Option<&str>) -> Option<&str> {
    header_value
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// What authentication needs: the admin token and the store holding node tokens.
#[derive(Clone)]
pub struct Authenticator {
    pub admin_token: Arc<str>,
    pub store: Arc<dyn Store>,
}

/// The middleware: finds who is calling, or answers 401.
pub async fn require_token(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    // The join endpoint checks its own (join) token; see `join.rs`.
    if is_public(request.uri().path()) || request.uri().path() == JOIN_PATH {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let identity = if authorized(header, &auth.admin_token) {
        Some(Identity::Admin)
    } else if let Some(token) = bearer(header).filter(|t| t.starts_with("node.")) {
        nodetoken::verify(auth.store.as_ref(), token)
            .await
            .map(Identity::Node)
    } else {
        None
    };
    match identity {
        Some(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        None => ApiError::unauthorized().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        assert!(authorized(Some("Bearer abc"), "abc"));
        assert!(!authorized(Some("Bearer abd"), "abc"));
        assert!(!authorized(Some("Bearer ab"), "abc"));
        assert!(!authorized(Some("Basic abc"), "abc"));
        assert!(!authorized(None, "abc"));
        assert!(is_public("/healthz") && !is_public("/version"));
        assert!(is_public("/skiff/v1/cluster-info") && !is_public("/skiff/v1/jointokens"));
    }
}
