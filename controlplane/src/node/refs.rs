//! Which ConfigMaps and Secrets a pod uses (volumes, projected sources, env, envFrom,
//! imagePullSecrets): a node may read exactly those of the pods bound to it, as the
//! Kubernetes node authorizer allows.

use k8s_openapi::api::core::v1::Pod;

/// The kinds a node reads for its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    ConfigMap,
    Secret,
}

impl RefKind {
    pub fn parse(kind: &str) -> Option<RefKind> {
        match kind {
            "ConfigMap" => Some(RefKind::ConfigMap),
            "Secret" => Some(RefKind::Secret),
            _ => None,
        }
    }
}

/// Whether `pod` refers to the `kind` named `name` (in its own namespace).
pub fn uses(pod: &Pod, kind: RefKind, name: &str) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let mut names: Vec<&str> = Vec::new();
    for v in spec.volumes.iter().flatten() {
        match kind {
            RefKind::ConfigMap => names.extend(v.config_map.as_ref().map(|c| c.name.as_str())),
            RefKind::Secret => {
                names.extend(v.secret.as_ref().and_then(|s| s.secret_name.as_deref()))
            }
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            match kind {
                RefKind::ConfigMap => {
                    names.extend(source.config_map.as_ref().map(|c| c.name.as_str()));
                }
                RefKind::Secret => names.extend(source.secret.as_ref().map(|s| s.name.as_str())),
            }
        }
    }
    if kind == RefKind::Secret {
        names.extend(
            spec.image_pull_secrets
                .iter()
                .flatten()
                .map(|s| s.name.as_str()),
        );
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in containers {
        for from in c.env_from.iter().flatten() {
            match kind {
                RefKind::ConfigMap => {
                    names.extend(from.config_map_ref.as_ref().map(|r| r.name.as_str()))
                }
                RefKind::Secret => names.extend(from.secret_ref.as_ref().map(|r| r.name.as_str())),
            }
        }
        for var in c.env.iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            match kind {
                RefKind::ConfigMap => {
                    names.extend(from.config_map_key_ref.as_ref().map(|r| r.name.as_str()));
                }
                RefKind::Secret => {
                    names.extend(from.secret_key_ref.as_ref().map(|r| r.name.as_str()))
                }
            }
        }
    }
    names.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn finds_every_kind_of_reference() {
        let p = pod(json!({
            "containers": [{"name": "c", "image": "i",
                "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "cm-from"}}, {"secretRef": {"name": "s-from"}}]}],
            "initContainers": [{"name": "i", "image": "i", "envFrom": [{"secretRef": {"name": "s-init"}}]}],
            "volumes": [{"name": "a", "configMap": {"name": "cm-vol"}},
                        {"name": "b", "secret": {"secretName": "s-vol"}},
                        {"name": "c", "projected": {"sources": [{"configMap": {"name": "cm-proj"}},
                                                                {"secret": {"name": "s-proj"}}]}}],
            "imagePullSecrets": [{"name": "s-pull"}]
        }));
        for name in ["cm-env", "cm-from", "cm-vol", "cm-proj"] {
            assert!(uses(&p, RefKind::ConfigMap, name), "{name}");
            assert!(!uses(&p, RefKind::Secret, name), "{name} is no secret");
        }
        for name in ["s-env", "s-from", "s-init", "s-vol", "s-proj", "s-pull"] {
            assert!(uses(&p, RefKind::Secret, name), "{name}");
        }
        assert!(!uses(&p, RefKind::Secret, "other"));
        assert!(!uses(
            &pod(json!({"containers": []})),
            RefKind::ConfigMap,
            "cm-vol"
        ));
    }
}
