//! One task per pod, reconciling what the API wants with what runs. It wakes on three
//! things only: a new version of the pod (or its deletion), a container's init exiting
//! (a pidfd becoming readable — no polling), and a back-off timer. Each wake it (1) pulls
//! images and makes the sandbox and containers if missing, (2) starts containers that are
//! due, (3) reports the status if it changed. Deletion stops the containers within the
//! grace period, removes everything, and only then confirms to the API. When the agent
//! itself stops (its end of the channel drops) the worker leaves the pod running: a
//! restarted kubelet adopts it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use skiff_api::node::{PodRef, PodStatusRequest};
use skiff_runtime::container::State as RtState;
use tokio::sync::{mpsc, watch};

use super::Shared;
use super::objects::RemoteObjects;
use super::probes::{ContainerProbers, RuntimeExec};
use super::status::{self, Addresses, BACKOFF_RESET, Container, State, Terminated};
use crate::local::{LocalError, PodRecord};
use crate::probe::ProbeKind;

/// The agent's side of a worker.
pub struct WorkerHandle {
    pub pod: watch::Sender<Option<Arc<Pod>>>,
    pub task: tokio::task::JoinHandle<()>,
}

struct Slot {
    status: Container,
    /// Bumped on every start: exits of older instances are ignored.
    generation: u64,
    /// When it may (re)start; `None` while running or done for good.
    next_start: Option<Instant>,
    /// Consecutive failures, for the back-off.
    failures: u32,
    running_since: Option<Instant>,
    /// The probers of the running instance.
    probers: Option<ContainerProbers>,
}

struct Worker {
    shared: Arc<Shared>,
    uid: String,
    pod: Arc<Pod>,
    rx: watch::Receiver<Option<Arc<Pod>>>,
    record: Option<PodRecord>,
    slots: Vec<Slot>,
    exits_tx: mpsc::Sender<(usize, u64)>,
    exits: mpsc::Receiver<(usize, u64)>,
    probes_tx: mpsc::Sender<(usize, u64)>,
    probes: mpsc::Receiver<(usize, u64)>,
    setup_failures: u32,
    next_setup: Instant,
    start_time: Timestamp,
    last_sent: Option<serde_json::Value>,
    retry_report: Option<Instant>,
    /// When to re-read the ConfigMaps and Secrets the pod's volumes show.
    next_refresh: Option<Instant>,
}

/// How often volume contents are compared with their sources (the kubelet's sync period is
/// a minute; projected files lag a change by up to this).
const REFRESH: Duration = Duration::from_secs(5);

/// Whether the pod has volumes whose files come from API objects.
fn uses_objects(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| {
            v.config_map.is_some()
                || v.secret.is_some()
                || v.projected.is_some()
                || v.downward_api.is_some()
        })
}

/// Starts the worker of pod `uid`.
pub fn spawn(shared: Arc<Shared>, uid: String, pod: Arc<Pod>) -> WorkerHandle {
    let (tx, rx) = watch::channel(Some(pod.clone()));
    let (exits_tx, exits) = mpsc::channel(16);
    let (probes_tx, probes) = mpsc::channel(16);
    let slots = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| Slot {
            status: Container::new(&c.name, c.image.as_deref().unwrap_or_default()),
            generation: 0,
            next_start: Some(Instant::now()),
            failures: 0,
            running_since: None,
            probers: None,
        })
        .collect();
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or_else(Timestamp::now, |t| t.0);
    let worker = Worker {
        shared,
        uid,
        pod,
        rx,
        record: None,
        slots,
        exits_tx,
        exits,
        probes_tx,
        probes,
        setup_failures: 0,
        next_setup: Instant::now(),
        start_time,
        last_sent: None,
        retry_report: None,
        next_refresh: None,
    };
    WorkerHandle {
        pod: tx,
        task: tokio::spawn(worker.run()),
    }
}

/// Runs blocking runtime work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LocalError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("runtime task failed: {e}")),
    }
}

fn secs(seconds: Option<i64>) -> Option<Duration> {
    seconds.map(|s| Duration::from_secs(s.max(0) as u64))
}

/// The pod's `terminationGracePeriodSeconds` (30 s when unset).
fn pod_grace(pod: &Pod) -> Duration {
    secs(
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds),
    )
    .unwrap_or(Duration::from_secs(30))
}

fn pod_label(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

impl Worker {
    async fn run(mut self) {
        self.adopt().await;
        loop {
            let desired = self.rx.borrow_and_update().clone();
            match desired {
                None => {
                    self.terminate(None).await;
                    return;
                }
                Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                    let grace = secs(pod.metadata.deletion_grace_period_seconds)
                        .unwrap_or_else(|| pod_grace(&pod));
                    self.pod = pod;
                    self.terminate(Some(grace)).await;
                    return;
                }
                Some(pod) => self.pod = pod,
            }
            self.reconcile().await;
            self.report().await;
            let deadline = self.next_deadline();
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        return; // the agent stops: the pod keeps running
                    }
                }
                Some((i, generation)) = self.exits.recv() => self.on_exit(i, generation).await,
                Some((i, generation)) = self.probes.recv() => self.on_probe(i, generation).await,
                () = sleep_until(deadline) => {}
            }
        }
    }

    /// A pod this node already runs (the kubelet restarted): its containers are adopted,
    /// and ones that exited meanwhile are handled as exits now.
    async fn adopt(&mut self) {
        let pods = self.shared.pods.clone();
        let uid = self.uid.clone();
        let Ok(record) = blocking(move || pods.record(&uid)).await else {
            return;
        };
        // Restart counts live in the API's status: carry them over.
        let known = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone());
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(old) = known.iter().flatten().find(|c| c.name == slot.status.name) {
                slot.status.restart_count = old.restart_count;
                slot.status.last = old
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| Terminated {
                        exit_code: t.exit_code,
                        signal: t.signal,
                        reason: t.reason.clone().unwrap_or_default(),
                        message: t.message.clone(),
                        started_at: t.started_at.as_ref().map(|t| t.0),
                        finished_at: t.finished_at.as_ref().map_or_else(Timestamp::now, |t| t.0),
                    });
            }
            let pods = self.shared.pods.clone();
            let (r, name) = (record.clone(), slot.status.name.clone());
            let Ok(rt) = blocking(move || pods.container_status(&r, &name)).await else {
                continue;
            };
            slot.generation = 1;
            slot.status.container_id = Some(format!("skiff://{}", rt.id));
            slot.status.started = true;
            let started_at = rt.started_ns.map(ns_to_ts).unwrap_or_else(Timestamp::now);
            slot.status.state = State::Running { started_at };
            slot.next_start = None;
            slot.running_since = Some(Instant::now());
            watch_exit(
                &self.shared,
                self.exits_tx.clone(),
                i,
                slot.generation,
                rt.pid,
            );
        }
        self.record = Some(record);
        self.next_refresh = uses_objects(&self.pod).then(Instant::now);
        for i in 0..self.slots.len() {
            if matches!(self.slots[i].status.state, State::Running { .. }) {
                let id = self.slots[i]
                    .status
                    .container_id
                    .clone()
                    .unwrap_or_default();
                self.start_probers(i, id.trim_start_matches("skiff://"))
                    .await;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut times: Vec<Instant> = self.slots.iter().filter_map(|s| s.next_start).collect();
        if self.record.is_none() {
            times.push(self.next_setup);
        }
        times.extend(self.retry_report);
        times.extend(self.next_refresh);
        times.into_iter().min()
    }

    async fn reconcile(&mut self) {
        let now = Instant::now();
        if self.record.is_none() {
            if now < self.next_setup {
                return;
            }
            if let Err((reason, message)) = self.set_up().await {
                self.setup_failures += 1;
                let delay = status::backoff(self.setup_failures).max(Duration::from_secs(1));
                self.next_setup = Instant::now() + delay;
                for slot in &mut self.slots {
                    let reason = if reason == "ErrImagePull" && self.setup_failures > 1 {
                        "ImagePullBackOff".to_owned()
                    } else {
                        reason.clone()
                    };
                    slot.status.state = State::Waiting {
                        reason,
                        message: Some(message.clone()),
                    };
                }
                self.shared
                    .event(&self.pod, "Warning", "Failed", &message)
                    .await;
                return;
            }
        }
        for i in 0..self.slots.len() {
            if self.slots[i].next_start.is_some_and(|t| t <= now) {
                self.start(i).await;
            }
        }
        if self.next_refresh.is_some_and(|t| t <= now) {
            self.refresh_volumes().await;
            self.next_refresh = Some(Instant::now() + REFRESH);
        }
    }

    /// Brings configMap/secret/downwardAPI/projected files up to date with their sources.
    async fn refresh_volumes(&mut self) {
        let Some(record) = self.record.clone() else {
            return;
        };
        let (pods, pod) = (self.shared.pods.clone(), self.pod.clone());
        let objects = RemoteObjects::new(self.shared.client());
        let label = pod_label(&self.pod);
        match blocking(move || pods.refresh_volumes(&pod, &record, Some(&objects))).await {
            Ok(true) => tracing::info!(pod = %label, "volume contents updated"),
            Ok(false) => {}
            Err(e) => tracing::warn!(pod = %label, error = %e, "refreshing volumes"),
        }
    }

    /// Pulls the pod's images and makes its sandbox and containers.
    async fn set_up(&mut self) -> Result<(), (String, String)> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        for c in &spec.containers {
            let image = c.image.clone().unwrap_or_default();
            let policy = c.image_pull_policy.clone().unwrap_or_default();
            self.shared
                .images
                .ensure(&image, &policy)
                .await
                .map_err(|message| ("ErrImagePull".to_owned(), message))?;
        }
        let (pods, pod, uid) = (self.shared.pods.clone(), self.pod.clone(), self.uid.clone());
        let objects = RemoteObjects::new(self.shared.client());
        let created =
            tokio::task::spawn_blocking(move || pods.create_pod(&pod, &uid, Some(&objects))).await;
        let record = match created {
            Ok(Ok(record)) => record,
            Ok(Err(LocalError::Spec(e))) => return Err((e.reason().to_owned(), e.message)),
            Ok(Err(e)) => return Err(("CreateContainerError".to_owned(), e.to_string())),
            Err(e) => return Err(("CreateContainerError".to_owned(), e.to_string())),
        };
        self.record = Some(record);
        self.next_refresh = uses_objects(&self.pod).then(|| Instant::now() + REFRESH);
        Ok(())
    }

    async fn start(&mut self, i: usize) {
        let Some(record) = self.record.clone() else {
            return;
        };
        let name = self.slots[i].status.name.clone();
        if self.slots[i].generation > 0 {
            let (pods, r, n) = (self.shared.pods.clone(), record.clone(), name.clone());
            if let Err(message) = blocking(move || pods.recreate_container(&r, &n)).await {
                self.start_failed(i, message).await;
                return;
            }
            self.slots[i].status.restart_count += 1;
        }
        self.slots[i].generation += 1;
        let (pods, r, n) = (self.shared.pods.clone(), record.clone(), name.clone());
        let started = blocking(move || {
            pods.start_container(&r, &n)?;
            pods.container_status(&r, &n)
        })
        .await;
        match started {
            Ok(rt) => {
                let slot = &mut self.slots[i];
                slot.status.container_id = Some(format!("skiff://{}", rt.id));
                slot.status.state = State::Running {
                    started_at: rt.started_ns.map(ns_to_ts).unwrap_or_else(Timestamp::now),
                };
                slot.next_start = None;
                slot.running_since = Some(Instant::now());
                watch_exit(
                    &self.shared,
                    self.exits_tx.clone(),
                    i,
                    slot.generation,
                    rt.pid,
                );
                self.start_probers(i, &rt.id).await;
                self.shared
                    .event(
                        &self.pod,
                        "Normal",
                        "Started",
                        &format!("Started container {name}"),
                    )
                    .await;
            }
            Err(message) => self.start_failed(i, message).await,
        }
    }

    /// Starts the probers of slot `i`'s running instance `id`; without probes the container
    /// is started and ready at once.
    async fn start_probers(&mut self, i: usize, id: &str) {
        let spec = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| {
                s.containers
                    .iter()
                    .find(|c| c.name == self.slots[i].status.name)
            })
            .cloned()
            .unwrap_or_default();
        let pod_ip = self
            .record
            .as_ref()
            .and_then(|r| r.ip)
            .unwrap_or(self.shared.host_ip);
        let exec = Arc::new(RuntimeExec(self.shared.pods.clone()));
        let generation = self.slots[i].generation;
        match ContainerProbers::start(
            &spec,
            pod_ip,
            id,
            exec,
            Instant::now(),
            &self.probes_tx,
            i,
            generation,
        ) {
            Ok(probers) => {
                let health = probers.health();
                let slot = &mut self.slots[i];
                slot.status.started = health.started;
                slot.status.ready = health.ready;
                slot.probers = Some(probers);
            }
            Err(message) => {
                let slot = &mut self.slots[i];
                slot.status.started = true;
                slot.status.ready = true;
                self.shared
                    .event(
                        &self.pod,
                        "Warning",
                        "Unhealthy",
                        &format!("probe not run: {message}"),
                    )
                    .await;
            }
        }
    }

    /// A probe's verdict changed: readiness follows it; a failed liveness or startup probe
    /// stops the container, and its exit restarts it (by the restart policy).
    async fn on_probe(&mut self, i: usize, generation: u64) {
        let Some(slot) = self.slots.get_mut(i).filter(|s| s.generation == generation) else {
            return;
        };
        let Some(probers) = &slot.probers else {
            return;
        };
        let health = probers.health();
        slot.status.started = health.started;
        slot.status.ready = health.ready;
        let Some(kind) = health.failed else {
            return;
        };
        let message = probers.failure_message(kind);
        slot.probers = None;
        slot.status.ready = false;
        let name = slot.status.name.clone();
        let what = match kind {
            ProbeKind::Startup => "Startup",
            _ => "Liveness",
        };
        self.shared
            .event(
                &self.pod,
                "Warning",
                "Unhealthy",
                &format!("{what} probe failed: {message}"),
            )
            .await;
        self.shared
            .event(
                &self.pod,
                "Normal",
                "Killing",
                &format!(
                    "Container {name} failed {} probe, will be restarted",
                    what.to_lowercase()
                ),
            )
            .await;
        let Some(record) = self.record.clone() else {
            return;
        };
        let grace = pod_grace(&self.pod);
        let pods = self.shared.pods.clone();
        // Stopping waits out the grace period: off the worker, whose exit watch sees the end.
        tokio::task::spawn_blocking(move || {
            let _ = pods.stop_container(&record, &name, grace);
        });
    }

    async fn start_failed(&mut self, i: usize, message: String) {
        let label = pod_label(&self.pod);
        let slot = &mut self.slots[i];
        slot.failures += 1;
        let delay = status::backoff(slot.failures).max(Duration::from_secs(1));
        slot.status.last = Some(Terminated {
            exit_code: 128,
            signal: None,
            reason: "StartError".into(),
            message: Some(message.clone()),
            started_at: None,
            finished_at: Timestamp::now(),
        });
        slot.status.ready = false;
        slot.status.state = State::Waiting {
            reason: "RunContainerError".into(),
            message: Some(message.clone()),
        };
        slot.next_start = Some(Instant::now() + delay);
        tracing::info!(pod = %label, container = %slot.status.name, %message, "start failed");
        self.shared
            .event(&self.pod, "Warning", "Failed", &message)
            .await;
    }

    async fn on_exit(&mut self, i: usize, generation: u64) {
        if self.slots.get(i).is_none_or(|s| s.generation != generation) {
            return;
        }
        let Some(record) = self.record.clone() else {
            return;
        };
        let name = self.slots[i].status.name.clone();
        let pods = self.shared.pods.clone();
        let rt = blocking(move || pods.container_status(&record, &name)).await;
        let (exit, runtime_reason) = match rt {
            Ok(rt) => match rt.state {
                RtState::Exited(e) => (e, rt.reason),
                // Not exited after all (a spurious wake): keep waiting on a fresh pidfd.
                _ => {
                    watch_exit(&self.shared, self.exits_tx.clone(), i, generation, rt.pid);
                    return;
                }
            },
            Err(_) => (
                skiff_runtime::container::ExitStatus {
                    code: 0,
                    signal: 9,
                    finished_ns: 0,
                },
                None,
            ),
        };
        let code = exit.shell_code();
        let policy = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let label = pod_label(&self.pod);
        let slot = &mut self.slots[i];
        let started_at = match slot.status.state {
            State::Running { started_at } => Some(started_at),
            _ => None,
        };
        let finished_at = if exit.finished_ns > 0 {
            ns_to_ts(exit.finished_ns)
        } else {
            Timestamp::now()
        };
        let terminated = Terminated {
            exit_code: code,
            signal: (exit.signal != 0).then_some(exit.signal),
            reason: Terminated::reason_for(code, runtime_reason.as_deref()),
            message: None,
            started_at,
            finished_at,
        };
        slot.status.ready = false;
        slot.probers = None;
        let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
        if !restart {
            slot.status.state = State::Terminated(terminated);
            slot.next_start = None;
            return;
        }
        if slot
            .running_since
            .is_some_and(|t| t.elapsed() >= BACKOFF_RESET)
        {
            slot.failures = 0;
        }
        let delay = status::backoff(slot.failures);
        slot.failures += 1;
        slot.status.last = Some(terminated.clone());
        slot.next_start = Some(Instant::now() + delay);
        slot.status.state = if delay.is_zero() {
            State::Terminated(terminated)
        } else {
            State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container={} pod={label}",
                    delay.as_secs(),
                    slot.status.name
                )),
            }
        };
    }

    async fn report(&mut self) {
        let addresses = self.record.as_ref().map(|r| Addresses {
            pod_ip: r.ip,
            host_ip: self.shared.host_ip,
        });
        let status = status::pod_status(
            &self.pod,
            &self
                .slots
                .iter()
                .map(|s| s.status.clone())
                .collect::<Vec<_>>(),
            addresses,
            self.start_time,
            Timestamp::now(),
        );
        let value = serde_json::to_value(&status).unwrap_or_default();
        if self.last_sent.as_ref() == Some(&value) && self.retry_report.is_none() {
            return;
        }
        let request = PodStatusRequest {
            namespace: self.pod.metadata.namespace.clone().unwrap_or_default(),
            name: self.pod.metadata.name.clone().unwrap_or_default(),
            uid: self.uid.clone(),
            status: serde_json::to_vec(&value).unwrap_or_default(),
        };
        let mut client = self.shared.client();
        match client.update_pod_status(request).await {
            Ok(_) => {
                self.last_sent = Some(value);
                self.retry_report = None;
            }
            Err(e) if e.code() == tonic::Code::NotFound => {
                self.last_sent = Some(value);
                self.retry_report = None;
            }
            Err(e) => {
                tracing::warn!(pod = %pod_label(&self.pod), error = %e, "status update failed; retrying");
                self.retry_report = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// Stops every container within `grace` (the pod's own when `None`), removes the pod
    /// from the node, and confirms the deletion to the API when the pod is still there.
    async fn terminate(&mut self, grace: Option<Duration>) {
        let pods = self.shared.pods.clone();
        let uid = self.uid.clone();
        let confirm = grace.is_some();
        let grace = grace.unwrap_or_else(|| pod_grace(&self.pod));
        let label = pod_label(&self.pod);
        let result = blocking(move || {
            let record = match pods.record(&uid) {
                Ok(r) => r,
                Err(LocalError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e),
            };
            std::thread::scope(|s| {
                for c in &record.containers {
                    let (pods, record) = (&pods, &record);
                    s.spawn(move || pods.stop_container(record, &c.name, grace));
                }
            });
            pods.remove(&uid)
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(pod = %label, error = %e, "tearing the pod down");
        }
        if confirm {
            let request = PodRef {
                namespace: self.pod.metadata.namespace.clone().unwrap_or_default(),
                name: self.pod.metadata.name.clone().unwrap_or_default(),
                uid: self.uid.clone(),
            };
            let mut client = self.shared.client();
            if let Err(e) = client.pod_terminated(request).await {
                tracing::warn!(pod = %label, error = %e, "confirming the deletion");
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

fn ns_to_ts(ns: u128) -> Timestamp {
    Timestamp::from_nanosecond(i128::try_from(ns).unwrap_or_default())
        .unwrap_or_else(|_| Timestamp::now())
}

/// Reports `(slot, generation)` when the container's init (host `pid`) exits. No pid
/// (gone already) reports at once.
fn watch_exit(
    shared: &Shared,
    tx: mpsc::Sender<(usize, u64)>,
    slot: usize,
    generation: u64,
    pid: Option<i32>,
) {
    let exited = shared.exits.watch(pid);
    tokio::spawn(async move {
        let _ = exited.await;
        let _ = tx.send((slot, generation)).await;
    });
}
