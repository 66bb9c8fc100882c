//! A Deployment's rollout as pure decisions over its ReplicaSets: which one is new (its
//! template equals the Deployment's, ignoring `pod-template-hash`), the next scaling step of
//! `RollingUpdate` (maxSurge / maxUnavailable, as kube-controller-manager computes them) or
//! `Recreate`, revision bookkeeping, history cleanup, and the status with its Available and
//! Progressing conditions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::controllers::meta::{controller_ref, name, namespace};

/// The label that ties a ReplicaSet and its pods to one template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision annotation on ReplicaSets and the Deployment.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Annotations of the Deployment never copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED,
    MAX_REPLICAS,
];

/// Drops nulls, empty objects and empty arrays, recursively.
fn normalise(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                normalise(v);
            }
            map.retain(|_, v| {
                !(v.is_null()
                    || v.as_object().is_some_and(|m| m.is_empty())
                    || v.as_array().is_some_and(|a| a.is_empty()))
            });
        }
        Value::Array(items) => items.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// A template in the form compared and hashed: normalised, without `pod-template-hash`.
fn canonical(template: &PodTemplateSpec) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    let mut value = serde_json::to_value(&t).unwrap_or_default();
    normalise(&mut value);
    value
}

/// Whether two templates are the same apart from `pod-template-hash` and empty fields.
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    canonical(a) == canonical(b)
}

/// `pod-template-hash`: FNV-1a (32 bit) of the canonical template and the collision count,
/// written with Kubernetes' safe alphabet (no vowels, no confusable digits).
pub fn template_hash(template: &PodTemplateSpec, collisions: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(&canonical(template)).unwrap_or_default();
    if let Some(c) = collisions {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.to_string()
        .bytes()
        .map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char)
        .collect()
}

/// The revision of a ReplicaSet (0 when unset).
pub fn revision(rs: &ReplicaSet) -> u64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// `maxSurge` and `maxUnavailable` as numbers of pods: percentages of `replicas`, surge
/// rounded up and unavailability down; never both zero.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let replicas = replicas_of(d);
    if is_recreate(d) {
        return (0, replicas);
    }
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let resolve = |v: Option<&IntOrString>, default: &str, up: bool| -> i32 {
        let v = v
            .cloned()
            .unwrap_or(IntOrString::String(default.to_owned()));
        match v {
            IntOrString::Int(n) => n.max(0),
            IntOrString::String(s) => {
                let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
                let scaled = pct * i64::from(replicas);
                let n = if up {
                    (scaled + 99) / 100
                } else {
                    scaled / 100
                };
                n.clamp(0, i64::from(i32::MAX)) as i32
            }
        }
    };
    let surge = resolve(rolling.and_then(|r| r.max_surge.as_ref()), "25%", true);
    let unavailable = resolve(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        "25%",
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable.min(replicas))
    }
}

/// One change to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this ReplicaSet.
    Create(Box<ReplicaSet>),
    /// Set a ReplicaSet's replicas and annotations.
    Scale {
        name: String,
        replicas: i32,
        annotations: BTreeMap<String, String>,
    },
    /// Delete an old, empty ReplicaSet beyond `revisionHistoryLimit`.
    Delete(String),
}

/// What one reconcile of a Deployment does.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub status: DeploymentStatus,
    /// The Deployment's own revision annotation, if it must change.
    pub revision: Option<String>,
    /// When to look again (progress deadline).
    pub again: Option<Duration>,
    /// For events: (reason, message).
    pub events: Vec<(String, String)>,
}

/// The annotations a ReplicaSet of `d` carries at `revision` with `replicas` desired.
fn annotations_for(
    d: &Deployment,
    rs: Option<&ReplicaSet>,
    revision: u64,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = rs
        .and_then(|r| r.metadata.annotations.clone())
        .unwrap_or_default();
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if !NOT_COPIED.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    let (surge, _) = surge_and_unavailable(d);
    out.insert(REVISION.into(), revision.to_string());
    out.insert(DESIRED.into(), replicas_of(d).to_string());
    out.insert(MAX_REPLICAS.into(), (replicas_of(d) + surge).to_string());
    out
}

/// The new ReplicaSet of `d` with `replicas` at `revision`.
pub fn new_replica_set(d: &Deployment, hash: &str, replicas: i32, revision: u64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", name(d))),
            namespace: Some(namespace(d).to_owned()),
            labels: meta.labels.clone(),
            annotations: Some(annotations_for(d, None, revision)),
            owner_references: Some(vec![controller_ref(d)]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

fn scale(rs: &ReplicaSet, d: &Deployment, replicas: i32, revision: u64) -> Action {
    Action::Scale {
        name: name(rs).to_owned(),
        replicas,
        annotations: annotations_for(d, Some(rs), revision),
    }
}

fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition, keeping the transition time if the status did not change and the
/// update time if nothing at all changed.
fn set_condition(list: &mut Vec<DeploymentCondition>, mut c: DeploymentCondition) {
    if let Some(old) = list.iter_mut().find(|o| o.type_ == c.type_) {
        if old.status == c.status {
            c.last_transition_time = old.last_transition_time.clone();
            if old.reason == c.reason && old.message == c.message {
                c.last_update_time = old.last_update_time.clone();
            }
        }
        *old = c;
    } else {
        list.push(c);
    }
}

/// Decides the next step for `d` over the ReplicaSets it owns, with `old_pods` active pods
/// still owned by its old ReplicaSets (for Recreate) at `now`.
pub fn decide(
    d: &Deployment,
    owned: &[Arc<ReplicaSet>],
    old_pods: usize,
    now: Timestamp,
) -> Decision {
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = replicas_of(d);
    let paused = spec.paused == Some(true);
    let collisions = d.status.as_ref().and_then(|s| s.collision_count);
    let mut sets: Vec<Arc<ReplicaSet>> = owned.to_vec();
    sets.sort_by_key(|rs| {
        (
            rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            name(rs.as_ref()).to_owned(),
        )
    });
    let new = sets.iter().find(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| same_template(t, &spec.template))
    });
    let old: Vec<&Arc<ReplicaSet>> = sets
        .iter()
        .filter(|rs| new.is_none_or(|n| !Arc::ptr_eq(n, rs)))
        .collect();
    let max_old_revision = old.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    let (surge, max_unavailable) = surge_and_unavailable(d);
    let total: i32 = sets.iter().map(|rs| spec_replicas(rs)).sum();
    let mut actions = Vec::new();
    let mut events = Vec::new();
    // The new set's revision: above every old one.
    let new_revision = match new {
        Some(rs) if revision(rs) > max_old_revision => revision(rs),
        _ => max_old_revision + 1,
    };
    let event = |rs: &ReplicaSet, to: i32| {
        let from = spec_replicas(rs);
        let dir = if to > from { "up" } else { "down" };
        (
            "ScalingReplicaSet".to_owned(),
            format!("Scaled {dir} replica set {} from {from} to {to}", name(rs)),
        )
    };
    if paused {
        // Paused: no rollout, but the replica count still follows the Deployment.
        if let Some(rs) = new
            && old.iter().all(|o| spec_replicas(o) == 0)
            && spec_replicas(rs) != replicas
        {
            events.push(event(rs, replicas));
            actions.push(scale(rs, d, replicas, revision(rs)));
        }
    } else if is_recreate(d) {
        let live_old: Vec<_> = old.iter().filter(|rs| spec_replicas(rs) > 0).collect();
        if !live_old.is_empty() {
            for rs in live_old {
                events.push(event(rs, 0));
                actions.push(scale(rs, d, 0, revision(rs)));
            }
        } else if old_pods == 0 {
            match new {
                None => {
                    let hash = template_hash(&spec.template, collisions);
                    let rs = new_replica_set(d, &hash, replicas, new_revision);
                    events.push((
                        "ScalingReplicaSet".into(),
                        format!("Scaled up replica set {} from 0 to {replicas}", name(&rs)),
                    ));
                    actions.push(Action::Create(Box::new(rs)));
                }
                Some(rs) if spec_replicas(rs) != replicas || revision(rs) != new_revision => {
                    events.push(event(rs, replicas));
                    actions.push(scale(rs, d, replicas, new_revision));
                }
                Some(_) => {}
            }
        }
    } else {
        // RollingUpdate: first grow the new set within maxSurge…
        let max_total = replicas + surge;
        let new_target = match new {
            Some(rs) if spec_replicas(rs) > replicas => replicas,
            Some(rs) => {
                let room = (max_total - total).max(0);
                spec_replicas(rs) + room.min(replicas - spec_replicas(rs))
            }
            None => (max_total - total).max(0).min(replicas),
        };
        match new {
            None => {
                let hash = template_hash(&spec.template, collisions);
                let rs = new_replica_set(d, &hash, new_target, new_revision);
                events.push((
                    "ScalingReplicaSet".into(),
                    format!("Scaled up replica set {} from 0 to {new_target}", name(&rs)),
                ));
                actions.push(Action::Create(Box::new(rs)));
            }
            Some(rs) if spec_replicas(rs) != new_target || revision(rs) != new_revision => {
                if spec_replicas(rs) != new_target {
                    events.push(event(rs, new_target));
                }
                actions.push(scale(rs, d, new_target, new_revision));
            }
            Some(_) => {}
        }
        // …then shrink the old ones within maxUnavailable.
        let old_total: i32 = old.iter().map(|rs| spec_replicas(rs)).sum();
        if actions.is_empty() && old_total > 0 {
            let min_available = replicas - max_unavailable;
            let new_unavailable = new.map_or(0, |rs| (spec_replicas(rs) - available(rs)).max(0));
            let mut budget = total - min_available - new_unavailable;
            let mut targets: BTreeMap<String, i32> = old
                .iter()
                .map(|rs| (name(rs.as_ref()).to_owned(), spec_replicas(rs)))
                .collect();
            // Unhealthy old replicas go first: they cost no availability.
            for rs in &old {
                if budget <= 0 {
                    break;
                }
                let current = targets[name(rs.as_ref())];
                let unhealthy = (current - available(rs)).max(0);
                let cut = unhealthy.min(budget);
                if cut > 0 {
                    targets.insert(name(rs.as_ref()).to_owned(), current - cut);
                    budget -= cut;
                }
            }
            // Then healthy ones, while enough stay available.
            let available_total: i32 = sets.iter().map(|rs| available(rs)).sum();
            let mut healthy_budget = (available_total - min_available).max(0).min(budget.max(0));
            for rs in &old {
                if healthy_budget <= 0 {
                    break;
                }
                let current = targets[name(rs.as_ref())];
                let cut = current.min(healthy_budget);
                if cut > 0 {
                    targets.insert(name(rs.as_ref()).to_owned(), current - cut);
                    healthy_budget -= cut;
                }
            }
            for rs in &old {
                let to = targets[name(rs.as_ref())];
                if to != spec_replicas(rs) {
                    events.push(event(rs, to));
                    actions.push(scale(rs, d, to, revision(rs)));
                }
            }
        }
    }
    // History: empty old sets beyond revisionHistoryLimit, oldest revision first.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let mut empty_old: Vec<&Arc<ReplicaSet>> = old
        .iter()
        .copied()
        .filter(|rs| {
            spec_replicas(rs) == 0
                && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
                && !actions
                    .iter()
                    .any(|a| matches!(a, Action::Scale { name: n, .. } if n == name(rs.as_ref())))
        })
        .collect();
    empty_old.sort_by_key(|rs| revision(rs));
    if empty_old.len() > limit {
        for rs in &empty_old[..empty_old.len() - limit] {
            actions.push(Action::Delete(name(rs.as_ref()).to_owned()));
        }
    }
    let (status, again) = status(d, &sets, new.map(|rs| rs.as_ref()), max_unavailable, now);
    let revision_annotation = new_revision.to_string();
    let current = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION));
    let creating = actions.iter().any(|a| matches!(a, Action::Create(_)));
    let revision = (current != Some(&revision_annotation) && (new.is_some() || creating))
        .then_some(revision_annotation);
    Decision {
        actions,
        status,
        revision,
        again,
        events,
    }
}

/// The status of `d` from its sets, with Available and Progressing conditions.
fn status(
    d: &Deployment,
    sets: &[Arc<ReplicaSet>],
    new: Option<&ReplicaSet>,
    max_unavailable: i32,
    now: Timestamp,
) -> (DeploymentStatus, Option<Duration>) {
    let replicas = replicas_of(d);
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| sets.iter().map(|rs| f(rs)).sum::<i32>();
    let st = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
    let total = sum(&|rs| st(rs).replicas);
    let ready = sum(&|rs| st(rs).ready_replicas.unwrap_or(0));
    let avail = sum(&|rs| st(rs).available_replicas.unwrap_or(0));
    let updated = new.map_or(0, |rs| st(rs).replicas);
    let old = d.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let min_available = replicas - max_unavailable;
    if avail >= min_available {
        set_condition(
            &mut conditions,
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut conditions,
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    let spec = d.spec.clone().unwrap_or_default();
    let deadline = spec.progress_deadline_seconds.unwrap_or(600).max(0) as u64;
    let rs_name = new
        .map(|rs| name(rs).to_owned())
        .unwrap_or_else(|| format!("{}-<new>", name(d)));
    let complete = updated == replicas
        && avail >= replicas
        && total == replicas
        && new.is_some_and(|rs| {
            rs.status.as_ref().and_then(|s| s.observed_generation) == rs.metadata.generation
        });
    let progressed = old.updated_replicas.unwrap_or(0) != updated
        || old.available_replicas.unwrap_or(0) != avail
        || old.ready_replicas.unwrap_or(0) != ready
        || old.replicas.unwrap_or(0) != total
        || old.observed_generation != d.metadata.generation;
    let mut again = None;
    if spec.paused == Some(true) {
        set_condition(
            &mut conditions,
            condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                now,
            ),
        );
    } else if complete {
        set_condition(
            &mut conditions,
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                now,
            ),
        );
    } else {
        let current = conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .cloned();
        let reason = current.as_ref().and_then(|c| c.reason.clone());
        let stalled = reason.as_deref() == Some("ProgressDeadlineExceeded");
        let rolling = reason.as_deref() == Some("ReplicaSetUpdated");
        if progressed || !(stalled || rolling) {
            // Progress (or a new rollout) moves the deadline: a fresh update time.
            let mut c = condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
                now,
            );
            if let Some(old) = current.filter(|o| o.status == "True") {
                c.last_transition_time = old.last_transition_time;
            }
            conditions.retain(|o| o.type_ != "Progressing");
            conditions.push(c);
            again = Some(Duration::from_secs(deadline));
        } else if rolling {
            let since = current
                .and_then(|c| c.last_update_time)
                .map(|t| t.0)
                .unwrap_or(now);
            let elapsed: Duration = now
                .duration_since(since)
                .try_into()
                .unwrap_or(Duration::ZERO);
            if elapsed.as_secs() >= deadline {
                set_condition(
                    &mut conditions,
                    condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                        now,
                    ),
                );
            } else {
                again = Some(Duration::from_secs(deadline) - elapsed);
            }
        }
    }
    let order = |t: &str| match t {
        "Available" => 0,
        "Progressing" => 1,
        _ => 2,
    };
    conditions.sort_by_key(|c| order(&c.type_));
    let status = DeploymentStatus {
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(avail),
        unavailable_replicas: Some((replicas - avail).max(0)),
        observed_generation: d.metadata.generation,
        collision_count: old.collision_count,
        conditions: Some(conditions),
        terminating_replicas: None,
    };
    (status, again)
}

#[cfg(test)]
mod tests;
