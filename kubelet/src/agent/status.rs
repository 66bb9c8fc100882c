//! A pod's status as the API shows it, computed from what the worker knows about each
//! container (pure, unit-tested): container states and last states with the reasons users
//! know (`Completed`, `Error`, `OOMKilled`, `CrashLoopBackOff`, `ErrImagePull`, …), the
//! phase, the four conditions, and the addresses. Also the restart back-off.

use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, `StartError`.
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
}

impl Terminated {
    /// The reason Kubernetes gives an exit: OOMKilled when the runtime says so, else by code.
    pub fn reason_for(exit_code: i32, runtime_reason: Option<&str>) -> String {
        match (runtime_reason, exit_code) {
            (Some(r), _) if !r.is_empty() => r.to_owned(),
            (_, 0) => "Completed".into(),
            _ => "Error".into(),
        }
    }
}

/// A container's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
    },
    Terminated(Terminated),
}

/// What the worker knows about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: State,
    pub last: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
}

impl Container {
    pub fn new(name: &str, image: &str) -> Container {
        Container {
            name: name.to_owned(),
            image: image.to_owned(),
            image_id: String::new(),
            container_id: None,
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }
}

/// The delay before restart number `restarts + 1` of a container that keeps failing, as the
/// kubelet does it: the first restart at once, then 10 s doubling to 5 minutes.
pub fn backoff(restarts: u32) -> Duration {
    if restarts == 0 {
        return Duration::ZERO;
    }
    let exp = (restarts - 1).min(5);
    Duration::from_secs(10u64 << exp).min(Duration::from_secs(300))
}

/// A container that ran this long before exiting starts its back-off afresh.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn terminated(t: &Terminated, container_id: Option<&String>) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(time),
        finished_at: Some(time(t.finished_at)),
        container_id: container_id.cloned(),
    }
}

fn api_state(c: &Container) -> ContainerState {
    match &c.state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..ContainerState::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(terminated(t, c.container_id.as_ref())),
            ..ContainerState::default()
        },
    }
}

fn container_status(c: &Container) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.clone(),
        state: Some(api_state(c)),
        last_state: Some(c.last.as_ref().map_or_else(ContainerState::default, |t| {
            ContainerState {
                terminated: Some(terminated(t, None)),
                ..ContainerState::default()
            }
        })),
        ready: c.ready,
        restart_count: c.restart_count,
        started: Some(c.started),
        ..ContainerStatus::default()
    }
}

/// Where a pod's init containers stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitStep {
    /// Init container N is the one to run (or runs): every one before it exited 0.
    Run(usize),
    /// All exited 0 (or there are none): the containers may start.
    Done,
    /// One failed and the restart policy is `Never`: the pod has failed.
    Failed,
}

impl Container {
    /// Exited 0: an init container that is done.
    fn completed(&self) -> bool {
        matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }
}

/// The init containers run one at a time, in order, each to exit 0; a failed one is run
/// again (after its back-off) unless the restart policy is `Never`, as in Kubernetes.
pub fn init_step(restart_policy: &str, inits: &[Container]) -> InitStep {
    match inits.iter().position(|c| !c.completed()) {
        None => InitStep::Done,
        Some(i) => match &inits[i].state {
            State::Terminated(_) if restart_policy == "Never" => InitStep::Failed,
            _ => InitStep::Run(i),
        },
    }
}

/// The pod phase from its containers and restart policy.
pub fn phase(restart_policy: &str, containers: &[Container]) -> &'static str {
    let done: Vec<&Terminated> = containers
        .iter()
        .filter_map(|c| match &c.state {
            State::Terminated(t) => Some(t),
            _ => None,
        })
        .collect();
    let never_again = match restart_policy {
        "Never" => true,
        "OnFailure" => done.iter().all(|t| t.exit_code == 0),
        _ => false,
    };
    if !containers.is_empty() && done.len() == containers.len() && never_again {
        return if done.iter().all(|t| t.exit_code == 0) {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    let ever_ran = containers.iter().any(|c| {
        matches!(c.state, State::Running { .. } | State::Terminated(_)) || c.last.is_some()
    });
    if ever_ran { "Running" } else { "Pending" }
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, now: Timestamp) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: if ok { None } else { reason.map(str::to_owned) },
        last_transition_time: Some(time(now)),
        ..PodCondition::default()
    }
}

/// Where the pod is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub pod_ip: Option<IpAddr>,
    pub host_ip: IpAddr,
}

/// The pod's status. `previous` is the status the API has, so condition transition times
/// only move when a condition changes.
pub fn pod_status(
    pod: &Pod,
    inits: &[Container],
    containers: &[Container],
    addresses: Option<Addresses>,
    start_time: Timestamp,
    now: Timestamp,
) -> PodStatus {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let step = init_step(policy, inits);
    let phase = match step {
        InitStep::Done => phase(policy, containers),
        InitStep::Failed => "Failed",
        InitStep::Run(_) => "Pending",
    };
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let not_ready = "ContainersNotReady";
    let mut conditions = vec![
        condition("PodReadyToStartContainers", addresses.is_some(), None, now),
        condition(
            "Initialized",
            step == InitStep::Done,
            Some("ContainersNotInitialized"),
            now,
        ),
        condition("Ready", all_ready, Some(not_ready), now),
        condition("ContainersReady", all_ready, Some(not_ready), now),
        condition("PodScheduled", true, None, now),
    ];
    // Transition times stay as they were while a condition holds.
    let before = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    for c in &mut conditions {
        if let Some(old) = before
            .into_iter()
            .flatten()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let pod_ip = addresses.and_then(|a| {
        if host_network {
            Some(a.host_ip)
        } else {
            a.pod_ip
        }
    });
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: addresses.map(|a| a.host_ip.to_string()),
        host_ips: addresses.map(|a| {
            vec![HostIP {
                ip: a.host_ip.to_string(),
            }]
        }),
        pod_ip: pod_ip.map(|ip| ip.to_string()),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(time(start_time)),
        init_container_statuses: (!inits.is_empty())
            .then(|| inits.iter().map(container_status).collect()),
        container_statuses: Some(containers.iter().map(container_status).collect()),
        qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn exited(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: Terminated::reason_for(code, None),
            message: None,
            started_at: None,
            finished_at: ts("2026-11-23T10:00:00Z"),
        })
    }

    fn with(state: State) -> Container {
        Container {
            state,
            ..Container::new("c", "busybox")
        }
    }

    #[test]
    fn backoff_starts_at_once_then_doubles_from_ten_seconds_to_five_minutes() {
        let delays: Vec<u64> = (0..8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn reasons_follow_the_exit() {
        assert_eq!(Terminated::reason_for(0, None), "Completed");
        assert_eq!(Terminated::reason_for(1, None), "Error");
        assert_eq!(Terminated::reason_for(137, Some("OOMKilled")), "OOMKilled");
    }

    #[test]
    fn phase_follows_containers_and_restart_policy() {
        let waiting = with(State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        });
        assert_eq!(phase("Always", &[waiting]), "Pending");
        let running = with(State::Running {
            started_at: ts("2026-11-23T10:00:00Z"),
        });
        assert_eq!(phase("Always", std::slice::from_ref(&running)), "Running");
        assert_eq!(phase("Never", &[with(exited(0))]), "Succeeded");
        assert_eq!(
            phase("Never", &[with(exited(0)), with(exited(2))]),
            "Failed"
        );
        assert_eq!(phase("OnFailure", &[with(exited(0))]), "Succeeded");
        // OnFailure restarts a failed container: still running.
        assert_eq!(phase("OnFailure", &[with(exited(1))]), "Running");
        assert_eq!(phase("Always", &[with(exited(0))]), "Running");
        assert_eq!(phase("Never", &[with(exited(0)), running]), "Running");
    }

    #[test]
    fn init_containers_run_in_order_and_fail_the_pod_only_under_never() {
        let running = with(State::Running {
            started_at: ts("2026-11-23T10:00:00Z"),
        });
        let waiting = with(State::Waiting {
            reason: "PodInitializing".into(),
            message: None,
        });
        assert_eq!(init_step("Always", &[]), InitStep::Done);
        assert_eq!(
            init_step("Always", &[waiting.clone(), waiting.clone()]),
            InitStep::Run(0)
        );
        assert_eq!(
            init_step("Always", &[with(exited(0)), running.clone()]),
            InitStep::Run(1)
        );
        assert_eq!(
            init_step("Never", &[with(exited(0)), with(exited(0))]),
            InitStep::Done
        );
        // A failed init container runs again unless the policy is Never.
        for policy in ["Always", "OnFailure"] {
            assert_eq!(
                init_step(policy, &[with(exited(0)), with(exited(1)), waiting.clone()]),
                InitStep::Run(1),
                "{policy}"
            );
        }
        assert_eq!(
            init_step("Never", &[with(exited(1)), waiting.clone()]),
            InitStep::Failed
        );
        // A failed one waiting out its back-off is still the one to run.
        let backing_off = Container {
            last: match exited(1) {
                State::Terminated(t) => Some(t),
                _ => None,
            },
            ..with(State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: None,
            })
        };
        assert_eq!(init_step("Always", &[backing_off]), InitStep::Run(0));
    }

    #[test]
    fn status_of_an_initializing_pod() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"restartPolicy": "Never",
                     "initContainers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}],
                     "containers": [{"name": "c", "image": "busybox"}]}
        }))
        .unwrap();
        let now = ts("2026-11-23T10:00:05Z");
        let pending = || {
            with(State::Waiting {
                reason: "PodInitializing".into(),
                message: None,
            })
        };
        let running = with(State::Running { started_at: now });
        let cond = |v: &serde_json::Value, t: &str| {
            v["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .unwrap()["status"]
                .clone()
        };
        let s = pod_status(
            &pod,
            &[with(exited(0)), running],
            &[pending()],
            None,
            now,
            now,
        );
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["phase"], "Pending");
        assert_eq!(cond(&v, "Initialized"), "False");
        assert_eq!(
            v["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        assert!(v["initContainerStatuses"][1]["state"]["running"].is_object());
        assert_eq!(
            v["containerStatuses"][0]["state"]["waiting"]["reason"],
            "PodInitializing"
        );
        let failed = pod_status(
            &pod,
            &[with(exited(2)), pending()],
            &[pending()],
            None,
            now,
            now,
        );
        assert_eq!(failed.phase.as_deref(), Some("Failed"));
        let done = pod_status(
            &pod,
            &[with(exited(0)), with(exited(0))],
            &[with(State::Running { started_at: now })],
            None,
            now,
            now,
        );
        let v = serde_json::to_value(&done).unwrap();
        assert_eq!(v["phase"], "Running");
        assert_eq!(cond(&v, "Initialized"), "True");
    }

    #[test]
    fn status_carries_addresses_conditions_and_container_states() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"conditions": [{"type": "PodScheduled", "status": "True",
                                        "lastTransitionTime": "2026-11-23T09:00:00Z"}]}
        }))
        .unwrap();
        let mut c = with(State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some("back-off 10s restarting failed container".into()),
        });
        c.restart_count = 2;
        c.last = match exited(1) {
            State::Terminated(t) => Some(t),
            _ => None,
        };
        let addresses = Addresses {
            pod_ip: Some("10.244.0.5".parse().unwrap()),
            host_ip: "192.0.2.1".parse().unwrap(),
        };
        let now = ts("2026-11-23T10:00:05Z");
        let s = pod_status(&pod, &[], &[c], Some(addresses), now, now);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["phase"], "Running");
        assert_eq!(v["podIP"], "10.244.0.5");
        assert_eq!(v["hostIP"], "192.0.2.1");
        let cs = &v["containerStatuses"][0];
        assert_eq!(cs["restartCount"], 2);
        assert_eq!(cs["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
        let cond = |t: &str| {
            v["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .unwrap()
                .clone()
        };
        assert_eq!(cond("Ready")["status"], "False");
        assert_eq!(cond("Ready")["reason"], "ContainersNotReady");
        // A condition that did not change keeps its transition time.
        assert_eq!(
            cond("PodScheduled")["lastTransitionTime"],
            "2026-11-23T09:00:00Z"
        );
    }
}
