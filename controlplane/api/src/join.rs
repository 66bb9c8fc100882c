//! The node join contract: what a node sends to `POST /skiff/v1/join` with a join token,
//! what it gets back, the names its client certificate carries, and how a node that knows
//! only a CA hash learns the cluster CA (`GET /skiff/v1/cluster-info`, `ca_cert_hash`).
//! Types and pure functions only, no I/O.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The join endpoint on the API server's HTTPS port.
pub const JOIN_PATH: &str = "/skiff/v1/join";

/// The admin endpoint that mints another join token.
pub const JOIN_TOKENS_PATH: &str = "/skiff/v1/jointokens";

/// The unauthenticated discovery endpoint: the cluster CA, for a node that pins its hash.
pub const CLUSTER_INFO_PATH: &str = "/skiff/v1/cluster-info";

/// The prefix of a CA hash (`sha256:<64 hex digits>`), as kubeadm writes it.
pub const CA_HASH_PREFIX: &str = "sha256:";

/// A node certificate's common name is this prefix and the node's name.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// A node certificate's organization.
pub const NODES_GROUP: &str = "system:nodes";

/// The body of `POST /skiff/v1/join` (`Authorization: Bearer <join token>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinRequest {
    /// The node's name (a DNS-1123 subdomain); the certificate names `system:node:<it>`.
    pub node_name: String,
    /// A PEM certificate signing request; only its public key is used.
    pub csr: String,
}

/// The answer to a successful join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    /// The node's client certificate (PEM), signed by the cluster CA.
    pub certificate: String,
    /// The cluster CA certificate (PEM): the node trusts servers signed by it.
    pub ca_certificate: String,
}

/// The answer of `POST /skiff/v1/jointokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinTokenResponse {
    /// `<6 chars>.<16 chars>` of `[a-z0-9]`.
    pub token: String,
    /// RFC 3339 expiry, if the token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// The answer of `GET /skiff/v1/cluster-info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    /// Always `ClusterInfo`.
    pub kind: String,
    /// The cluster CA certificate (PEM). Not to be trusted until its hash is checked.
    pub ca_certificate: String,
}

/// Why a CA hash could not be computed or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaHashError {
    /// The certificate's DER does not parse.
    #[error("not an x509 certificate: {0}")]
    Certificate(String),
    /// A pin is not `sha256:` and 64 hex digits.
    #[error("invalid ca hash {0:?}: want sha256: and 64 hex digits")]
    Format(String),
}

/// kubeadm's CA pin of a certificate (DER): `sha256:` and the hex SHA-256 of its
/// SubjectPublicKeyInfo. It names the CA's key, so it survives re-issuing the CA
/// certificate with the same key.
pub fn ca_cert_hash(der: &[u8]) -> Result<String, CaHashError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CaHashError::Certificate(e.to_string()))?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Ok(format!(
        "{CA_HASH_PREFIX}{}",
        hex::encode(Sha256::digest(spki))
    ))
}

/// Checks and normalises a pin given by a user: `sha256:` + 64 hex digits (either case).
pub fn parse_ca_hash(pin: &str) -> Result<String, CaHashError> {
    let bad = || CaHashError::Format(pin.to_owned());
    let hex_part = pin.trim().strip_prefix(CA_HASH_PREFIX).ok_or_else(bad)?;
    if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(format!("{CA_HASH_PREFIX}{}", hex_part.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_names_are_camel_case() {
        let request: JoinRequest =
            serde_json::from_str(r#"{"nodeName": "n1", "csr": "x"}"#).unwrap();
        assert_eq!(request.node_name, "n1");
        let response = JoinResponse {
            certificate: "c".into(),
            ca_certificate: "a".into(),
        };
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"certificate":"c","caCertificate":"a"}"#
        );
        assert!(serde_json::from_str::<JoinRequest>(r#"{"nodeName": "n1"}"#).is_err());
    }

    const TEST_CERT_DER: &str = concat!(
        "3082017b30820121a003020102021470b3d091cea5d99d0bad9b865804abbb062678d8300a06082a8648ce3d",
        "04030230133111300f06035504030c0870696e2d74657374301e170d3236313230333137343834335a170d33",
        "36313133303137343834335a30133111300f06035504030c0870696e2d746573743059301306072a8648ce3d",
        "020106082a8648ce3d03010703420004d96d9927f464a58c672ea91bdbf166db02ce708251815c3c92b8bb9e",
        "ab3d90784dffca8b0d0f6f3fdf4b055c2282f00bb94281512864915cd2822f48bab84e65a3533051301d0603",
        "551d0e04160414c60e21e3796fffdc7531fef0207bc2c58f5605be301f0603551d23041830168014c60e21e3",
        "796fffdc7531fef0207bc2c58f5605be300f0603551d130101ff040530030101ff300a06082a8648ce3d0403",
        "0203480030450220357c07b57457660b502538d45be1ed6351da5bf0f27d0a9ab2c108e67a990780022100c7",
        "586a1bfc63f9290472bc5faa8f9f0293040858597513033d7bece475dea3de",
    );
    const TEST_CERT_PIN: &str =
        "sha256:cf4713b6d4cec4570463c68eb5d8fbcfb79ab47c1f97c94fa2c9e10d39563b89";

    #[test]
    fn pins_are_checked_and_normalised() {
        let hex = "AB".repeat(32);
        assert_eq!(
            parse_ca_hash(&format!(" sha256:{hex}\n")),
            Ok(format!("sha256:{}", hex.to_lowercase()))
        );
        for bad in [
            "",
            "sha256:",
            &hex,
            &format!("sha1:{hex}"),
            &format!("sha256:{}", &hex[1..]),
            &format!("sha256:{}zz", &hex[2..]),
        ] {
            assert!(
                matches!(parse_ca_hash(bad), Err(CaHashError::Format(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_hash_is_of_the_subject_public_key_info() {
        // A self-signed P-256 certificate (openssl req -x509 -newkey ec); its SPKI hashed
        // with `openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum`.
        let der = hex::decode(TEST_CERT_DER).unwrap();
        assert_eq!(ca_cert_hash(&der).unwrap(), TEST_CERT_PIN);
        assert!(matches!(
            ca_cert_hash(b"not der"),
            Err(CaHashError::Certificate(_))
        ));
    }
}
