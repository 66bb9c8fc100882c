//! Joining a cluster: the node makes an ECDSA P-256 key and a CSR, sends them with a join
//! token to the API server's `POST /skiff/v1/join` over HTTPS trusting only the cluster CA,
//! and keeps the client certificate it gets back in a directory (`node.crt`, `node.key`
//! mode 0600, `ca.crt`). On a restart `NodeCredentials::load` reads them again; the node
//! joins again only when the certificate expired. The certificate is the node's mTLS
//! identity towards the control plane's node (gRPC) port.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use skiff_api::join::{JOIN_PATH, JoinRequest, JoinResponse, NODE_USER_PREFIX};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The node's client certificate in the credentials directory.
pub const CERT_FILE: &str = "node.crt";
/// The node's private key (mode 0600).
pub const KEY_FILE: &str = "node.key";
/// The cluster CA certificate.
pub const CA_FILE: &str = "ca.crt";

/// The largest answer read from the API server.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// How long one join request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why joining or loading the node's credentials failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The server URL is not `https://host[:port]`.
    #[error("invalid server url {url}: {reason}")]
    Url { url: String, reason: String },
    /// The CA PEM holds no usable certificate.
    #[error("the cluster ca is not usable: {reason}")]
    Ca { reason: String },
    /// Generating the key or the CSR failed.
    #[error("generating the node key and csr")]
    Key(#[source] rcgen::Error),
    /// Connecting, the TLS handshake or the HTTP exchange failed.
    #[error("{what} {url}")]
    Transport {
        what: &'static str,
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The request took longer than its deadline.
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// The API server refused the join (`code` is the HTTP status; `message` its Status's).
    #[error("the api server refused the join ({code}): {message}")]
    Rejected { code: u16, message: String },
    /// The answer is not a `JoinResponse`.
    #[error("unexpected answer from the api server: {reason}")]
    Response { reason: String },
    /// Reading or writing a credentials file failed.
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A certificate (stored or received) is unusable.
    #[error("unusable certificate {what}: {reason}")]
    Cert { what: String, reason: String },
    /// The CA the API server offered is not the one the node was told to trust.
    #[error(
        "the cluster ca offered by {url} has hash {got}, not the pinned {want}; not trusting it"
    )]
    CaHashMismatch {
        url: String,
        want: String,
        got: String,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JoinError {
    let path = path.to_owned();
    move |source| JoinError::Io { op, path, source }
}

/// A node's mTLS identity: its client certificate and key, and the cluster CA.
#[derive(Clone)]
pub struct NodeCredentials {
    /// The node name the certificate carries (`CN=system:node:<name>`).
    pub node_name: String,
    /// PEM of the client certificate.
    pub cert_pem: String,
    /// PEM (PKCS#8) of the private key.
    pub key_pem: String,
    /// PEM of the cluster CA.
    pub ca_pem: String,
    /// When the certificate stops being valid.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("node_name", &self.node_name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl NodeCredentials {
    /// Reads `dir/node.crt`, `dir/node.key` and `dir/ca.crt` (what `join` wrote).
    pub fn load(dir: &Path) -> Result<NodeCredentials, JoinError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(io("read", &path))
        };
        let (cert_pem, key_pem, ca_pem) = (read(CERT_FILE)?, read(KEY_FILE)?, read(CA_FILE)?);
        KeyPair::from_pem(&key_pem).map_err(|e| JoinError::Cert {
            what: dir.join(KEY_FILE).display().to_string(),
            reason: e.to_string(),
        })?;
        let what = dir.join(CERT_FILE).display().to_string();
        let (node_name, not_after) = inspect(&cert_pem, &what)?;
        Ok(NodeCredentials {
            node_name,
            cert_pem,
            key_pem,
            ca_pem,
            not_after,
        })
    }

    /// Whether the certificate is still valid at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        now < self.not_after
    }

    /// tonic client TLS towards the node port: the cluster CA as the only root, this node's
    /// certificate as the client identity. `domain` is the name (or IP) the server's
    /// certificate must carry; tonic takes it from the URI when it is not set.
    pub fn tonic_client_tls(&self, domain: Option<&str>) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ));
        match domain {
            Some(domain) => config.domain_name(domain),
            None => config,
        }
    }

    /// A rustls client configuration (ring, ALPN `h2`) presenting this node's certificate
    /// and trusting only the cluster CA: for clients other than tonic.
    pub fn rustls_client_config(&self) -> Result<Arc<rustls::ClientConfig>, JoinError> {
        let bad_key = |reason: String| JoinError::Cert {
            what: "node key".into(),
            reason,
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| JoinError::Cert {
                    what: "node certificate".into(),
                    reason: e.to_string(),
                })?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| bad_key(e.to_string()))?;
        let mut config = client_builder(&self.ca_pem)?
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad_key(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The node name and expiry of a node certificate.
fn inspect(cert_pem: &str, what: &str) -> Result<(String, SystemTime), JoinError> {
    let bad = |reason: String| JoinError::Cert {
        what: what.to_owned(),
        reason,
    };
    let der =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;
    let node_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .and_then(|cn| cn.strip_prefix(NODE_USER_PREFIX))
        .filter(|name| !name.is_empty())
        .ok_or_else(|| bad(format!("the subject is not {NODE_USER_PREFIX}<node>")))?
        .to_owned();
    let secs = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Ok((node_name, UNIX_EPOCH + Duration::from_secs(secs)))
}

pub(crate) fn client_builder(
    ca_pem: &str,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, JoinError>
{
    let bad = |reason: String| JoinError::Ca { reason };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the pem".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots))
}

/// Where to connect: `https://host[:port]` (port 443 if absent).
fn target(server_url: &str) -> Result<(String, u16), JoinError> {
    let bad = |reason: &str| JoinError::Url {
        url: server_url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: hyper::Uri = server_url.parse().map_err(|_| bad("not a url"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("the scheme must be https"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_owned(), uri.port_u16().unwrap_or(443)))
}

/// Sends one join request and returns the server's answer; a refusal is
/// `JoinError::Rejected` with the HTTP status. The low-level half of `join`.
pub async fn request_certificate(
    server_url: &str,
    token: &str,
    ca_pem: &str,
    request: &JoinRequest,
) -> Result<JoinResponse, JoinError> {
    with_deadline(server_url, exchange(server_url, token, ca_pem, request)).await
}

/// `future`, or `JoinError::Timeout` after `REQUEST_TIMEOUT`.
pub(crate) async fn with_deadline<T>(
    server_url: &str,
    future: impl std::future::Future<Output = Result<T, JoinError>>,
) -> Result<T, JoinError> {
    let timeout = REQUEST_TIMEOUT;
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| JoinError::Timeout {
            url: server_url.to_owned(),
            timeout,
        })?
}

async fn exchange(
    server_url: &str,
    token: &str,
    ca_pem: &str,
    request: &JoinRequest,
) -> Result<JoinResponse, JoinError> {
    let mut config = client_builder(ca_pem)?.with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let body = serde_json::to_vec(request).map_err(|e| JoinError::Response {
        reason: e.to_string(),
    })?;
    let request = hyper::Request::post(JOIN_PATH)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONTENT_TYPE, "application/json");
    let (code, bytes) = https_exchange(server_url, config, request, body).await?;
    if code != 200 {
        return Err(rejected(code, &bytes));
    }
    serde_json::from_slice(&bytes).map_err(|e| JoinError::Response {
        reason: e.to_string(),
    })
}

/// A refusal: the HTTP status and the message of the Status the server answered.
pub(crate) fn rejected(code: u16, bytes: &[u8]) -> JoinError {
    let message = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
    JoinError::Rejected { code, message }
}

/// One HTTPS request over a fresh connection with the TLS `config`: `request` gets the
/// `Host` and `Accept` headers and `body`; returns the status and at most
/// `MAX_RESPONSE_BYTES` of the answer.
pub(crate) async fn https_exchange(
    server_url: &str,
    config: rustls::ClientConfig,
    request: hyper::http::request::Builder,
    body: Vec<u8>,
) -> Result<(u16, Bytes), JoinError> {
    let (host, port) = target(server_url)?;
    let transport = |what: &'static str| {
        let url = server_url.to_owned();
        move |e: Box<dyn std::error::Error + Send + Sync>| JoinError::Transport {
            what,
            url,
            source: e,
        }
    };
    let name = ServerName::try_from(host.clone()).map_err(|_| JoinError::Url {
        url: server_url.to_owned(),
        reason: "the host is not a valid server name".into(),
    })?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| transport("cannot connect to")(e.into()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| transport("tls handshake with")(e.into()))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| transport("http handshake with")(e.into()))?;
    let driver = tokio::spawn(connection);
    let http_request = request
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| transport("building the request to")(e.into()))?;
    let response = sender
        .send_request(http_request)
        .await
        .map_err(|e| transport("sending a request to")(e.into()))?;
    let code = response.status().as_u16();
    let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| transport("reading the answer of")(e))?
        .to_bytes();
    driver.abort();
    Ok((code, bytes))
}

/// A fresh key (ECDSA P-256) and a CSR for it naming `system:node:<node_name>`.
pub fn key_and_csr(node_name: &str) -> Result<(KeyPair, String), JoinError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(JoinError::Key)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(JoinError::Key)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{NODE_USER_PREFIX}{node_name}"));
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(JoinError::Key)?;
    Ok((key, csr))
}

/// Joins the cluster at `server_url` (`https://host:port`, trusted through `ca_pem` only)
/// with join `token` as `node_name`, and writes the credentials into `dir`.
pub async fn join(
    server_url: &str,
    token: &str,
    ca_pem: &str,
    node_name: &str,
    dir: &Path,
) -> Result<NodeCredentials, JoinError> {
    let (key, csr) = key_and_csr(node_name)?;
    let request = JoinRequest {
        node_name: node_name.to_owned(),
        csr,
    };
    let response = request_certificate(server_url, token, ca_pem, &request).await?;
    let (issued_to, not_after) = inspect(&response.certificate, "from the api server")?;
    if issued_to != node_name {
        return Err(JoinError::Cert {
            what: "from the api server".into(),
            reason: format!("issued to {issued_to:?}, not {node_name:?}"),
        });
    }
    let credentials = NodeCredentials {
        node_name: issued_to,
        cert_pem: response.certificate,
        key_pem: key.serialize_pem(),
        ca_pem: response.ca_certificate,
        not_after,
    };
    save(&credentials, dir)?;
    Ok(credentials)
}

/// The credentials in `dir` if they are `node_name`'s and still valid; otherwise joins again.
pub async fn load_or_join(
    server_url: &str,
    token: &str,
    ca_pem: &str,
    node_name: &str,
    dir: &Path,
) -> Result<NodeCredentials, JoinError> {
    match NodeCredentials::load(dir) {
        Ok(found) if found.node_name == node_name && found.is_valid_at(SystemTime::now()) => {
            Ok(found)
        }
        _ => join(server_url, token, ca_pem, node_name, dir).await,
    }
}

/// Writes the credentials: the CA and key first, the certificate last (its presence means
/// the set is complete); each file replaced atomically.
fn save(credentials: &NodeCredentials, dir: &Path) -> Result<(), JoinError> {
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    write_file(&dir.join(CA_FILE), credentials.ca_pem.as_bytes(), 0o644)?;
    write_file(&dir.join(KEY_FILE), credentials.key_pem.as_bytes(), 0o600)?;
    write_file(&dir.join(CERT_FILE), credentials.cert_pem.as_bytes(), 0o644)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), JoinError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    file.write_all(contents).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_with_a_host() {
        assert_eq!(
            target("https://127.0.0.1:6443").unwrap(),
            ("127.0.0.1".into(), 6443)
        );
        assert_eq!(target("https://[::1]:1").unwrap(), ("::1".into(), 1));
        assert_eq!(
            target("https://cp.example").unwrap(),
            ("cp.example".into(), 443)
        );
        for bad in ["http://127.0.0.1:6443", "127.0.0.1:6443", "", "https://"] {
            assert!(target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_csr_is_p256_and_names_the_node() {
        let (key, csr) = key_and_csr("worker-1").unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    }

    #[test]
    fn credentials_round_trip_through_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = key_and_csr("n1").unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "system:node:n1");
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let credentials = NodeCredentials {
            node_name: "n1".into(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: cert.pem(),
            not_after: SystemTime::now(),
        };
        save(&credentials, dir.path()).unwrap();
        let loaded = NodeCredentials::load(dir.path()).unwrap();
        assert_eq!(loaded.node_name, "n1");
        assert_eq!(loaded.key_pem, credentials.key_pem);
        let expiry = UNIX_EPOCH + Duration::from_secs(1_893_456_000);
        assert_eq!(loaded.not_after, expiry);
        assert!(loaded.is_valid_at(expiry - Duration::from_secs(1)));
        assert!(!loaded.is_valid_at(expiry));
        assert!(loaded.rustls_client_config().is_ok());
        let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
        fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        assert!(matches!(
            NodeCredentials::load(dir.path()),
            Err(JoinError::Io { op: "read", .. })
        ));
    }
}
