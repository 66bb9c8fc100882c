//! The prober task: one per container probe, owned by the pod worker. It runs the probe on
//! tokio after the initial delay and every period, feeds [`ProbeState`], and publishes the
//! verdict on a watch channel. Liveness and readiness probers can be made to wait for the
//! container's startup prober ([`StartupGate`]).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{ProbeKind, ProbeSpec};
use super::run::{ExecProber, Target, run_probe};
use super::state::{ProbeState, ProbeStats, Verdict};

/// What a prober publishes: its verdict, and counts of results (for events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeStatus {
    /// The current verdict.
    pub verdict: Verdict,
    /// Results so far, with the latest failure's message.
    pub stats: ProbeStats,
}

/// Holds a liveness or readiness prober until the container's startup probe has succeeded.
#[derive(Clone, Debug)]
pub struct StartupGate(watch::Receiver<ProbeStatus>);

impl StartupGate {
    /// Whether the startup probe has succeeded.
    pub fn is_open(&self) -> bool {
        self.0.borrow().verdict == Verdict::Success
    }

    /// Returns once the startup probe has succeeded; never, if it failed or was stopped before.
    async fn wait(&mut self) {
        if self
            .0
            .wait_for(|s| s.verdict == Verdict::Success)
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }
}

/// A running probe. Dropping it (or [`stop`](Self::stop)) ends the task.
#[derive(Debug)]
pub struct Prober {
    kind: ProbeKind,
    status: watch::Receiver<ProbeStatus>,
    task: JoinHandle<()>,
}

/// Starts probing a container that started at `started_at`: first after the probe's initial
/// delay, then every period, until the probe is done (startup succeeded, or liveness/startup
/// failed). With a `gate`, runs wait until that startup probe has succeeded (the initial delay
/// still counts from container start, as in the kubelet). Must be called within a tokio
/// runtime.
pub fn spawn_prober(
    spec: ProbeSpec,
    target: Target,
    exec: Arc<dyn ExecProber>,
    started_at: Instant,
    gate: Option<StartupGate>,
) -> Prober {
    let state = ProbeState::new(spec.kind, spec.timing);
    let (tx, status) = watch::channel(ProbeStatus {
        verdict: state.verdict(),
        stats: state.stats().clone(),
    });
    let kind = spec.kind;
    let started = tokio::time::Instant::from_std(started_at);
    let task = tokio::spawn(probe_loop(state, spec, target, exec, started, gate, tx));
    Prober { kind, status, task }
}

async fn probe_loop(
    mut state: ProbeState,
    spec: ProbeSpec,
    target: Target,
    exec: Arc<dyn ExecProber>,
    started: tokio::time::Instant,
    mut gate: Option<StartupGate>,
    tx: watch::Sender<ProbeStatus>,
) {
    while let Some(due) = state.next_due() {
        tokio::time::sleep_until(started + due).await;
        if let Some(gate) = &mut gate {
            gate.wait().await;
        }
        let at = started.elapsed();
        let result = run_probe(&spec, &target, &exec).await;
        let changed = state.record(at, &result).is_some();
        tx.send_if_modified(|status| {
            status.verdict = state.verdict();
            status.stats = state.stats().clone();
            changed
        });
    }
}

impl Prober {
    /// Which probe this is.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// The current verdict.
    pub fn verdict(&self) -> Verdict {
        self.status.borrow().verdict
    }

    /// The verdict and counts of results.
    pub fn status(&self) -> ProbeStatus {
        self.status.borrow().clone()
    }

    /// Waits until the verdict changes and returns it; `None`: the probe is done (or stopped)
    /// and its verdict will not change again.
    pub async fn changed(&mut self) -> Option<Verdict> {
        self.status.changed().await.ok()?;
        Some(self.status.borrow_and_update().verdict)
    }

    /// A receiver of the status, for a worker that selects over several probers.
    pub fn subscribe(&self) -> watch::Receiver<ProbeStatus> {
        self.status.clone()
    }

    /// For a startup prober: the gate its container's liveness and readiness probers wait on.
    pub fn startup_gate(&self) -> Option<StartupGate> {
        (self.kind == ProbeKind::Startup).then(|| StartupGate(self.status.clone()))
    }

    /// Whether the task has ended (the probe is done, or it was stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops probing.
    pub fn stop(self) {
        // Drop aborts the task.
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    //! With tokio's paused clock: the probers run on Kubernetes' real timings (seconds) and
    //! the tests take no wall time; exec probes answered by a script need no network.

    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::probe::config::{Handler, ProbeTiming};
    use crate::probe::run::ExecOutput;

    const S: Duration = Duration::from_secs(1);

    /// Answers with the scripted exit codes in turn, then `then`; counts calls.
    struct Script {
        codes: Mutex<VecDeque<i32>>,
        then: i32,
        calls: AtomicUsize,
    }

    impl Script {
        fn new(codes: &[i32], then: i32) -> Arc<Script> {
            Arc::new(Script {
                codes: Mutex::new(codes.iter().copied().collect()),
                then,
                calls: AtomicUsize::new(0),
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl ExecProber for Script {
        fn exec(&self, _: &str, _: &[String], _: Duration) -> Result<ExecOutput, String> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let code = match self.codes.lock() {
                Ok(mut codes) => codes.pop_front().unwrap_or(self.then),
                Err(_) => return Err("poisoned".into()),
            };
            Ok(ExecOutput {
                exit_code: code,
                output: format!("run {n} exited {code}").into_bytes(),
            })
        }
    }

    fn spec(kind: ProbeKind, success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            kind,
            timing: ProbeTiming {
                initial_delay: 5 * S,
                period: 10 * S,
                timeout: S,
                success_threshold: success,
                failure_threshold: failure,
            },
            handler: Handler::Exec(vec!["check".into()]),
        }
    }

    fn target() -> Target {
        Target {
            pod_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            ports: vec![],
            container_id: "c1".into(),
        }
    }

    fn spawn(spec: ProbeSpec, script: &Arc<Script>, gate: Option<StartupGate>) -> Prober {
        let exec: Arc<dyn ExecProber> = script.clone();
        spawn_prober(spec, target(), exec, Instant::now(), gate)
    }

    /// Lets the paused clock run to `t` after `start`, probes included.
    async fn until(start: tokio::time::Instant, t: Duration) {
        tokio::time::sleep_until(start + t).await;
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_turns_ready_then_not_ready_and_counts() {
        let script = Script::new(&[1, 0, 1, 1], 0);
        let mut p = spawn(spec(ProbeKind::Readiness, 1, 2), &script, None);
        assert_eq!(p.verdict(), Verdict::Failure);
        assert_eq!(p.changed().await, Some(Verdict::Success));
        assert_eq!(script.calls(), 2, "failed once, then succeeded");
        assert_eq!(p.changed().await, Some(Verdict::Failure));
        assert_eq!(p.changed().await, Some(Verdict::Success));
        let status = p.status();
        assert_eq!((status.stats.successes, status.stats.failures), (2, 3));
        assert_eq!(
            status.stats.last_failure.as_deref(),
            Some("command \"check\" exited with 1: run 3 exited 1")
        );
        assert!(!p.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn waits_the_initial_delay_then_runs_every_period() {
        let start = tokio::time::Instant::now();
        let script = Script::new(&[], 0);
        let _p = spawn(spec(ProbeKind::Readiness, 1, 3), &script, None);
        until(start, 4 * S).await;
        assert_eq!(script.calls(), 0);
        until(start, 6 * S).await;
        assert_eq!(script.calls(), 1);
        until(start, 16 * S).await;
        assert_eq!(script.calls(), 2);
        until(start, 46 * S).await;
        assert_eq!(script.calls(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_fails_after_threshold_and_stops() {
        let start = tokio::time::Instant::now();
        let script = Script::new(&[], 1);
        let mut p = spawn(spec(ProbeKind::Liveness, 1, 3), &script, None);
        assert_eq!(p.verdict(), Verdict::Success);
        assert_eq!(p.changed().await, Some(Verdict::Failure));
        assert_eq!(p.changed().await, None, "done: no more changes");
        until(start, 300 * S).await;
        assert_eq!(script.calls(), 3);
        assert!(p.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_and_readiness_wait_for_startup() {
        let start = tokio::time::Instant::now();
        let startup_script = Script::new(&[1, 1], 0);
        let mut startup = spawn(spec(ProbeKind::Startup, 1, 10), &startup_script, None);
        let gate = startup.startup_gate();
        assert!(gate.as_ref().is_some_and(|g| !g.is_open()));
        let live_script = Script::new(&[], 0);
        let ready_script = Script::new(&[], 0);
        let _live = spawn(spec(ProbeKind::Liveness, 1, 3), &live_script, gate.clone());
        let mut ready = spawn(
            spec(ProbeKind::Readiness, 1, 3),
            &ready_script,
            gate.clone(),
        );
        until(start, 20 * S).await;
        assert_eq!(startup.verdict(), Verdict::Pending);
        assert_eq!((live_script.calls(), ready_script.calls()), (0, 0));
        assert_eq!(startup.changed().await, Some(Verdict::Success));
        assert!(gate.is_some_and(|g| g.is_open()));
        assert_eq!(ready.changed().await, Some(Verdict::Success));
        until(start, 100 * S).await;
        assert_eq!(startup_script.calls(), 3, "startup stops once it succeeded");
        assert!(startup.is_finished());
        assert!(live_script.calls() >= 7, "{}", live_script.calls());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_prober_stops_it() {
        let start = tokio::time::Instant::now();
        let script = Script::new(&[], 0);
        let p = spawn(spec(ProbeKind::Readiness, 1, 3), &script, None);
        until(start, 6 * S).await;
        assert_eq!(script.calls(), 1);
        p.stop();
        until(start, 100 * S).await;
        assert_eq!(script.calls(), 1);
    }

    #[test]
    fn only_startup_probers_give_a_gate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let script = Script::new(&[], 0);
            let p = spawn(spec(ProbeKind::Liveness, 1, 3), &script, None);
            assert!(p.startup_gate().is_none());
            assert_eq!(p.kind(), ProbeKind::Liveness);
        });
    }
}
