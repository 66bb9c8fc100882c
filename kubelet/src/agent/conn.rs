//! The node's connection to the control plane: one TLS gRPC channel (the cluster CA
//! trusted, the node's credentials attached to every call), redialled with back-off.

use std::time::Duration;

use skiff_api::node::node_client::NodeClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use super::AgentError;

/// How the node proves who it is.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A node bearer token (`node.<name>.<secret>`).
    Token(String),
    /// A client certificate and key (PEM) issued at join.
    Certificate { cert_pem: String, key_pem: String },
}

/// Adds the bearer token to every call (nothing for certificate credentials).
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Client = NodeClient<InterceptedService<Channel, Auth>>;

/// Dials `server` (`https://host:port`), trusting only `ca_pem`.
pub async fn connect(
    server: &str,
    ca_pem: &str,
    credentials: &Credentials,
) -> Result<Client, AgentError> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(tls_name(server));
    let mut auth = Auth(None);
    match credentials {
        Credentials::Token(token) => {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                AgentError::Config("the node token is not valid header text".into())
            })?;
            auth = Auth(Some(value));
        }
        Credentials::Certificate { cert_pem, key_pem } => {
            tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
        }
    }
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
    Ok(NodeClient::with_interceptor(channel, auth).max_decoding_message_size(64 * 1024 * 1024))
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
