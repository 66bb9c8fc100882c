//! The node's connection to the control plane: one gRPC channel over mutual TLS (the
//! cluster CA trusted, the node's certificate presented; `skiff_api::dial`), redialled
//! with back-off.

use skiff_api::node::node_client::NodeClient;
use tonic::transport::Channel;

use super::AgentError;
use crate::join::NodeCredentials;

pub type Client = NodeClient<Channel>;

/// Dials `server` (`https://host:port`) with mutual TLS: the cluster CA as the only root,
/// the node's certificate as its identity.
pub async fn connect(server: &str, credentials: &NodeCredentials) -> Result<Client, AgentError> {
    let channel = skiff_api::dial::channel(server, credentials.tonic_client_tls(None))
        .await
        .map_err(|e| match e {
            skiff_api::dial::DialError::Connect { server, reason } => AgentError::Connect {
                server,
                message: reason,
            },
            other => AgentError::Config(other.to_string()),
        })?;
    Ok(NodeClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}
