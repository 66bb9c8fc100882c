//! `tcpSocket` probes: a TCP connect that completes is a success; the connection is closed
//! at once.

use tokio::net::TcpStream;

use super::io_error;
use crate::probe::state::ProbeResult;

/// Connects to `addr` (`host:port`), resolving a host name if it is one.
pub(super) async fn connect(addr: &str) -> ProbeResult {
    match TcpStream::connect(addr).await {
        Ok(_) => ProbeResult::Success,
        Err(e) => ProbeResult::Failure(format!("dial tcp {addr}: {}", io_error("connect", &e))),
    }
}
