//! A container's probers as the worker runs them: built from the container's startup,
//! liveness and readiness probes when it starts, dropped (which stops them) when it exits.
//! Each verdict change wakes the worker.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;
use tokio::sync::mpsc;

use crate::local::LocalPods;
use crate::probe::{
    ExecOutput, ExecProber, ProbeKind, ProbeSpec, Prober, Target, Verdict, spawn_prober,
};

/// `exec` probes through the runtime.
pub struct RuntimeExec(pub Arc<LocalPods>);

impl ExecProber for RuntimeExec {
    fn exec(
        &self,
        container_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, String> {
        self.0
            .exec_capture(container_id, argv, timeout, 10 * 1024)
            .map(|(exit_code, output)| ExecOutput { exit_code, output })
            .map_err(|e| e.to_string())
    }
}

/// The running probers of one container instance.
#[derive(Default)]
pub struct ContainerProbers {
    startup: Option<Prober>,
    liveness: Option<Prober>,
    readiness: Option<Prober>,
}

/// What the probers say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// The startup probe has succeeded (or there is none).
    pub started: bool,
    /// Ready for traffic: started, and the readiness probe (if any) succeeds.
    pub ready: bool,
    /// Liveness or startup failed: the container must be restarted.
    pub failed: Option<ProbeKind>,
}

impl ContainerProbers {
    /// Starts the container's probers; each verdict change sends `(slot, generation)`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        container: &Container,
        pod_ip: IpAddr,
        container_id: &str,
        exec: Arc<dyn ExecProber>,
        started_at: Instant,
        notify: &mpsc::Sender<(usize, u64)>,
        slot: usize,
        generation: u64,
    ) -> Result<ContainerProbers, String> {
        let target = Target {
            pod_ip,
            ports: container.ports.clone().unwrap_or_default(),
            container_id: container_id.to_owned(),
        };
        let spec = |kind, probe: &Option<k8s_openapi::api::core::v1::Probe>| {
            probe
                .as_ref()
                .map(|p| ProbeSpec::new(kind, p).map_err(|e| e.to_string()))
                .transpose()
        };
        let startup = spec(ProbeKind::Startup, &container.startup_probe)?;
        let liveness = spec(ProbeKind::Liveness, &container.liveness_probe)?;
        let readiness = spec(ProbeKind::Readiness, &container.readiness_probe)?;
        let mut out = ContainerProbers::default();
        let watch = |prober: &Prober| {
            let mut rx = prober.subscribe();
            let notify = notify.clone();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    if notify.send((slot, generation)).await.is_err() {
                        return;
                    }
                }
            });
        };
        if let Some(spec) = startup {
            let p = spawn_prober(spec, target.clone(), exec.clone(), started_at, None);
            watch(&p);
            out.startup = Some(p);
        }
        let gate = || out.startup.as_ref().and_then(Prober::startup_gate);
        if let Some(spec) = liveness {
            let p = spawn_prober(spec, target.clone(), exec.clone(), started_at, gate());
            watch(&p);
            out.liveness = Some(p);
        }
        if let Some(spec) = readiness {
            let p = spawn_prober(spec, target, exec, started_at, gate());
            watch(&p);
            out.readiness = Some(p);
        }
        Ok(out)
    }

    pub fn health(&self) -> Health {
        let verdict = |p: &Option<Prober>| p.as_ref().map(Prober::verdict);
        let started = !matches!(
            verdict(&self.startup),
            Some(Verdict::Pending | Verdict::Failure)
        );
        let failed = match (verdict(&self.startup), verdict(&self.liveness)) {
            (Some(Verdict::Failure), _) => Some(ProbeKind::Startup),
            (_, Some(Verdict::Failure)) if started => Some(ProbeKind::Liveness),
            _ => None,
        };
        let ready = started
            && !matches!(
                verdict(&self.readiness),
                Some(Verdict::Pending | Verdict::Failure)
            );
        Health {
            started,
            ready,
            failed,
        }
    }

    /// The last failure message of the probe that failed.
    pub fn failure_message(&self, kind: ProbeKind) -> String {
        let p = match kind {
            ProbeKind::Startup => &self.startup,
            ProbeKind::Liveness => &self.liveness,
            ProbeKind::Readiness => &self.readiness,
        };
        p.as_ref()
            .and_then(|p| p.status().stats.last_failure)
            .unwrap_or_default()
    }
}
