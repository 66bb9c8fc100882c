//! The pod stream subresources — `log`, `exec`, `attach`, `portforward` — on their way from
//! kubectl to the node: authorise (admin only, `authz::stream`), find the pod and its node,
//! parse the options and resolve the container (`options.rs`), then ask the node for a
//! session through its tunnel (`node::Tunnels`, the `Streams` gRPC service) and bridge it
//! to the client's transport: a chunked body (`logs.rs`), WebSocket channels
//! (`websocket.rs`), SPDY streams (`exec_spdy.rs`, `portforward.rs` over `spdy/`), or SPDY
//! inside WebSocket messages (`tunnel.rs`). See docs/design/015-streams.md.

mod exec_spdy;
mod logs;
mod options;
mod portforward;
mod remote;
pub mod spdy;
mod tunnel;
mod upgrade;
mod websocket;

use axum::extract::{FromRequestParts, Request, WebSocketUpgrade};
use axum::http::Method;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use skiff_api::node::{AttachOffer, ExecOffer, PodRef, offer};

use super::authz::{self, Identity};
use super::client::Client;
use super::handlers::AppState;
use super::registry::Subresource;
use super::status::ApiError;
use crate::node::Session;
use options::IoOptions;
use spdy::Connection;
use upgrade::Upgrade;

/// A request for a stream subresource of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub namespace: String,
    pub pod: String,
    pub kind: Subresource,
}

/// The stream subresource `path` names, if it names one.
pub fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", namespace, "pods", pod, sub] = parts.as_slice() else {
        return None;
    };
    let kind = match *sub {
        "log" => Subresource::Log,
        "exec" => Subresource::Exec,
        "attach" => Subresource::Attach,
        "portforward" => Subresource::PortForward,
        _ => return None,
    };
    Some(Route {
        namespace: (*namespace).to_owned(),
        pod: (*pod).to_owned(),
        kind,
    })
}

/// The verb a request is authorised as: `get` for logs; `create` for the others, whatever
/// the method (kubectl upgrades with GET for WebSocket and POST for SPDY).
fn verb(kind: Subresource, method: &Method) -> Result<&'static str, ApiError> {
    match (kind, method) {
        (Subresource::Log, &Method::GET) => Ok("get"),
        (Subresource::Log, _) => Err(ApiError::method_not_allowed(method.as_str(), "pods/log")),
        (_, &Method::GET | &Method::POST) => Ok("create"),
        (kind, _) => Err(ApiError::method_not_allowed(
            method.as_str(),
            &format!("pods/{}", kind.as_str()),
        )),
    }
}

/// Serves a stream subresource request (`route` said it is one).
pub async fn serve(state: &AppState, request: Request, route: Route) -> Response {
    match serve_route(state, request, route).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn serve_route(
    state: &AppState,
    request: Request,
    route: Route,
) -> Result<Response, ApiError> {
    let (parts, _body) = request.into_parts();
    let identity = parts
        .extensions
        .get::<Identity>()
        .cloned()
        .ok_or_else(ApiError::unauthorized)?;
    let verb = verb(route.kind, &parts.method)?;
    authz::stream(
        &identity,
        route.kind.as_str(),
        verb,
        &route.namespace,
        &route.pod,
    )?;
    let pod: Pod = Client::new(state.clone())
        .get_opt(Some(&route.namespace), &route.pod)
        .await?
        .ok_or_else(|| ApiError::not_found("", "pods", &route.pod))?;
    let pod_ref = PodRef {
        namespace: route.namespace.clone(),
        name: route.pod.clone(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    };
    let query = parts.uri.query().unwrap_or("").to_owned();
    match route.kind {
        Subresource::Log => {
            let options = options::log_options(&query, Timestamp::now())?;
            logs::serve(state, &pod, pod_ref, options).await
        }
        Subresource::Exec | Subresource::Attach => {
            let exec = route.kind == Subresource::Exec;
            let opts = if exec {
                options::exec_options(&query)?
            } else {
                options::attach_options(&query)?
            };
            let container = options::resolve_container(&pod, opts.container.as_deref())?;
            let node = node_of(&pod)?;
            let kind = if exec {
                offer::Kind::Exec(ExecOffer {
                    container,
                    command: opts.command.clone(),
                    stdin: opts.stdin,
                    stdout: opts.stdout,
                    stderr: opts.stderr,
                    tty: opts.tty,
                })
            } else {
                offer::Kind::Attach(AttachOffer {
                    container,
                    stdin: opts.stdin,
                    stdout: opts.stdout,
                    stderr: opts.stderr,
                    tty: opts.tty,
                })
            };
            remote_command(state, parts, node, pod_ref, kind, opts).await
        }
        Subresource::PortForward => {
            let node = node_of(&pod)?;
            port_forward(state, parts, node, pod_ref).await
        }
        other => Err(ApiError::internal(format!(
            "pods/{} is not a stream",
            other.as_str()
        ))),
    }
}

/// The node a pod is bound to.
fn node_of(pod: &Pod) -> Result<String, ApiError> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {} does not have a host assigned",
                pod.metadata.name.as_deref().unwrap_or_default()
            ))
        })
}

/// A session with the node, or the 503 a user reads when the node cannot be reached.
async fn open(
    state: &AppState,
    node: &str,
    pod: PodRef,
    kind: offer::Kind,
) -> Result<Session, ApiError> {
    state
        .tunnels
        .offer(node, pod, kind)
        .await
        .map_err(|e| ApiError::unavailable(format!("error dialing backend: {e}")))
}

async fn websocket(
    parts: &mut Parts,
    protocols: &[&'static str],
) -> Result<(WebSocketUpgrade, String), ApiError> {
    let ws = WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map_err(|r| ApiError::bad_request(r.body_text()))?
        .protocols(protocols.iter().copied());
    let chosen = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "no supported WebSocket subprotocol; this server speaks {protocols:?}"
            ))
        })?;
    Ok((ws, chosen))
}

fn spdy_upgrade(parts: &mut Parts) -> Result<OnUpgrade, ApiError> {
    parts
        .extensions
        .remove::<OnUpgrade>()
        .ok_or_else(|| ApiError::bad_request("this connection cannot be upgraded"))
}

async fn remote_command(
    state: &AppState,
    mut parts: Parts,
    node: String,
    pod: PodRef,
    kind: offer::Kind,
    opts: IoOptions,
) -> Result<Response, ApiError> {
    match upgrade::requested(&parts.headers) {
        Upgrade::WebSocket => {
            let (ws, chosen) = websocket(&mut parts, &websocket::PROTOCOLS).await?;
            let protocol = websocket::Protocol::from_name(&chosen)
                .ok_or_else(|| ApiError::internal("an unknown subprotocol was chosen"))?;
            let session = open(state, &node, pod, kind).await?;
            Ok(ws.on_upgrade(move |socket| websocket::run(socket, protocol, session)))
        }
        Upgrade::Spdy => {
            let version = upgrade::negotiate(&parts.headers, remote::SPDY_VERSIONS)?;
            let on_upgrade = spdy_upgrade(&mut parts)?;
            let session = open(state, &node, pod, kind).await?;
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(io) => {
                        let conn = Connection::start(TokioIo::new(io));
                        exec_spdy::run(conn, version, opts, session).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "the SPDY upgrade failed"),
                }
            });
            Ok(upgrade::switching(version))
        }
        Upgrade::None => Err(ApiError::bad_request("Upgrade request required")),
    }
}

async fn port_forward(
    state: &AppState,
    mut parts: Parts,
    node: String,
    pod: PodRef,
) -> Result<Response, ApiError> {
    if !state.tunnels.is_connected(&node) {
        let why = crate::node::TunnelError::NotConnected { node };
        return Err(ApiError::unavailable(format!(
            "error dialing backend: {why}"
        )));
    }
    let target = portforward::Target {
        tunnels: state.tunnels.clone(),
        node,
        pod,
    };
    match upgrade::requested(&parts.headers) {
        Upgrade::WebSocket => {
            let (ws, _) = websocket(&mut parts, &[upgrade::PORT_FORWARD_WEBSOCKET]).await?;
            Ok(ws.on_upgrade(move |socket| async move {
                let conn = Connection::start(tunnel::over_websocket(socket));
                portforward::run(conn, target).await;
            }))
        }
        Upgrade::Spdy => {
            let version = upgrade::negotiate(&parts.headers, &[upgrade::PORT_FORWARD])?;
            let on_upgrade = spdy_upgrade(&mut parts)?;
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(io) => portforward::run(Connection::start(TokioIo::new(io)), target).await,
                    Err(e) => tracing::debug!(error = %e, "the SPDY upgrade failed"),
                }
            });
            Ok(upgrade::switching(version))
        }
        Upgrade::None => Err(ApiError::bad_request("Upgrade request required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pod_stream_paths_are_routed_here() {
        assert_eq!(
            route("/api/v1/namespaces/d/pods/web/exec"),
            Some(Route {
                namespace: "d".into(),
                pod: "web".into(),
                kind: Subresource::Exec
            })
        );
        assert_eq!(
            route("/api/v1/namespaces/d/pods/web/portforward").map(|r| r.kind),
            Some(Subresource::PortForward)
        );
        for other in [
            "/api/v1/namespaces/d/pods/web/status",
            "/api/v1/namespaces/d/pods/web",
            "/api/v1/namespaces/d/services/web/exec",
            "/apis/apps/v1/namespaces/d/deployments/web/exec",
            "/api/v1/pods/web/log",
        ] {
            assert_eq!(route(other), None, "{other}");
        }
        assert_eq!(verb(Subresource::Log, &Method::GET).unwrap(), "get");
        assert_eq!(verb(Subresource::Log, &Method::POST).unwrap_err().code, 405);
        assert_eq!(verb(Subresource::Exec, &Method::POST).unwrap(), "create");
        assert_eq!(
            verb(Subresource::PortForward, &Method::GET).unwrap(),
            "create"
        );
        assert_eq!(
            verb(Subresource::Attach, &Method::DELETE).unwrap_err().code,
            405
        );
    }
}
