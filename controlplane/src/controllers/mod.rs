//! The control plane's brain: the scheduler and the controllers (ReplicaSet, Deployment,
//! StatefulSet, Endpoints/EndpointSlices, Namespace, garbage collector, node lifecycle,
//! LoadBalancer addresses).
//! Each controller is a level-triggered reconcile of one key from a deduplicating work
//! queue, fed by shared informers over the in-process API client; its decisions are
//! pure functions of the cached objects and `now`, unit-tested without I/O.
//! See `docs/design/008-controllers.md`.

pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod expectations;
pub mod gc;
pub mod informer;
pub mod leader;
pub mod loadbalancer;
pub mod meta;
pub mod namespace;
pub mod nodelifecycle;
pub mod queue;
pub mod replicaset;
pub mod scheduler;
pub mod statefulset;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;

use crate::apiserver::{ApiError, Client};
use informer::Informer;
use queue::Queue;

/// Settings of the controller manager.
#[derive(Debug, Clone)]
pub struct Config {
    /// Workers per controller.
    pub workers: usize,
    /// A node whose Lease is older than this is marked `Ready=Unknown` (default 40 s).
    pub node_monitor_grace: Duration,
    /// How long pods stay on an unreachable node when they do not say (default 300 s).
    pub default_toleration: Duration,
    /// Where LoadBalancer Services get their addresses (`--loadbalancer-pool`); `None`
    /// leaves them pending.
    pub loadbalancer_pool: Option<ipnet::Ipv4Net>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 4,
            node_monitor_grace: Duration::from_secs(40),
            default_toleration: Duration::from_secs(300),
            loadbalancer_pool: None,
        }
    }
}

/// A reconcile loop over keys.
#[async_trait]
pub trait Reconcile: Send + Sync + 'static {
    /// For logs.
    fn name(&self) -> &'static str;
    /// Brings the object at `key` toward its desired state; `Ok(Some(d))` asks to be run
    /// again after `d` (time-based conditions), errors are retried with backoff.
    async fn reconcile(&self, key: &str) -> Result<Option<Duration>, ApiError>;
}

/// Runs `workers` tasks taking keys from `queue` into `reconciler`.
pub fn run_workers<R: Reconcile>(
    reconciler: Arc<R>,
    queue: Queue,
    workers: usize,
) -> Vec<JoinHandle<()>> {
    (0..workers.max(1))
        .map(|_| {
            let reconciler = reconciler.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                while let Some(key) = queue.next().await {
                    match reconciler.reconcile(&key).await {
                        Ok(again) => {
                            queue.forget(&key);
                            if let Some(delay) = again {
                                queue.add_after(key.clone(), delay);
                            }
                        }
                        Err(e) if e.code == 409 => {
                            // A stale cache lost a race: retry at once with fresher data.
                            queue.retry(&key);
                        }
                        Err(e) => {
                            tracing::info!(controller = reconciler.name(), %key, error = %e, "reconcile failed; retrying");
                            queue.retry(&key);
                        }
                    }
                    queue.done(&key);
                }
            })
        })
        .collect()
}

/// The shared informers.
#[derive(Clone)]
pub struct Informers {
    pub pods: Informer<core::Pod>,
    pub nodes: Informer<core::Node>,
    pub namespaces: Informer<core::Namespace>,
    pub services: Informer<core::Service>,
    pub endpoints: Informer<core::Endpoints>,
    pub configmaps: Informer<core::ConfigMap>,
    pub secrets: Informer<core::Secret>,
    pub serviceaccounts: Informer<core::ServiceAccount>,
    pub replicasets: Informer<apps::ReplicaSet>,
    pub replicationcontrollers: Informer<core::ReplicationController>,
    pub deployments: Informer<apps::Deployment>,
    pub statefulsets: Informer<apps::StatefulSet>,
    pub endpointslices: Informer<k8s_openapi::api::discovery::v1::EndpointSlice>,
    pub leases: Informer<k8s_openapi::api::coordination::v1::Lease>,
}

impl Informers {
    fn new() -> Informers {
        let informers = Informers {
            pods: Informer::new(),
            nodes: Informer::new(),
            namespaces: Informer::new(),
            services: Informer::new(),
            endpoints: Informer::new(),
            configmaps: Informer::new(),
            secrets: Informer::new(),
            serviceaccounts: Informer::new(),
            replicasets: Informer::new(),
            replicationcontrollers: Informer::new(),
            deployments: Informer::new(),
            statefulsets: Informer::new(),
            endpointslices: Informer::new(),
            leases: Informer::new(),
        };
        informers
            .pods
            .index(deployment::BY_CONTROLLER, deployment::controller_uid);
        informers
            .replicasets
            .index(deployment::BY_CONTROLLER, deployment::controller_uid);
        informers
            .pods
            .index(nodelifecycle::BY_NODE, nodelifecycle::node_of);
        informers
    }

    /// Lets the garbage collector follow every kind that owns or is owned.
    fn watch_all(&self, gc: &Arc<gc::GarbageCollector>) {
        gc.watch(&self.pods);
        gc.watch(&self.nodes);
        gc.watch(&self.services);
        gc.watch(&self.endpoints);
        gc.watch(&self.configmaps);
        gc.watch(&self.secrets);
        gc.watch(&self.serviceaccounts);
        gc.watch(&self.replicasets);
        gc.watch(&self.replicationcontrollers);
        gc.watch(&self.deployments);
        gc.watch(&self.statefulsets);
        gc.watch(&self.endpointslices);
        gc.watch(&self.leases);
    }

    fn spawn(&self, client: &Client) -> Vec<JoinHandle<()>> {
        vec![
            self.pods.spawn(client.clone()),
            self.nodes.spawn(client.clone()),
            self.namespaces.spawn(client.clone()),
            self.services.spawn(client.clone()),
            self.endpoints.spawn(client.clone()),
            self.configmaps.spawn(client.clone()),
            self.secrets.spawn(client.clone()),
            self.serviceaccounts.spawn(client.clone()),
            self.replicasets.spawn(client.clone()),
            self.replicationcontrollers.spawn(client.clone()),
            self.deployments.spawn(client.clone()),
            self.statefulsets.spawn(client.clone()),
            self.endpointslices.spawn(client.clone()),
            self.leases.spawn(client.clone()),
        ]
    }
}

/// The running scheduler and controllers; stopping aborts them all.
pub struct ControllerManager {
    tasks: Vec<JoinHandle<()>>,
    queues: Vec<Queue>,
}

impl ControllerManager {
    /// Starts the scheduler and every controller over `client`.
    pub fn start(client: Client, config: Config) -> ControllerManager {
        let informers = Informers::new();
        let mut tasks = vec![scheduler::Scheduler::start(
            client.clone(),
            &informers.pods,
            &informers.nodes,
        )];
        let mut queues = Vec::new();
        let (rs, queue) = replicaset::ReplicaSetController::new(
            client.clone(),
            &informers.pods,
            &informers.replicasets,
        );
        tasks.extend(run_workers(rs, queue.clone(), config.workers));
        queues.push(queue);
        let (rc, queue) = replicaset::ReplicaSetController::new(
            client.clone(),
            &informers.pods,
            &informers.replicationcontrollers,
        );
        tasks.extend(run_workers(rc, queue.clone(), config.workers));
        queues.push(queue);
        let (deploy, queue) = deployment::DeploymentController::new(
            client.clone(),
            &informers.deployments,
            &informers.replicasets,
            &informers.pods,
        );
        tasks.extend(run_workers(deploy, queue.clone(), config.workers));
        queues.push(queue);
        let (sts, queue) = statefulset::StatefulSetController::new(
            client.clone(),
            &informers.statefulsets,
            &informers.pods,
        );
        tasks.extend(run_workers(sts, queue.clone(), config.workers));
        queues.push(queue);
        let (ep, queue) = endpoints::EndpointsController::new(
            client.clone(),
            &informers.services,
            &informers.pods,
            &informers.endpoints,
            &informers.endpointslices,
        );
        tasks.extend(run_workers(ep, queue.clone(), config.workers));
        queues.push(queue);
        if let Some(pool) = config.loadbalancer_pool {
            let (lb, queue) = loadbalancer::LoadBalancerController::new(
                client.clone(),
                &informers.services,
                loadbalancer::Pool::new(pool),
            );
            // One worker: decisions see every address handed out before them.
            tasks.extend(run_workers(lb, queue.clone(), 1));
            queues.push(queue);
        }
        tasks.push(nodelifecycle::NodeLifecycle::start(
            client.clone(),
            &informers.nodes,
            &informers.leases,
            &informers.pods,
            config.clone(),
        ));
        let (gc, queue) = gc::GarbageCollector::new(client.clone());
        informers.watch_all(&gc);
        tasks.extend(run_workers(gc, queue.clone(), config.workers));
        queues.push(queue);
        let (ns, queue) =
            namespace::NamespaceController::new(client.clone(), &informers.namespaces);
        tasks.extend(run_workers(ns, queue.clone(), 2));
        queues.push(queue);
        tasks.extend(informers.spawn(&client));
        ControllerManager { tasks, queues }
    }

    /// Stops everything.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        for queue in &self.queues {
            queue.shut_down();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}
