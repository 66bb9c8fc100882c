//! HTTP/1.1 upgrades of the stream subresources: which one a request asks for (WebSocket
//! or SPDY/3.1), the `X-Stream-Protocol-Version` negotiation of SPDY (the client lists the
//! versions it speaks, in its order of preference; the first one served wins, as
//! kube-apiserver's httpstream does), and the 101 answer.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::super::status::ApiError;

/// The header carrying SPDY sub-protocol versions both ways.
pub const PROTOCOL_VERSION: &str = "x-stream-protocol-version";
/// The port-forward protocol over SPDY.
pub const PORT_FORWARD: &str = "portforward.k8s.io";
/// The port-forward protocol over WebSocket (SPDY frames inside binary messages).
pub const PORT_FORWARD_WEBSOCKET: &str = "SPDY/3.1+portforward.k8s.io";

/// What a request asks to become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    WebSocket,
    Spdy,
    None,
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// The upgrade a request asks for.
pub fn requested(headers: &HeaderMap) -> Upgrade {
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Upgrade::None;
    }
    if has_token(headers, header::UPGRADE, "websocket") {
        Upgrade::WebSocket
    } else if has_token(headers, header::UPGRADE, "SPDY/3.1") {
        Upgrade::Spdy
    } else {
        Upgrade::None
    }
}

/// The client's versions, in its order.
fn offered(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(PROTOCOL_VERSION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The version both sides speak.
pub fn negotiate(headers: &HeaderMap, served: &[&'static str]) -> Result<&'static str, ApiError> {
    let offered = offered(headers);
    offered
        .iter()
        .find_map(|p| served.iter().find(|s| **s == p.as_str()).copied())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {served:?}"
            ))
        })
}

/// 101 Switching Protocols to SPDY/3.1 with the chosen version.
pub fn switching(version: &'static str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(PROTOCOL_VERSION, HeaderValue::from_static(version));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn upgrades_are_recognised() {
        let ws = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(requested(&ws), Upgrade::WebSocket);
        let spdy = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "SPDY/3.1"),
        ]);
        assert_eq!(requested(&spdy), Upgrade::Spdy);
        assert_eq!(
            requested(&headers(&[("upgrade", "SPDY/3.1")])),
            Upgrade::None
        );
        assert_eq!(requested(&headers(&[])), Upgrade::None);
    }

    #[test]
    fn the_clients_first_served_version_wins() {
        let kubectl = headers(&[
            (PROTOCOL_VERSION, "v5.channel.k8s.io"),
            (PROTOCOL_VERSION, "v4.channel.k8s.io"),
            (PROTOCOL_VERSION, "v3.channel.k8s.io"),
            (PROTOCOL_VERSION, "v2.channel.k8s.io"),
            (PROTOCOL_VERSION, "channel.k8s.io"),
        ]);
        let served = ["v4.channel.k8s.io", "v5.channel.k8s.io"];
        assert_eq!(negotiate(&kubectl, &served).unwrap(), "v5.channel.k8s.io");
        let old = headers(&[(PROTOCOL_VERSION, "v3.channel.k8s.io, v2.channel.k8s.io")]);
        assert_eq!(
            negotiate(&old, &["v4.channel.k8s.io", "v2.channel.k8s.io"]).unwrap(),
            "v2.channel.k8s.io"
        );
        let none = negotiate(&headers(&[(PROTOCOL_VERSION, "channel.k8s.io")]), &served);
        let err = none.unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.contains("unable to negotiate protocol"),
            "{}",
            err.message
        );
        let pf = headers(&[(PROTOCOL_VERSION, PORT_FORWARD)]);
        assert_eq!(negotiate(&pf, &[PORT_FORWARD]).unwrap(), PORT_FORWARD);
        let reply = switching("v4.channel.k8s.io");
        assert_eq!(reply.status(), 101);
        assert_eq!(reply.headers()[PROTOCOL_VERSION], "v4.channel.k8s.io");
        assert_eq!(reply.headers()[header::UPGRADE], "SPDY/3.1");
    }
}
