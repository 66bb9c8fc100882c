//! Join tokens, like kubeadm's bootstrap tokens: `<id>.<secret>` (6 and 16 characters of
//! `[a-z0-9]`). A node presents one once, to `POST /skiff/v1/join`, to get its client
//! certificate. The store keeps only the SHA-256 of the secret and the expiry under
//! `/registry/skiff/jointokens/<id>`, so a store dump holds no usable token. The first start
//! of the API server writes one to `DATA_DIR/join-token` (mode 0600) and reuses it across
//! restarts while it is valid. A provisioner that hands one token to every machine in
//! advance passes it instead (`--join-token`, as `kubeadm init --token`): `ensure_given`
//! stores it, valid for the lifetime from this start, and writes the same file.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use rand::Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::ApiServerError;
use super::status::ApiError;
use crate::store::Store;

const PREFIX: &str = "/registry/skiff/jointokens/";
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;

/// The name of the token file in the data dir.
pub const TOKEN_FILE: &str = "join-token";

/// A token minted: the text to hand out and when it stops working.
#[derive(Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// `<id>.<secret>`.
    pub token: String,
    /// `None`: never.
    pub expires: Option<Timestamp>,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn random_chars(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn well_formed(part: &str, len: usize) -> bool {
    part.len() == len && part.bytes().all(|b| ALPHABET.contains(&b))
}

/// Splits `<id>.<secret>` if it has the right shape.
fn split(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    (well_formed(id, ID_LEN) && well_formed(secret, SECRET_LEN)).then_some((id, secret))
}

/// Checks the shape of a join token given by a user: `<6>.<16>` characters of `[a-z0-9]`.
pub fn check_format(token: &str) -> Result<(), String> {
    match split(token) {
        Some(_) => Ok(()),
        None => Err(format!(
            "a join token is {ID_LEN} and {SECRET_LEN} characters of [a-z0-9] joined by a dot \
             (e.g. abcdef.0123456789abcdef)"
        )),
    }
}

fn record(secret: &str, expires: Option<Timestamp>) -> Vec<u8> {
    let value = json!({
        "sha256": digest(secret),
        "expires": expires.map(|t| t.to_string()),
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

fn expiry(ttl: Option<Duration>, now: Timestamp) -> Result<Option<Timestamp>, ApiError> {
    let Some(ttl) = ttl else {
        return Ok(None);
    };
    let too_long = || ApiError::bad_request("the token lifetime is too long");
    let span = jiff::SignedDuration::try_from(ttl).map_err(|_| too_long())?;
    now.checked_add(span).map(Some).map_err(|_| too_long())
}

/// Mints a join token valid for `ttl` (`None`: no expiry) from `now`.
pub async fn mint_at(
    store: &dyn Store,
    ttl: Option<Duration>,
    now: Timestamp,
) -> Result<MintedToken, ApiError> {
    let expires = expiry(ttl, now)?;
    // A fresh id; on the rare collision with a stored one, draw again.
    for _ in 0..8 {
        let (id, secret) = {
            let mut rng = rand::rng();
            (
                random_chars(&mut rng, ID_LEN),
                random_chars(&mut rng, SECRET_LEN),
            )
        };
        match store
            .create(&format!("{PREFIX}{id}"), record(&secret, expires))
            .await
        {
            Ok(_) => {
                return Ok(MintedToken {
                    token: format!("{id}.{secret}"),
                    expires,
                });
            }
            Err(crate::store::StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, "", "jointokens", &id)),
        }
    }
    Err(ApiError::internal("cannot find a free join token id"))
}

/// Mints a join token valid for `ttl` from now (`None`: no expiry).
pub async fn mint(store: &dyn Store, ttl: Option<Duration>) -> Result<MintedToken, ApiError> {
    mint_at(store, ttl, Timestamp::now()).await
}

/// Whether `token` is a stored join token that has not expired at `now`.
pub async fn verify(store: &dyn Store, token: &str, now: Timestamp) -> bool {
    let Some((id, secret)) = split(token) else {
        return false;
    };
    let Ok(Some(kv)) = store.get(&format!("{PREFIX}{id}")).await else {
        return false;
    };
    let Ok(stored) = serde_json::from_slice::<Value>(&kv.value) else {
        return false;
    };
    let Some(want) = stored.get("sha256").and_then(Value::as_str) else {
        return false;
    };
    let unexpired = match stored.get("expires") {
        None | Some(Value::Null) => true,
        Some(Value::String(t)) => t.parse::<Timestamp>().is_ok_and(|t| now < t),
        Some(_) => false,
    };
    let matches = super::auth::constant_time_eq(want.as_bytes(), digest(secret).as_bytes());
    matches && unexpired
}

/// Returns the token in `data_dir/join-token` if it is still valid; otherwise mints one
/// valid for `ttl` and writes it there (mode 0600).
pub async fn ensure_file(
    store: &dyn Store,
    data_dir: &Path,
    ttl: Option<Duration>,
) -> Result<String, ApiServerError> {
    let path = data_dir.join(TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim();
        if verify(store, token, Timestamp::now()).await {
            return Ok(token.to_owned());
        }
        tracing::info!(path = %path.display(), "the join token expired or is unknown; minting a new one");
    }
    let minted = mint(store, ttl)
        .await
        .map_err(|e| ApiServerError::Bootstrap(e.message))?;
    super::tls::write_private(&path, format!("{}\n", minted.token).as_bytes())?;
    Ok(minted.token)
}

/// Stores the join token a provisioner chose, valid for `ttl` from now (a restart renews
/// it, so provisioning stays repeatable), and writes it to `data_dir/join-token`. A stored
/// token with the same id is replaced.
pub async fn ensure_given(
    store: &dyn Store,
    data_dir: &Path,
    token: &str,
    ttl: Option<Duration>,
) -> Result<String, ApiServerError> {
    let bootstrap = |message: String| ApiServerError::Bootstrap(message);
    let (id, secret) = split(token).ok_or_else(|| {
        bootstrap(format!(
            "the join token: {}",
            check_format(token).unwrap_err()
        ))
    })?;
    let value = record(
        secret,
        expiry(ttl, Timestamp::now()).map_err(|e| bootstrap(e.message))?,
    );
    let key = format!("{PREFIX}{id}");
    let stored = match store.get(&key).await? {
        Some(_) => store.update(&key, value, None).await,
        None => store.create(&key, value).await,
    };
    stored?;
    let path = data_dir.join(TOKEN_FILE);
    super::tls::write_private(&path, format!("{token}\n").as_bytes())?;
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn minted_tokens_verify_until_they_expire() {
        let (_dir, store) = store();
        let now = Timestamp::now();
        let minted = mint_at(&store, Some(Duration::from_secs(60)), now)
            .await
            .unwrap();
        let (id, secret) = split(&minted.token).expect("the token has the kubeadm shape");
        assert_eq!((id.len(), secret.len()), (6, 16));
        assert!(verify(&store, &minted.token, now).await);
        let later = now + jiff::SignedDuration::from_secs(61);
        assert!(!verify(&store, &minted.token, later).await, "expired");

        let forever = mint(&store, None).await.unwrap();
        assert_eq!(forever.expires, None);
        assert!(verify(&store, &forever.token, later).await);
        let stored = store.get(&format!("{PREFIX}{}", &forever.token[..6])).await;
        let stored = String::from_utf8(stored.unwrap().unwrap().value).unwrap();
        assert!(
            !stored.contains(&forever.token[7..]),
            "only a digest is stored"
        );
    }

    #[tokio::test]
    async fn forged_and_malformed_tokens_fail() {
        let (_dir, store) = store();
        let minted = mint(&store, None).await.unwrap();
        let last = if minted.token.ends_with('a') {
            'b'
        } else {
            'a'
        };
        let forged = format!("{}{last}", &minted.token[..minted.token.len() - 1]);
        let now = Timestamp::now();
        assert!(!verify(&store, &forged, now).await);
        for bad in [
            "",
            ".",
            "abcdef.",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde",
        ] {
            assert!(!verify(&store, bad, now).await, "{bad:?}");
        }
        assert!(
            !verify(&store, "zzzzzz.0123456789abcdef", now).await,
            "unknown id"
        );
    }

    #[tokio::test]
    async fn the_token_file_is_reused_while_valid() {
        let (dir, store) = store();
        let first = ensure_file(&store, dir.path(), None).await.unwrap();
        let second = ensure_file(&store, dir.path(), None).await.unwrap();
        assert_eq!(first, second);
        let path = dir.path().join(TOKEN_FILE);
        let mode = std::fs::metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        std::fs::write(&path, "abcdef.0123456789abcdef\n").unwrap();
        let third = ensure_file(&store, dir.path(), None).await.unwrap();
        assert_ne!(
            third, "abcdef.0123456789abcdef",
            "an unknown token is replaced"
        );
        assert!(verify(&store, &third, Timestamp::now()).await);
    }

    #[tokio::test]
    async fn a_given_token_is_stored_hashed_and_renewed() {
        let (dir, store) = store();
        let token = "abcdef.0123456789abcdef";
        assert_eq!(
            ensure_given(&store, dir.path(), token, Some(Duration::from_secs(60)))
                .await
                .unwrap(),
            token
        );
        let now = Timestamp::now();
        assert!(verify(&store, token, now).await);
        let later = now + jiff::SignedDuration::from_secs(120);
        assert!(!verify(&store, token, later).await, "it expires");
        let text = std::fs::read_to_string(dir.path().join(TOKEN_FILE)).unwrap();
        assert_eq!(text.trim(), token);
        let stored = store
            .get(&format!("{PREFIX}abcdef"))
            .await
            .unwrap()
            .unwrap();
        assert!(
            !String::from_utf8(stored.value)
                .unwrap()
                .contains("0123456789abcdef")
        );
        // Provisioning again (a restart) renews it.
        ensure_given(&store, dir.path(), token, None).await.unwrap();
        assert!(verify(&store, token, later).await);
        // The file follows the given token, not a generated one.
        assert_eq!(ensure_file(&store, dir.path(), None).await.unwrap(), token);
    }

    #[tokio::test]
    async fn a_malformed_given_token_is_refused() {
        let (dir, store) = store();
        for bad in [
            "",
            "abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcde",
        ] {
            let err = ensure_given(&store, dir.path(), bad, None)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("[a-z0-9]"), "{err}");
            assert!(check_format(bad).is_err());
        }
        assert!(check_format("abcdef.0123456789abcdef").is_ok());
        assert!(!dir.path().join(TOKEN_FILE).exists());
    }
}
