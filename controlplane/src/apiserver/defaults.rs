//! Defaulting: the fields kube-apiserver fills in when a client leaves them out
//! (restartPolicy, imagePullPolicy by tag, protocol TCP, replicas 1, …).

use serde_json::{Map, Value, json};

/// Sets `object[key] = value` unless the key holds a non-null value already.
fn default(object: &mut Map<String, Value>, key: &str, value: Value) {
    match object.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            object.insert(key.to_owned(), value);
        }
    }
}

/// The object at `key`, created empty if absent.
fn child<'a>(object: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    default(object, key, json!({}));
    object.get_mut(key).and_then(Value::as_object_mut)
}

fn each_item(object: &mut Map<String, Value>, key: &str, f: impl Fn(&mut Map<String, Value>)) {
    if let Some(items) = object.get_mut(key).and_then(Value::as_array_mut) {
        items
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .for_each(f);
    }
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent`.
pub fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container(c: &mut Map<String, Value>) {
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    default(c, "imagePullPolicy", json!(image_pull_policy(&image)));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    each_item(c, "ports", |p| default(p, "protocol", json!("TCP")));
}

/// Defaults of a PodSpec (a pod's, or a template's).
pub fn pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    each_item(spec, "containers", container);
    each_item(spec, "initContainers", container);
}

fn template_spec(spec: &mut Map<String, Value>) {
    if let Some(pod) = child(spec, "template").and_then(|t| child(t, "spec")) {
        pod_spec(pod);
    }
}

/// Applies the defaults of `kind` to `object` in place.
pub fn apply(kind: &str, object: &mut Value) {
    let Some(object) = object.as_object_mut() else {
        return;
    };
    match kind {
        "Pod" => {
            if let Some(spec) = child(object, "spec") {
                pod_spec(spec);
            }
        }
        "Deployment" => {
            if let Some(spec) = child(object, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "revisionHistoryLimit", json!(10));
                default(spec, "progressDeadlineSeconds", json!(600));
                default(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                );
                template_spec(spec);
            }
        }
        "ReplicationController" => {
            // The selector and labels default to the template's labels.
            let labels = object
                .get("spec")
                .and_then(|s| s.pointer("/template/metadata/labels"))
                .cloned();
            if let Some(spec) = child(object, "spec") {
                default(spec, "replicas", json!(1));
                if let Some(labels) = &labels {
                    default(spec, "selector", labels.clone());
                }
                template_spec(spec);
            }
            if let (Some(labels), Some(meta)) = (labels, child(object, "metadata")) {
                default(meta, "labels", labels);
            }
        }
        "ReplicaSet" => {
            if let Some(spec) = child(object, "spec") {
                default(spec, "replicas", json!(1));
                template_spec(spec);
            }
        }
        "StatefulSet" => {
            if let Some(spec) = child(object, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "podManagementPolicy", json!("OrderedReady"));
                default(spec, "revisionHistoryLimit", json!(10));
                default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate",
                    "rollingUpdate": {"partition": 0}}),
                );
                template_spec(spec);
            }
        }
        "Service" => service(object),
        "Namespace" => {
            if let Some(spec) = child(object, "spec") {
                default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = child(object, "status") {
                default(status, "phase", json!("Active"));
            }
        }
        "Secret" => {
            default(object, "type", json!("Opaque"));
            string_data(object);
        }
        _ => {}
    }
}

/// A Secret's `stringData` is a write-only convenience: its values move into `data`
/// (base64), over any same key there, and it is never stored.
fn string_data(object: &mut Map<String, Value>) {
    use base64::Engine;
    let Some(Value::Object(strings)) = object.remove("stringData") else {
        return;
    };
    let data = object
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if !data.is_object() {
        *data = Value::Object(Map::new());
    }
    if let Some(data) = data.as_object_mut() {
        for (key, value) in strings {
            if let Value::String(text) = value {
                let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
                data.insert(key, Value::String(encoded));
            }
        }
    }
}

fn service(object: &mut Map<String, Value>) {
    let Some(spec) = child(object, "spec") else {
        return;
    };
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    default(spec, "internalTrafficPolicy", json!("Cluster"));
    each_item(spec, "ports", |p| {
        default(p, "protocol", json!("TCP"));
        let port = p.get("port").cloned().unwrap_or(Value::Null);
        default(p, "targetPort", port);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_data_moves_into_data() {
        let mut secret = json!({"metadata": {"name": "s"}, "data": {"a": "eA==", "b": "eQ=="},
                                "stringData": {"b": "bee", "c": "sea"}});
        apply("Secret", &mut secret);
        assert_eq!(
            secret["data"],
            json!({"a": "eA==", "b": "YmVl", "c": "c2Vh"})
        );
        assert!(secret.get("stringData").is_none());
        assert_eq!(secret["type"], "Opaque");
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(image_pull_policy("r.io/app@sha256:ab"), "IfNotPresent");
    }

    #[test]
    fn deployment_defaults_fill_the_template() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}}});
        apply("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn explicit_values_win_and_services_get_target_ports() {
        let mut d = json!({"spec": {"replicas": 0}});
        apply("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 0);
        let mut s = json!({"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}});
        apply("Service", &mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(
            s["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(s["spec"]["ports"][1]["targetPort"], "dns");
    }
}
