//! The cluster DNS address on the node itself (as NodeLocal DNSCache does): a dummy
//! interface in the node's network namespace carries it, so the proxy binds UDP and TCP 53
//! there and pods reach it through their default route to the bridge. A kernel built
//! without the dummy driver gets the address on `lo` instead (a local address answers on
//! any interface alike). Through the runtime's in-process rtnetlink (`skiff_runtime::net`),
//! no `ip` processes.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use skiff_runtime::net::{NetError, NetHandle};

/// The interface that holds the node-local addresses.
pub const INTERFACE: &str = "skiffdns0";

/// Puts `address`/32 on the dummy interface `interface` in the calling thread's network
/// namespace (creating it, up), or on `lo` when the kernel has no dummy interfaces.
/// Idempotent: a restarted proxy finds it in place. Returns the interface used.
pub fn ensure_address(interface: &str, address: Ipv4Addr) -> Result<&str, NetError> {
    let mut handle = NetHandle::current("node")?;
    let net = IpNet::V4(Ipv4Net::new(address, 32).unwrap_or_default());
    match handle.ensure_dummy(interface, net) {
        Ok(()) => Ok(interface),
        Err(e) if e.is_errno(libc::EOPNOTSUPP) => {
            tracing::info!(%address, "no dummy interfaces in this kernel: the address goes on lo");
            handle.add_address("lo", net)?;
            Ok("lo")
        }
        Err(e) => Err(e),
    }
}
