//! Hollow nodes: a stand-in for kubelets in tests and in `skiff bench control-plane` (as
//! kubemark's hollow nodes), never used by the product. It registers nodes, heartbeats their
//! Leases, marks the pods bound to them Running and Ready through the status API after a
//! short delay, and confirms graceful deletions at once. A node can be silenced to play a
//! lost node.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::apiserver::{Client, DeleteOptions};
use crate::controllers::informer::{Event, Informer};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use serde_json::json;
use tokio::task::JoinHandle;

/// The running hollow nodes.
pub struct HollowNodes {
    silenced: Arc<Mutex<HashSet<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

/// A Ready node object with `cpu` and `memory` allocatable and room for 110 pods.
pub fn node(name: &str, cpu: &str, memory: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "test agent is posting ready status",
                "lastHeartbeatTime": Timestamp::now().to_string(),
                "lastTransitionTime": Timestamp::now().to_string()}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]
        }
    }))
    .unwrap_or_default()
}

async fn heartbeat(client: &Client, name: &str) {
    let now = MicroTime(Timestamp::now());
    match client.get_opt::<Lease>(Some("kube-node-lease"), name).await {
        Ok(Some(mut lease)) => {
            lease.spec.get_or_insert_with(LeaseSpec::default).renew_time = Some(now);
            let _ = client.replace(&lease).await;
        }
        Ok(None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    namespace: Some("kube-node-lease".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(name.to_owned()),
                    lease_duration_seconds: Some(40),
                    renew_time: Some(now),
                    ..LeaseSpec::default()
                }),
            };
            let _ = client.create(&lease).await;
        }
        Err(_) => {}
    }
}

impl HollowNodes {
    /// Registers `nodes` (each with `cpu` and `memory`) and starts serving them.
    pub async fn start(
        client: Client,
        nodes: &[&str],
        cpu: &str,
        memory: &str,
        ready_after: Duration,
    ) -> HollowNodes {
        let names: HashSet<String> = nodes.iter().map(|n| (*n).to_owned()).collect();
        let silenced = Arc::new(Mutex::new(HashSet::new()));
        for name in &names {
            if let Err(e) = client.create(&node(name, cpu, memory)).await {
                tracing::warn!(node = %name, error = %e, "hollow node not registered");
            }
            heartbeat(&client, name).await;
        }
        let mut tasks = Vec::new();
        let hb_client = client.clone();
        let hb_names = names.clone();
        let hb_silenced = silenced.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                for name in &hb_names {
                    let silent = hb_silenced
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(name);
                    if !silent {
                        heartbeat(&hb_client, name).await;
                    }
                }
            }
        }));
        let pods: Informer<Pod> = Informer::new();
        let started = Arc::new(Mutex::new(HashSet::<String>::new()));
        let pod_client = client.clone();
        let pod_silenced = silenced.clone();
        pods.on_change(move |event| {
            let Event::Applied { new, .. } = event else {
                return;
            };
            let Some(node) = new.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                return;
            };
            let silent = pod_silenced.lock().unwrap_or_else(|p| p.into_inner()).contains(&node);
            if !names.contains(&node) || silent {
                return;
            }
            let ns = new.metadata.namespace.clone().unwrap_or_default();
            let name = new.metadata.name.clone().unwrap_or_default();
            let client = pod_client.clone();
            if new.metadata.deletion_timestamp.is_some() {
                let uid = new.metadata.uid.clone();
                tokio::spawn(async move {
                    let options = DeleteOptions { grace_period_seconds: Some(0), uid, ..DeleteOptions::default() };
                    let _ = client.delete::<Pod>(Some(&ns), &name, options).await;
                });
                return;
            }
            let key = format!("{ns}/{name}/{}", new.metadata.uid.as_deref().unwrap_or(""));
            if !started.lock().unwrap_or_else(|p| p.into_inner()).insert(key) {
                return;
            }
            let image = new.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default();
            tokio::spawn(async move {
                tokio::time::sleep(ready_after).await;
                let now = Timestamp::now().to_string();
                let status = json!({"status": {"phase": "Running", "podIP": "10.244.0.9", "hostIP": "10.0.0.1",
                    "startTime": now,
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                        {"type": "Ready", "status": "True", "lastTransitionTime": now}],
                    "containerStatuses": [{"name": "c", "image": image, "imageID": "", "ready": true,
                        "restartCount": 0, "started": true, "state": {"running": {"startedAt": now}}}]}});
                let _ = client.merge_patch::<Pod>(Some(&ns), &name, status, true).await;
            });
        });
        tasks.push(pods.spawn(client));
        HollowNodes { silenced, tasks }
    }

    /// Stops heartbeats and pod handling for `node` (a lost node).
    pub fn silence(&self, node: &str) {
        self.silenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_owned());
    }
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Counts of a namespace's pods: (active, active and Ready).
pub async fn pod_counts(client: &Client, ns: &str, labels: &str) -> (usize, usize) {
    let pods = client
        .list::<Pod>(Some(ns), labels)
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let active: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let ready = active
        .iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count();
    (active.len(), ready)
}

/// Images of a namespace's active pods, counted.
pub async fn images(client: &Client, ns: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let pods = client
        .list::<Pod>(Some(ns), "")
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let image = p
            .spec
            .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
            .unwrap_or_default();
        *out.entry(image).or_default() += 1;
    }
    out
}
