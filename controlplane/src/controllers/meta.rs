//! Object metadata the controllers share: label selectors, controller references, pod
//! readiness and availability.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use crate::apiserver::Object;

/// Whether `selector` selects `labels`. An empty selector selects everything (callers
/// that must not adopt everything check `is_empty_selector` first).
pub fn selects(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let exact = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    exact
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or(&[]);
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// Whether a selector has no requirement at all.
pub fn is_empty_selector(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

/// The controller reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// A controller reference to `owner`, blocking its foreground deletion.
pub fn controller_ref<K: Object>(owner: &K) -> OwnerReference {
    let meta = owner.metadata();
    OwnerReference {
        api_version: K::API_VERSION.to_owned(),
        kind: K::KIND.to_owned(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The uid of an object.
pub fn uid<K: Object>(object: &K) -> &str {
    object.metadata().uid.as_deref().unwrap_or("")
}

/// The name of an object.
pub fn name<K: Object>(object: &K) -> &str {
    object.metadata().name.as_deref().unwrap_or("")
}

/// The namespace of an object ("" for cluster-scoped).
pub fn namespace<K: Object>(object: &K) -> &str {
    object.metadata().namespace.as_deref().unwrap_or("")
}

/// Whether the pod is neither finished nor being deleted.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// When the pod's Ready condition became True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    if condition.status != "True" {
        return None;
    }
    Some(
        condition
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// Whether the pod is Ready.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been Ready for `min_ready` at `now`; if it is Ready but not yet
/// long enough, also how long until it is.
pub fn availability(pod: &Pod, min_ready: Duration, now: Timestamp) -> (bool, Option<Duration>) {
    let Some(since) = ready_since(pod) else {
        return (false, None);
    };
    if min_ready.is_zero() {
        return (true, None);
    }
    let elapsed = now
        .duration_since(since)
        .try_into()
        .unwrap_or(Duration::ZERO);
    if elapsed >= min_ready {
        (true, None)
    } else {
        (false, Some(min_ready - elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selector(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [
            ("app".to_owned(), "web".to_owned()),
            ("tier".to_owned(), "fe".to_owned()),
        ]
        .into();
        assert!(selects(
            &selector(json!({"matchLabels": {"app": "web"}})),
            Some(&labels)
        ));
        assert!(!selects(
            &selector(json!({"matchLabels": {"app": "db"}})),
            Some(&labels)
        ));
        let expr = |op: &str, values: serde_json::Value| {
            selector(
                json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]}),
            )
        };
        assert!(selects(&expr("In", json!(["fe", "be"])), Some(&labels)));
        assert!(!selects(&expr("NotIn", json!(["fe"])), Some(&labels)));
        assert!(selects(&expr("Exists", json!(null)), Some(&labels)));
        assert!(!selects(&expr("DoesNotExist", json!(null)), Some(&labels)));
        assert!(!selects(&expr("In", json!(["fe"])), None));
        assert!(is_empty_selector(&selector(json!({}))));
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-03-01T10:00:00Z"}]}}))
        .unwrap();
        let at = |s: &str| -> Timestamp { s.parse().unwrap() };
        assert_eq!(
            availability(&pod, Duration::from_secs(5), at("2026-03-01T10:00:02Z")),
            (false, Some(Duration::from_secs(3)))
        );
        assert_eq!(
            availability(&pod, Duration::from_secs(5), at("2026-03-01T10:00:05Z")),
            (true, None)
        );
        assert_eq!(
            availability(&pod, Duration::ZERO, at("2026-03-01T10:00:00Z")),
            (true, None)
        );
        let unready: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!(
            availability(&unready, Duration::ZERO, at("2026-03-01T10:00:00Z")),
            (false, None)
        );
    }
}
