//! Container probes (liveness, readiness, startup), as the kubelet's per-pod worker uses
//! them: `config` turns a container's `Probe` into a validated [`ProbeSpec`]; `state` is the
//! pure state machine from results to a [`Verdict`]; `run` runs a probe once against a
//! container ([`run_probe`]).

mod config;
mod run;
mod state;

pub use config::{
    Grpc, Handler, HttpGet, PortRef, ProbeConfigError, ProbeKind, ProbeSpec, ProbeTiming, Scheme,
    TcpSocket,
};
pub use run::{ExecOutput, ExecProber, Target, run_probe};
pub use state::{ProbeResult, ProbeState, ProbeStats, Verdict};
