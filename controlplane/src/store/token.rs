//! Continue tokens: the revision of a paginated list and the last key it returned.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// Where the next page of a list starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ContinueToken {
    /// The revision every page of the list reflects.
    #[serde(rename = "rev")]
    pub revision: u64,
    /// The last key of the previous page; the next page starts after it.
    #[serde(rename = "after")]
    pub after_key: String,
}

impl ContinueToken {
    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        // Serializing a struct of a u64 and a String cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Parses a token and checks that it belongs to a list of `prefix`.
    pub fn decode(token: &str, prefix: &str) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidContinue {
            reason: reason.to_owned(),
        };
        let json = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid("not base64"))?;
        let parsed: ContinueToken =
            serde_json::from_slice(&json).map_err(|_| invalid("malformed"))?;
        if !parsed.after_key.starts_with(prefix) {
            return Err(invalid("token is for another prefix"));
        }
        Ok(parsed)
    }

    /// The first key of the next page: the smallest key greater than `after_key`.
    pub fn start_key(&self) -> String {
        let mut start = self.after_key.clone();
        start.push('\0');
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let token = ContinueToken {
            revision: 42,
            after_key: "/registry/pods/a".into(),
        };
        let parsed = ContinueToken::decode(&token.encode(), "/registry/pods/").unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.start_key(), "/registry/pods/a\0");
    }

    #[test]
    fn rejects_other_prefix_and_garbage() {
        let token = ContinueToken {
            revision: 1,
            after_key: "/registry/pods/a".into(),
        }
        .encode();
        assert!(matches!(
            ContinueToken::decode(&token, "/registry/services/"),
            Err(StoreError::InvalidContinue { .. })
        ));
        assert!(ContinueToken::decode("!!", "").is_err());
        assert!(ContinueToken::decode(&URL_SAFE_NO_PAD.encode(b"{}"), "").is_err());
    }
}
