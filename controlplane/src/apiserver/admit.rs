//! The pure write pipeline: what a create or update body becomes before it is stored —
//! kind and namespace checks, generateName, name and label validation, strict field
//! validation, the typed check, defaulting and the system fields (uid, timestamps,
//! generation, status reset).

use jiff::Timestamp;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Map, Value, json};

use super::defaults;
use super::managed;
use super::registry::{ResourceType, Subresource};
use super::request::{FieldValidation, WriteOptions};
use super::services;
use super::status::ApiError;
use super::validate::{self, name_rule};

/// `metadata` of an object, created if absent (bodies are checked to be objects).
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(meta) => meta,
        None => unreachable!("metadata was just set to an object"),
    }
}

/// A string field of `metadata`.
pub fn meta_str<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.get("metadata")?.get(key)?.as_str()
}

/// `metadata.resourceVersion` parsed as a store revision.
pub fn resource_version(object: &Value) -> Result<Option<u64>, ApiError> {
    match meta_str(object, "resourceVersion") {
        None | Some("") => Ok(None),
        Some(rv) => rv
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))),
    }
}

/// Sets `metadata.resourceVersion` to a revision.
pub fn set_resource_version(object: &mut Value, revision: u64) {
    metadata_mut(object).insert("resourceVersion".into(), json!(revision.to_string()));
}

/// A random RFC 4122 version 4 UUID.
pub fn new_uid() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `generateName` + 5 characters from Kubernetes' alphabet (no vowels, no 0/1/3).
pub fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .filter_map(|_| ALPHABET.choose(&mut rng).map(|c| *c as char))
        .collect();
    format!("{prefix}{suffix}")
}

/// The timestamp form of `metadata.creationTimestamp` (seconds, UTC).
pub fn rfc3339(now: Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn check_type(resource: &ResourceType, body: &mut Value) -> Result<(), ApiError> {
    let expected = resource.api_version();
    for (key, want) in [("apiVersion", expected.as_str()), ("kind", resource.kind)] {
        match body.get(key).and_then(Value::as_str) {
            None | Some("") => body[key] = json!(want),
            Some(got) if got == want => {}
            Some(got) => {
                return Err(ApiError::bad_request(format!(
                    "{key} {got:?} in the body does not match the {want:?} of the request path"
                )));
            }
        }
    }
    Ok(())
}

fn check_namespace(
    resource: &ResourceType,
    body: &mut Value,
    ns: Option<&str>,
) -> Result<(), ApiError> {
    let meta = metadata_mut(body);
    match (
        resource.namespaced,
        ns,
        meta.get("namespace").and_then(Value::as_str),
    ) {
        (true, Some(url), Some(given)) if !given.is_empty() && given != url => {
            Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ))
        }
        (true, Some(url), _) => {
            meta.insert("namespace".into(), json!(url));
            Ok(())
        }
        (true, None, _) => Err(ApiError::bad_request("a namespace is required")),
        (false, _, _) => {
            meta.remove("namespace");
            Ok(())
        }
    }
}

/// Strict field check, typed round trip and defaults: the stored shape of `body`.
fn typed(resource: &ResourceType, body: &Value, opts: &WriteOptions) -> Result<Value, ApiError> {
    let cannot = |e: String| {
        ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
            kind = resource.kind,
            v = resource.version
        ))
    };
    let mut object = (resource.round_trip)(body).map_err(|e| cannot(e.to_string()))?;
    if opts.validation == FieldValidation::Strict {
        let unknown = validate::unknown_fields(body, &object);
        if !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(cannot(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
    }
    defaults::apply(resource.kind, &mut object);
    Ok(object)
}

fn validate(resource: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let name = meta_str(object, "name").unwrap_or("");
    let mut causes = validate::validate_name(name, name_rule(resource.plural));
    causes.extend(validate::validate_labels(object));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            resource.group,
            resource.kind,
            name,
            causes,
        ))
    }
}

/// The QoS class of a pod: BestEffort without any requests or limits, Guaranteed when
/// every container's limits equal its requests for cpu and memory, else Burstable.
fn qos_class(object: &Value) -> &'static str {
    let containers = object.pointer("/spec/containers").and_then(Value::as_array);
    let containers = containers.map(Vec::as_slice).unwrap_or(&[]);
    let resources = |c: &Value, kind: &str| {
        c.pointer(&format!("/resources/{kind}"))
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty())
            .cloned()
    };
    if containers
        .iter()
        .all(|c| resources(c, "requests").is_none() && resources(c, "limits").is_none())
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let limits = resources(c, "limits").unwrap_or_default();
        let requests = resources(c, "requests").unwrap_or_else(|| limits.clone());
        ["cpu", "memory"]
            .iter()
            .all(|r| limits.get(*r).is_some() && limits.get(*r) == requests.get(*r))
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// What `status` a new object starts with (`None`: keep the client's).
fn initial_status(kind: &str, object: &Value) -> Option<Value> {
    match kind {
        "Pod" => Some(json!({"phase": "Pending", "qosClass": qos_class(object)})),
        "Service" => Some(json!({"loadBalancer": {}})),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "ReplicationController" => Some(json!({})),
        _ => None,
    }
}

/// The object to store for a create of `body` into namespace `ns`.
pub fn prepare_create(
    resource: &ResourceType,
    mut body: Value,
    ns: Option<&str>,
    now: Timestamp,
    opts: &WriteOptions,
) -> Result<Value, ApiError> {
    check_type(resource, &mut body)?;
    check_namespace(resource, &mut body, ns)?;
    let meta = metadata_mut(&mut body);
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if let (false, Some(prefix)) = (has_name, meta.get("generateName").and_then(Value::as_str)) {
        let name = generated_name(prefix);
        meta.insert("name".into(), json!(name));
    }
    let mut object = typed(resource, &body, opts)?;
    validate(resource, &object)?;
    let meta = metadata_mut(&mut object);
    for key in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "generation",
    ] {
        meta.remove(key);
    }
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(rfc3339(now)));
    if resource.generation {
        meta.insert("generation".into(), json!(1));
    }
    if let Some(status) = initial_status(resource.kind, &object) {
        object["status"] = status;
    }
    if let Some(manager) = &opts.field_manager {
        managed::record_update(None, &mut object, manager, &resource.api_version(), now);
    }
    Ok(object)
}

/// The object to store for an update of `old` (as stored) with `body` through the main
/// resource (`sub = None`) or the status subresource; and the revision it must still have.
pub fn prepare_update(
    resource: &ResourceType,
    old: &Value,
    mut body: Value,
    sub: Option<Subresource>,
    opts: &WriteOptions,
) -> Result<(Value, Option<u64>), ApiError> {
    let name = meta_str(old, "name").unwrap_or("");
    check_type(resource, &mut body)?;
    let ns = meta_str(old, "namespace").map(str::to_owned);
    check_namespace(resource, &mut body, ns.as_deref())?;
    match meta_str(&body, "name") {
        None | Some("") => {
            metadata_mut(&mut body).insert("name".into(), json!(name));
        }
        Some(given) if given != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        Some(_) => {}
    }
    let expected = resource_version(&body)?;
    let object = typed(resource, &body, opts)?;
    if sub == Some(Subresource::Status) {
        let mut next = old.clone();
        next["status"] = object.get("status").cloned().unwrap_or_else(|| json!({}));
        return Ok((next, expected));
    }
    if sub == Some(Subresource::Finalize) {
        // Only `spec.finalizers` changes: the namespace controller's last step.
        let mut next = old.clone();
        next["spec"]["finalizers"] = object
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or_else(|| json!([]));
        return Ok((next, expected));
    }
    validate(resource, &object)?;
    let mut next = merge_system_fields(resource, old, object);
    if resource.kind == "Service" {
        services::keep_allocated(old, &mut next)?;
    }
    if let (None, Some(fields)) = (
        next.pointer("/metadata/managedFields"),
        old.pointer("/metadata/managedFields"),
    ) {
        let fields = fields.clone();
        metadata_mut(&mut next).insert("managedFields".into(), fields);
    }
    if let Some(manager) = &opts.field_manager {
        let version = resource.api_version();
        managed::record_update(Some(old), &mut next, manager, &version, Timestamp::now());
    }
    Ok((next, expected))
}

/// Keeps what clients cannot change through the main resource: identity, creation time,
/// deletion state, status (when it has its own subresource); bumps `generation` on a
/// spec change.
fn merge_system_fields(resource: &ResourceType, old: &Value, mut object: Value) -> Value {
    let old_meta = old
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let meta = metadata_mut(&mut object);
    for key in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(key) {
            Some(v) => meta.insert(key.into(), v.clone()),
            None => meta.remove(key),
        };
    }
    meta.remove("resourceVersion");
    if resource.has(Subresource::Status) {
        match old.get("status") {
            Some(status) => object["status"] = status.clone(),
            None => {
                if let Some(map) = object.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    if resource.generation && old.get("spec") != object.get("spec") {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        metadata_mut(&mut object).insert("generation".into(), json!(generation + 1));
    }
    object
}

/// Whether two stored forms are the same apart from `resourceVersion` (without copying
/// them: every write asks).
pub fn same_content(a: &Value, b: &Value) -> bool {
    fn same_map(a: &Map<String, Value>, b: &Map<String, Value>, skip: &str, nested: bool) -> bool {
        let keys = |m: &Map<String, Value>| m.keys().filter(|k| k.as_str() != skip).count();
        keys(a) == keys(b)
            && a.iter()
                .filter(|(k, _)| k.as_str() != skip)
                .all(|(k, v)| match b.get(k) {
                    Some(w) if nested && k == "metadata" => match (v.as_object(), w.as_object()) {
                        (Some(v), Some(w)) => same_map(v, w, "resourceVersion", false),
                        _ => v == w,
                    },
                    Some(w) => v == w,
                    None => false,
                })
    }
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => same_map(a, b, "", true),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::find;

    fn now() -> Timestamp {
        "2026-03-01T10:00:00Z".parse().unwrap()
    }

    fn deployment(replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
              "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}},
            "status": {"replicas": 9}})
    }

    #[test]
    fn create_sets_system_fields_defaults_and_resets_status() {
        let r = find("apps", "v1", "deployments").unwrap();
        let obj = prepare_create(
            r,
            deployment(2),
            Some("default"),
            now(),
            &WriteOptions::default(),
        )
        .unwrap();
        assert_eq!(obj["metadata"]["namespace"], "default");
        assert_eq!(obj["metadata"]["generation"], 1);
        assert_eq!(obj["metadata"]["creationTimestamp"], "2026-03-01T10:00:00Z");
        assert_eq!(obj["metadata"]["uid"].as_str().unwrap().len(), 36);
        assert_eq!(obj["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(obj["status"], json!({}));
    }

    #[test]
    fn create_rejects_bad_names_strict_unknown_fields_and_wrong_namespace() {
        let cm = find("", "v1", "configmaps").unwrap();
        let bad = json!({"metadata": {"name": "Bad_Name"}});
        let err = prepare_create(cm, bad, Some("d"), now(), &WriteOptions::default()).unwrap_err();
        assert_eq!((err.code, err.reason), (422, "Invalid"));
        assert!(
            err.message
                .starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value")
        );
        let strict = WriteOptions {
            validation: FieldValidation::Strict,
            ..Default::default()
        };
        let unknown = json!({"metadata": {"name": "a"}, "dta": {}});
        let err = prepare_create(cm, unknown.clone(), Some("d"), now(), &strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message
                .contains("strict decoding error: unknown field \"dta\""),
            "{}",
            err.message
        );
        assert!(prepare_create(cm, unknown, Some("d"), now(), &WriteOptions::default()).is_ok());
        let other_ns = json!({"metadata": {"name": "a", "namespace": "x"}});
        assert_eq!(
            prepare_create(cm, other_ns, Some("d"), now(), &WriteOptions::default())
                .unwrap_err()
                .code,
            400
        );
        let wrong_kind = json!({"kind": "Secret", "metadata": {"name": "a"}});
        assert_eq!(
            prepare_create(cm, wrong_kind, Some("d"), now(), &WriteOptions::default())
                .unwrap_err()
                .code,
            400
        );
        let typed_err = json!({"metadata": {"name": "a"}, "data": {"k": 1}});
        assert_eq!(
            prepare_create(cm, typed_err, Some("d"), now(), &WriteOptions::default())
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn generate_name_and_pod_status() {
        let pods = find("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
        let obj = prepare_create(pods, pod, Some("d"), now(), &WriteOptions::default()).unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert_eq!(
            obj["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
    }

    #[test]
    fn update_keeps_identity_and_status_and_bumps_generation_on_spec_change() {
        let r = find("apps", "v1", "deployments").unwrap();
        let mut old = prepare_create(
            r,
            deployment(2),
            Some("default"),
            now(),
            &WriteOptions::default(),
        )
        .unwrap();
        old["status"] = json!({"replicas": 2});
        set_resource_version(&mut old, 5);
        let mut body = deployment(3);
        body["metadata"]["resourceVersion"] = json!("5");
        let (next, expected) =
            prepare_update(r, &old, body, None, &WriteOptions::default()).unwrap();
        assert_eq!(expected, Some(5));
        assert_eq!(next["metadata"]["uid"], old["metadata"]["uid"]);
        assert_eq!(next["metadata"]["generation"], 2);
        assert_eq!(next["status"], json!({"replicas": 2}));
        let (same, _) =
            prepare_update(r, &old, deployment(2), None, &WriteOptions::default()).unwrap();
        assert_eq!(same["metadata"]["generation"], 1);
        assert!(same_content(&same, &old));
        let (status, _) = prepare_update(
            r,
            &old,
            deployment(7),
            Some(Subresource::Status),
            &WriteOptions::default(),
        )
        .unwrap();
        assert_eq!(status["status"], json!({"replicas": 9}));
        assert_eq!(status["spec"]["replicas"], 2);
        let mut renamed = deployment(2);
        renamed["metadata"]["name"] = json!("other");
        assert_eq!(
            prepare_update(r, &old, renamed, None, &WriteOptions::default())
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn uids_are_v4() {
        let uid = new_uid();
        assert_eq!(&uid[14..15], "4");
        assert_ne!(uid, new_uid());
    }

    #[test]
    fn same_content_ignores_only_the_resource_version() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "3"}, "spec": {"a": 1}});
        assert!(same_content(
            &a,
            &json!({"metadata": {"name": "x", "resourceVersion": "9"}, "spec": {"a": 1}})
        ));
        assert!(same_content(
            &a,
            &json!({"metadata": {"name": "x"}, "spec": {"a": 1}})
        ));
        assert!(!same_content(
            &a,
            &json!({"metadata": {"name": "y"}, "spec": {"a": 1}})
        ));
        assert!(!same_content(
            &a,
            &json!({"metadata": {"name": "x"}, "spec": {"a": 2}})
        ));
        assert!(!same_content(
            &a,
            &json!({"metadata": {"name": "x"}, "spec": {"a": 1}, "status": {}})
        ));
        assert!(!same_content(
            &a,
            &json!({"metadata": {"name": "x", "uid": "u"}, "spec": {"a": 1}})
        ));
    }
}
