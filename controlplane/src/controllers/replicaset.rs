//! The ReplicaSet (and ReplicationController) controller: as many active pods as
//! `spec.replicas`, owned through a
//! controller reference; orphans that match the selector are adopted and owned pods that
//! stop matching are released; surplus pods go in kube-controller-manager's order
//! (unscheduled, pending, not ready, newest first); status counts replicas, ready and
//! available (ready for `minReadySeconds`) pods.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{
    Pod, ReplicationController, ReplicationControllerSpec, ReplicationControllerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use serde_json::json;

use super::Reconcile;
use super::events::{Kind, Recorder};
use super::expectations::Expectations;
use super::informer::{Event, Informer, key_of, split_key};
use super::meta::{
    availability, controller_of, controller_ref, is_active, is_empty_selector, is_ready, name,
    namespace, selects, uid,
};
use super::queue::Queue;
use crate::apiserver::{ApiError, Client, DeleteOptions, Object};

/// A kind this controller manages: a ReplicaSet, or a ReplicationController seen as one.
pub trait Replicated: Object {
    /// The recorder's component name.
    const COMPONENT: &'static str;
    /// The object as a ReplicaSet (same metadata, selector, template, replicas, status).
    fn as_replica_set(&self) -> ReplicaSet;
    /// The object with `status` (from the ReplicaSet view).
    fn with_status(&self, status: ReplicaSetStatus) -> Self;
}

impl Replicated for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";

    fn as_replica_set(&self) -> ReplicaSet {
        self.clone()
    }

    fn with_status(&self, status: ReplicaSetStatus) -> Self {
        ReplicaSet {
            status: Some(status),
            ..self.clone()
        }
    }
}

impl Replicated for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";

    fn as_replica_set(&self) -> ReplicaSet {
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone();
        ReplicaSet {
            metadata: self.metadata.clone(),
            spec: Some(ReplicaSetSpec {
                replicas: spec.replicas,
                min_ready_seconds: spec.min_ready_seconds,
                selector: LabelSelector {
                    match_labels: spec.selector,
                    match_expressions: None,
                },
                template: spec.template,
            }),
            status: status.map(|s| ReplicaSetStatus {
                replicas: s.replicas,
                fully_labeled_replicas: s.fully_labeled_replicas,
                ready_replicas: s.ready_replicas,
                available_replicas: s.available_replicas,
                observed_generation: s.observed_generation,
                ..ReplicaSetStatus::default()
            }),
        }
    }

    fn with_status(&self, status: ReplicaSetStatus) -> Self {
        let conditions = self.status.as_ref().and_then(|s| s.conditions.clone());
        ReplicationController {
            status: Some(ReplicationControllerStatus {
                replicas: status.replicas,
                fully_labeled_replicas: status.fully_labeled_replicas,
                ready_replicas: status.ready_replicas,
                available_replicas: status.available_replicas,
                observed_generation: status.observed_generation,
                conditions,
            }),
            spec: self
                .spec
                .clone()
                .or_else(|| Some(ReplicationControllerSpec::default())),
            metadata: self.metadata.clone(),
        }
    }
}

/// At most this many pods are created or deleted per reconcile.
const BURST: usize = 500;

/// What one reconcile changes about the pods.
#[derive(Debug, Default)]
pub struct Plan {
    /// Orphans to take over.
    pub adopt: Vec<Arc<Pod>>,
    /// Owned pods that no longer match the selector.
    pub release: Vec<Arc<Pod>>,
    /// Pods to create.
    pub create: usize,
    /// Pods to delete, in order.
    pub delete: Vec<Arc<Pod>>,
    /// The active pods the set owns after adoption and release.
    pub active: Vec<Arc<Pod>>,
}

/// Decides for `rs` given every pod of its namespace.
pub fn plan(rs: &ReplicaSet, pods: &[Arc<Pod>]) -> Plan {
    let mut plan = Plan::default();
    let Some(selector) = rs.spec.as_ref().map(|s| &s.selector) else {
        return plan;
    };
    let mine = uid(rs);
    let deleting = rs.metadata.deletion_timestamp.is_some();
    for pod in pods {
        let matches =
            !is_empty_selector(selector) && selects(selector, pod.metadata.labels.as_ref());
        match controller_of(&pod.metadata) {
            Some(owner) if owner.uid == mine => {
                if matches {
                    if is_active(pod) {
                        plan.active.push(pod.clone());
                    }
                } else {
                    plan.release.push(pod.clone());
                }
            }
            Some(_) => {}
            None if matches && !deleting && pod.metadata.deletion_timestamp.is_none() => {
                plan.adopt.push(pod.clone());
                if is_active(pod) {
                    plan.active.push(pod.clone());
                }
            }
            None => {}
        }
    }
    if deleting {
        return plan;
    }
    let want = rs
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize;
    let have = plan.active.len();
    if have < want {
        plan.create = (want - have).min(BURST);
    } else if have > want {
        let mut victims = plan.active.clone();
        victims.sort_by_key(|p| deletion_rank(p));
        victims.truncate((have - want).min(BURST));
        plan.delete = victims;
    }
    plan
}

/// Sorts first the pods to delete first: unscheduled, then pending, unknown, running; not
/// ready before ready; ready for less time first; more restarts first; newest first.
fn deletion_rank(pod: &Pod) -> impl Ord + use<> {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let ready_since = super::meta::ready_since(pod);
    let restarts: i32 = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (
        scheduled,
        phase,
        ready_since.is_some(),
        Reverse(ready_since),
        Reverse(restarts),
        Reverse(created),
    )
}

/// The status of `rs` with its active pods at `now`, and when to look again for pods
/// becoming available.
pub fn status(
    rs: &ReplicaSet,
    active: &[Arc<Pod>],
    now: Timestamp,
) -> (ReplicaSetStatus, Option<Duration>) {
    let spec = rs.spec.as_ref();
    let min_ready =
        Duration::from_secs(spec.and_then(|s| s.min_ready_seconds).unwrap_or(0).max(0) as u64);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut status = ReplicaSetStatus {
        replicas: active.len() as i32,
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        ..ReplicaSetStatus::default()
    };
    let (mut labeled, mut ready, mut available) = (0, 0, 0);
    let mut again: Option<Duration> = None;
    for pod in active {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            labeled += 1;
        }
        if is_ready(pod) {
            ready += 1;
        }
        match availability(pod, min_ready, now) {
            (true, _) => available += 1,
            (false, Some(wait)) => again = Some(again.map_or(wait, |a| a.min(wait))),
            (false, None) => {}
        }
    }
    status.fully_labeled_replicas = Some(labeled);
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    (status, again)
}

/// A new pod from the set's template, controlled by `owner`.
pub fn new_pod(rs: &ReplicaSet, owner: OwnerReference) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", name(rs))),
            namespace: Some(namespace(rs).to_owned()),
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![owner]),
            finalizers: meta.finalizers,
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The controller of one kind: informers, queue, expectations.
pub struct ReplicaSetController<K: Replicated> {
    client: Client,
    pods: Informer<Pod>,
    sets: Informer<K>,
    expectations: Expectations,
    events: Recorder,
}

impl<K: Replicated> ReplicaSetController<K> {
    /// Wires the controller to the informers; returns it and its queue.
    pub fn new(client: Client, pods: &Informer<Pod>, sets: &Informer<K>) -> (Arc<Self>, Queue) {
        let controller = Arc::new(ReplicaSetController {
            events: Recorder::new(client.clone(), K::COMPONENT),
            client,
            pods: pods.clone(),
            sets: sets.clone(),
            expectations: Expectations::default(),
        });
        let queue = Queue::new();
        let q = queue.clone();
        let c = controller.clone();
        sets.on_change(move |event| match event {
            Event::Applied { new, .. } => q.add(key_of(new.as_ref())),
            Event::Deleted(old) => {
                c.expectations.forget(&key_of(old.as_ref()));
                q.add(key_of(old.as_ref()))
            }
        });
        let q = queue.clone();
        let c = controller.clone();
        pods.on_change(move |event| c.pod_changed(event, &q));
        (controller, queue)
    }

    /// The sets that may care about `pod`: its controller, or (orphans) those selecting it.
    fn owners_of(&self, pod: &Pod) -> Vec<String> {
        let ns = namespace(pod);
        match controller_of(&pod.metadata) {
            Some(owner) if owner.kind == K::KIND => vec![format!("{ns}/{}", owner.name)],
            Some(_) => Vec::new(),
            None => self
                .sets
                .list_namespace(ns)
                .into_iter()
                .map(|owner| owner.as_replica_set())
                .filter(|rs| {
                    rs.spec.as_ref().is_some_and(|s| {
                        !is_empty_selector(&s.selector)
                            && selects(&s.selector, pod.metadata.labels.as_ref())
                    })
                })
                .map(|rs| key_of(&rs))
                .collect(),
        }
    }

    fn pod_changed(&self, event: &Event<Pod>, queue: &Queue) {
        match event {
            Event::Applied { new, old } => {
                let key = key_of(new.as_ref());
                let owners = self.owners_of(new);
                for owner in &owners {
                    if old.is_none() {
                        self.expectations.created(owner);
                    }
                    if new.metadata.deletion_timestamp.is_some() {
                        self.expectations.deleted(owner, &key);
                    }
                    queue.add(owner.clone());
                }
                if let Some(old) = old {
                    for owner in self.owners_of(old) {
                        if !owners.contains(&owner) {
                            queue.add(owner);
                        }
                    }
                }
            }
            Event::Deleted(old) => {
                let key = key_of(old.as_ref());
                for owner in self.owners_of(old) {
                    self.expectations.deleted(&owner, &key);
                    queue.add(owner);
                }
            }
        }
    }

    async fn set_owner(&self, pod: &Pod, owners: serde_json::Value) -> Result<(), ApiError> {
        let patch = json!({"metadata": {"ownerReferences": owners}});
        match self
            .client
            .merge_patch::<Pod>(pod.metadata.namespace.as_deref(), name(pod), patch, false)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create_pods(&self, key: &str, owner: &K, count: usize) -> Result<(), ApiError> {
        let template = new_pod(&owner.as_replica_set(), controller_ref(owner));
        let rs = owner;
        // Slow start: 1, 2, 4, … at once, so that a failing template fails fast.
        let mut done = 0;
        let mut batch = 1;
        while done < count {
            let n = batch.min(count - done);
            let results =
                futures::future::join_all((0..n).map(|_| self.client.create(&template))).await;
            let mut first_error = None;
            for result in results {
                match result {
                    Ok(pod) => self.events.record(
                        rs,
                        Kind::Normal,
                        "SuccessfulCreate",
                        &format!("Created pod: {}", name(&pod)),
                    ),
                    Err(e) => {
                        self.expectations.created(key);
                        first_error.get_or_insert(e);
                    }
                }
            }
            done += n;
            if let Some(e) = first_error {
                for _ in done..count {
                    self.expectations.created(key);
                }
                self.events.record(
                    rs,
                    Kind::Warning,
                    "FailedCreate",
                    &format!("Error creating: {}", e.message),
                );
                return Err(e);
            }
            batch *= 2;
        }
        Ok(())
    }

    async fn delete_pods(&self, key: &str, rs: &K, victims: &[Arc<Pod>]) -> Result<(), ApiError> {
        let results = futures::future::join_all(victims.iter().map(|pod| {
            let options = DeleteOptions {
                uid: pod.metadata.uid.clone(),
                ..DeleteOptions::default()
            };
            self.client.delete::<Pod>(
                pod.metadata.namespace.as_deref(),
                name(pod.as_ref()),
                options,
            )
        }))
        .await;
        let mut first_error = None;
        for (pod, result) in victims.iter().zip(results) {
            match result {
                Ok(true) => self.events.record(
                    rs,
                    Kind::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {}", name(pod.as_ref())),
                ),
                Ok(false) => self.expectations.deleted(key, &key_of(pod.as_ref())),
                Err(e) => {
                    self.expectations.deleted(key, &key_of(pod.as_ref()));
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl<K: Replicated> Reconcile for ReplicaSetController<K> {
    fn name(&self) -> &'static str {
        K::COMPONENT
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>, ApiError> {
        let Some(owner) = self.sets.get(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let rs = Arc::new(owner.as_replica_set());
        let (ns, _) = split_key(key);
        let pods = self.pods.list_namespace(ns.unwrap_or(""));
        let plan = plan(&rs, &pods);
        for pod in &plan.adopt {
            let mut owners: Vec<_> = pod.metadata.owner_references.clone().unwrap_or_default();
            owners.push(controller_ref(owner.as_ref()));
            self.set_owner(pod, json!(owners)).await?;
        }
        for pod in &plan.release {
            let owners: Vec<_> = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|o| o.uid != uid(rs.as_ref()))
                .cloned()
                .collect();
            self.set_owner(pod, json!(owners)).await?;
        }
        if self.expectations.satisfied(key) {
            if plan.create > 0 {
                self.expectations.expect(key, plan.create, []);
                self.create_pods(key, &owner, plan.create).await?;
            } else if !plan.delete.is_empty() {
                self.expectations
                    .expect(key, 0, plan.delete.iter().map(|p| key_of(p.as_ref())));
                self.delete_pods(key, &owner, &plan.delete).await?;
            }
        }
        let (status, again) = status(&rs, &plan.active, Timestamp::now());
        if rs.status.as_ref() != Some(&status) {
            self.client
                .replace_status(&owner.with_status(status))
                .await?;
        }
        Ok(again)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({"metadata": {"name": "web-abc", "namespace": "default", "uid": "rs-1", "generation": 2},
            "spec": {"replicas": replicas, "minReadySeconds": 5, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
        .unwrap()
    }

    fn pod(name: &str, extra: serde_json::Value) -> Arc<Pod> {
        let mut p = json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
            "creationTimestamp": "2026-03-01T09:00:00Z",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "rs-1", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": []}, "status": {"phase": "Running"}});
        json_patch::merge(&mut p, &extra);
        Arc::new(serde_json::from_value(p).unwrap())
    }

    fn ready(at: &str) -> serde_json::Value {
        json!({"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at}]}})
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter().map(|p| name(p.as_ref())).collect()
    }

    #[test]
    fn creates_the_missing_pods() {
        let p = plan(&rs(3), &[pod("a", json!({}))]);
        assert_eq!(p.create, 2);
        assert!(p.delete.is_empty());
    }

    #[test]
    fn deletes_the_least_valuable_pods_first() {
        let pods = vec![
            pod("ready-old", ready("2026-03-01T09:00:00Z")),
            pod("ready-new", ready("2026-03-01T09:30:00Z")),
            pod("pending", json!({"status": {"phase": "Pending"}})),
            pod(
                "unscheduled",
                json!({"spec": {"nodeName": null}, "status": {"phase": "Pending"}}),
            ),
            pod("running-unready", json!({})),
        ];
        let p = plan(&rs(1), &pods);
        assert_eq!(
            names(&p.delete),
            ["unscheduled", "pending", "running-unready", "ready-new"]
        );
        assert_eq!(p.create, 0);
    }

    #[test]
    fn terminating_and_finished_pods_do_not_count() {
        let pods = vec![
            pod(
                "going",
                json!({"metadata": {"deletionTimestamp": "2026-03-01T10:00:00Z"}}),
            ),
            pod("done", json!({"status": {"phase": "Succeeded"}})),
            pod("up", json!({})),
        ];
        let p = plan(&rs(2), &pods);
        assert_eq!(names(&p.active), ["up"]);
        assert_eq!(p.create, 1);
    }

    #[test]
    fn adopts_matching_orphans_and_releases_pods_that_stopped_matching() {
        let orphan = pod("orphan", json!({"metadata": {"ownerReferences": null}}));
        let other = pod(
            "others",
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "ReplicaSet", "name": "x", "uid": "rs-2", "controller": true}]}}),
        );
        let relabeled = pod(
            "relabeled",
            json!({"metadata": {"labels": {"app": "debug"}}}),
        );
        let unrelated = pod(
            "unrelated",
            json!({"metadata": {"ownerReferences": null, "labels": {"app": "db"}}}),
        );
        let p = plan(&rs(1), &[orphan, other, relabeled, unrelated]);
        assert_eq!(names(&p.adopt), ["orphan"]);
        assert_eq!(names(&p.release), ["relabeled"]);
        assert_eq!(names(&p.active), ["orphan"]);
        assert_eq!(p.create, 0);
    }

    #[test]
    fn a_set_being_deleted_neither_adopts_nor_creates() {
        let mut set = rs(3);
        set.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        let p = plan(
            &set,
            &[pod(
                "orphan",
                json!({"metadata": {"ownerReferences": null}}),
            )],
        );
        assert!(p.adopt.is_empty());
        assert_eq!(p.create, 0);
    }

    #[test]
    fn status_counts_ready_and_available_after_min_ready_seconds() {
        let now: Timestamp = "2026-03-01T10:00:03Z".parse().unwrap();
        let pods = vec![
            pod("a", ready("2026-03-01T09:00:00Z")),
            pod("b", ready("2026-03-01T10:00:00Z")),
            pod("c", json!({})),
        ];
        let (s, again) = status(&rs(3), &pods, now);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(1));
        assert_eq!(s.fully_labeled_replicas, Some(3));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(again, Some(Duration::from_secs(2)));
    }

    #[test]
    fn new_pods_carry_the_template_and_a_controller_reference() {
        let set = rs(1);
        let p = new_pod(&set, controller_ref(&set));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(p.metadata.labels.unwrap()["app"], "web");
        let owner = &p.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("rs-1", Some(true)));
    }
}
