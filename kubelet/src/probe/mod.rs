//! Container probes (liveness, readiness, startup), as the kubelet's per-pod worker uses
//! them: `config` turns a container's `Probe` into a validated [`ProbeSpec`]; `state` is the
//! pure state machine from results to a [`Verdict`]; `run` runs a probe once against a
//! container ([`run_probe`]); `prober` is the task that runs it on schedule and publishes the
//! verdict ([`spawn_prober`]).

mod config;
mod prober;
mod run;
mod state;

pub use config::{
    Grpc, Handler, HttpGet, PortRef, ProbeConfigError, ProbeKind, ProbeSpec, ProbeTiming, Scheme,
    TcpSocket,
};
pub use prober::{ProbeStatus, Prober, StartupGate, spawn_prober};
pub use run::{ExecOutput, ExecProber, Target, run_probe};
pub use state::{ProbeResult, ProbeState, ProbeStats, Verdict};
