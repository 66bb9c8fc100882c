//! The scheduler: pending pods from the pod informer go through `fit` against an
//! incrementally kept picture of every node's usage. A decision is *assumed* at once (the
//! next pod sees it) and bound in the background through `pods/binding`, many binds in
//! flight, so that throughput is bounded by the store, not by one write at a time. A pod
//! that fits nowhere gets `PodScheduled=False` and a FailedScheduling event, and is tried
//! again when a node or a pod changes.

pub mod fit;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use self::fit::{Allocatable, Demand, Misfit, Usage};
use super::events::{Kind, Recorder};
use super::informer::{Event, Informer, key_of, split_key};
use super::queue::Queue;
use crate::apiserver::Client;

/// The scheduler name this scheduler serves.
pub const SCHEDULER_NAME: &str = "default-scheduler";
/// Binds in flight at once.
const PARALLEL_BINDS: usize = 256;
/// How often a pod that fits nowhere is tried again even if nothing seems to change.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    /// Per node: what it offers and what is placed on it.
    nodes: HashMap<String, (Allocatable, Usage)>,
    /// Pods counted in `nodes`, with the node and demand they were counted with.
    counted: HashMap<String, (String, Demand)>,
    /// Pods decided but not yet bound.
    assumed: HashSet<String>,
    /// Pods that fit nowhere, and the message they were given.
    unschedulable: HashMap<String, String>,
    /// Round-robin among equally good nodes.
    turn: usize,
}

impl State {
    fn uncount(&mut self, key: &str) {
        if let Some((node, demand)) = self.counted.remove(key)
            && let Some((_, usage)) = self.nodes.get_mut(&node)
        {
            usage.remove(&demand);
        }
    }

    fn count(&mut self, key: &str, node: &str, demand: Demand) {
        self.uncount(key);
        let (_, usage) = self.nodes.entry(node.to_owned()).or_insert_with(|| {
            (
                Allocatable {
                    cpu_milli: 0,
                    memory: 0,
                    pods: 0,
                },
                Usage::default(),
            )
        });
        usage.add(&demand);
        self.counted
            .insert(key.to_owned(), (node.to_owned(), demand));
    }
}

/// Whether the pod is this scheduler's to place.
fn pending(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
        .is_empty()
        && pod.metadata.deletion_timestamp.is_none()
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .is_none_or(|n| n.is_empty() || n == SCHEDULER_NAME)
        && !terminal(pod)
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The node a pod occupies, if it occupies one.
fn placed(pod: &Pod) -> Option<&str> {
    let node = pod.spec.as_ref()?.node_name.as_deref()?;
    (!node.is_empty() && !terminal(pod)).then_some(node)
}

/// The scheduler; `start` runs it.
pub struct Scheduler {
    client: Client,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    state: Mutex<State>,
    queue: Queue,
    binds: Arc<Semaphore>,
    events: Recorder,
}

impl Scheduler {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wires the scheduler to the informers (before they are spawned) and starts its loop.
    pub fn start(client: Client, pods: &Informer<Pod>, nodes: &Informer<Node>) -> JoinHandle<()> {
        let scheduler = Arc::new(Scheduler {
            events: Recorder::new(client.clone(), SCHEDULER_NAME),
            client,
            pods: pods.clone(),
            nodes: nodes.clone(),
            state: Mutex::new(State::default()),
            queue: Queue::new(),
            binds: Arc::new(Semaphore::new(PARALLEL_BINDS)),
        });
        let s = scheduler.clone();
        pods.on_change(move |event| s.pod_changed(event));
        let s = scheduler.clone();
        nodes.on_change(move |event| s.node_changed(event));
        tokio::spawn(async move {
            scheduler.pods.synced().await;
            scheduler.nodes.synced().await;
            while let Some(key) = scheduler.queue.next().await {
                scheduler.schedule_one(&key);
                scheduler.queue.done(&key);
            }
        })
    }

    fn retry_unschedulable(&self, state: &mut State) {
        for key in state.unschedulable.keys() {
            self.queue.add(key.clone());
        }
    }

    fn pod_changed(&self, event: &Event<Pod>) {
        let mut state = self.lock();
        match event {
            Event::Applied { new, .. } => {
                let key = key_of(new.as_ref());
                if state.assumed.contains(&key) {
                    return;
                }
                match placed(new) {
                    Some(node) => {
                        let demand = Demand::of(new);
                        let same = state
                            .counted
                            .get(&key)
                            .is_some_and(|(n, d)| n == node && *d == demand);
                        if !same {
                            state.count(&key, node, demand);
                        }
                        state.unschedulable.remove(&key);
                    }
                    None => {
                        let freed = state.counted.contains_key(&key);
                        state.uncount(&key);
                        if pending(new) {
                            self.queue.add(key);
                        } else {
                            state.unschedulable.remove(&key);
                        }
                        if freed {
                            self.retry_unschedulable(&mut state);
                        }
                    }
                }
            }
            Event::Deleted(old) => {
                let key = key_of(old.as_ref());
                state.assumed.remove(&key);
                state.unschedulable.remove(&key);
                if state.counted.contains_key(&key) {
                    state.uncount(&key);
                    self.retry_unschedulable(&mut state);
                }
            }
        }
    }

    fn node_changed(&self, event: &Event<Node>) {
        let mut state = self.lock();
        match event {
            Event::Applied { new, .. } => {
                let name = key_of(new.as_ref());
                let alloc = Allocatable::of(new);
                state
                    .nodes
                    .entry(name)
                    .or_insert_with(|| (alloc, Usage::default()))
                    .0 = alloc;
                self.retry_unschedulable(&mut state);
            }
            Event::Deleted(old) => {
                // Its pods stay counted until they are deleted or moved; the node is gone
                // from the candidates because the informer no longer lists it.
                let _ = old;
            }
        }
    }

    /// Decides for one pod and starts its bind.
    fn schedule_one(self: &Arc<Self>, key: &str) {
        let Some(pod) = self.pods.get(key) else {
            return;
        };
        if !pending(&pod) {
            return;
        }
        let nodes = self.nodes.list();
        let demand = Demand::of(&pod);
        let mut state = self.lock();
        if state.assumed.contains(key) {
            return;
        }
        let mut best: Vec<(&str, i64)> = Vec::new();
        let mut reasons: BTreeMap<Misfit, usize> = BTreeMap::new();
        let empty = (Allocatable::of(&Node::default()), Usage::default());
        for node in &nodes {
            let name = node.metadata.name.as_deref().unwrap_or("");
            let (alloc, usage) = state.nodes.get(name).unwrap_or(&empty);
            let misfits = fit::misfits(&pod, &demand, node, *alloc, usage);
            if misfits.is_empty() {
                let score = fit::score(&demand, *alloc, usage);
                match best.first() {
                    Some((_, top)) if *top > score => {}
                    Some((_, top)) if *top == score => best.push((name, score)),
                    _ => best = vec![(name, score)],
                }
            } else {
                for m in misfits {
                    *reasons.entry(m).or_default() += 1;
                }
            }
        }
        if best.is_empty() {
            let message = fit::unschedulable_message(nodes.len(), &reasons);
            let changed = state.unschedulable.insert(key.to_owned(), message.clone())
                != Some(message.clone());
            drop(state);
            if changed {
                self.report_unschedulable(&pod, key, &message);
            }
            self.queue.add_after(key, UNSCHEDULABLE_RETRY);
            return;
        }
        state.turn = state.turn.wrapping_add(1);
        let node = best[state.turn % best.len()].0.to_owned();
        state.count(key, &node, demand);
        state.assumed.insert(key.to_owned());
        state.unschedulable.remove(key);
        drop(state);
        self.spawn_bind(key.to_owned(), pod, node);
    }

    fn report_unschedulable(&self, pod: &Pod, key: &str, message: &str) {
        let (ns, name) = split_key(key);
        let patch = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": message,
            "lastTransitionTime": jiff::Timestamp::now().to_string()}]}});
        let client = self.client.clone();
        let (ns, name) = (ns.map(str::to_owned), name.to_owned());
        tokio::spawn(async move {
            let _ = client
                .merge_patch::<Pod>(ns.as_deref(), &name, patch, true)
                .await;
        });
        self.events
            .record(pod, Kind::Warning, "FailedScheduling", message);
    }

    fn spawn_bind(self: &Arc<Self>, key: String, pod: Arc<Pod>, node: String) {
        let scheduler = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = scheduler.binds.clone().acquire_owned().await else {
                return;
            };
            let (ns, name) = split_key(&key);
            let result = scheduler
                .client
                .bind(ns.unwrap_or("default"), name, &node)
                .await;
            let mut state = scheduler.lock();
            state.assumed.remove(&key);
            match result {
                Ok(()) => {
                    drop(state);
                    let message = format!("Successfully assigned {} to {node}", key);
                    scheduler
                        .events
                        .record(pod.as_ref(), Kind::Normal, "Scheduled", &message);
                }
                Err(e) => {
                    state.uncount(&key);
                    drop(state);
                    if e.code != 404 {
                        tracing::info!(pod = %key, error = %e, "bind failed; retrying");
                        scheduler.queue.retry(&key);
                    }
                }
            }
        });
    }
}
