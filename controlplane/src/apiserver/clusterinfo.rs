//! Discovery for joining nodes, as kubeadm's `cluster-info`: `GET /skiff/v1/cluster-info`
//! answers the cluster CA without authentication. A node fetches it over TLS without
//! verifying the server, and trusts it only if its hash (`skiff_api::join::ca_cert_hash`, of
//! the SubjectPublicKeyInfo) is the `--ca-cert-hash` it was given. The server writes that
//! hash to `DATA_DIR/ca-cert-hash` at each start.

use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use skiff_api::join::{ClusterInfo, ca_cert_hash};

use super::error::ApiServerError;
use super::handlers;
use super::tls::Pki;

/// The name of the CA hash file in the data dir.
pub const CA_HASH_FILE: &str = "ca-cert-hash";

/// What the endpoint serves: the CA PEM, fixed at start.
#[derive(Clone)]
pub struct ClusterInfoState {
    body: Arc<serde_json::Value>,
}

impl ClusterInfoState {
    pub fn new(ca_pem: &str) -> Self {
        let info = ClusterInfo {
            kind: "ClusterInfo".into(),
            ca_certificate: ca_pem.to_owned(),
        };
        ClusterInfoState {
            body: Arc::new(serde_json::to_value(info).unwrap_or_default()),
        }
    }
}

/// `GET /skiff/v1/cluster-info` (public).
pub async fn cluster_info(State(state): State<ClusterInfoState>) -> Response {
    handlers::json(StatusCode::OK, &state.body)
}

/// The CA's pin, written to `data_dir/ca-cert-hash` (mode 0644: it is not a secret).
pub fn write_hash(data_dir: &Path, pki: &Pki) -> Result<String, ApiServerError> {
    let ca_path = data_dir.join("pki/ca.crt");
    let bad = |reason: String| ApiServerError::Pem {
        path: ca_path.clone(),
        reason,
    };
    let der =
        CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let hash = ca_cert_hash(&der).map_err(|e| bad(e.to_string()))?;
    let path = data_dir.join(CA_HASH_FILE);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{hash}\n")).map_err(|source| ApiServerError::Io {
        op: "write",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| ApiServerError::Io {
        op: "rename",
        path: path.clone(),
        source,
    })?;
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_file_matches_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = super::super::tls::load_or_create(dir.path(), &[]).unwrap();
        let hash = write_hash(dir.path(), &pki).unwrap();
        let text = std::fs::read_to_string(dir.path().join(CA_HASH_FILE)).unwrap();
        assert_eq!(text, format!("{hash}\n"));
        assert_eq!(skiff_api::join::parse_ca_hash(&hash).unwrap(), hash);
        // The pin follows the CA's key: a fresh serving certificate leaves it unchanged.
        let again = super::super::tls::load_or_create(dir.path(), &["x.example".into()]).unwrap();
        assert_eq!(write_hash(dir.path(), &again).unwrap(), hash);
        let other = tempfile::tempdir().unwrap();
        let other = super::super::tls::load_or_create(other.path(), &[]).unwrap();
        assert_ne!(write_hash(dir.path(), &other).unwrap(), hash);
    }
}
