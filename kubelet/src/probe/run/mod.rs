//! Running one probe once: [`run_probe`] resolves the handler's address against the
//! container ([`Target`]), runs it within `timeoutSeconds`, and words the result as the kubelet
//! does. One module per handler.

mod command;
mod grpc;
mod http;
mod tcp;
mod tls;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ContainerPort;

pub use command::{ExecOutput, ExecProber};

use super::config::{Handler, PortRef, ProbeSpec};
use super::state::ProbeResult;

/// The container a probe runs against.
#[derive(Clone, Debug)]
pub struct Target {
    /// The pod's IP: the host of `httpGet`/`tcpSocket` without `host`, and of `grpc`.
    pub pod_ip: IpAddr,
    /// The container's `ports`, to resolve named probe ports.
    pub ports: Vec<ContainerPort>,
    /// The runtime's container ID, for `exec` probes.
    pub container_id: String,
}

impl Target {
    /// The number of a probe's port: itself, or the `containerPort` of the TCP port so named.
    fn port(&self, port: &PortRef) -> Result<u16, String> {
        match port {
            PortRef::Number(n) => Ok(*n),
            PortRef::Name(name) => self
                .ports
                .iter()
                .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("port {name} not found")),
        }
    }

    /// `host`, or the pod IP.
    fn host(&self, host: Option<&str>) -> String {
        host.map_or_else(|| self.pod_ip.to_string(), str::to_string)
    }
}

/// `host:port`, with an IPv6 literal in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Runs `spec`'s handler once against `target`, within its timeout. Never panics on what the
/// container answers; every problem is a [`ProbeResult::Failure`] with a message.
pub async fn run_probe(
    spec: &ProbeSpec,
    target: &Target,
    exec: &Arc<dyn ExecProber>,
) -> ProbeResult {
    let timeout = spec.timing.timeout;
    match &spec.handler {
        Handler::HttpGet(get) => match http::Request::new(get, target) {
            Ok(req) => within(timeout, req.describe(), http::get(&req)).await,
            Err(msg) => ProbeResult::Failure(msg),
        },
        Handler::TcpSocket(tcp) => match target.port(&tcp.port) {
            Ok(port) => {
                let addr = host_port(&target.host(tcp.host.as_deref()), port);
                within(timeout, format!("dial tcp {addr}"), tcp::connect(&addr)).await
            }
            Err(msg) => ProbeResult::Failure(msg),
        },
        Handler::Grpc(g) => {
            let addr = host_port(&target.pod_ip.to_string(), g.port);
            let what = format!("health rpc to {addr}");
            within(timeout, what, grpc::check(&addr, &g.service)).await
        }
        Handler::Exec(argv) => {
            let what = format!("command {:?}", argv.join(" "));
            let run = command::run(exec, &target.container_id, argv, timeout);
            within(timeout, what, run).await
        }
    }
}

/// `probe`, or a failure `timeout: … did not finish within …` when it takes longer.
async fn within(
    timeout: Duration,
    what: String,
    probe: impl Future<Output = ProbeResult>,
) -> ProbeResult {
    match tokio::time::timeout(timeout, probe).await {
        Ok(result) => result,
        Err(_) => {
            ProbeResult::Failure(format!("timeout: {what} did not finish within {timeout:?}"))
        }
    }
}

/// An error and its sources, `a: b: c`, as Go prints wrapped errors.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = e.source();
    }
    out
}

/// An I/O error worded like Go's net package where the kubelet's messages show it.
fn io_error(op: &str, err: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let what = match err.kind() {
        K::ConnectionRefused => "connection refused".to_string(),
        K::ConnectionReset => "connection reset by peer".to_string(),
        K::HostUnreachable => "no route to host".to_string(),
        K::NetworkUnreachable => "network is unreachable".to_string(),
        _ => chain(err),
    };
    format!("{op}: {what}")
}
