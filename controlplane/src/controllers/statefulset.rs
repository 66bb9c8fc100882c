//! The StatefulSet controller: pods with stable names `name-0 … name-(N-1)`, created in
//! order one at a time (OrderedReady: each waits for its predecessors to be Running and
//! Ready) or all at once (Parallel), removed from the highest ordinal down, and updated in
//! reverse ordinal order down to the partition, one pod at a time. A pod's revision is the
//! hash of the template it was made from (label `controller-revision-hash`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Reconcile;
use super::deployment::BY_CONTROLLER;
use super::deployment::rollout::template_hash;
use super::events::{Kind, Recorder};
use super::informer::{Event, Informer, key_of, split_key};
use super::meta::{controller_of, controller_ref, is_ready, name, namespace, uid};
use super::queue::Queue;
use crate::apiserver::{ApiError, Client, DeleteOptions};

/// The label carrying the revision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The one change a reconcile makes (besides status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the pods with these ordinals.
    Create(Vec<usize>),
    /// Delete this pod.
    Delete(String),
    /// Wait for pods to change.
    Wait,
}

fn ordinal(sts: &StatefulSet, pod: &Pod) -> Option<usize> {
    name(pod)
        .strip_prefix(name(sts))?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

fn running_and_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && is_ready(pod)
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The revision of the set's current template.
pub fn update_revision(sts: &StatefulSet) -> String {
    let template = sts
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    format!("{}-{}", name(sts), template_hash(&template, None))
}

/// Decides the next step for `sts` over the pods it owns.
pub fn decide(sts: &StatefulSet, pods: &[Arc<Pod>]) -> Step {
    let spec = sts.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let revision = update_revision(sts);
    let by_ordinal: BTreeMap<usize, &Arc<Pod>> = pods
        .iter()
        .filter_map(|p| Some((ordinal(sts, p)?, p)))
        .collect();
    // A finished pod is replaced: delete it first.
    if let Some((_, p)) = by_ordinal
        .iter()
        .find(|(i, p)| **i < replicas && finished(p) && p.metadata.deletion_timestamp.is_none())
    {
        return Step::Delete(name(p.as_ref()).to_owned());
    }
    let mut missing = Vec::new();
    for i in 0..replicas {
        match by_ordinal.get(&i) {
            None => {
                missing.push(i);
                if !parallel {
                    return Step::Create(missing);
                }
            }
            Some(p)
                if !parallel
                    && (p.metadata.deletion_timestamp.is_some() || !running_and_ready(p)) =>
            {
                return Step::Wait;
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Step::Create(missing);
    }
    // Scale down: the highest ordinal first, one at a time unless Parallel.
    let condemned: Vec<&&Arc<Pod>> = by_ordinal.range(replicas..).map(|(_, p)| p).rev().collect();
    if let Some(first) = condemned
        .iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
    {
        if !parallel
            && condemned
                .iter()
                .any(|p| p.metadata.deletion_timestamp.is_some())
        {
            return Step::Wait;
        }
        return Step::Delete(name(first.as_ref()).to_owned());
    }
    if !condemned.is_empty() {
        return Step::Wait;
    }
    // Rolling update: reverse ordinal order down to the partition, when all are ready.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        != Some("OnDelete");
    if rolling {
        let partition = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0)
            .max(0) as usize;
        if by_ordinal
            .values()
            .any(|p| p.metadata.deletion_timestamp.is_some() || !running_and_ready(p))
        {
            return Step::Wait;
        }
        for i in (partition..replicas).rev() {
            if let Some(p) = by_ordinal.get(&i)
                && revision_of(p) != Some(revision.as_str())
            {
                return Step::Delete(name(p.as_ref()).to_owned());
            }
        }
    }
    Step::Wait
}

/// The pod with ordinal `i`.
pub fn new_pod(sts: &StatefulSet, i: usize) -> Pod {
    let spec = sts.spec.clone().unwrap_or_default();
    let template = spec.template;
    let meta = template.metadata.unwrap_or_default();
    let pod_name = format!("{}-{i}", name(sts));
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), update_revision(sts));
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), i.to_string());
    let mut pod_spec = template.spec.unwrap_or_default();
    pod_spec.hostname = Some(pod_name.clone());
    if !spec.service_name.as_deref().unwrap_or("").is_empty() {
        pod_spec.subdomain = spec.service_name.clone();
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            namespace: Some(namespace(sts).to_owned()),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![controller_ref(sts)]),
            ..ObjectMeta::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// The set's status from its pods.
pub fn status(sts: &StatefulSet, pods: &[Arc<Pod>]) -> StatefulSetStatus {
    let revision = update_revision(sts);
    let old = sts.status.clone().unwrap_or_default();
    let live: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let ready = live.iter().filter(|p| is_ready(p)).count() as i32;
    let updated = live
        .iter()
        .filter(|p| revision_of(p) == Some(revision.as_str()))
        .count() as i32;
    let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let done = updated == replicas && live.len() as i32 == replicas;
    StatefulSetStatus {
        replicas: live.len() as i32,
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        current_replicas: Some(if done {
            updated
        } else {
            live.len() as i32 - updated
        }),
        updated_replicas: Some(updated),
        current_revision: Some(if done {
            revision.clone()
        } else {
            old.current_revision.unwrap_or_else(|| revision.clone())
        }),
        update_revision: Some(revision),
        observed_generation: sts.metadata.generation,
        collision_count: old.collision_count,
        conditions: old.conditions,
    }
}

/// The controller.
pub struct StatefulSetController {
    client: Client,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    events: Recorder,
}

impl StatefulSetController {
    /// Wires the controller to the informers; returns it and its queue.
    pub fn new(
        client: Client,
        sets: &Informer<StatefulSet>,
        pods: &Informer<Pod>,
    ) -> (Arc<Self>, Queue) {
        let queue = Queue::new();
        let q = queue.clone();
        sets.on_change(move |event| match event {
            Event::Applied { new, .. } => q.add(key_of(new.as_ref())),
            Event::Deleted(old) => q.add(key_of(old.as_ref())),
        });
        let q = queue.clone();
        pods.on_change(move |event| {
            let pod = match event {
                Event::Applied { new, .. } => new,
                Event::Deleted(old) => old,
            };
            if let Some(owner) = controller_of(&pod.metadata).filter(|o| o.kind == "StatefulSet") {
                q.add(format!("{}/{}", namespace(pod.as_ref()), owner.name));
            }
        });
        let controller = Arc::new(StatefulSetController {
            events: Recorder::new(client.clone(), "statefulset-controller"),
            client,
            sets: sets.clone(),
            pods: pods.clone(),
        });
        (controller, queue)
    }
}

#[async_trait]
impl Reconcile for StatefulSetController {
    fn name(&self) -> &'static str {
        "statefulset"
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>, ApiError> {
        let Some(sts) = self.sets.get(key) else {
            return Ok(None);
        };
        let (ns, _) = split_key(key);
        let pods = self.pods.by_index(BY_CONTROLLER, uid(sts.as_ref()));
        if sts.metadata.deletion_timestamp.is_none() {
            match decide(&sts, &pods) {
                Step::Create(ordinals) => {
                    for i in ordinals {
                        let pod = new_pod(&sts, i);
                        match self.client.create(&pod).await {
                            Ok(_) => self.events.record(
                                sts.as_ref(),
                                Kind::Normal,
                                "SuccessfulCreate",
                                &format!(
                                    "create Pod {} in StatefulSet {} successful",
                                    name(&pod),
                                    name(sts.as_ref())
                                ),
                            ),
                            Err(e) if e.code == 409 => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Step::Delete(pod) => {
                    if self
                        .client
                        .delete::<Pod>(ns, &pod, DeleteOptions::default())
                        .await?
                    {
                        self.events.record(
                            sts.as_ref(),
                            Kind::Normal,
                            "SuccessfulDelete",
                            &format!(
                                "delete Pod {pod} in StatefulSet {} successful",
                                name(sts.as_ref())
                            ),
                        );
                    }
                }
                Step::Wait => {}
            }
        }
        let status = status(&sts, &pods);
        if sts.status.as_ref() != Some(&status) {
            let mut next = (*sts).clone();
            next.status = Some(status);
            self.client.replace_status(&next).await?;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sts(replicas: i32, extra: serde_json::Value) -> StatefulSet {
        let mut s = json!({"metadata": {"name": "db", "namespace": "default", "uid": "s-1", "generation": 1},
            "spec": {"replicas": replicas, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "db:1"}]}}}});
        json_patch::merge(&mut s, &extra);
        serde_json::from_value(s).unwrap()
    }

    fn pod(set: &StatefulSet, i: usize, ready: bool) -> Arc<Pod> {
        let mut p = new_pod(set, i);
        p.status = Some(
            serde_json::from_value(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}))
            .unwrap(),
        );
        Arc::new(p)
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_in_order() {
        let s = sts(3, json!({}));
        assert_eq!(decide(&s, &[]), Step::Create(vec![0]));
        assert_eq!(decide(&s, &[pod(&s, 0, false)]), Step::Wait);
        assert_eq!(decide(&s, &[pod(&s, 0, true)]), Step::Create(vec![1]));
        assert_eq!(
            decide(&s, &[pod(&s, 0, true), pod(&s, 1, true), pod(&s, 2, true)]),
            Step::Wait
        );
        let p = new_pod(&s, 2);
        assert_eq!(p.metadata.name.as_deref(), Some("db-2"));
        assert_eq!(p.spec.as_ref().unwrap().hostname.as_deref(), Some("db-2"));
        assert_eq!(p.spec.as_ref().unwrap().subdomain.as_deref(), Some("db"));
    }

    #[test]
    fn parallel_creates_every_missing_pod() {
        let s = sts(3, json!({"spec": {"podManagementPolicy": "Parallel"}}));
        assert_eq!(decide(&s, &[pod(&s, 1, false)]), Step::Create(vec![0, 2]));
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
        let s3 = sts(3, json!({}));
        let pods = vec![pod(&s3, 0, true), pod(&s3, 1, true), pod(&s3, 2, true)];
        let s1 = sts(1, json!({}));
        assert_eq!(decide(&s1, &pods), Step::Delete("db-2".into()));
        let mut going = (*pods[2]).clone();
        going.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(
            decide(&s1, &[pods[0].clone(), pods[1].clone(), Arc::new(going)]),
            Step::Wait
        );
        assert_eq!(decide(&s1, &pods[..2]), Step::Delete("db-1".into()));
    }

    #[test]
    fn rolling_update_goes_in_reverse_order_and_honours_the_partition() {
        let v1 = sts(3, json!({}));
        let pods = vec![pod(&v1, 0, true), pod(&v1, 1, true), pod(&v1, 2, true)];
        let v2 = sts(
            3,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "db:2"}]}}}}),
        );
        assert_eq!(decide(&v2, &pods), Step::Delete("db-2".into()));
        let updated = vec![pods[0].clone(), pods[1].clone(), pod(&v2, 2, true)];
        assert_eq!(decide(&v2, &updated), Step::Delete("db-1".into()));
        let not_ready = vec![pods[0].clone(), pods[1].clone(), pod(&v2, 2, false)];
        assert_eq!(
            decide(&v2, &not_ready),
            Step::Wait,
            "waits for the updated pod"
        );
        let partitioned = sts(
            3,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "db:2"}]}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}}),
        );
        assert_eq!(decide(&partitioned, &updated), Step::Wait);
        let s = status(&v2, &updated);
        assert_eq!(
            (s.replicas, s.updated_replicas, s.ready_replicas),
            (3, Some(1), Some(3))
        );
    }
}
