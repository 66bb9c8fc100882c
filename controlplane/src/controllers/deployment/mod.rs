//! The Deployment controller: applies `rollout::decide` — create the new ReplicaSet, scale
//! new and old ones step by step, delete history beyond the limit — and writes the status
//! `kubectl rollout status` reads. Scaling writes carry the cached `resourceVersion`, so
//! a decision made on a stale cache fails with a conflict and is made again.

pub mod rollout;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use self::rollout::{Action, REVISION};
use super::Reconcile;
use super::events::{Kind, Recorder};
use super::informer::{Event, Informer, key_of, split_key};
use super::meta::{
    controller_of, controller_ref, is_active, is_empty_selector, name, namespace, selects, uid,
};
use super::queue::Queue;
use crate::apiserver::{ApiError, Client, DeleteOptions};

/// The index of objects by the uid of their controller.
pub const BY_CONTROLLER: &str = "controller";

/// Index values: the uid of an object's controller.
pub fn controller_uid<K: crate::apiserver::Object>(object: &K) -> Vec<String> {
    controller_of(object.metadata())
        .map(|o| vec![o.uid.clone()])
        .unwrap_or_default()
}

/// The controller.
pub struct DeploymentController {
    client: Client,
    deployments: Informer<Deployment>,
    sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    events: Recorder,
}

impl DeploymentController {
    /// Wires the controller to the informers; returns it and its queue.
    pub fn new(
        client: Client,
        deployments: &Informer<Deployment>,
        sets: &Informer<ReplicaSet>,
        pods: &Informer<Pod>,
    ) -> (Arc<Self>, Queue) {
        let controller = Arc::new(DeploymentController {
            events: Recorder::new(client.clone(), "deployment-controller"),
            client,
            deployments: deployments.clone(),
            sets: sets.clone(),
            pods: pods.clone(),
        });
        let queue = Queue::new();
        let q = queue.clone();
        deployments.on_change(move |event| match event {
            Event::Applied { new, .. } => q.add(key_of(new.as_ref())),
            Event::Deleted(old) => q.add(key_of(old.as_ref())),
        });
        let (q, c) = (queue.clone(), controller.clone());
        sets.on_change(move |event| {
            let (new, old) = match event {
                Event::Applied { new, old } => (new, old.as_ref()),
                Event::Deleted(old) => (old, None),
            };
            for rs in std::iter::once(new).chain(old) {
                for key in c.owners_of(rs) {
                    q.add(key);
                }
            }
        });
        let (q, c) = (queue.clone(), controller.clone());
        pods.on_change(move |event| {
            // Recreate waits for the old pods to go: their end wakes the Deployment.
            let pod = match event {
                Event::Deleted(old) => old,
                Event::Applied { new, .. } if !is_active(new) => new,
                Event::Applied { .. } => return,
            };
            let Some(owner) = controller_of(&pod.metadata).filter(|o| o.kind == "ReplicaSet")
            else {
                return;
            };
            if let Some(rs) = c
                .sets
                .get(&format!("{}/{}", namespace(pod.as_ref()), owner.name))
            {
                for key in c.owners_of(&rs) {
                    q.add(key);
                }
            }
        });
        (controller, queue)
    }

    /// The Deployments that own or might adopt `rs`.
    fn owners_of(&self, rs: &ReplicaSet) -> Vec<String> {
        let ns = namespace(rs);
        match controller_of(&rs.metadata) {
            Some(o) if o.kind == "Deployment" => vec![format!("{ns}/{}", o.name)],
            Some(_) => Vec::new(),
            None => self
                .deployments
                .list_namespace(ns)
                .into_iter()
                .filter(|d| {
                    d.spec.as_ref().is_some_and(|s| {
                        !is_empty_selector(&s.selector)
                            && selects(&s.selector, rs.metadata.labels.as_ref())
                    })
                })
                .map(|d| key_of(d.as_ref()))
                .collect(),
        }
    }

    /// The sets `d` owns, adopting orphans its selector matches.
    async fn owned_sets(&self, d: &Deployment) -> Result<Vec<Arc<ReplicaSet>>, ApiError> {
        let mut owned = self.sets.by_index(BY_CONTROLLER, uid(d));
        let Some(selector) = d.spec.as_ref().map(|s| &s.selector) else {
            return Ok(owned);
        };
        if d.metadata.deletion_timestamp.is_some() || is_empty_selector(selector) {
            return Ok(owned);
        }
        for rs in self.sets.list_namespace(namespace(d)) {
            if controller_of(&rs.metadata).is_none()
                && selects(selector, rs.metadata.labels.as_ref())
            {
                let mut owners = rs.metadata.owner_references.clone().unwrap_or_default();
                owners.push(controller_ref(d));
                let patch = json!({"metadata": {"ownerReferences": owners}});
                let adopted = self
                    .client
                    .merge_patch::<ReplicaSet>(Some(namespace(d)), name(rs.as_ref()), patch, false)
                    .await?;
                owned.push(Arc::new(adopted));
            }
        }
        Ok(owned)
    }

    async fn apply(
        &self,
        d: &Deployment,
        owned: &[Arc<ReplicaSet>],
        action: Action,
    ) -> Result<(), ApiError> {
        match action {
            Action::Create(rs) => match self.client.create(rs.as_ref()).await {
                Ok(_) => Ok(()),
                Err(e) if e.code == 409 => {
                    // Either our cache has not seen it yet (same template), or a true hash
                    // collision: then bump collisionCount so the next hash differs.
                    let existing = self
                        .client
                        .get::<ReplicaSet>(Some(namespace(d)), name(rs.as_ref()))
                        .await?;
                    let same = existing
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .zip(d.spec.as_ref())
                        .is_some_and(|(t, s)| rollout::same_template(t, &s.template));
                    let ours = controller_of(&existing.metadata).is_some_and(|o| o.uid == uid(d));
                    if same && ours {
                        return Err(e);
                    }
                    let mut next = d.clone();
                    let status = next.status.get_or_insert_with(Default::default);
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.client.replace_status(&next).await?;
                    Err(e)
                }
                Err(e) => Err(e),
            },
            Action::Scale {
                name: rs_name,
                replicas,
                annotations,
            } => {
                let Some(current) = owned.iter().find(|rs| name(rs.as_ref()) == rs_name) else {
                    return Ok(());
                };
                let mut next = (**current).clone();
                next.metadata.annotations = Some(annotations);
                if let Some(spec) = next.spec.as_mut() {
                    spec.replicas = Some(replicas);
                    spec.min_ready_seconds = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
                }
                self.client.replace(&next).await.map(|_| ())
            }
            Action::Delete(rs_name) => {
                let uid = owned
                    .iter()
                    .find(|rs| name(rs.as_ref()) == rs_name)
                    .and_then(|rs| rs.metadata.uid.clone());
                let options = DeleteOptions {
                    uid,
                    ..DeleteOptions::default()
                };
                self.client
                    .delete::<ReplicaSet>(Some(namespace(d)), &rs_name, options)
                    .await
                    .map(|_| ())
            }
        }
    }
}

#[async_trait]
impl Reconcile for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>, ApiError> {
        let Some(d) = self.deployments.get(key) else {
            return Ok(None);
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let owned = self.owned_sets(&d).await?;
        let old_pods = owned
            .iter()
            .filter(|rs| {
                let template = rs.spec.as_ref().and_then(|s| s.template.as_ref());
                !template
                    .zip(d.spec.as_ref())
                    .is_some_and(|(t, s)| rollout::same_template(t, &s.template))
            })
            .flat_map(|rs| self.pods.by_index(BY_CONTROLLER, uid(rs.as_ref())))
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .count();
        let decision = rollout::decide(&d, &owned, old_pods, Timestamp::now());
        for (reason, message) in &decision.events {
            self.events
                .record(d.as_ref(), Kind::Normal, reason, message);
        }
        for action in decision.actions {
            self.apply(&d, &owned, action).await?;
        }
        let (ns, d_name) = split_key(key);
        let mut current = d.clone();
        if let Some(revision) = decision.revision {
            let patch = json!({"metadata": {"annotations": {REVISION: revision}}});
            current = Arc::new(
                self.client
                    .merge_patch::<Deployment>(ns, d_name, patch, false)
                    .await?,
            );
        }
        if current.status.as_ref() != Some(&decision.status) {
            let mut next = (*current).clone();
            next.status = Some(decision.status);
            self.client.replace_status(&next).await?;
        }
        Ok(decision.again)
    }
}
