//! Node lifecycle: nodes heartbeat through their Lease in `kube-node-lease`. A node silent
//! past the grace period — timed on this controller's clock from when it last saw the
//! heartbeat move, as kube-controller-manager's probe timestamps, so a control plane that
//! was down (or a new leader) gives every node a full grace first — gets `Ready=Unknown`
//! (NodeStatusUnknown), the
//! `node.kubernetes.io/unreachable` NoSchedule and NoExecute taints, and its pods are marked
//! not Ready; each pod is then evicted when its toleration of the taint runs out (the
//! configured default when it has none), so that its owner replaces it elsewhere. A node
//! that heartbeats again loses the taints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;
use tokio::task::JoinHandle;

use super::Config;
use super::informer::Informer;
use super::meta::name;
use super::scheduler::fit::tolerates;
use crate::apiserver::{ApiError, Client, DeleteOptions};

/// The taint of a node that stopped heartbeating.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The index of pods by node name.
pub const BY_NODE: &str = "node";

/// Index values: the node a pod is bound to.
pub fn node_of(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
        .into_iter()
        .collect()
}

/// The last sign of life of a node: its Lease renewal, or its Ready heartbeat.
pub fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let renew = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let ready = ready_condition(node)
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    renew.max(ready)
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

fn has_unreachable_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == UNREACHABLE))
}

/// What the node needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Fine,
    /// Silent past the grace: mark Unknown and taint.
    Unreachable,
    /// Heartbeating again: remove the taints.
    Recovered,
}

/// When this controller last saw each node's heartbeat move, on its own clock
/// (kube-controller-manager's `probeTimestamp`). A node's silence is measured from there,
/// never from the timestamps the node wrote: those are as old as the outage after a control
/// plane restart or a leader change, and would make every node look silent at once.
#[derive(Debug, Default)]
pub struct Sightings {
    seen: HashMap<String, Sighting>,
}

#[derive(Debug, Clone, Copy)]
struct Sighting {
    heartbeat: Option<Timestamp>,
    at: Timestamp,
}

impl Sightings {
    /// Records `heartbeat` (see [`last_heartbeat`]) of `node` at `now`; returns when it was
    /// last seen to change — `now` for a node seen for the first time.
    pub fn observe(
        &mut self,
        node: &str,
        heartbeat: Option<Timestamp>,
        now: Timestamp,
    ) -> Timestamp {
        match self.seen.get_mut(node) {
            Some(s) if s.heartbeat == heartbeat => s.at,
            Some(s) => {
                *s = Sighting { heartbeat, at: now };
                now
            }
            None => {
                self.seen
                    .insert(node.to_owned(), Sighting { heartbeat, at: now });
                now
            }
        }
    }

    /// Forgets nodes that are gone.
    pub fn retain(&mut self, present: impl Fn(&str) -> bool) {
        self.seen.retain(|name, _| present(name));
    }
}

/// The verdict on `node` at `now`, its heartbeat last seen to change at `seen`.
pub fn assess(node: &Node, seen: Timestamp, now: Timestamp, grace: Duration) -> Verdict {
    let silent =
        now.duration_since(seen) > SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
    let tainted = has_unreachable_taint(node);
    let unknown = ready_condition(node).is_some_and(|c| c.status == "Unknown");
    match (silent, tainted && unknown) {
        (true, false) => Verdict::Unreachable,
        (false, true) => Verdict::Recovered,
        _ => Verdict::Fine,
    }
}

/// How long `pod` may stay on a node tainted with `taint` since it was tainted: `None`
/// forever (a toleration without seconds), else the toleration's seconds or `default`.
pub fn tolerated_for(pod: &Pod, taint: &Taint, default: Duration) -> Option<Duration> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    match tolerations.iter().find(|t| tolerates(t, taint)) {
        Some(t) => t
            .toleration_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64)),
        None => Some(default),
    }
}

/// The node's conditions with every status `Unknown`, as kube-controller-manager writes them.
fn unknown_conditions(node: &Node, now: Timestamp) -> Vec<NodeCondition> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    if conditions.iter().all(|c| c.type_ != "Ready") {
        conditions.push(NodeCondition {
            type_: "Ready".into(),
            ..NodeCondition::default()
        });
    }
    for c in &mut conditions {
        if c.status != "Unknown" {
            c.last_transition_time = Some(Time(now));
        }
        c.status = "Unknown".into();
        c.reason = Some("NodeStatusUnknown".into());
        c.message = Some("Kubelet stopped posting node status.".into());
    }
    conditions
}

/// The running monitor.
pub struct NodeLifecycle {
    client: Client,
    nodes: Informer<Node>,
    leases: Informer<Lease>,
    pods: Informer<Pod>,
    config: Config,
    sightings: Mutex<Sightings>,
}

impl NodeLifecycle {
    /// Starts the monitor loop.
    pub fn start(
        client: Client,
        nodes: &Informer<Node>,
        leases: &Informer<Lease>,
        pods: &Informer<Pod>,
        config: Config,
    ) -> JoinHandle<()> {
        let monitor = Arc::new(NodeLifecycle {
            client,
            nodes: nodes.clone(),
            leases: leases.clone(),
            pods: pods.clone(),
            config,
            sightings: Mutex::new(Sightings::default()),
        });
        tokio::spawn(async move {
            monitor.nodes.synced().await;
            monitor.leases.synced().await;
            monitor.pods.synced().await;
            let period = (monitor.config.node_monitor_grace / 8)
                .clamp(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                if let Err(e) = monitor.pass(Timestamp::now()).await {
                    tracing::info!(error = %e, "node lifecycle pass failed");
                }
                tokio::time::sleep(period).await;
            }
        })
    }

    async fn pass(&self, now: Timestamp) -> Result<(), ApiError> {
        let nodes = self.nodes.list();
        for node in nodes.iter() {
            let node_name = name(node.as_ref()).to_owned();
            let lease = self.leases.get(&format!("kube-node-lease/{node_name}"));
            let heartbeat = last_heartbeat(node, lease.as_deref());
            let seen = self
                .sightings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe(&node_name, heartbeat, now);
            match assess(node, seen, now, self.config.node_monitor_grace) {
                Verdict::Unreachable => self.mark_unreachable(node, now).await?,
                Verdict::Recovered => self.clear_taints(node).await?,
                Verdict::Fine => {}
            }
            if has_unreachable_taint(node) {
                self.evict(node, now).await?;
            }
        }
        self.sightings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|n| nodes.iter().any(|node| name(node.as_ref()) == n));
        Ok(())
    }

    async fn mark_unreachable(&self, node: &Node, now: Timestamp) -> Result<(), ApiError> {
        let node_name = name(node);
        tracing::info!(
            node = node_name,
            "node stopped heartbeating: Ready=Unknown, tainted unreachable"
        );
        let mut next = node.clone();
        next.status.get_or_insert_with(Default::default).conditions =
            Some(unknown_conditions(node, now));
        let updated = self.client.replace_status(&next).await?;
        let mut taints = updated
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        taints.retain(|t| t.key != UNREACHABLE);
        for effect in ["NoSchedule", "NoExecute"] {
            taints.push(Taint {
                key: UNREACHABLE.into(),
                effect: effect.into(),
                time_added: Some(Time(now)),
                value: None,
            });
        }
        let mut tainted = updated;
        tainted.spec.get_or_insert_with(Default::default).taints = Some(taints);
        self.client.replace(&tainted).await?;
        for pod in self.pods.by_index(BY_NODE, node_name) {
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False",
                "reason": "NodeUnreachable", "lastTransitionTime": now.to_string()}]}});
            let ns = pod.metadata.namespace.as_deref();
            if let Err(e) = self
                .client
                .merge_patch::<Pod>(ns, name(pod.as_ref()), patch, true)
                .await
                && e.code != 404
            {
                return Err(e);
            }
        }
        Ok(())
    }

    async fn clear_taints(&self, node: &Node) -> Result<(), ApiError> {
        let mut next = node.clone();
        if let Some(spec) = next.spec.as_mut() {
            spec.taints = spec
                .taints
                .take()
                .map(|t| {
                    t.into_iter()
                        .filter(|t| t.key != UNREACHABLE)
                        .collect::<Vec<_>>()
                })
                .filter(|t| !t.is_empty());
        }
        self.client.replace(&next).await.map(|_| ())
    }

    async fn evict(&self, node: &Node, now: Timestamp) -> Result<(), ApiError> {
        let Some(taint) = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .and_then(|t| {
                t.iter()
                    .find(|t| t.key == UNREACHABLE && t.effect == "NoExecute")
            })
        else {
            return Ok(());
        };
        let since = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        for pod in self.pods.by_index(BY_NODE, name(node)) {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(allowed) = tolerated_for(&pod, taint, self.config.default_toleration) else {
                continue;
            };
            let elapsed: Duration = now
                .duration_since(since)
                .try_into()
                .unwrap_or(Duration::ZERO);
            if elapsed >= allowed {
                tracing::info!(
                    pod = name(pod.as_ref()),
                    node = name(node),
                    "evicting from an unreachable node"
                );
                let options = DeleteOptions {
                    uid: pod.metadata.uid.clone(),
                    ..DeleteOptions::default()
                };
                self.client
                    .delete::<Pod>(
                        pod.metadata.namespace.as_deref(),
                        name(pod.as_ref()),
                        options,
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn node(taint: bool, ready: &str) -> Node {
        let taints = if taint {
            json!([{"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-03-01T10:00:00Z"}])
        } else {
            json!(null)
        };
        serde_json::from_value(json!({"metadata": {"name": "n1", "creationTimestamp": "2026-03-01T09:00:00Z"},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": "2026-03-01T09:00:00Z"}]}}))
        .unwrap()
    }

    fn lease(renewed: &str) -> Lease {
        serde_json::from_value(
            json!({"metadata": {"name": "n1", "namespace": "kube-node-lease"},
            "spec": {"renewTime": renewed}}),
        )
        .unwrap()
    }

    #[test]
    fn a_node_silent_past_the_grace_is_unreachable_and_recovers_when_it_heartbeats() {
        let grace = Duration::from_secs(40);
        let mut sightings = Sightings::default();
        let beat = |n: &Node, l: &Lease| last_heartbeat(n, Some(l));
        let fresh = lease("2026-03-01T10:00:00Z");
        let (up, down) = (node(false, "True"), node(true, "Unknown"));
        let t0 = at("2026-03-01T10:00:00Z");
        assert_eq!(sightings.observe("n1", beat(&up, &fresh), t0), t0);
        let seen = sightings.observe("n1", beat(&up, &fresh), at("2026-03-01T10:00:30Z"));
        assert_eq!(seen, t0, "an unchanged heartbeat keeps its sighting");
        assert_eq!(
            assess(&up, seen, at("2026-03-01T10:00:30Z"), grace),
            Verdict::Fine
        );
        assert_eq!(
            assess(&up, seen, at("2026-03-01T10:00:41Z"), grace),
            Verdict::Unreachable
        );
        assert_eq!(
            assess(&down, seen, at("2026-03-01T10:00:41Z"), grace),
            Verdict::Fine,
            "already marked"
        );
        let renewed = lease("2026-03-01T10:01:00Z");
        let t1 = at("2026-03-01T10:01:01Z");
        let seen = sightings.observe("n1", beat(&down, &renewed), t1);
        assert_eq!(seen, t1);
        assert_eq!(assess(&down, seen, t1, grace), Verdict::Recovered);
    }

    #[test]
    fn silence_counts_from_when_this_controller_saw_the_node_not_from_its_old_lease() {
        // A control plane down for ten minutes (or a new leader) comes up to leases far
        // older than the grace: each node gets the whole grace from the first sighting.
        let grace = Duration::from_secs(40);
        let mut sightings = Sightings::default();
        let old = lease("2026-03-01T10:00:00Z");
        let up = node(false, "True");
        let start = at("2026-03-01T10:10:00Z");
        let seen = sightings.observe("n1", last_heartbeat(&up, Some(&old)), start);
        assert_eq!(assess(&up, seen, start, grace), Verdict::Fine);
        let later = at("2026-03-01T10:10:39Z");
        let seen = sightings.observe("n1", last_heartbeat(&up, Some(&old)), later);
        assert_eq!(assess(&up, seen, later, grace), Verdict::Fine);
        let past = at("2026-03-01T10:10:41Z");
        let seen = sightings.observe("n1", last_heartbeat(&up, Some(&old)), past);
        assert_eq!(assess(&up, seen, past, grace), Verdict::Unreachable);
        // Without a lease the Ready heartbeat is what moves.
        assert_eq!(last_heartbeat(&up, None), Some(at("2026-03-01T09:00:00Z")));
        sightings.retain(|n| n != "n1");
        assert_eq!(sightings.observe("n1", None, past), past, "forgotten");
    }

    #[test]
    fn pods_stay_as_long_as_their_toleration_says() {
        let taint = Taint {
            key: UNREACHABLE.into(),
            effect: "NoExecute".into(),
            ..Taint::default()
        };
        let default = Duration::from_secs(300);
        let pod = |tolerations: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}})).unwrap()
        };
        assert_eq!(
            tolerated_for(&pod(json!(null)), &taint, default),
            Some(default)
        );
        let brief = pod(
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
        );
        assert_eq!(
            tolerated_for(&brief, &taint, default),
            Some(Duration::from_secs(5))
        );
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(tolerated_for(&forever, &taint, default), None);
    }

    #[test]
    fn unreachable_nodes_report_every_condition_unknown() {
        let now = at("2026-03-01T10:05:00Z");
        let conditions = unknown_conditions(&node(false, "True"), now);
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(ready.last_transition_time, Some(Time(now)));
    }
}
