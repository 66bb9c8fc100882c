//! Serves the node contract over gRPC with mutual TLS on its own port (`--node-listen`,
//! default 6444): the `Node` and `Services` services, the API server's serving certificate,
//! and a client certificate from the cluster CA required of every caller
//! (`apiserver::NodeTls`).

use std::net::SocketAddr;

use skiff_api::node::{node_server, services_server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Server, ServerTlsConfig};

use super::{NodeService, ServiceFeed};

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
    tls: ServerTlsConfig,
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
    let mut builder = Server::builder()
        .tls_config(tls)
        .map_err(NodeServerError::Tls)?
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)));
    let feed = ServiceFeed::new(service.client.clone());
    let router = builder
        .add_service(node_server::NodeServer::new(service))
        .add_service(services_server::ServicesServer::new(feed));
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
