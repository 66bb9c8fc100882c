//! The node's connection to the control plane: one gRPC channel over mutual TLS (the
//! cluster CA trusted, the node's certificate presented), redialled with back-off.

use std::time::Duration;

use skiff_api::node::node_client::NodeClient;
use tonic::transport::{Channel, Endpoint};

use super::AgentError;
use crate::join::NodeCredentials;

pub type Client = NodeClient<Channel>;

/// The node service's address, parsed once: the URL to dial, its `host:port`, and the host
/// the serving certificate must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    pub url: String,
    pub authority: String,
    pub host: String,
}

impl ServerAddr {
    /// `https://host:port[/…]` (the certificate names 127.0.0.1 and localhost, plus whatever
    /// `--tls-san` added).
    pub fn parse(url: &str) -> ServerAddr {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => authority,
        };
        ServerAddr {
            url: url.to_owned(),
            authority: authority.to_owned(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        }
    }
}

/// Dials `server` with mutual TLS: the cluster CA as the only root, the node's certificate
/// as its identity.
pub async fn connect(
    server: &ServerAddr,
    credentials: &NodeCredentials,
) -> Result<Client, AgentError> {
    let tls = credentials.tonic_client_tls(Some(&server.host));
    let url = &server.url;
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| AgentError::Config(format!("control plane address {url:?}: {e}")))?
        .tls_config(tls)
        .map_err(|e| AgentError::Config(format!("TLS: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await.map_err(|e| AgentError::Connect {
        server: url.clone(),
        message: e.to_string(),
    })?;
    Ok(NodeClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::ServerAddr;

    #[test]
    fn the_address_is_parsed_into_host_and_authority() {
        let host = |url: &str| ServerAddr::parse(url).host;
        assert_eq!(host("https://127.0.0.1:6444"), "127.0.0.1");
        assert_eq!(host("https://cp.example:6444/"), "cp.example");
        assert_eq!(host("https://[::1]:6444"), "::1");
        assert_eq!(host("https://localhost"), "localhost");
        let a = ServerAddr::parse("https://cp.example:6444/x");
        assert_eq!(a.authority, "cp.example:6444");
        assert_eq!(a.url, "https://cp.example:6444/x");
    }
}
