//! Container probes (liveness, readiness, startup), as the kubelet's per-pod worker uses
//! them: `config` turns a container's `Probe` into a validated [`ProbeSpec`]; `state` is the
//! pure state machine from results to a [`Verdict`].

mod config;
mod state;

pub use config::{
    Grpc, Handler, HttpGet, PortRef, ProbeConfigError, ProbeKind, ProbeSpec, ProbeTiming, Scheme,
    TcpSocket,
};
pub use state::{ProbeResult, ProbeState, ProbeStats, Verdict};
