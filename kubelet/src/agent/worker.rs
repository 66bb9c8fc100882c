//! One task per pod, reconciling what the API wants with what runs. It wakes on events
//! only: a new version of the pod (or its deletion), a container's init exiting (a pidfd
//! becoming readable — no polling), a probe verdict, a postStart hook's end, and a back-off
//! timer. Each wake it (1) pulls images and makes the sandbox and containers if missing,
//! (2) starts the containers that are due — the init containers one at a time, in order,
//! each to exit 0, then the others (`status::init_step`) — (3) reports the status if it
//! changed. Deletion runs each container's preStop hook and stops it within the grace
//! period, removes everything, and only then confirms to the API. When the agent itself
//! stops (its end of the channel drops) the worker leaves the pod running: a restarted
//! kubelet adopts it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use skiff_api::node::{PodRef, PodStatusRequest};
use skiff_runtime::container::State as RtState;
use tokio::sync::{mpsc, watch};

use super::Shared;
use super::hooks::{Hook, HookKind, grace_after_hook};
use super::objects::RemoteObjects;
use super::probes::{ContainerProbers, RuntimeExec};
use super::status::{self, Addresses, BACKOFF_RESET, Container, InitStep, State, Terminated};
use crate::local::{LocalError, PodRecord};
use crate::probe::{ExecProber, ProbeKind, Target};

/// The agent's side of a worker.
pub struct WorkerHandle {
    pub pod: watch::Sender<Option<Arc<Pod>>>,
    pub task: tokio::task::JoinHandle<()>,
}

struct Slot {
    status: Container,
    /// An init container: runs to completion before the others start.
    init: bool,
    /// While the postStart hook runs: when the container started (it shows Running once
    /// the hook has succeeded).
    post_start: Option<Timestamp>,
    /// The postStart hook failed and the container is being killed: the message.
    hook_failed: Option<String>,
    /// A stop in flight (liveness kill, failed hook): awaited before a restart.
    stopping: Option<tokio::task::JoinHandle<()>>,
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
    hooks_tx: mpsc::Sender<HookDone>,
    hooks: mpsc::Receiver<HookDone>,
    setup_failures: u32,
    next_setup: Instant,
    start_time: Timestamp,
    last_sent: Option<serde_json::Value>,
    retry_report: Option<Instant>,
    /// When to re-read the ConfigMaps and Secrets the pod's volumes show.
    next_refresh: Option<Instant>,
    /// For the pod start SLI: time spent pulling images, when the first init container
    /// started and when the last one finished; `None` once reported (or adopted).
    sli: Option<SliClock>,
}

#[derive(Debug, Default)]
struct SliClock {
    pulls: Duration,
    init_began: Option<Instant>,
    init_ended: Option<Instant>,
}

/// The longest a postStart hook may run (Kubernetes sets none; a day stands for that).
const POST_START_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// A postStart hook ended: (slot, generation, outcome).
type HookDone = (usize, u64, Result<(), String>);

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
    let (hooks_tx, hooks) = mpsc::channel(16);
    let spec = pod.spec.as_ref();
    let inits = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let all = inits
        .iter()
        .map(|c| (true, c))
        .chain(spec.iter().flat_map(|s| &s.containers).map(|c| (false, c)));
    let slots = all
        .map(|(init, c)| Slot {
            status: Container {
                state: State::Waiting {
                    reason: if inits.is_empty() {
                        "ContainerCreating"
                    } else {
                        "PodInitializing"
                    }
                    .into(),
                    message: None,
                },
                ..Container::new(&c.name, c.image.as_deref().unwrap_or_default())
            },
            init,
            post_start: None,
            hook_failed: None,
            stopping: None,
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
        hooks_tx,
        hooks,
        setup_failures: 0,
        next_setup: Instant::now(),
        start_time,
        last_sent: None,
        retry_report: None,
        next_refresh: None,
        sli: Some(SliClock::default()),
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

/// `Container "c" in Pod "name_ns(uid)"`, as the kubelet's hook messages name one.
fn container_label(pod: &Pod, container: &str) -> String {
    format!("Container {container:?} in Pod {:?}", pod_label(pod))
}

/// The pod's `restartPolicy` (Always when unset).
fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// The spec of the (init) container so named.
fn container_spec<'a>(
    pod: &'a Pod,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
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
                Some((i, generation, outcome)) = self.hooks.recv() => {
                    self.on_post_start(i, generation, outcome).await;
                }
                () = sleep_until(deadline) => {}
            }
        }
    }

    /// A pod this node already runs (the kubelet restarted): its containers are adopted,
    /// and ones that exited meanwhile are handled as exits now. Containers created but not
    /// started yet (init containers waiting their turn) are started when due.
    async fn adopt(&mut self) {
        let pods = self.shared.pods.clone();
        let uid = self.uid.clone();
        let Ok(record) = blocking(move || pods.record(&uid)).await else {
            return;
        };
        self.sli = None; // started by an earlier run
        // Restart counts live in the API's status: carry them over.
        let known: Vec<k8s_openapi::api::core::v1::ContainerStatus> = self
            .pod
            .status
            .iter()
            .flat_map(|s| {
                let inits = s.init_container_statuses.iter().flatten();
                inits.chain(s.container_statuses.iter().flatten()).cloned()
            })
            .collect();
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if let Some(old) = known.iter().find(|c| c.name == slot.status.name) {
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
            if rt.state == RtState::Created {
                continue; // never started: `start` starts it when it is due
            }
            slot.generation = 1;
            slot.status.started = true;
            self.mark_running(i, &rt);
        }
        self.record = Some(record);
        self.next_refresh = uses_objects(&self.pod).then(Instant::now);
        for i in 0..self.slots.len() {
            if !self.slots[i].init && matches!(self.slots[i].status.state, State::Running { .. }) {
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

    /// Slot `i`'s instance `rt` runs (or ran: its exit is then seen at once): its state, and
    /// a watch on its exit.
    fn mark_running(&mut self, i: usize, rt: &skiff_runtime::container::ContainerStatus) {
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
    }

    /// Where the init containers stand.
    fn init_step(&self) -> InitStep {
        let inits: Vec<Container> = self
            .slots
            .iter()
            .filter(|s| s.init)
            .map(|s| s.status.clone())
            .collect();
        status::init_step(restart_policy(&self.pod), &inits)
    }

    /// Whether slot `i` may start now (when its back-off allows): the init container whose
    /// turn it is, or any other container once initialization is done.
    fn eligible(&self, i: usize, step: InitStep) -> bool {
        match step {
            InitStep::Run(n) => self.slots[i].init && i == n,
            InitStep::Done => !self.slots[i].init,
            InitStep::Failed => false,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let step = self.init_step();
        let mut times: Vec<Instant> = (0..self.slots.len())
            .filter(|i| self.eligible(*i, step))
            .filter_map(|i| self.slots[i].next_start)
            .collect();
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
        // An init container that exits 0 at once makes the next one due: go on until
        // nothing more starts.
        loop {
            let step = self.init_step();
            let due: Vec<usize> = (0..self.slots.len())
                .filter(|i| self.eligible(*i, step))
                .filter(|i| self.slots[*i].next_start.is_some_and(|t| t <= now))
                .collect();
            if due.is_empty() {
                break;
            }
            for i in due {
                self.start(i).await;
            }
            if self.init_step() == step {
                break;
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

    /// The pod's `imagePullSecrets` as one docker config in `STATE/pull-auth/UID.json`
    /// (0600), for its pulls; `None` when it names none (or none holds credentials).
    async fn pull_auth(&self) -> Result<Option<std::path::PathBuf>, (String, String)> {
        let names: Vec<String> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
            .map(|r| r.name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Ok(None);
        }
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let objects = RemoteObjects::new(self.shared.client());
        let dir = self.shared.state_dir.join("pull-auth");
        let file = dir.join(format!("{}.json", self.uid));
        let written = tokio::task::spawn_blocking(move || {
            use crate::podspec::ObjectSource;
            let mut secrets = Vec::new();
            for name in &names {
                // A missing pull secret is skipped, as the kubelet does (the pull may still
                // work anonymously).
                if let Some(s) = objects.secret(&namespace, name)? {
                    secrets.push(s);
                }
            }
            let Some(config) = super::pullsecrets::docker_config(&secrets) else {
                return Ok(None);
            };
            let write = || -> std::io::Result<()> {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                std::fs::create_dir_all(&dir)?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&file)?
                    .write_all(&config)
            };
            write().map_err(|e| format!("writing {}: {e}", file.display()))?;
            Ok(Some(file))
        })
        .await;
        match written {
            Ok(Ok(file)) => Ok(file),
            Ok(Err(message)) => Err(("ErrImagePull".into(), message)),
            Err(e) => Err(("ErrImagePull".into(), e.to_string())),
        }
    }

    /// Pulls the pod's images (with its pull secrets) and makes its sandbox and containers.
    async fn set_up(&mut self) -> Result<(), (String, String)> {
        let auth = self.pull_auth().await?;
        let pulled = self.pull_images(auth.as_deref()).await;
        if let Some(file) = &auth {
            let _ = std::fs::remove_file(file);
        }
        pulled?;
        self.create().await
    }

    async fn pull_images(
        &mut self,
        auth: Option<&std::path::Path>,
    ) -> Result<(), (String, String)> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            let image = c.image.clone().unwrap_or_default();
            let policy = c.image_pull_policy.clone().unwrap_or_default();
            let pulled = self
                .shared
                .images
                .ensure(&image, &policy, auth)
                .await
                .map_err(|message| ("ErrImagePull".to_owned(), message))?;
            if let Some(took) = pulled {
                self.shared.metrics.image_pulled(took);
                if let Some(sli) = self.sli.as_mut() {
                    sli.pulls += took;
                }
            }
        }
        Ok(())
    }

    /// Makes the sandbox and the containers (created, not started).
    async fn create(&mut self) -> Result<(), (String, String)> {
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
        if let Some(stop) = self.slots[i].stopping.take() {
            let _ = stop.await;
        }
        if self.slots[i].generation > 0 {
            let (pods, r, n) = (self.shared.pods.clone(), record.clone(), name.clone());
            if let Err(message) = blocking(move || pods.recreate_container(&r, &n)).await {
                self.start_failed(i, message).await;
                return;
            }
            self.slots[i].status.restart_count += 1;
        }
        self.slots[i].generation += 1;
        if let Some(sli) = self.sli.as_mut().filter(|_| self.slots[i].init) {
            sli.init_began.get_or_insert_with(Instant::now);
        }
        let (pods, r, n) = (self.shared.pods.clone(), record.clone(), name.clone());
        let started = blocking(move || {
            pods.start_container(&r, &n)?;
            pods.container_status(&r, &n)
        })
        .await;
        let rt = match started {
            Ok(rt) => rt,
            Err(message) => return self.start_failed(i, message).await,
        };
        self.mark_running(i, &rt);
        self.shared
            .event(
                &self.pod,
                "Normal",
                "Started",
                &format!("Started container {name}"),
            )
            .await;
        let hook = container_spec(&self.pod, &name).map(|c| Hook::of(c, HookKind::PostStart));
        match hook {
            Some(Ok(Some(hook))) => {
                // Running only once the hook has succeeded (as Kubernetes shows it).
                let slot = &mut self.slots[i];
                if let State::Running { started_at } = slot.status.state {
                    slot.post_start = Some(started_at);
                }
                slot.status.state = State::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                };
                let target = self.target(&name, &rt.id);
                let exec: Arc<dyn ExecProber> = Arc::new(RuntimeExec(self.shared.pods.clone()));
                let (tx, generation) = (self.hooks_tx.clone(), self.slots[i].generation);
                let who = container_label(&self.pod, &name);
                tokio::spawn(async move {
                    // Kubernetes sets postStart no timeout; the exit or a deletion ends it.
                    let outcome = hook.run(&target, &exec, POST_START_LIMIT, &who).await;
                    let _ = tx.send((i, generation, outcome)).await;
                });
            }
            Some(Err(message)) => {
                self.on_post_start(i, self.slots[i].generation, Err(message))
                    .await;
            }
            _ if self.slots[i].init => {}
            _ => self.start_probers(i, &rt.id).await,
        }
    }

    /// Where container `name` (instance `id`) is reached: hooks and probes.
    fn target(&self, name: &str, id: &str) -> Target {
        let pod_ip = self
            .record
            .as_ref()
            .and_then(|r| r.ip)
            .unwrap_or(self.shared.host_ip);
        let ports = container_spec(&self.pod, name)
            .and_then(|c| c.ports.clone())
            .unwrap_or_default();
        Target {
            pod_ip,
            ports,
            container_id: id.to_owned(),
        }
    }

    /// A postStart hook ended: the container shows Running and its probes start; or the hook
    /// failed, and the container is killed (its exit restarts it by the restart policy).
    async fn on_post_start(&mut self, i: usize, generation: u64, outcome: Result<(), String>) {
        let Some(slot) = self.slots.get_mut(i).filter(|s| s.generation == generation) else {
            return;
        };
        let Some(started_at) = slot.post_start.take() else {
            return; // it exited meanwhile
        };
        let message = match outcome {
            Ok(()) => {
                slot.status.state = State::Running { started_at };
                let id = slot.status.container_id.clone().unwrap_or_default();
                if !slot.init {
                    self.start_probers(i, id.trim_start_matches("skiff://"))
                        .await;
                }
                return;
            }
            Err(message) => message,
        };
        slot.hook_failed = Some(message.clone());
        let name = slot.status.name.clone();
        self.shared
            .event(&self.pod, "Warning", "FailedPostStartHook", &message)
            .await;
        self.shared
            .event(
                &self.pod,
                "Normal",
                "Killing",
                &format!("FailedPostStartHook: killing container {name}"),
            )
            .await;
        self.kill_in_background(i);
    }

    /// Stops slot `i`'s container off the worker (its preStop hook, then the stop signal
    /// within the grace period); the exit watch sees the end. A restart waits for the stop
    /// to finish: the stop still reads (and records) the old instance's state.
    fn kill_in_background(&mut self, i: usize) {
        let Some(record) = self.record.clone() else {
            return;
        };
        let stop = stop_container(
            self.shared.clone(),
            self.pod.clone(),
            record,
            self.slots[i].status.name.clone(),
            pod_grace(&self.pod),
        );
        self.slots[i].stopping = Some(tokio::spawn(stop));
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
        let pod_ip = self.target(&spec.name, id).pod_ip;
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
        self.kill_in_background(i);
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
        let policy = restart_policy(&self.pod).to_owned();
        let label = pod_label(&self.pod);
        let slot = &mut self.slots[i];
        slot.post_start = None;
        let hook_failed = slot.hook_failed.take();
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
            message: hook_failed.clone(),
            started_at,
            finished_at,
        };
        slot.status.ready = false;
        slot.probers = None;
        // An init container is done at exit 0; a failed one runs again unless Never.
        let restart = match (slot.init, policy.as_str()) {
            (true, p) => code != 0 && p != "Never",
            (false, p) => p == "Always" || (p == "OnFailure" && code != 0),
        };
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
        slot.status.state = if let Some(message) = hook_failed {
            State::Waiting {
                reason: "PostStartHookError".into(),
                message: Some(message),
            }
        } else if delay.is_zero() {
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

    /// The pod start SLI, once all containers run for the first time: from the pod's creation,
    /// less image pulls and init containers. And the running counts.
    fn count(&mut self) {
        let app = self.slots.iter().filter(|s| !s.init);
        let running = app
            .clone()
            .filter(|s| matches!(s.status.state, State::Running { .. }))
            .count();
        self.shared.metrics.set_running(&self.uid, running);
        let initialized = self.init_step() == InitStep::Done;
        let Some(sli) = self.sli.as_mut() else {
            return;
        };
        if initialized && sli.init_began.is_some() {
            sli.init_ended.get_or_insert_with(Instant::now);
        }
        if running == 0 || running < app.count() {
            return;
        }
        let Some(created) = self.pod.metadata.creation_timestamp.as_ref() else {
            return;
        };
        let since = Timestamp::now().duration_since(created.0);
        let init = match (sli.init_began, sli.init_ended) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        };
        let total = Duration::try_from(since).unwrap_or_default();
        self.shared
            .metrics
            .pod_started(total.saturating_sub(sli.pulls).saturating_sub(init));
        self.sli = None;
    }

    async fn report(&mut self) {
        self.count();
        let addresses = self.record.as_ref().map(|r| Addresses {
            pod_ip: r.ip,
            host_ip: self.shared.host_ip,
        });
        let of = |init: bool| -> Vec<Container> {
            self.slots
                .iter()
                .filter(|s| s.init == init)
                .map(|s| s.status.clone())
                .collect()
        };
        let status = status::pod_status(
            &self.pod,
            &of(true),
            &of(false),
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

    /// Stops every container within `grace` (the pod's own when `None`) — each one's preStop
    /// hook first — removes the pod from the node, and confirms the deletion to the API when
    /// the pod is still there.
    async fn terminate(&mut self, grace: Option<Duration>) {
        let pods = self.shared.pods.clone();
        let uid = self.uid.clone();
        let confirm = grace.is_some();
        let grace = grace.unwrap_or_else(|| pod_grace(&self.pod));
        let label = pod_label(&self.pod);
        self.shared.metrics.set_running(&self.uid, 0);
        let record = match blocking(move || pods.record(&uid)).await {
            Ok(record) => Some(record),
            Err(e) if e.ends_with("not found") => None,
            Err(e) => {
                tracing::warn!(pod = %label, error = %e, "reading the pod's record");
                None
            }
        };
        if let Some(record) = record {
            let stops = record.containers.iter().map(|c| {
                let (shared, pod) = (self.shared.clone(), self.pod.clone());
                stop_container(shared, pod, record.clone(), c.name.clone(), grace)
            });
            futures::future::join_all(stops).await;
            let (pods, uid) = (self.shared.pods.clone(), self.uid.clone());
            if let Err(e) = blocking(move || pods.remove(&uid)).await {
                tracing::warn!(pod = %label, error = %e, "tearing the pod down");
            }
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

/// Stops one container as the kubelet kills one: when it runs and has a preStop hook, the
/// hook first (within `grace`), then the stop signal with the grace left (at least 2 s), then
/// SIGKILL. A failing hook is reported (`FailedPreStopHook`) and the stop goes on.
async fn stop_container(
    shared: Arc<Shared>,
    pod: Arc<Pod>,
    record: PodRecord,
    name: String,
    grace: Duration,
) {
    let begun = Instant::now();
    let (pods, r, n) = (shared.pods.clone(), record.clone(), name.clone());
    let running = blocking(move || pods.container_status(&r, &n))
        .await
        .ok()
        .filter(|rt| rt.state == RtState::Running);
    let hook = container_spec(&pod, &name).map(|c| Hook::of(c, HookKind::PreStop));
    let mut grace = grace;
    if let (Some(rt), Some(Ok(Some(hook)))) = (running, hook) {
        let target = Target {
            pod_ip: record.ip.unwrap_or(shared.host_ip),
            ports: container_spec(&pod, &name)
                .and_then(|c| c.ports.clone())
                .unwrap_or_default(),
            container_id: rt.id.clone(),
        };
        let exec: Arc<dyn ExecProber> = Arc::new(RuntimeExec(shared.pods.clone()));
        let who = container_label(&pod, &name);
        if let Err(message) = hook.run(&target, &exec, grace, &who).await {
            shared
                .event(&pod, "Warning", "FailedPreStopHook", &message)
                .await;
        }
        grace = grace_after_hook(grace, begun.elapsed());
    }
    let pods = shared.pods.clone();
    if let Err(e) = blocking(move || pods.stop_container(&record, &name, grace)).await {
        tracing::warn!(pod = %pod_label(&pod), error = %e, "stopping a container");
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
