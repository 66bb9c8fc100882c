//! The node's side of the node contract's transport: one gRPC channel over mutual TLS (the
//! cluster CA as the only root, the node's certificate as its identity). The kubelet's agent
//! and the proxy dial the same way, each with its own channel.

use std::time::Duration;

use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Why a channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("control plane address {server:?}: {reason}")]
    Address { server: String, reason: String },
    #[error("TLS towards {server}: {reason}")]
    Tls { server: String, reason: String },
    #[error("connecting to {server}: {reason}")]
    Connect { server: String, reason: String },
}

/// Dials `server` (`https://host:port`) with `tls` (the cluster CA and the node's identity).
/// The server's certificate must name the URI's host.
pub async fn channel(server: &str, tls: ClientTlsConfig) -> Result<Channel, DialError> {
    let tls = tls.domain_name(tls_name(server));
    let endpoint = Endpoint::from_shared(server.to_owned())
        .map_err(|e| DialError::Address {
            server: server.to_owned(),
            reason: e.to_string(),
        })?
        .tls_config(tls)
        .map_err(|e| DialError::Tls {
            server: server.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    endpoint.connect().await.map_err(|e| DialError::Connect {
        server: server.to_owned(),
        reason: match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    })
}

/// The `host:port` of `https://host:port/…`.
pub fn authority(server: &str) -> &str {
    let rest = server.split_once("://").map_or(server, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// The host part of `https://host:port` (the serving certificate names 127.0.0.1 and
/// localhost, plus whatever `--tls-san` added).
pub fn tls_name(server: &str) -> String {
    let authority = authority(server);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::tls_name;

    #[test]
    fn tls_name_is_the_host() {
        assert_eq!(tls_name("https://127.0.0.1:6444"), "127.0.0.1");
        assert_eq!(tls_name("https://cp.example:6444/"), "cp.example");
        assert_eq!(tls_name("https://[::1]:6444"), "::1");
        assert_eq!(tls_name("https://localhost"), "localhost");
        assert_eq!(
            super::authority("https://cp.example:6444/x"),
            "cp.example:6444"
        );
    }
}
