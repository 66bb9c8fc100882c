//! Lifecycle hooks: a container's `postStart` (run right after it starts; the container
//! shows Running only when it has succeeded, and a failure kills it) and `preStop` (run
//! before the stop signal, within the grace period). A hook is checked into a [`Hook`] once
//! (pure, unit-tested) and run with the probes' executors: `exec` in the container,
//! `httpGet` against the pod, `sleep` in the kubelet.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};

use crate::probe::{
    ExecProber, Handler, ProbeKind, ProbeResult, ProbeSpec, ProbeTiming, Target, run_probe,
};

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    PostStart,
    PreStop,
}

impl HookKind {
    fn field(self) -> &'static str {
        match self {
            HookKind::PostStart => "postStart",
            HookKind::PreStop => "preStop",
        }
    }
}

/// A checked hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// `exec` or `httpGet`, run as a probe's handler is.
    Handler(Handler),
    /// `sleep.seconds`.
    Sleep(Duration),
}

impl Hook {
    /// The container's hook of `kind`, if it has one; `Err` says what is wrong with it.
    pub fn of(container: &Container, kind: HookKind) -> Result<Option<Hook>, String> {
        let lifecycle = container.lifecycle.as_ref();
        let handler = match kind {
            HookKind::PostStart => lifecycle.and_then(|l| l.post_start.as_ref()),
            HookKind::PreStop => lifecycle.and_then(|l| l.pre_stop.as_ref()),
        };
        handler.map(|h| Hook::new(kind, h)).transpose()
    }

    fn new(kind: HookKind, h: &LifecycleHandler) -> Result<Hook, String> {
        let field = format!("lifecycle.{}", kind.field());
        if let Some(sleep) = &h.sleep {
            let secs = u64::try_from(sleep.seconds)
                .map_err(|_| format!("{field}.sleep.seconds: must not be negative"))?;
            return Ok(Hook::Sleep(Duration::from_secs(secs)));
        }
        if h.tcp_socket.is_some() && h.exec.is_none() && h.http_get.is_none() {
            // Deprecated and never run by Kubernetes either.
            return Err(format!(
                "{field}.tcpSocket: not supported as a lifecycle hook"
            ));
        }
        // Exactly the probe handlers' rules: one of exec / httpGet, checked the same way.
        let probe = Probe {
            exec: h.exec.clone(),
            http_get: h.http_get.clone(),
            ..Probe::default()
        };
        ProbeSpec::new(ProbeKind::Liveness, &probe)
            .map(|spec| Hook::Handler(spec.handler))
            .map_err(|e| e.to_string().replacen("livenessProbe", &field, 1))
    }

    /// What the hook does, as the kubelet's messages name it.
    fn describe(&self) -> String {
        match self {
            Hook::Handler(Handler::Exec(argv)) => format!("Exec lifecycle hook ({argv:?})"),
            Hook::Handler(Handler::HttpGet(get)) => {
                format!("HTTP lifecycle hook ({})", get.path)
            }
            Hook::Handler(_) => "lifecycle hook".into(),
            Hook::Sleep(d) => format!("Sleep lifecycle hook ({}s)", d.as_secs()),
        }
    }

    /// Runs the hook against `target` for at most `timeout`. `Err` is the message of the
    /// `FailedPostStartHook` / `FailedPreStopHook` event (`who` names container and pod).
    pub async fn run(
        &self,
        target: &Target,
        exec: &Arc<dyn ExecProber>,
        timeout: Duration,
        who: &str,
    ) -> Result<(), String> {
        let result = match self {
            Hook::Sleep(d) => {
                tokio::time::sleep((*d).min(timeout)).await;
                ProbeResult::Success
            }
            Hook::Handler(handler) => {
                let spec = ProbeSpec {
                    kind: ProbeKind::Liveness,
                    timing: ProbeTiming {
                        timeout,
                        ..ProbeTiming::default()
                    },
                    handler: handler.clone(),
                };
                run_probe(&spec, target, exec).await
            }
        };
        outcome(&self.describe(), who, result)
    }
}

/// A hook's result as the kubelet reports it.
fn outcome(what: &str, who: &str, result: ProbeResult) -> Result<(), String> {
    match result {
        ProbeResult::Success => Ok(()),
        ProbeResult::Failure(message) => Err(format!("{what} for {who} failed - error: {message}")),
    }
}

/// The grace left for the stop signal after a preStop hook took `spent` of `grace`: at least
/// two seconds, as the kubelet gives (`minimumGracePeriodInSeconds`).
pub fn grace_after_hook(grace: Duration, spent: Duration) -> Duration {
    grace.saturating_sub(spent).max(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(lifecycle: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "c", "lifecycle": lifecycle})).unwrap()
    }

    #[test]
    fn hooks_are_checked_into_actions() {
        let c = container(json!({
            "postStart": {"exec": {"command": ["sh", "-c", "echo hi"]}},
            "preStop": {"httpGet": {"path": "/quit", "port": 8080}}
        }));
        assert_eq!(
            Hook::of(&c, HookKind::PostStart).unwrap(),
            Some(Hook::Handler(Handler::Exec(vec![
                "sh".into(),
                "-c".into(),
                "echo hi".into()
            ])))
        );
        let Some(Hook::Handler(Handler::HttpGet(get))) = Hook::of(&c, HookKind::PreStop).unwrap()
        else {
            panic!("an httpGet preStop")
        };
        assert_eq!(get.path, "/quit");
        let sleep = container(json!({"preStop": {"sleep": {"seconds": 3}}}));
        assert_eq!(
            Hook::of(&sleep, HookKind::PreStop).unwrap(),
            Some(Hook::Sleep(Duration::from_secs(3)))
        );
        assert_eq!(Hook::of(&sleep, HookKind::PostStart).unwrap(), None);
        assert_eq!(
            Hook::of(&container(json!(null)), HookKind::PreStop).unwrap(),
            None
        );
    }

    #[test]
    fn bad_hooks_name_their_field() {
        let cases = [
            (
                json!({"postStart": {}}),
                "lifecycle.postStart: must specify a handler type",
            ),
            (
                json!({"postStart": {"exec": {"command": []}}}),
                "lifecycle.postStart.exec.command: must not be empty",
            ),
            (
                json!({"preStop": {"tcpSocket": {"port": 80}}}),
                "lifecycle.preStop.tcpSocket: not supported as a lifecycle hook",
            ),
            (
                json!({"preStop": {"sleep": {"seconds": -1}}}),
                "lifecycle.preStop.sleep.seconds: must not be negative",
            ),
        ];
        for (lifecycle, want) in cases {
            let kind = if lifecycle.get("postStart").is_some() {
                HookKind::PostStart
            } else {
                HookKind::PreStop
            };
            let err = Hook::of(&container(lifecycle), kind).unwrap_err();
            assert!(err.starts_with(want), "{err} starts with {want}");
        }
    }

    #[test]
    fn outcomes_read_as_the_kubelets_events() {
        let who = "Container \"c\" in Pod \"p_default(u1)\"";
        assert_eq!(
            outcome(
                "Exec lifecycle hook ([\"false\"])",
                who,
                ProbeResult::Success
            ),
            Ok(())
        );
        assert_eq!(
            outcome(
                "Exec lifecycle hook ([\"false\"])",
                who,
                ProbeResult::Failure("command \"false\" exited with 1".into())
            ),
            Err(
                "Exec lifecycle hook ([\"false\"]) for Container \"c\" in Pod \"p_default(u1)\" \
                 failed - error: command \"false\" exited with 1"
                    .into()
            )
        );
    }

    #[test]
    fn the_stop_signal_keeps_at_least_two_seconds_after_a_hook() {
        let s = Duration::from_secs;
        assert_eq!(grace_after_hook(s(30), s(10)), s(20));
        assert_eq!(grace_after_hook(s(5), s(4)), s(2));
        assert_eq!(grace_after_hook(s(5), s(60)), s(2));
    }

    #[tokio::test]
    async fn a_sleep_hook_runs_within_its_timeout() {
        struct NoExec;
        impl ExecProber for NoExec {
            fn exec(
                &self,
                _: &str,
                _: &[String],
                _: Duration,
            ) -> Result<crate::probe::ExecOutput, String> {
                Err("no container".into())
            }
        }
        let target = Target {
            pod_ip: "127.0.0.1".parse().unwrap(),
            ports: vec![],
            container_id: "p.c".into(),
        };
        let exec: Arc<dyn ExecProber> = Arc::new(NoExec);
        tokio::time::pause();
        let hook = Hook::Sleep(Duration::from_secs(3600));
        let run = hook.run(&target, &exec, Duration::from_secs(1), "c");
        assert_eq!(run.await, Ok(()));
        let failing = Hook::Handler(Handler::Exec(vec!["true".into()]));
        let err = failing
            .run(&target, &exec, Duration::from_secs(1), "Container \"c\"")
            .await
            .unwrap_err();
        assert!(err.contains("could not run: no container"), "{err}");
    }
}
