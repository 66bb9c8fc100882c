//! A small HTTPS/1.1 client for `skiff bench api`: one keep-alive connection per task,
//! rustls (ring) trusting the cluster CA, a bearer token — what kubectl does, without
//! kubectl's process start in the measurement.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// What every connection needs.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub token: String,
    tls: tokio_rustls::TlsConnector,
}

impl Endpoint {
    /// An endpoint trusting the CA in `ca_pem`.
    pub fn new(addr: SocketAddr, ca_pem: &str, token: &str) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.context("parsing the cluster CA")?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Endpoint {
            addr,
            token: token.to_owned(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Opens one connection.
    pub async fn connect(&self) -> Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = self.tls.connect(name, tcp).await.context("TLS handshake")?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            authorization: format!("Bearer {}", self.token),
            host: self.addr.to_string(),
        })
    }
}

/// One keep-alive connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    authorization: String,
    host: String,
}

impl Conn {
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        accept: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<Incoming>> {
        self.sender.ready().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", &self.authorization)
            .header("accept", accept)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))?;
        Ok(self.sender.send_request(request).await?)
    }

    /// A request with a JSON body (or none); the status and the whole reply body.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        accept: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Bytes)> {
        let response = self.send(method, path, accept, content_type, body).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// A GET whose reply body is read as it streams (a watch).
    pub async fn stream(&mut self, path: &str) -> Result<Incoming> {
        let response = self
            .send(
                "GET",
                path,
                "application/json",
                "application/json",
                Vec::new(),
            )
            .await?;
        if !response.status().is_success() {
            return Err(anyhow!("GET {path}: {}", response.status()));
        }
        Ok(response.into_body())
    }
}
