//! Field ownership (`metadata.managedFields`) and server-side apply. A field set is a set
//! of paths in the `FieldsV1` vocabulary (`f:spec`, `k:{"name":"nginx"}`, `v:"a"`, `.`);
//! lists are keyed by the merge keys of `strategic.rs`, other lists are atomic (one leaf).
//! Apply merges the applied configuration into the live object, removes the fields its
//! manager applied before and no longer does (unless another manager owns them), and
//! refuses (409) to change a value another manager owns unless forced; plain writes
//! record an `Update` entry for the fields they changed.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::admit::{metadata_mut, rfc3339};
use super::status::{ApiError, Cause};
use super::strategic::{ListStrategy, list_strategy};

/// One path segment in `FieldsV1` form.
type Path = Vec<String>;
/// A set of owned paths.
pub type FieldSet = BTreeSet<Path>;

/// Paths no manager owns: identity, and status (written through its own subresource).
fn excluded(path: &[String]) -> bool {
    matches!(
        path.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["f:apiVersion"]
            | ["f:kind"]
            | ["f:status", ..]
            | [
                "f:metadata",
                "f:name"
                    | "f:namespace"
                    | "f:uid"
                    | "f:resourceVersion"
                    | "f:generation"
                    | "f:creationTimestamp"
                    | "f:managedFields",
                ..
            ]
    )
}

/// The field names (no keys) along a path, for `list_strategy`.
fn names(path: &[String]) -> Vec<&str> {
    path.iter().filter_map(|s| s.strip_prefix("f:")).collect()
}

fn key_segment(item: &Value, key: &str) -> Option<String> {
    let id = item.get(key)?;
    Some(format!("k:{}", json!({ key: id })))
}

/// The leaves a value sets.
pub fn fields_of(value: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let mut path = Vec::new();
    walk(value, &mut path, &mut out);
    out.retain(|p| !excluded(p));
    out
}

fn walk(value: &Value, path: &mut Path, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                path.push(format!("f:{k}"));
                walk(v, path, out);
                path.pop();
            }
        }
        Value::Array(items) => match list_strategy(&names(path)) {
            ListStrategy::MergeBy(key) => {
                for item in items {
                    let Some(seg) = key_segment(item, key) else {
                        continue;
                    };
                    path.push(seg);
                    path.push(".".into());
                    out.insert(path.clone());
                    path.pop();
                    walk(item, path, out);
                    path.pop();
                }
            }
            ListStrategy::Union => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListStrategy::Replace => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at a path, if present.
fn at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let Some((head, rest)) = path.split_first() else {
        return Some(value);
    };
    if head == "." {
        return Some(value);
    }
    if let Some(field) = head.strip_prefix("f:") {
        return at(value.get(field)?, rest);
    }
    let items = value.as_array()?;
    if let Some(key) = head.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        let item = items
            .iter()
            .find(|i| key.iter().all(|(k, v)| i.get(k) == Some(v)))?;
        return at(item, rest);
    }
    let wanted: Value = serde_json::from_str(head.strip_prefix("v:")?).ok()?;
    items.iter().find(|i| **i == wanted)
}

/// Removes the value at a path (a keyed element when the path ends in `.`).
fn remove(value: &mut Value, path: &[String]) {
    let Some((head, rest)) = path.split_first() else {
        return;
    };
    if let Some(field) = head.strip_prefix("f:") {
        let Some(map) = value.as_object_mut() else {
            return;
        };
        if rest.is_empty() {
            map.remove(field);
        } else if let Some(child) = map.get_mut(field) {
            remove(child, rest);
        }
        return;
    }
    let Some(items) = value.as_array_mut() else {
        return;
    };
    if let Some(key) = head.strip_prefix("k:") {
        let Ok(key) = serde_json::from_str::<Map<String, Value>>(key) else {
            return;
        };
        let matches = |i: &Value| key.iter().all(|(k, v)| i.get(k) == Some(v));
        if rest == ["."] {
            items.retain(|i| !matches(i));
        } else if let Some(item) = items.iter_mut().find(|i| matches(i)) {
            remove(item, rest);
        }
    } else if let Some(Ok(wanted)) = head.strip_prefix("v:").map(serde_json::from_str::<Value>) {
        items.retain(|i| *i != wanted);
    }
}

/// `.spec.containers[name="nginx"].image`, as Kubernetes prints a conflicting field.
fn display(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = seg.strip_prefix("v:") {
            out.push_str(&format!("[{v}]"));
        }
    }
    out
}

/// A field set as a `FieldsV1` tree.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for seg in path {
            let next = node.entry(seg.clone()).or_insert_with(|| json!({}));
            node = match next.as_object_mut() {
                Some(n) => n,
                None => break,
            };
        }
    }
    Value::Object(root)
}

/// A `FieldsV1` tree as a field set.
pub fn from_fields_v1(tree: &Value) -> FieldSet {
    fn go(node: &Map<String, Value>, path: &mut Path, out: &mut FieldSet) {
        for (seg, child) in node {
            path.push(seg.clone());
            match child.as_object() {
                Some(c) if !c.is_empty() => go(c, path, out),
                _ => {
                    out.insert(path.clone());
                }
            }
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    if let Some(map) = tree.as_object() {
        go(map, &mut Vec::new(), &mut out);
    }
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

/// The entries of an object.
pub fn entries(object: &Value) -> Vec<Entry> {
    let list = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            }
        })
        .collect()
}

/// Writes `entries` (empty ones dropped) into the object.
pub fn set_entries(object: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields)})
        })
        .collect();
    let meta = metadata_mut(object);
    if list.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// Gives `manager`'s `operation` entry `fields` added, taking them from every other entry.
fn take(entries: &mut Vec<Entry>, mine: Entry) {
    for e in entries.iter_mut() {
        if e.manager != mine.manager || e.operation != mine.operation {
            e.fields.retain(|p| !mine.fields.contains(p));
        }
    }
    match entries
        .iter_mut()
        .find(|e| e.manager == mine.manager && e.operation == mine.operation)
    {
        Some(e) => {
            e.fields.extend(mine.fields);
            e.time = mine.time;
            e.api_version = mine.api_version;
        }
        None => entries.push(mine),
    }
}

/// Records a plain write (create, update, patch) by `manager`: the fields whose value it
/// changed become its `Update` entry's, and nobody else's.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    now: Timestamp,
) {
    let mut list = old.map(entries).unwrap_or_default();
    let new_fields = fields_of(new);
    let changed: FieldSet = new_fields
        .iter()
        .filter(|p| old.is_none_or(|o| at(o, p) != at(new, p)))
        .cloned()
        .collect();
    // Fields the write removed are owned by nobody any more.
    for e in &mut list {
        e.fields.retain(|p| new_fields.contains(p));
    }
    if !changed.is_empty() {
        let mine = Entry {
            manager: manager.to_owned(),
            operation: "Update".into(),
            api_version: api_version.to_owned(),
            time: rfc3339(now),
            fields: changed,
        };
        take(&mut list, mine);
    }
    set_entries(new, &list);
}

/// Merges the applied configuration into the live value: maps merge, keyed lists merge
/// by key, everything else is replaced.
fn merge_applied(live: &mut Value, config: &Value, path: &mut Vec<String>) {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            for (k, v) in c {
                path.push(k.clone());
                match l.get_mut(k) {
                    Some(existing) if !v.is_null() => merge_applied(existing, v, path),
                    _ => {
                        l.insert(k.clone(), v.clone());
                    }
                }
                path.pop();
            }
        }
        (Value::Array(l), Value::Array(c)) => {
            let names: Vec<&str> = path.iter().map(String::as_str).collect();
            match list_strategy(&names) {
                ListStrategy::MergeBy(key) => {
                    for item in c {
                        match l.iter_mut().find(|i| i.get(key) == item.get(key)) {
                            Some(existing) => merge_applied(existing, item, path),
                            None => l.push(item.clone()),
                        }
                    }
                }
                ListStrategy::Union => {
                    for item in c {
                        if !l.contains(item) {
                            l.push(item.clone());
                        }
                    }
                }
                ListStrategy::Replace => *l = c.clone(),
            }
        }
        (live, config) => *live = config.clone(),
    }
}

/// Server-side apply of `config` by `manager` onto `live`: the new object, or a 409
/// naming the managers whose fields it would change (unless `force`).
pub fn apply(
    live: &Value,
    config: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    now: Timestamp,
) -> Result<Value, ApiError> {
    if !live.is_object() || !config.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    let applied = fields_of(config);
    let mut list = entries(live);
    // Conflicts: another manager owns a field this apply sets to a different value.
    let mut conflicts: BTreeMap<String, Vec<Path>> = BTreeMap::new();
    for e in list.iter().filter(|e| e.manager != manager) {
        for p in e.fields.intersection(&applied) {
            if p.last().is_some_and(|s| s != ".") && at(live, p) != at(config, p) {
                conflicts
                    .entry(e.manager.clone())
                    .or_default()
                    .push(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts, api_version));
    }
    let previous: FieldSet = list
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply")
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let others: FieldSet = list
        .iter()
        .filter(|e| e.manager != manager)
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut next = live.clone();
    // What this manager applied before and no longer does goes, unless someone else
    // owns it; keyed elements first go whole, then single fields.
    for p in previous
        .difference(&applied)
        .filter(|p| !others.contains(*p))
    {
        remove(&mut next, p);
    }
    merge_applied(&mut next, config, &mut Vec::new());
    // Forced: the conflicting fields move to this manager; shared equal ones stay shared.
    for e in &mut list {
        if let Some(lost) = conflicts.get(&e.manager) {
            e.fields.retain(|p| !lost.contains(p));
        }
    }
    list.retain(|e| !(e.manager == manager && e.operation == "Apply"));
    list.push(Entry {
        manager: manager.to_owned(),
        operation: "Apply".into(),
        api_version: api_version.to_owned(),
        time: rfc3339(now),
        fields: applied,
    });
    set_entries(&mut next, &list);
    Ok(next)
}

fn conflict_error(conflicts: &BTreeMap<String, Vec<Path>>, api_version: &str) -> ApiError {
    let total: usize = conflicts.values().map(Vec::len).sum();
    let mut causes = Vec::new();
    let mut parts = Vec::new();
    for (manager, paths) in conflicts {
        let with = format!("conflict with \"{manager}\" using {api_version}");
        for p in paths {
            causes.push(Cause {
                reason: "FieldManagerConflict",
                message: with.clone(),
                field: display(p),
            });
        }
        if paths.len() == 1 {
            parts.push(format!("{with}: {}", display(&paths[0])));
        } else {
            let lines: Vec<String> = paths.iter().map(|p| format!("- {}", display(p))).collect();
            parts.push(format!(
                "conflicts with \"{manager}\" using {api_version}:\n{}",
                lines.join("\n")
            ));
        }
    }
    let plural = if total == 1 { "" } else { "s" };
    let message = format!(
        "Apply failed with {total} conflict{plural}: {}",
        parts.join("\n")
    );
    ApiError::apply_conflict(message, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-03-01T10:00:00Z".parse().unwrap()
    }

    fn config(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "nginx", "image": image}]}}}})
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let set = fields_of(&config(1, "nginx"));
        let tree = to_fields_v1(&set);
        assert_eq!(
            tree["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"],
            json!({".": {}, "f:image": {}, "f:name": {}})
        );
        assert!(tree.get("f:apiVersion").is_none());
        assert_eq!(from_fields_v1(&tree), set);
    }

    #[test]
    fn apply_owns_merges_removes_and_conflicts() {
        let live =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        let first = apply(
            &live,
            &config(1, "nginx:1"),
            "kubectl",
            "apps/v1",
            false,
            now(),
        )
        .unwrap();
        assert_eq!(first["spec"]["replicas"], 1);
        assert_eq!(entries(&first)[0].manager, "kubectl");
        assert_eq!(entries(&first)[0].operation, "Apply");

        // Same manager, replicas dropped from its config: the field goes.
        let mut cfg = config(1, "nginx:2");
        cfg["spec"].as_object_mut().unwrap().remove("replicas");
        let second = apply(&first, &cfg, "kubectl", "apps/v1", false, now()).unwrap();
        assert!(second["spec"].get("replicas").is_none(), "{second}");
        assert_eq!(
            second["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );

        // Another manager changing the image conflicts; the same value does not.
        let err = apply(
            &second,
            &config(3, "nginx:3"),
            "other",
            "apps/v1",
            false,
            now(),
        )
        .unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl\" using apps/v1: .spec.template.spec.containers[name=\"nginx\"].image"
        );
        let shared = apply(
            &second,
            &config(3, "nginx:2"),
            "other",
            "apps/v1",
            false,
            now(),
        )
        .unwrap();
        assert_eq!(shared["spec"]["replicas"], 3);
        // Forced: the value changes and ownership moves.
        let forced = apply(
            &second,
            &config(3, "nginx:3"),
            "other",
            "apps/v1",
            true,
            now(),
        )
        .unwrap();
        assert_eq!(
            forced["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:3"
        );
        let kubectl = entries(&forced)
            .into_iter()
            .find(|e| e.manager == "kubectl")
            .unwrap();
        assert!(
            !kubectl
                .fields
                .iter()
                .any(|p| p.last().is_some_and(|s| s == "f:image"))
        );
    }

    #[test]
    fn non_objects_are_refused_not_a_panic() {
        let err = apply(&json!(5), &json!(5), "m", "v1", false, now()).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(apply(&json!({}), &json!([1]), "m", "v1", true, now()).is_err());
    }

    #[test]
    fn updates_take_ownership_of_what_they_change() {
        let mut created = config(1, "nginx:1");
        record_update(None, &mut created, "kubectl-create", "apps/v1", now());
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(
            Some(&created),
            &mut scaled,
            "kubectl-scale",
            "apps/v1",
            now(),
        );
        let list = entries(&scaled);
        let scale = list.iter().find(|e| e.manager == "kubectl-scale").unwrap();
        assert_eq!(scale.fields.len(), 1);
        let err = apply(
            &scaled,
            &config(2, "nginx:1"),
            "kubectl",
            "apps/v1",
            false,
            now(),
        )
        .unwrap_err();
        assert!(
            err.message.contains("conflict with \"kubectl-scale\""),
            "{}",
            err.message
        );
        assert!(err.message.ends_with(".spec.replicas"), "{}", err.message);
    }
}
