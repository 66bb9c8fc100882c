//! The node's connection to the control plane: one gRPC channel over mutual TLS (the
//! cluster CA trusted, the node's certificate presented), redialled with back-off.

use std::time::Duration;

use skiff_api::node::node_client::NodeClient;
use tonic::transport::{Channel, Endpoint};

use super::AgentError;
use crate::join::NodeCredentials;

pub type Client = NodeClient<Channel>;

/// Dials `server` (`https://host:port`) with mutual TLS: the cluster CA as the only root,
/// the node's certificate as its identity. The channel carries the node service and the
/// streams (`crate::stream::client`).
pub async fn connect(server: &str, credentials: &NodeCredentials) -> Result<Channel, AgentError> {
    let tls = credentials.tonic_client_tls(Some(&tls_name(server)));
    let endpoint = Endpoint::from_shared(server.to_owned())
        .map_err(|e| AgentError::Config(format!("control plane address {server:?}: {e}")))?
        .tls_config(tls)
        .map_err(|e| AgentError::Config(format!("TLS: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await.map_err(|e| AgentError::Connect {
        server: server.to_owned(),
        message: e.to_string(),
    })?;
    Ok(channel)
}

/// The node service's client over `channel`.
pub fn node_client(channel: Channel) -> Client {
    NodeClient::new(channel).max_decoding_message_size(64 * 1024 * 1024)
}

/// The host part of `https://host:port` (the serving certificate names 127.0.0.1 and
/// localhost, plus whatever `--tls-san` added).
fn tls_name(server: &str) -> String {
    let rest = server.split_once("://").map_or(server, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
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
    }
}
