//! Image references (`busybox`, `host:5000/ns/app:1.2@sha256:…`), parsed and normalised the
//! way Docker and containerd do it.

use std::fmt;
use std::str::FromStr;

use super::digest::Digest;

/// The registry a reference without a domain points at.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const OFFICIAL_NAMESPACE: &str = "library";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A normalised image reference: always a registry and a repository, a tag unless only a digest
/// was given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference {input:?}: empty")]
    Empty { input: String },
    #[error("invalid reference {input:?}: repository name must be lowercase")]
    Uppercase { input: String },
    #[error("invalid reference {input:?}: invalid registry {registry:?}")]
    Registry { input: String, registry: String },
    #[error("invalid reference {input:?}: invalid path component {component:?}")]
    Component { input: String, component: String },
    #[error("invalid reference {input:?}: invalid tag {tag:?}")]
    Tag { input: String, tag: String },
    #[error("invalid reference {input:?}: {reason}")]
    Digest { input: String, reason: String },
    #[error("invalid reference {input:?}: repository name longer than {MAX_NAME_LEN} characters")]
    TooLong { input: String },
}

impl Reference {
    /// Parses and normalises a reference.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty {
                input: input.into(),
            });
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let digest = digest
                    .parse::<Digest>()
                    .map_err(|e| ReferenceError::Digest {
                        input: input.into(),
                        reason: e.to_string(),
                    })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        let (name, tag) = split_tag(rest);
        if let Some(tag) = tag.filter(|t| !valid_tag(t)) {
            return Err(ReferenceError::Tag {
                input: input.into(),
                tag: tag.into(),
            });
        }
        let (registry, repository) = split_registry(input, name)?;
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry's host (and port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path within the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository pinned to a manifest digest (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `registry/repository`, the name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host part of the registry, without a port.
    pub fn registry_host(&self) -> &str {
        match self.registry.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => self.registry.split(':').next().unwrap_or(&self.registry),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Splits `name:tag`, where the colon is after the last slash (a colon before it is a port).
fn split_tag(s: &str) -> (&str, Option<&str>) {
    let last_slash = s.rfind('/').map_or(0, |i| i + 1);
    match s[last_slash..].rfind(':') {
        Some(i) => (&s[..last_slash + i], Some(&s[last_slash + i + 1..])),
        None => (s, None),
    }
}

fn split_registry(input: &str, name: &str) -> Result<(String, String), ReferenceError> {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if looks_like_registry(first) => (first.to_string(), rest.to_string()),
        _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
    };
    if registry != DEFAULT_REGISTRY && !valid_registry(&registry) {
        return Err(ReferenceError::Registry {
            input: input.into(),
            registry,
        });
    }
    let registry = if registry == LEGACY_DEFAULT_REGISTRY {
        DEFAULT_REGISTRY.to_string()
    } else {
        registry
    };
    if path.is_empty() {
        return Err(ReferenceError::Empty {
            input: input.into(),
        });
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ReferenceError::Uppercase {
            input: input.into(),
        });
    }
    for component in path.split('/') {
        if !valid_component(component) {
            return Err(ReferenceError::Component {
                input: input.into(),
                component: component.into(),
            });
        }
    }
    let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("{OFFICIAL_NAMESPACE}/{path}")
    } else {
        path
    };
    if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
        return Err(ReferenceError::TooLong {
            input: input.into(),
        });
    }
    Ok((registry, repository))
}

/// Docker's rule: the first component names a registry when it has a dot or a port, or is
/// `localhost`.
fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
}

fn valid_registry(registry: &str) -> bool {
    let (host_ok, port) = if let Some(v6) = registry.strip_prefix('[') {
        let Some((addr, rest)) = v6.split_once(']') else {
            return false;
        };
        let ok = !addr.is_empty() && addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
        match rest {
            "" => (ok, None),
            rest => match rest.strip_prefix(':') {
                Some(port) => (ok, Some(port)),
                None => return false,
            },
        }
    } else {
        let (host, port) = match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        };
        (
            !host.is_empty() && host.split('.').all(valid_host_label),
            port,
        )
    };
    host_ok
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit()))
}

fn valid_host_label(label: &str) -> bool {
    !label.is_empty()
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok
        && tag.len() <= MAX_TAG_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalises_valid_references() {
        let cases: &[(&str, &str)] = &[
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("user/app", "docker.io/user/app:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/library/busybox:1",
                "docker.io/library/busybox:1",
            ),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app:v1", "localhost:5000/app:v1"),
            (
                "127.0.0.1:5000/ns/sub/app:tag",
                "127.0.0.1:5000/ns/sub/app:tag",
            ),
            (
                "quay.io/a_b/c__d/e-f/g.h:T_1.2-3",
                "quay.io/a_b/c__d/e-f/g.h:T_1.2-3",
            ),
            ("[::1]:5000/app", "[::1]:5000/app:latest"),
            (
                "my-registry.example.com:443/app",
                "my-registry.example.com:443/app:latest",
            ),
            ("a---b/c", "docker.io/a---b/c:latest"),
        ];
        for (input, want) in cases {
            let got = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got.to_string(), *want, "input {input}");
        }
    }

    #[test]
    fn keeps_digests_and_tags() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.tag(), None);
        let r = Reference::parse(&format!("host:1/ns/name:tag@{D}")).unwrap();
        assert_eq!(r.registry(), "host:1");
        assert_eq!(r.registry_host(), "host");
        assert_eq!(r.repository(), "ns/name");
        assert_eq!(r.tag(), Some("tag"));
        assert_eq!(r.digest().map(|d| d.to_string()), Some(D.to_string()));
    }

    #[test]
    fn rejects_malformed_references() {
        let long_tag = format!("app:{}", "a".repeat(129));
        let long_name = format!("a/{}", "b".repeat(260));
        let cases: Vec<&str> = vec![
            "",
            "Busybox",
            "docker.io/Library/busybox",
            "busybox:",
            "busybox:-tag",
            "busybox:ta g",
            &long_tag,
            &long_name,
            "busybox@sha256:abc",
            "busybox@md5:d41d8cd98f00b204e9800998ecf8427e",
            "busybox@",
            "/busybox",
            "busybox/",
            "a//b",
            "-app",
            "app-",
            "a..b",
            "a___b",
            "host:port/app",
            "host:99999999/app",
            "ho_st.io/app",
            "[zz]:5000/app",
            "localhost:5000/",
        ];
        for input in cases {
            assert!(
                Reference::parse(input).is_err(),
                "{input:?} should be refused"
            );
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let e = Reference::parse("Busybox").unwrap_err();
        assert!(e.to_string().contains("lowercase"), "{e}");
        let e = Reference::parse("busybox:b@d").unwrap_err();
        assert!(e.to_string().contains("invalid reference"), "{e}");
    }
}
