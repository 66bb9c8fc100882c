//! Applying parsed requests: reads the body (with its size limit), parses it into a
//! `Route`, runs the command against the store, and renders JSON, a Table, or a Status.

mod apply;
mod delete;
mod read;
mod scale;
mod service;
mod write;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::authz::{self, Decision, Identity};
use super::discovery::{self, Format};
use super::metrics::Metrics;
use super::registry::Subresource;
use super::request::{self, Command, Patch, Route, Target};
use super::services::ServiceAllocator;
use super::status::ApiError;
use super::watch;
use crate::node::Tunnels;
use crate::store::Store;

pub(crate) use read::{Page, collect, decode, load};
pub(crate) use write::Written;

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The revisioned store.
    pub store: Arc<dyn Store>,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// The largest accepted request body.
    pub max_body_bytes: usize,
    /// ClusterIP and NodePort allocation.
    pub services: Arc<ServiceAllocator>,
    /// Request counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Watch lines rendered once for every watcher.
    pub watch_lines: Arc<super::watchcache::LineCache>,
    /// The stream tunnels nodes hold open (pods/log, exec, attach, portforward); the node
    /// service in the same process registers nodes in it.
    pub tunnels: Arc<Tunnels>,
}

/// A JSON response with `code`.
pub fn json(code: StatusCode, value: &Value) -> Response {
    json_as(code, value, "application/json")
}

/// A JSON response with an explicit content type.
pub fn json_as(code: StatusCode, value: &Value, content_type: &'static str) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = (code, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The axum fallback: every `/api` and `/apis` request. The pod stream subresources
/// (log, exec, attach, portforward) go to `stream/` before the body is read.
pub async fn handle(State(state): State<AppState>, request: Request) -> Response {
    if let Some(route) = super::stream::route(request.uri().path()) {
        return super::stream::serve(&state, request, route).await;
    }
    match handle_inner(&state, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn handle_inner(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = read_body(body, state.max_body_bytes).await?;
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let route = request::parse(&parts.method, path, query, &parts.headers, &body)?;
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let identity = parts.extensions.get::<Identity>().cloned();
    match route {
        Route::Command(command, table) => {
            authorize(state, identity.as_ref(), &command).await?;
            run(state, command, table).await
        }
        Route::CoreVersions | Route::Groups => {
            let format = Format::negotiate(accept);
            let core = matches!(route, Route::CoreVersions);
            let doc = match (format, core) {
                (Format::Legacy, true) => discovery::core_versions(),
                (Format::Legacy, false) => discovery::groups(),
                (_, core) => discovery::aggregated(format, core),
            };
            Ok(json_as(StatusCode::OK, &doc, format.content_type()))
        }
        Route::Group(group) => discovery::group(&group)
            .map(|doc| json(StatusCode::OK, &doc))
            .ok_or_else(|| ApiError::no_route(path)),
        Route::Resources(group, version) => discovery::resource_list(&group, &version)
            .map(|doc| json(StatusCode::OK, &doc))
            .ok_or_else(|| ApiError::no_route(path)),
    }
}

/// Lets the command through, or answers 403 (see `authz.rs`).
async fn authorize(
    state: &AppState,
    identity: Option<&Identity>,
    command: &Command,
) -> Result<(), ApiError> {
    let node = match identity {
        Some(Identity::Admin) => return Ok(()),
        Some(Identity::Node(node)) => node,
        None => return Err(ApiError::unauthorized()),
    };
    match authz::decide(node, command) {
        Decision::Allow => Ok(()),
        Decision::Deny(err) => Err(err),
        Decision::PodOf(err) => {
            let target = match command {
                Command::Get(t)
                | Command::Delete(t, ..)
                | Command::Update(t, ..)
                | Command::Patch(t, ..) => t,
                _ => return Err(err),
            };
            let pod = Target {
                subresource: None,
                ..target.clone()
            };
            match read::load(state, &pod).await {
                Ok((object, _)) if authz::bound_to(&object, node) => Ok(()),
                _ => Err(err),
            }
        }
    }
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    to_bytes(body, limit).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            ApiError::too_large(limit)
        } else {
            ApiError::bad_request(format!("cannot read the request body: {inner}"))
        }
    })
}

async fn run(state: &AppState, command: Command, table: bool) -> Result<Response, ApiError> {
    match command {
        Command::Get(target) => match target.subresource {
            Some(Subresource::Scale) => scale::get(state, &target).await,
            _ => read::get(state, &target, table).await,
        },
        Command::List(target, query) => read::list(state, &target, &query, table).await,
        Command::Watch(target, query) => watch::serve(state, &target, &query, table).await,
        Command::Update(target, body, opts) if target.subresource == Some(Subresource::Scale) => {
            scale::update(state, &target, body, &opts).await
        }
        Command::Patch(target, patch, opts) if target.subresource == Some(Subresource::Scale) => {
            scale::patch(state, &target, &patch, &opts).await
        }
        Command::Delete(target, ..) if target.subresource.is_some() => {
            Err(ApiError::method_not_allowed("DELETE", "a subresource"))
        }
        write => {
            let (code, object) = apply(state, write).await?;
            Ok(json(code, &object))
        }
    }
}

/// Runs a write command (create, update, patch, delete) of the main resource or of the
/// status, binding, eviction or finalize subresources.
pub(crate) async fn apply(state: &AppState, command: Command) -> Result<Written, ApiError> {
    match command {
        Command::Create(target, body, opts) => write::create(state, &target, body, &opts).await,
        Command::Update(target, body, opts) if service::is_service(&target) => {
            service::update(state, &target, body, &opts).await
        }
        Command::Update(target, body, opts) => write::update(state, &target, body, &opts).await,
        Command::Patch(target, Patch::Apply(config), opts) if target.subresource.is_none() => {
            apply::apply(state, &target, &config, &opts).await
        }
        Command::Patch(target, patch, opts) if service::is_service(&target) => {
            service::patch(state, &target, &patch, &opts).await
        }
        Command::Patch(target, patch, opts) => write::patch(state, &target, &patch, &opts).await,
        Command::Delete(target, options, opts) => {
            write::delete(state, &target, &options, &opts).await
        }
        Command::Get(_) | Command::List(..) | Command::Watch(..) => {
            Err(ApiError::internal("apply() runs writes only"))
        }
    }
}

/// The name of a single-object target (the parser guarantees one).
fn name_of(target: &Target) -> &str {
    target.name.as_deref().unwrap_or("")
}
