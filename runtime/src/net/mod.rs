//! Pod network plumbing through rtnetlink, in-process (no `ip` processes): a bridge per
//! node, a veth per pod with its peer created directly inside the pod's network namespace,
//! addresses, the pod's default route, a dummy interface for addresses the node answers on
//! itself (the node-local DNS address), and host routes (host-gw to other nodes' PodCIDRs,
//! `unreachable` for the Service CIDR). Kubernetes-free: the kubelet decides names and
//! addresses.
//!
//! Each change is first a plan (`plan.rs`: steps as data, with tolerated errnos and undo),
//! then turned into messages (`msg.rs`, pure) and run by one executor (`exec.rs`) over a
//! [`NetHandle`] — one netlink socket per namespace, behind the [`Netlink`] seam. Design
//! notes: `docs/design/005-pod-network.md`.

mod error;
mod exec;
#[cfg(test)]
mod fake;
mod handle;
mod msg;
mod netlink;
mod plan;
#[cfg(test)]
mod tests;

pub use error::NetError;
pub use exec::{PodNs, execute};
pub use handle::NetHandle;
pub use msg::{LOOPBACK_IFINDEX, build as build_message, get_link};
pub use netlink::{Nack, Netlink, NetlinkSocket};
/// The interface (by its address label, an alias suffix `:N` removed) that holds `ip` in the
/// calling thread's network namespace.
pub fn interface_with_address(ip: std::net::Ipv4Addr) -> Result<Option<String>, NetError> {
    let netns = "of this process";
    let mut nl = NetlinkSocket::open().map_err(|source| NetError::Socket {
        netns: netns.into(),
        source,
    })?;
    let found = nl.ipv4_addresses().map_err(|source| NetError::Netlink {
        op: "RTM_GETADDR",
        target: "every IPv4 address".into(),
        netns: netns.into(),
        source,
        detail: None,
    })?;
    Ok(found
        .into_iter()
        .find(|(_, addr)| *addr == ip)
        .map(|(label, _)| label.split(':').next().unwrap_or_default().to_owned()))
}

pub use plan::{
    Op, PodInterface, Route, RouteKind, Side, Step, address_plan, bridge_plan, del_route_plan,
    dummy_plan, pod_address_plan, pod_interface_plan, pod_link_plan, remove_pod_interface_plan,
    route_plan, unreachable_plan, validate_ifname,
};
