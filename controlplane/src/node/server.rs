//! Serves the node contract over gRPC with TLS on its own port (`--node-listen`, default
//! 6444): the API server's serving certificate, and the cluster CA to check the client
//! certificates nodes present (optional at the TLS layer, so a node token also works; the
//! service refuses a call that carries neither).

use std::net::SocketAddr;

use skiff_api::node::node_server;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::NodeService;

#[derive(Debug, thiserror::Error)]
pub enum NodeServerError {
    #[error("binding the node service to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("node service TLS: {0}")]
    Tls(tonic::transport::Error),
    #[error("node service: {0}")]
    Serve(tonic::transport::Error),
}

/// PEM credentials of the node port.
#[derive(Debug, Clone)]
pub struct NodeTls {
    /// The serving certificate chain and its key.
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA that signs node client certificates.
    pub client_ca_pem: String,
}

/// A running node service.
pub struct NodeServer {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), NodeServerError>>,
}

impl NodeServer {
    /// Stops accepting calls and waits for the server task.
    pub async fn shutdown(self) -> Result<(), NodeServerError> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

/// Binds `listen` and serves `service` in a background task.
pub async fn serve(
    listen: SocketAddr,
    service: NodeService,
    tls: &NodeTls,
) -> Result<NodeServer, NodeServerError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| NodeServerError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| NodeServerError::Bind {
            addr: listen,
            source,
        })?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .client_ca_root(Certificate::from_pem(&tls.client_ca_pem))
        .client_auth_optional(true);
    let mut builder = Server::builder()
        .tls_config(tls)
        .map_err(NodeServerError::Tls)?
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)));
    let router = builder.add_service(node_server::NodeServer::new(service));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .map_err(NodeServerError::Serve)
    });
    tracing::info!(%addr, "node service listening");
    Ok(NodeServer { addr, stop, task })
}
