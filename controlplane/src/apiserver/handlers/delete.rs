//! Deletion as Kubernetes does it: an object with finalizers, a Foreground or Orphan
//! propagation, or (for a pod on a node) a grace period is not removed but marked with
//! `deletionTimestamp`; whoever holds the finalizer (the garbage collector, the namespace
//! controller) or the kubelet (for a graceful pod) finishes it. The decision is a pure
//! function of the object, the options and the time.

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::super::admit::{metadata_mut, rfc3339};
use super::super::registry::ResourceType;
use super::super::request::{DeleteOptions, Propagation};

/// The finalizer the garbage collector holds while it deletes blocking dependents.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer the garbage collector holds while it orphans dependents.
pub const ORPHAN: &str = "orphan";
/// A pod's grace period when neither the request nor the pod names one.
const DEFAULT_POD_GRACE: i64 = 30;

/// What a DELETE does to the stored object.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion {
    /// Remove it from the store now.
    Remove,
    /// Store this marked form (with `deletionTimestamp`) and answer 202.
    Mark(Value),
    /// Already marked and nothing changes: answer 202 with it as stored.
    Pending,
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Every finalizer that holds `object`: `metadata.finalizers`, and a namespace's
/// `spec.finalizers`.
pub fn finalizers(object: &Value) -> Vec<String> {
    let mut all = strings(object.pointer("/metadata/finalizers"));
    if object.get("kind").and_then(Value::as_str) == Some("Namespace") {
        all.extend(strings(object.pointer("/spec/finalizers")));
    }
    all
}

/// Whether a write left `object` marked for deletion with nothing holding it, so the
/// store entry must go (a graceful pod waits for its kubelet's grace-0 delete instead).
pub fn finished(object: &Value) -> bool {
    let meta = &object["metadata"];
    meta.get("deletionTimestamp").is_some_and(|t| !t.is_null())
        && finalizers(object).is_empty()
        && meta
            .get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
}

/// The grace period of deleting a pod: the request's, else the pod's, else 30 s; zero for a
/// pod no kubelet runs (unscheduled, or finished).
fn pod_grace(object: &Value, options: &DeleteOptions) -> i64 {
    let bound = object
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = object.pointer("/status/phase").and_then(Value::as_str);
    if !bound || matches!(phase, Some("Succeeded" | "Failed")) {
        return 0;
    }
    options
        .grace_period_seconds
        .or_else(|| {
            object
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(DEFAULT_POD_GRACE)
        .max(0)
}

fn add_finalizer(object: &mut Value, name: &str) {
    let meta = metadata_mut(object);
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(items) = list.as_array_mut()
        && !items.iter().any(|f| f == name)
    {
        items.push(json!(name));
    }
}

/// Decides what a DELETE of `object` (as stored) with `options` does at `now`.
pub fn plan(
    resource: &ResourceType,
    object: &Value,
    options: &DeleteOptions,
    now: Timestamp,
) -> Deletion {
    let is_pod = resource.kind == "Pod";
    let grace = if is_pod {
        pod_grace(object, options)
    } else {
        0
    };
    let mut next = object.clone();
    metadata_mut(&mut next).remove("resourceVersion");
    match options.propagation {
        Some(Propagation::Orphan) => add_finalizer(&mut next, ORPHAN),
        Some(Propagation::Foreground) => add_finalizer(&mut next, FOREGROUND),
        Some(Propagation::Background) | None => {}
    }
    let held = !finalizers(&next).is_empty();
    let meta = metadata_mut(&mut next);
    let marked = meta.get("deletionTimestamp").is_some_and(|t| !t.is_null());
    if marked {
        // A second delete may only shorten a pod's grace period.
        let current = meta
            .get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if is_pod && grace < current {
            if grace == 0 && !held {
                return Deletion::Remove;
            }
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            let at = now + SignedDuration::from_secs(grace);
            meta.insert("deletionTimestamp".into(), json!(rfc3339(at)));
        }
        if super::super::admit::same_content(object, &next) {
            return Deletion::Pending;
        }
        return Deletion::Mark(next);
    }
    if !held && grace == 0 {
        return Deletion::Remove;
    }
    let at = now + SignedDuration::from_secs(grace);
    meta.insert("deletionTimestamp".into(), json!(rfc3339(at)));
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
    if resource.kind == "Namespace" {
        next["status"]["phase"] = json!("Terminating");
    }
    Deletion::Mark(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::find;

    fn now() -> Timestamp {
        "2026-03-01T10:00:00Z".parse().unwrap()
    }

    fn opts(propagation: Option<Propagation>, grace: Option<i64>) -> DeleteOptions {
        DeleteOptions {
            propagation,
            grace_period_seconds: grace,
            ..DeleteOptions::default()
        }
    }

    fn rs() -> &'static ResourceType {
        find("apps", "v1", "replicasets").unwrap()
    }

    fn pods() -> &'static ResourceType {
        find("", "v1", "pods").unwrap()
    }

    #[test]
    fn plain_objects_go_at_once_and_background_changes_nothing() {
        let obj = json!({"kind": "ReplicaSet", "metadata": {"name": "a"}});
        assert_eq!(plan(rs(), &obj, &opts(None, None), now()), Deletion::Remove);
        let bg = opts(Some(Propagation::Background), None);
        assert_eq!(plan(rs(), &obj, &bg, now()), Deletion::Remove);
    }

    #[test]
    fn foreground_and_orphan_mark_with_their_finalizer() {
        let obj = json!({"kind": "ReplicaSet", "metadata": {"name": "a", "resourceVersion": "4"}});
        for (p, f) in [
            (Propagation::Foreground, FOREGROUND),
            (Propagation::Orphan, ORPHAN),
        ] {
            let Deletion::Mark(next) = plan(rs(), &obj, &opts(Some(p), None), now()) else {
                panic!("{p:?} must mark");
            };
            assert_eq!(next["metadata"]["finalizers"], json!([f]));
            assert_eq!(
                next["metadata"]["deletionTimestamp"],
                "2026-03-01T10:00:00Z"
            );
            assert_eq!(next["metadata"]["deletionGracePeriodSeconds"], 0);
            assert!(next["metadata"].get("resourceVersion").is_none());
            assert!(!finished(&next));
        }
    }

    #[test]
    fn user_finalizers_hold_the_object_until_removed() {
        let obj = json!({"kind": "ConfigMap", "metadata": {"name": "a", "finalizers": ["example.com/x"]}});
        let cm = find("", "v1", "configmaps").unwrap();
        let Deletion::Mark(mut next) = plan(cm, &obj, &opts(None, None), now()) else {
            panic!("must mark");
        };
        assert!(!finished(&next));
        assert_eq!(plan(cm, &next, &opts(None, None), now()), Deletion::Pending);
        next["metadata"]["finalizers"] = json!([]);
        assert!(finished(&next));
    }

    #[test]
    fn bound_pods_get_their_grace_period_and_a_second_delete_can_shorten_it() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10},
            "status": {"phase": "Running"}});
        let Deletion::Mark(marked) = plan(pods(), &pod, &opts(None, None), now()) else {
            panic!("a bound pod is marked");
        };
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 10);
        assert_eq!(
            marked["metadata"]["deletionTimestamp"],
            "2026-03-01T10:00:10Z"
        );
        assert!(!finished(&marked), "the kubelet confirms a graceful pod");
        assert_eq!(
            plan(pods(), &marked, &opts(None, None), now()),
            Deletion::Pending
        );
        assert_eq!(
            plan(pods(), &marked, &opts(None, Some(0)), now()),
            Deletion::Remove
        );
        let Deletion::Mark(shorter) = plan(pods(), &marked, &opts(None, Some(3)), now()) else {
            panic!("shortened");
        };
        assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 3);
    }

    #[test]
    fn unbound_finished_or_grace_zero_pods_go_at_once() {
        let pending = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {}});
        assert_eq!(
            plan(pods(), &pending, &opts(None, None), now()),
            Deletion::Remove
        );
        let done = json!({"kind": "Pod", "metadata": {"name": "p"},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
        assert_eq!(
            plan(pods(), &done, &opts(None, None), now()),
            Deletion::Remove
        );
        let running = json!({"kind": "Pod", "metadata": {"name": "p"},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert_eq!(
            plan(pods(), &running, &opts(None, Some(0)), now()),
            Deletion::Remove
        );
    }

    #[test]
    fn namespaces_wait_for_their_spec_finalizer_and_turn_terminating() {
        let ns = find("", "v1", "namespaces").unwrap();
        let obj = json!({"kind": "Namespace", "metadata": {"name": "demo"},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        let Deletion::Mark(mut next) = plan(ns, &obj, &opts(None, None), now()) else {
            panic!("must mark");
        };
        assert_eq!(next["status"]["phase"], "Terminating");
        assert!(!finished(&next));
        next["spec"]["finalizers"] = json!([]);
        assert!(finished(&next));
    }
}
