//! Node join: `POST /skiff/v1/join` with `Authorization: Bearer <join token>` and a
//! `JoinRequest` (node name, PEM CSR) answers a `JoinResponse`: a client certificate signed by
//! the cluster CA for `CN=system:node:<name>, O=system:nodes` (clientAuth only, one year) and
//! the CA certificate. Only the CSR's public key is used; its requested subject and
//! extensions are ignored. Also the admin's `POST /skiff/v1/jointokens`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::to_bytes;
use axum::extract::{Extension, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use rand::Rng;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use serde::Deserialize;
use skiff_api::join::{
    JoinRequest, JoinResponse, JoinTokenResponse, NODE_USER_PREFIX, NODES_GROUP,
};
use time::OffsetDateTime;

use super::authz::Identity;
use super::status::{ApiError, Cause};
use super::{auth, handlers, jointoken, validate};
use crate::store::Store;

/// How long a node certificate is valid.
pub const NODE_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How far back a certificate's validity starts, for nodes whose clock is a little behind.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why a node certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum NodeCertError {
    /// The CSR is not PEM, not a CSR, badly signed, or has an unsupported key or extension.
    #[error("the csr is unusable: {0}")]
    Csr(#[source] rcgen::Error),
    /// Signing failed.
    #[error("signing the node certificate")]
    Sign(#[source] rcgen::Error),
}

/// Issues the client certificate of node `node` for the public key of `csr_pem`, valid from
/// `now` (backdated a few minutes) for `NODE_CERT_VALIDITY`. Returns its PEM.
pub fn sign_node_csr(
    issuer: &Issuer<'_, KeyPair>,
    node: &str,
    csr_pem: &str,
    now: OffsetDateTime,
) -> Result<String, NodeCertError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(NodeCertError::Csr)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{NODE_USER_PREFIX}{node}"));
    dn.push(DnType::OrganizationName, NODES_GROUP);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = now - BACKDATE;
    params.not_after = now + NODE_CERT_VALIDITY;
    params.use_authority_key_identifier_extension = true;
    let mut serial: [u8; 16] = rand::rng().random();
    // Positive, and 16 bytes long whatever the draw.
    serial[0] = (serial[0] & 0x7f) | 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let cert = params
        .signed_by(&csr.public_key, issuer)
        .map_err(NodeCertError::Sign)?;
    Ok(cert.pem())
}

/// What the join endpoints need.
#[derive(Clone)]
pub struct JoinState {
    pub store: Arc<dyn Store>,
    pub issuer: Arc<Issuer<'static, KeyPair>>,
    pub ca_pem: Arc<str>,
    pub max_body_bytes: usize,
}

/// `POST /skiff/v1/join`: the auth layer lets it through; the join token is checked here.
pub async fn join(State(state): State<JoinState>, request: Request) -> Response {
    match join_inner(&state, request).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn join_inner(state: &JoinState, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = auth::bearer(header).ok_or_else(ApiError::unauthorized)?;
    if !jointoken::verify(state.store.as_ref(), token, Timestamp::now()).await {
        return Err(ApiError::unauthorized());
    }
    let body = to_bytes(body, state.max_body_bytes).await.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            ApiError::too_large(state.max_body_bytes)
        } else {
            ApiError::bad_request(format!("cannot read the request body: {inner}"))
        }
    })?;
    let request: JoinRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the join request is not valid: {e}")))?;
    let causes: Vec<Cause> =
        validate::validate_name(&request.node_name, validate::NameRule::Subdomain)
            .into_iter()
            .map(|c| Cause {
                field: "nodeName".into(),
                ..c
            })
            .collect();
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            "",
            "JoinRequest",
            &request.node_name,
            causes,
        ));
    }
    let certificate = sign_node_csr(
        &state.issuer,
        &request.node_name,
        &request.csr,
        OffsetDateTime::now_utc(),
    )
    .map_err(|e| match e {
        NodeCertError::Csr(_) => ApiError::bad_request(e.to_string()),
        NodeCertError::Sign(_) => ApiError::internal(e.to_string()),
    })?;
    tracing::info!(node = %request.node_name, "issued a node client certificate");
    let response = JoinResponse {
        certificate,
        ca_certificate: state.ca_pem.to_string(),
    };
    Ok(handlers::json(
        StatusCode::OK,
        &serde_json::to_value(response).unwrap_or_default(),
    ))
}

/// The optional body of `POST /skiff/v1/jointokens`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MintOptions {
    /// Lifetime in seconds; absent: 24 hours; 0: never expires.
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// Lifetime of a join token minted by the admin without a `ttlSeconds` (kubeadm's default).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// `POST /skiff/v1/jointokens` (admin only): mints a join token, `{"token", "expires"}`.
pub async fn mint_token(
    State(state): State<JoinState>,
    Extension(identity): Extension<Identity>,
    body: axum::body::Bytes,
) -> Response {
    if identity != Identity::Admin {
        let why = format!("User \"{}\" cannot create join tokens", identity.user());
        return ApiError::forbidden("skiff", "jointokens", None, &why).into_response();
    }
    let options = if body.iter().all(u8::is_ascii_whitespace) {
        MintOptions::default()
    } else {
        match serde_json::from_slice::<MintOptions>(&body) {
            Ok(options) => options,
            Err(e) => {
                return ApiError::bad_request(format!("the options are not valid: {e}"))
                    .into_response();
            }
        }
    };
    let ttl = match options.ttl_seconds {
        None => Some(DEFAULT_TOKEN_TTL),
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
    };
    match jointoken::mint(state.store.as_ref(), ttl).await {
        Ok(minted) => {
            let response = JoinTokenResponse {
                token: minted.token,
                expires: minted.expires.map(|t| t.to_string()),
            };
            handlers::json(
                StatusCode::CREATED,
                &serde_json::to_value(response).unwrap_or_default(),
            )
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, X509Certificate};

    fn ca() -> (Issuer<'static, KeyPair>, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "test-ca");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (Issuer::new(params, key), cert.pem())
    }

    fn csr(cn: &str) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn the_certificate_ignores_the_requested_subject() {
        let (issuer, _) = ca();
        let now = OffsetDateTime::now_utc();
        let pem = sign_node_csr(&issuer, "worker-1", &csr("system:admin"), now).unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes());
        let der: rustls::pki_types::CertificateDer = der.unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["system:node:worker-1"]);
        let o: Vec<_> = cert
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(o, ["system:nodes"]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth && eku.other.is_empty());
        assert!(!cert.is_ca());
        assert!(cert.subject_alternative_name().unwrap().is_none());
        let days = (cert.validity().not_after.timestamp() - now.unix_timestamp()) / 86_400;
        assert_eq!(days, 365);
        assert_eq!(cert.tbs_certificate.raw_serial().len(), 16);
    }

    #[test]
    fn a_bad_csr_is_refused() {
        let (issuer, ca_pem) = ca();
        let now = OffsetDateTime::now_utc();
        for bad in ["", "not pem", &ca_pem] {
            assert!(matches!(
                sign_node_csr(&issuer, "n", bad, now),
                Err(NodeCertError::Csr(_))
            ));
        }
        // A CSR whose signature does not match its key.
        let good = csr("x");
        let tampered = good.replacen("MII", "MIJ", 1);
        assert!(sign_node_csr(&issuer, "n", &tampered, now).is_err());
    }
}
