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
pub use plan::{
    Op, PodInterface, Route, RouteKind, Side, Step, address_plan, bridge_plan, del_route_plan,
    dummy_plan, pod_address_plan, pod_interface_plan, pod_link_plan, remove_pod_interface_plan,
    route_plan, unreachable_plan, validate_ifname,
};
