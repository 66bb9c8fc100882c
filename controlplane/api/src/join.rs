//! The node join contract: what a node sends to `POST /skiff/v1/join` with a join token,
//! what it gets back, and the names its client certificate carries. Types only, no I/O.

use serde::{Deserialize, Serialize};

/// The join endpoint on the API server's HTTPS port.
pub const JOIN_PATH: &str = "/skiff/v1/join";

/// The admin endpoint that mints another join token.
pub const JOIN_TOKENS_PATH: &str = "/skiff/v1/jointokens";

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
}
