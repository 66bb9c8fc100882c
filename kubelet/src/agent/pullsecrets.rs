//! `imagePullSecrets`: the pod's `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`:
//! `{"auths": {…}}`) and legacy `kubernetes.io/dockercfg` (`.dockercfg`: `{registry: …}`)
//! Secrets, merged into one docker `config.json` that the image pull reads as its auth file
//! (pure: the worker fetches the Secrets and writes the file, mode 0600, for the pulls only).

use k8s_openapi::api::core::v1::Secret;
use serde_json::{Map, Value};

/// One docker config holding every registry's credentials from `secrets`, earlier secrets
/// winning for a registry named twice (as the kubelet tries them in order); `None` when
/// none holds any.
pub fn docker_config(secrets: &[Secret]) -> Option<Vec<u8>> {
    let mut auths = Map::new();
    for secret in secrets {
        let data = secret.data.as_ref();
        let entries = data
            .and_then(|d| d.get(".dockerconfigjson"))
            .and_then(|b| serde_json::from_slice::<Value>(&b.0).ok())
            .and_then(|v| v.get("auths").cloned())
            .or_else(|| {
                data.and_then(|d| d.get(".dockercfg"))
                    .and_then(|b| serde_json::from_slice::<Value>(&b.0).ok())
            });
        let Some(Value::Object(entries)) = entries else {
            continue;
        };
        for (registry, creds) in entries {
            auths.entry(registry).or_insert(creds);
        }
    }
    if auths.is_empty() {
        return None;
    }
    let mut config = Map::new();
    config.insert("auths".into(), Value::Object(auths));
    serde_json::to_vec(&Value::Object(config)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;
    use skiff_runtime::image::AuthFile;

    fn secret(key: &str, value: serde_json::Value) -> Secret {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value.to_string());
        serde_json::from_value(json!({"metadata": {"name": "s"}, "data": {key: b64}})).unwrap()
    }

    fn auth(user: &str, pass: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    }

    #[test]
    fn secrets_merge_into_one_auth_file_the_pull_reads() {
        let secrets = [
            secret(
                ".dockerconfigjson",
                json!({"auths": {"127.0.0.1:5000": {"auth": auth("alice", "s3cret")}}}),
            ),
            secret(
                ".dockercfg",
                json!({"reg.example:443": {"username": "bob", "password": "pw"},
                       "127.0.0.1:5000": {"auth": auth("mallory", "x")}}),
            ),
            secret("other", json!({"nothing": "here"})),
        ];
        let bytes = docker_config(&secrets).expect("a config");
        let file = AuthFile::parse(&bytes).unwrap();
        assert_eq!(
            file.lookup("127.0.0.1:5000"),
            Some(("alice", "s3cret")),
            "first wins"
        );
        assert_eq!(file.lookup("reg.example:443"), Some(("bob", "pw")));
        assert_eq!(file.lookup("elsewhere"), None);
        assert_eq!(docker_config(&secrets[2..]), None);
        assert_eq!(docker_config(&[]), None);
    }
}
