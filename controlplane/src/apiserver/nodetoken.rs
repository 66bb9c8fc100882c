//! Node bearer tokens: `node.<name>.<secret>`, minted by the admin
//! (`POST /skiff/v1/nodes/{name}/token`, or `mint` in process — the kubelet join uses it)
//! and kept in the store as the SHA-256 of the secret under
//! `/registry/skiff/nodetokens/<name>`, so a store dump holds no usable token. Minting
//! again replaces (revokes) the previous token of that node.

use rand::Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::status::ApiError;
use super::validate;
use crate::store::{Store, StoreError};

const PREFIX: &str = "/registry/skiff/nodetokens/";

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits `node.<name>.<secret>`.
fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("node.")?;
    let (name, secret) = rest.rsplit_once('.')?;
    (!name.is_empty() && secret.len() == 64).then_some((name, secret))
}

/// Creates (or replaces) the token of node `name`.
pub async fn mint(store: &dyn Store, name: &str) -> Result<String, ApiError> {
    let causes = validate::validate_name(name, validate::name_rule("nodes"));
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "Node", name, causes));
    }
    let bytes: [u8; 32] = rand::rng().random();
    let secret = hex::encode(bytes);
    let value = serde_json::to_vec(&json!({"sha256": digest(&secret)})).unwrap_or_default();
    let key = format!("{PREFIX}{name}");
    let stored = match store.get(&key).await {
        Ok(Some(kv)) => store.update(&key, value, Some(kv.mod_revision)).await,
        Ok(None) => store.create(&key, value).await,
        Err(e) => Err(e),
    };
    stored.map_err(|e: StoreError| ApiError::from_store(e, "", "nodes", name))?;
    Ok(format!("node.{name}.{secret}"))
}

/// The node a token belongs to, if it is a current node token.
pub async fn verify(store: &dyn Store, token: &str) -> Option<String> {
    let (name, secret) = split(token)?;
    let kv = store.get(&format!("{PREFIX}{name}")).await.ok()??;
    let stored: Value = serde_json::from_slice(&kv.value).ok()?;
    let want = stored.get("sha256")?.as_str()?;
    super::auth::constant_time_eq(want.as_bytes(), digest(secret).as_bytes())
        .then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    #[tokio::test]
    async fn mint_verify_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let token = mint(&store, "worker-1.example").await.unwrap();
        assert_eq!(
            verify(&store, &token).await.as_deref(),
            Some("worker-1.example")
        );
        // Change the last character (to something it is not).
        let last = if token.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{last}", &token[..token.len() - 1]);
        assert_eq!(verify(&store, &forged).await, None);
        assert_eq!(verify(&store, "node.x.y").await, None);
        let again = mint(&store, "worker-1.example").await.unwrap();
        assert_eq!(
            verify(&store, &token).await,
            None,
            "the old token is revoked"
        );
        assert!(verify(&store, &again).await.is_some());
        assert_eq!(mint(&store, "Bad_Name").await.unwrap_err().code, 422);
    }
}
