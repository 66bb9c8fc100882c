//! GET pods/log: the options go to the node as a `LogsOffer`; the node's channel-1 bytes
//! become the `text/plain` body as they arrive (chunked, a flush per frame, so `-f` sees
//! each line at once) until the node says `exit`. An error before the first byte (no such
//! previous container, a container still waiting) is a 400 `Status` with the node's words.
//! A client that goes away drops the body, and with it the session: the node stops.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use skiff_api::node::{LogsOffer, PodRef, offer};

use super::super::handlers::AppState;
use super::super::status::ApiError;
use super::open;
use super::options::{LogOptions, resolve_container};
use crate::node::{NodeEvent, SessionReceiver};

fn text(body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// The node's log bytes after the first chunk, cut at `limit` bytes if there is one.
struct LogBody {
    rx: SessionReceiver,
    first: Option<Bytes>,
    left: Option<u64>,
}

impl LogBody {
    async fn next(&mut self) -> Option<Bytes> {
        let chunk = match self.first.take() {
            Some(chunk) => chunk,
            None => loop {
                match self.rx.next().await? {
                    NodeEvent::Data { channel: 1, data } if !data.is_empty() => break data,
                    NodeEvent::Data { .. } => continue,
                    NodeEvent::Exit(_) | NodeEvent::Broken(_) => return None,
                }
            },
        };
        match self.left.as_mut() {
            None => Some(chunk),
            Some(0) => None,
            Some(left) => {
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                *left -= take as u64;
                Some(chunk.slice(..take))
            }
        }
    }
}

/// Serves GET pods/log of `pod`.
pub async fn serve(
    state: &AppState,
    pod: &Pod,
    pod_ref: PodRef,
    options: LogOptions,
) -> Result<Response, ApiError> {
    let container = resolve_container(pod, options.container.as_deref())?;
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    // A pod not yet scheduled has no log (kube-apiserver answers the same).
    let Some(node) = node.filter(|n| !n.is_empty()) else {
        return Ok(text(Body::empty()));
    };
    let kind = offer::Kind::Logs(LogsOffer {
        container,
        follow: options.follow,
        previous: options.previous,
        tail_lines: options.tail_lines.unwrap_or(-1),
        since_unix: options.since_unix.unwrap_or(0),
        timestamps: options.timestamps,
        limit_bytes: options.limit_bytes.unwrap_or(0),
    });
    let (_tx, mut rx) = open(state, &node, pod_ref, kind).await?.split();
    let first = loop {
        match rx.next().await {
            Some(NodeEvent::Data { channel: 1, data }) if !data.is_empty() => break data,
            Some(NodeEvent::Data { .. }) => continue,
            Some(NodeEvent::Exit(exit)) if !exit.error.is_empty() => {
                return Err(ApiError::bad_request(exit.error));
            }
            Some(NodeEvent::Exit(_)) | None => return Ok(text(Body::empty())),
            Some(NodeEvent::Broken(why)) => return Err(ApiError::internal(why)),
        }
    };
    let body = LogBody {
        rx,
        first: Some(first),
        left: options.limit_bytes.and_then(|l| u64::try_from(l).ok()),
    };
    let stream = futures::stream::unfold(body, |mut body| async move {
        let chunk = body.next().await?;
        Some((Ok::<_, Infallible>(chunk), body))
    });
    Ok(text(Body::from_stream(stream)))
}
