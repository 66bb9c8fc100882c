//! Strategic merge patch (`application/strategic-merge-patch+json`), as kubectl's
//! client-side `apply`, `label`, `annotate`, `rollout restart` and `edit` send it: maps
//! merge, `null` deletes, lists whose field has a merge key (containers by `name`, ports by
//! `containerPort`, env by `name`, …) merge element by element, primitive lists with the
//! merge strategy (`finalizers`) are unions, other lists are replaced; plus the directives
//! `$patch: replace|delete|merge`, `$setElementOrder/<list>`, `$retainKeys` and
//! `$deleteFromPrimitiveList/<list>`. The merge keys are the `patchMergeKey` tags of the
//! served Kubernetes types, looked up by the field's path (`list_strategy`).

use serde_json::{Map, Value};

use super::status::ApiError;

/// How a list field merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// Replaced by the patch's list.
    Replace,
    /// Elements (maps) matched by this key and merged.
    MergeBy(&'static str),
    /// A set of primitives: the union.
    Union,
}

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// The strategy of the list at `path` (field names from the root, no indexes), from the
/// `patchStrategy`/`patchMergeKey` tags of the served types.
pub fn list_strategy(path: &[&str]) -> ListStrategy {
    use ListStrategy::*;
    let Some((&field, parents)) = path.split_last() else {
        return Replace;
    };
    let parent = parents.last().copied().unwrap_or("");
    match field {
        _ if CONTAINER_LISTS.contains(&field) => MergeBy("name"),
        "ports" if CONTAINER_LISTS.contains(&parent) => MergeBy("containerPort"),
        "env" if CONTAINER_LISTS.contains(&parent) => MergeBy("name"),
        "volumeMounts" if CONTAINER_LISTS.contains(&parent) => MergeBy("mountPath"),
        "volumeDevices" if CONTAINER_LISTS.contains(&parent) => MergeBy("devicePath"),
        // Service.spec.ports (the only `ports` directly under a top-level spec).
        "ports" if parents == ["spec"] => MergeBy("port"),
        "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims"
            if parent == "spec" =>
        {
            MergeBy("name")
        }
        "hostAliases" if parent == "spec" => MergeBy("ip"),
        "topologySpreadConstraints" if parent == "spec" => MergeBy("topologyKey"),
        "conditions" | "addresses" if parent == "status" => MergeBy("type"),
        "podIPs" | "hostIPs" if parent == "status" => MergeBy("ip"),
        "ownerReferences" if parent == "metadata" => MergeBy("uid"),
        "finalizers" if parent == "metadata" => Union,
        "podCIDRs" if parent == "spec" => Union,
        _ => Replace,
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// Applies a strategic merge patch to `object`.
pub fn merge(object: &Value, patch: &Value) -> Result<Value, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(bad("a strategic merge patch must be a JSON object"));
    };
    let original = object.as_object().cloned().unwrap_or_default();
    let mut path = Vec::new();
    merge_map(original, patch, &mut path).map(Value::Object)
}

/// The `$patch` directive of a map, if any.
fn directive(map: &Map<String, Value>) -> Result<Option<&str>, ApiError> {
    match map.get("$patch") {
        None => Ok(None),
        Some(Value::String(s)) if matches!(s.as_str(), "replace" | "delete" | "merge") => {
            Ok(Some(s))
        }
        Some(other) => Err(bad(format!("unknown patch type: {other}"))),
    }
}

fn without_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip(v)))
        .collect()
}

/// A patch value as plain data: directives removed (what a new field becomes).
fn strip(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(without_directives(m)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| !i.get("$patch").is_some_and(|p| p == "delete"))
                .map(strip)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_map<'p>(
    mut original: Map<String, Value>,
    patch: &'p Map<String, Value>,
    path: &mut Vec<&'p str>,
) -> Result<Map<String, Value>, ApiError> {
    match directive(patch)? {
        Some("replace") => return Ok(without_directives(patch)),
        Some("delete") => return Ok(Map::new()),
        _ => {}
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let keys: Vec<&str> = retain
            .as_array()
            .ok_or_else(|| bad("$retainKeys must be a list of field names"))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        original.retain(|k, _| keys.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = value
                .as_array()
                .ok_or_else(|| bad(format!("{key} must be a list")))?;
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        path.push(key);
        let merged = match (original.remove(key), value) {
            (_, Value::Null) => None,
            (Some(Value::Object(o)), Value::Object(p)) => {
                let m = merge_map(o, p, path)?;
                // `$patch: delete` on a map field removes the field.
                (directive(p)? != Some("delete")).then_some(Value::Object(m))
            }
            (Some(Value::Array(o)), Value::Array(p)) => Some(Value::Array(merge_list(o, p, path)?)),
            (None, Value::Array(p)) => Some(Value::Array(merge_list(Vec::new(), p, path)?)),
            (_, Value::Object(p)) if directive(p)? == Some("delete") => None,
            (_, Value::Object(p)) => Some(Value::Object(merge_map(Map::new(), p, path)?)),
            (_, other) => Some(strip(other)),
        };
        if let Some(v) = merged {
            original.insert(key.clone(), v);
        }
        path.pop();
    }
    // `$setElementOrder/<list>`: the order of the merged list (also when only the order
    // changed and the list itself is not in the patch).
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            let order = order
                .as_array()
                .ok_or_else(|| bad(format!("{key} must be a list")))?;
            path.push(field);
            let strategy = list_strategy(path);
            path.pop();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                reorder(list, order, strategy);
            }
        }
    }
    Ok(original)
}

fn merge_list<'p>(
    mut original: Vec<Value>,
    patch: &'p [Value],
    path: &mut Vec<&'p str>,
) -> Result<Vec<Value>, ApiError> {
    let strategy = list_strategy(path);
    let replace_all = patch
        .iter()
        .any(|i| i.get("$patch").is_some_and(|p| p == "replace"));
    if replace_all {
        return Ok(patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip)
            .collect());
    }
    match strategy {
        ListStrategy::Replace => Ok(patch.iter().map(strip).collect()),
        ListStrategy::Union => {
            for item in patch {
                if !original.contains(item) {
                    original.push(item.clone());
                }
            }
            Ok(original)
        }
        ListStrategy::MergeBy(key) => {
            for item in patch {
                let Value::Object(p) = item else {
                    return Err(bad(format!(
                        "a list merged by {key:?} must hold objects, got {item}"
                    )));
                };
                let id = p.get(key).ok_or_else(|| {
                    bad(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    ))
                })?;
                let at = original.iter().position(|o| o.get(key) == Some(id));
                match (directive(p)?, at) {
                    (Some("delete"), Some(i)) => {
                        original.remove(i);
                    }
                    (Some("delete"), None) => {}
                    (_, Some(i)) => {
                        let o = match original[i].take() {
                            Value::Object(o) => o,
                            _ => Map::new(),
                        };
                        original[i] = Value::Object(merge_map(o, p, path)?);
                    }
                    (_, None) => original.push(Value::Object(without_directives(p))),
                }
            }
            Ok(original)
        }
    }
}

/// Sorts `list` by `order` (elements or merge-key stubs); elements the order does not
/// name keep their relative place after those it does.
fn reorder(list: &mut [Value], order: &[Value], strategy: ListStrategy) {
    let rank = |item: &Value| {
        order
            .iter()
            .position(|o| match strategy {
                ListStrategy::MergeBy(key) => o.get(key).is_some() && o.get(key) == item.get(key),
                _ => o == item,
            })
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": 2, "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:1.27",
                 "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP"}],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "sidecar", "image": "busybox"}],
              "volumes": [{"name": "data", "emptyDir": {}}]}}}})
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        let out = merge(
            &obj,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": [1, 2]}})
        );
        assert_eq!(merge(&obj, &json!([1])).unwrap_err().code, 400);
    }

    #[test]
    fn kubectl_apply_of_a_changed_deployment() {
        // What kubectl 1.33 sends when the image changes, env B goes, env C comes, port
        // 443 goes, the sidecar goes and the strategy becomes Recreate.
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {
                "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null},
                "template": {"spec": {
                    "$setElementOrder/containers": [{"name": "nginx"}],
                    "containers": [
                        {"name": "nginx", "image": "nginx:1.28",
                         "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                         "$setElementOrder/ports": [{"containerPort": 80}],
                         "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}],
                         "ports": [{"$patch": "delete", "containerPort": 443}]},
                        {"$patch": "delete", "name": "sidecar"}]}}}});
        let out = merge(&deployment(), &patch).unwrap();
        let c = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 1);
        assert_eq!(c[0]["image"], "nginx:1.28");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(
            c[0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}])
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(
            out["spec"]["template"]["spec"]["volumes"][0]["name"],
            "data"
        );
    }

    #[test]
    fn element_order_and_additions() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "first"}, {"name": "nginx"}, {"name": "sidecar"}],
            "containers": [{"name": "first", "image": "x"}]}}}});
        let out = merge(&deployment(), &patch).unwrap();
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["first", "nginx", "sidecar"]);
    }

    #[test]
    fn replace_delete_primitive_lists_and_errors() {
        let obj = deployment();
        let replace = json!({"spec": {"template": {"spec": {"containers": [
            {"$patch": "replace"}, {"name": "only", "image": "y"}]}}}});
        let out = merge(&obj, &replace).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "y"}])
        );
        let map_replace = json!({"metadata": {"labels": {"$patch": "replace", "z": "1"}}});
        assert_eq!(
            merge(&obj, &map_replace).unwrap()["metadata"]["labels"],
            json!({"z": "1"})
        );
        let fin = json!({"metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]}});
        assert_eq!(
            merge(&obj, &fin).unwrap()["metadata"]["finalizers"],
            json!(["b"])
        );
        let union = json!({"metadata": {"finalizers": ["a", "c"]}});
        assert_eq!(
            merge(&obj, &union).unwrap()["metadata"]["finalizers"],
            json!(["a", "c"])
        );
        // Lists without a merge key are replaced.
        let args = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "args": ["x"]}]}}}});
        let o2 = merge(&merge(&obj, &args).unwrap(), &json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "args": ["y"]}]}}}})).unwrap();
        assert_eq!(
            o2["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["y"])
        );
        let no_key = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        assert_eq!(merge(&obj, &no_key).unwrap_err().code, 400);
        let bad_directive = json!({"spec": {"$patch": "explode"}});
        assert_eq!(merge(&obj, &bad_directive).unwrap_err().code, 400);
        let service = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let out = merge(
            &service,
            &json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
        )
        .unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
    }
}
