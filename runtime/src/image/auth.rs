//! Registry credentials from a docker-style `config.json` (`{"auths":{"host":{"auth":"…"}}}`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::ImageError;

/// Credentials per registry, as `docker login` writes them.
#[derive(Debug, Clone, Default)]
pub struct AuthFile {
    entries: HashMap<String, (String, String)>,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl AuthFile {
    /// The file docker and skopeo use: `$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`, or
    /// `~/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
            return Some(p.into());
        }
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(Path::new(&dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))
    }

    /// Loads an auth file; a missing file means no credentials.
    pub fn load(path: &Path) -> Result<AuthFile, ImageError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AuthFile::default()),
            Err(e) => {
                return Err(ImageError::Auth {
                    path: path.into(),
                    reason: e.to_string(),
                });
            }
        };
        Self::parse(&bytes).map_err(|reason| ImageError::Auth {
            path: path.into(),
            reason,
        })
    }

    pub fn parse(bytes: &[u8]) -> Result<AuthFile, String> {
        let config: ConfigJson = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut entries = HashMap::new();
        for (key, entry) in config.auths {
            let creds = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => decode(&key, &auth)?,
                (_, Some(user), Some(pass)) => (user, pass),
                _ => continue,
            };
            entries.insert(normalise_key(&key), creds);
        }
        Ok(AuthFile { entries })
    }

    /// The user name and password for a registry (`host[:port]`), if any.
    pub fn lookup(&self, registry: &str) -> Option<(&str, &str)> {
        self.entries
            .get(&normalise_key(registry))
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }
}

fn decode(key: &str, auth: &str) -> Result<(String, String), String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("auth for {key:?} is not base64: {e}"))?;
    let text = String::from_utf8(raw).map_err(|_| format!("auth for {key:?} is not UTF-8"))?;
    let (user, pass) = text
        .split_once(':')
        .ok_or_else(|| format!("auth for {key:?} is not user:password"))?;
    Ok((user.to_string(), pass.to_string()))
}

/// `https://index.docker.io/v1/` and `docker.io` name the same registry.
fn normalise_key(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_login_entries() {
        let json = br#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
            "127.0.0.1:5000":{"username":"a","password":"b:c"},
            "empty.example":{}
        }}"#;
        let file = AuthFile::parse(json).unwrap();
        assert_eq!(file.lookup("docker.io"), Some(("user", "pass")));
        assert_eq!(file.lookup("127.0.0.1:5000"), Some(("a", "b:c")));
        assert_eq!(file.lookup("empty.example"), None);
        assert_eq!(file.lookup("other.example"), None);
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(AuthFile::parse(b"{").is_err());
        assert!(AuthFile::parse(br#"{"auths":{"x":{"auth":"!!!"}}}"#).is_err());
        assert!(AuthFile::parse(br#"{"auths":{"x":{"auth":"bm9jb2xvbg=="}}}"#).is_err());
    }
}
