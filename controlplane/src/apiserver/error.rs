//! `ApiServerError`: why the API server could not start or run.

use std::path::PathBuf;

use crate::store::StoreError;

/// Start-up and serving failures (request failures are `status::ApiError`).
#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    /// Reading or writing a file in the data dir failed.
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Generating or loading a certificate or key failed.
    #[error("certificate {what}")]
    Cert {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// Building the TLS configuration failed.
    #[error("tls configuration")]
    Tls(#[source] rustls::Error),
    /// A PEM file in the data dir is unusable.
    #[error("unusable {path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    /// Opening the store failed.
    #[error("store")]
    Store(#[from] StoreError),
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Creating the objects every cluster has (the `kubernetes` Service) failed.
    #[error("creating the default objects: {0}")]
    Bootstrap(String),
    /// The HTTP server stopped with an error.
    #[error("serving")]
    Serve(#[source] std::io::Error),
}
