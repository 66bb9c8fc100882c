//! TLS of the node port (the gRPC service nodes call): the API server's serving certificate,
//! ALPN `h2`, and a **required** client certificate chaining to the cluster CA, whose subject
//! names the node (`CN=system:node:<name>, O=system:nodes`, issued by `join.rs`). Two ways to
//! serve it: `NodeTls::server_config` for a `tokio_rustls::TlsAcceptor`, or
//! `NodeTls::tonic_server_tls` for `tonic::transport::Server::tls_config`; either way
//! `node_name` reads the caller from its certificate (`Request::peer_certs()` in tonic).

use std::fmt;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use skiff_api::join::{NODE_USER_PREFIX, NODES_GROUP};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::tls::Pki;

/// Why the node port's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NodeTlsError {
    /// The cluster CA certificate is not usable as a trust anchor.
    #[error("the cluster ca is not a usable trust anchor")]
    Anchor(#[source] rustls::Error),
    /// The client verifier could not be built.
    #[error("client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// The serving certificate or key was refused.
    #[error("tls server configuration")]
    Config(#[source] rustls::Error),
}

/// The node port's credentials: the cluster CA (trusted for client certificates) and the
/// API server's serving identity. Cheap to clone.
#[derive(Clone)]
pub struct NodeTls {
    ca_pem: Arc<str>,
    ca_der: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    chain_pem: Arc<str>,
    key_der: Arc<[u8]>,
    key_pem: Arc<str>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    pub(crate) fn from_pki(pki: &Pki) -> Option<NodeTls> {
        Some(NodeTls {
            ca_pem: Arc::from(pki.ca_pem.as_str()),
            // The chain is (leaf, CA); `tls.rs` always builds it so.
            ca_der: pki.chain.last()?.clone(),
            chain: pki.chain.clone(),
            chain_pem: Arc::from(pki.chain_pem.as_str()),
            key_der: Arc::from(pki.key_der.as_slice()),
            key_pem: Arc::from(pki.key_pem.as_str()),
        })
    }

    /// PEM of the cluster CA: what nodes trust, and what their certificates chain to.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN `h2`) that
    /// requires a client certificate signed by the cluster CA.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, NodeTlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(NodeTlsError::Anchor)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .map_err(NodeTlsError::Verifier)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.to_vec()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(NodeTlsError::Config)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), key)
            .map_err(NodeTlsError::Config)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The same policy as tonic's TLS settings: the serving identity, the cluster CA as the
    /// client root, client authentication required (tonic adds ALPN `h2`). tonic builds its
    /// rustls config with the process's default provider, or ring if none is installed.
    pub fn tonic_server_tls(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                self.chain_pem.as_bytes(),
                self.key_pem.as_bytes(),
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(
                self.ca_pem.as_bytes(),
            ))
            .client_auth_optional(false)
    }
}

/// The node a client certificate names: `<name>` of `CN=system:node:<name>` when the
/// certificate's organization is `system:nodes`; `None` for anything else. Call it only on
/// a certificate the TLS layer verified (the first of `peer_certs()`).
pub fn node_name(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let subject = cert.subject();
    let mut organizations = subject.iter_organization();
    let in_group = organizations.next()?.as_str().ok()? == NODES_GROUP;
    if !in_group || organizations.next().is_some() {
        return None;
    }
    let mut names = subject.iter_common_name();
    let cn = names.next()?.as_str().ok()?;
    if names.next().is_some() {
        return None;
    }
    let name = cn.strip_prefix(NODE_USER_PREFIX)?;
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert(subject: &[(DnType, &str)]) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in subject {
            params.distinguished_name.push(ty.clone(), *value);
        }
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn only_node_subjects_name_a_node() {
        let (cn, o) = (DnType::CommonName, DnType::OrganizationName);
        let good = cert(&[(cn.clone(), "system:node:w1"), (o.clone(), "system:nodes")]);
        assert_eq!(node_name(&good).as_deref(), Some("w1"));
        for subject in [
            vec![(cn.clone(), "system:node:w1")],
            vec![
                (cn.clone(), "system:node:w1"),
                (o.clone(), "system:masters"),
            ],
            vec![(cn.clone(), "system:node:"), (o.clone(), "system:nodes")],
            vec![(cn.clone(), "admin"), (o.clone(), "system:nodes")],
            vec![(o.clone(), "system:nodes")],
        ] {
            assert_eq!(node_name(&cert(&subject)), None, "{subject:?}");
        }
        assert_eq!(node_name(b"not a certificate"), None);
    }

    #[test]
    fn the_server_config_speaks_h2() {
        let dir = tempfile::tempdir().unwrap();
        let pki = super::super::tls::load_or_create(dir.path(), &[]).unwrap();
        let tls = NodeTls::from_pki(&pki).unwrap();
        let config = tls.server_config().unwrap();
        assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
        assert!(!format!("{tls:?}").contains("PRIVATE"));
    }
}
