//! The node's end of `kubectl logs`, `exec`, `attach` and `port-forward` (the `Streams`
//! service of `proto/stream.proto`). `client.rs` keeps the `Offers` call open and answers
//! each offer by dialling `Open`; [`serve`] then does the work of one session over a pair of
//! frame streams — which is also how tests drive it, in process, without a control plane.
//!
//! A session belongs to one pod this node runs (checked by namespace, name and uid against
//! the pods the agent has been given) and ends when its work ends (`exit` is the last frame)
//! or when the control plane ends the call (the user went away): then everything of it is
//! dropped — the exec'd process is killed and reaped, sockets and fds closed. [`live_sessions`]
//! counts the sessions in progress, so a test can check nothing stays behind.

pub mod attach;
pub mod client;
pub mod exec;
pub mod frames;
pub mod logs;
pub mod portforward;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use futures::Stream;
use k8s_openapi::api::core::v1::Pod;
use skiff_api::node::offer::Kind;
use skiff_api::node::{Offer, StreamFrame};
use skiff_runtime::container::State;
use tokio::sync::mpsc;

use crate::local::{ContainerRecord, LocalError, LocalPods, PodRecord};
use frames::{End, Gone, Inbound, Outbound};
pub use logs::follow::Exited;

/// The pods this node runs, by uid, as the control plane last described them (the agent
/// keeps it current from its pod watch).
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: RwLock<HashMap<String, Arc<Pod>>>,
}

impl PodIndex {
    pub fn insert(&self, pod: Arc<Pod>) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Ok(mut pods) = self.pods.write() {
            pods.insert(uid, pod);
        }
    }

    pub fn remove(&self, uid: &str) {
        if let Ok(mut pods) = self.pods.write() {
            pods.remove(uid);
        }
    }

    pub fn get(&self, uid: &str) -> Option<Arc<Pod>> {
        self.pods.read().ok()?.get(uid).cloned()
    }
}

/// What every session needs.
#[derive(Debug, Clone)]
pub struct StreamContext {
    pub pods: Arc<LocalPods>,
    pub index: Arc<PodIndex>,
}

/// The pod a session is for, checked.
#[derive(Debug, Clone)]
pub struct PodTarget {
    pub pods: Arc<LocalPods>,
    pub pod: Arc<Pod>,
    /// `metadata.name`, for messages.
    pub name: String,
    pub uid: String,
    /// The node's record of it (its name on the node is the uid).
    pub record: PodRecord,
}

/// A container of the pod.
#[derive(Debug, Clone)]
pub struct Target {
    pub pod: PodTarget,
    pub container: ContainerRecord,
}

impl Target {
    /// The container's Kubernetes spec (stdin, stdinOnce, tty).
    pub fn spec(&self) -> Option<&k8s_openapi::api::core::v1::Container> {
        self.pod
            .pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .find(|c| c.name == self.container.name)
    }
}

static LIVE_SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// Sessions in progress in this process.
pub fn live_sessions() -> usize {
    LIVE_SESSIONS.load(Ordering::SeqCst)
}

/// Counts a session for as long as it lives.
struct Live;

impl Live {
    fn new() -> Live {
        LIVE_SESSIONS.fetch_add(1, Ordering::SeqCst);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE_SESSIONS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one offer: `frames` are the control plane's frames after the node's `open`,
/// `outbound` takes the node's. Returns when the session is over and all of it is gone.
pub async fn serve<S>(
    ctx: &StreamContext,
    offer: Offer,
    frames: S,
    outbound: mpsc::Sender<StreamFrame>,
) where
    S: Stream<Item = StreamFrame> + Unpin,
{
    let _live = Live::new();
    let out = Outbound::new(outbound);
    let mut inbound = Inbound::new(frames);
    let end = match run(ctx, &offer, &mut inbound, &out).await {
        Ok(end) => end,
        Err(Gone) => return,
    };
    if let End::Error(error) = &end {
        tracing::debug!(offer = %offer.id, %error, "stream ended with an error");
    }
    let _ = out.exit(end).await;
}

async fn run<S>(
    ctx: &StreamContext,
    offer: &Offer,
    inbound: &mut Inbound<S>,
    out: &Outbound,
) -> Result<End, Gone>
where
    S: Stream<Item = StreamFrame> + Unpin,
{
    let pod = match resolve_pod(ctx, offer).await {
        Ok(pod) => pod,
        Err(error) => return Ok(End::Error(error)),
    };
    let container = |name: &str| resolve_container(&pod, name);
    match &offer.kind {
        Some(Kind::Logs(l)) => match container(&l.container) {
            Ok(target) => logs::serve(&target, l, inbound, out).await,
            Err(e) => Ok(End::Error(e)),
        },
        Some(Kind::Exec(e)) => match container(&e.container) {
            Ok(target) => exec::serve(&target, e, inbound, out).await,
            Err(e) => Ok(End::Error(e)),
        },
        Some(Kind::Attach(a)) => match container(&a.container) {
            Ok(target) => attach::serve(&target, a, inbound, out).await,
            Err(e) => Ok(End::Error(e)),
        },
        Some(Kind::PortForward(p)) => portforward::serve(&pod, p, inbound, out).await,
        None => Ok(End::Error("the offer asks for nothing".into())),
    }
}

/// The offer's pod, if this node runs it: same uid, namespace and name as the pod the
/// control plane gave this node, and a record of it on disk.
async fn resolve_pod(ctx: &StreamContext, offer: &Offer) -> Result<PodTarget, String> {
    let Some(wanted) = &offer.pod else {
        return Err("the offer names no pod".into());
    };
    let not_here = || {
        format!(
            "pod {}/{} (uid {}) does not run on this node",
            wanted.namespace, wanted.name, wanted.uid
        )
    };
    let pod = ctx.index.get(&wanted.uid).ok_or_else(not_here)?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    if namespace != wanted.namespace || pod.metadata.name.as_deref() != Some(wanted.name.as_str()) {
        return Err(not_here());
    }
    let (pods, uid) = (ctx.pods.clone(), wanted.uid.clone());
    let record = tokio::task::spawn_blocking(move || pods.record(&uid))
        .await
        .map_err(|e| e.to_string())?;
    let record = match record {
        Ok(record) => record,
        Err(LocalError::NotFound(_)) => {
            return Err(format!(
                "pod {:?} is not running yet: its sandbox is being made",
                wanted.name
            ));
        }
        Err(e) => return Err(e.to_string()),
    };
    Ok(PodTarget {
        pods: ctx.pods.clone(),
        pod,
        name: wanted.name.clone(),
        uid: wanted.uid.clone(),
        record,
    })
}

/// The named container of the pod (its only one when no name is given), with the API
/// server's wording when that fails.
fn resolve_container(pod: &PodTarget, name: &str) -> Result<Target, String> {
    let all = &pod.record.containers;
    let found = match (name, all.as_slice()) {
        ("", [only]) => Some(only),
        ("", _) => {
            let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "a container name must be specified for pod {}, choose one of: [{}]",
                pod.name,
                names.join(" ")
            ));
        }
        (name, all) => all.iter().find(|c| c.name == name),
    };
    let container = found
        .cloned()
        .ok_or_else(|| format!("container {name} is not valid for pod {}", pod.name))?;
    Ok(Target {
        pod: pod.clone(),
        container,
    })
}

/// The host PID of the container's init while the container runs.
async fn running_pid(target: &Target) -> Option<i32> {
    let (pods, record, name) = (
        target.pod.pods.clone(),
        target.pod.record.clone(),
        target.container.name.clone(),
    );
    let status = tokio::task::spawn_blocking(move || pods.container_status(&record, &name))
        .await
        .ok()?
        .ok()?;
    match status.state {
        State::Running => status.pid,
        _ => None,
    }
}

/// Resolves when process `pid` has ended (a pidfd becoming readable: no polling); at once
/// if it is gone already.
pub fn process_exit(pid: i32) -> Exited {
    Box::pin(async move {
        let Some(pid) = rustix::process::Pid::from_raw(pid) else {
            return;
        };
        let Ok(fd) = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK) else {
            return;
        };
        if let Ok(fd) = skiff_runtime::fdio::register(fd) {
            let _ = fd.readable().await;
        }
    })
}
