//! CA discovery by pin, as `kubeadm join --discovery-token-ca-cert-hash`: a node that knows
//! the API server's address and the hash of the cluster CA (not the CA itself) fetches
//! `GET /skiff/v1/cluster-info` over TLS *without* verifying the server, and accepts the CA
//! in the answer only if `skiff_api::join::ca_cert_hash` of it (SHA-256 of its
//! SubjectPublicKeyInfo) equals the pin. Everything afterwards (the join, the node port)
//! trusts that CA alone, so a server that answered discovery with a different CA is refused
//! before any secret is sent to it.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use skiff_api::join::{CLUSTER_INFO_PATH, ClusterInfo, ca_cert_hash, parse_ca_hash};

use crate::join::{JoinError, https_exchange, rejected, with_deadline};

/// Fetches the cluster CA from `server_url` (`https://host:port`) and returns its PEM if its
/// hash is `pin` (`sha256:<hex>`); `JoinError::CaHashMismatch` otherwise.
pub async fn discover_ca(server_url: &str, pin: &str) -> Result<String, JoinError> {
    let want = parse_ca_hash(pin).map_err(|e| JoinError::Ca {
        reason: e.to_string(),
    })?;
    let info = with_deadline(server_url, fetch(server_url)).await?;
    let got = hash_of(&info.ca_certificate)?;
    if got != want {
        return Err(JoinError::CaHashMismatch {
            url: server_url.to_owned(),
            want,
            got,
        });
    }
    Ok(info.ca_certificate)
}

/// The pin of the first certificate of `ca_pem`.
fn hash_of(ca_pem: &str) -> Result<String, JoinError> {
    let bad = |reason: String| JoinError::Ca { reason };
    let der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    ca_cert_hash(&der).map_err(|e| bad(e.to_string()))
}

async fn fetch(server_url: &str) -> Result<ClusterInfo, JoinError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let bad_tls = |e: rustls::Error| JoinError::Ca {
        reason: e.to_string(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(bad_tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let request = hyper::Request::get(CLUSTER_INFO_PATH);
    let (code, bytes) = https_exchange(server_url, config, request, Vec::new()).await?;
    if code != 200 {
        return Err(rejected(code, &bytes));
    }
    serde_json::from_slice(&bytes).map_err(|e| JoinError::Response {
        reason: format!("cluster-info: {e}"),
    })
}

/// Accepts any server certificate, checking only that the handshake signatures are valid
/// for the key it presented. Used for discovery alone, whose answer is checked by its hash.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_malformed_pin_fails_before_any_connection() {
        // Port 1 on loopback: nothing listens, but the pin is refused first.
        let err = discover_ca("https://127.0.0.1:1", "sha256:abc")
            .await
            .unwrap_err();
        assert!(matches!(err, JoinError::Ca { .. }), "{err}");
        assert!(err.to_string().contains("sha256:"), "{err}");
    }

    #[test]
    fn the_pin_of_a_pem_is_of_its_first_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pin = hash_of(&cert.pem()).unwrap();
        assert_eq!(pin, ca_cert_hash(cert.der()).unwrap());
        assert!(matches!(hash_of("no pem"), Err(JoinError::Ca { .. })));
    }
}
