//! `NetHandle`: one netlink connection bound to one network namespace, reused for every
//! request there, with the node-level operations (bridge, pod interfaces, routes) on top.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use ipnet::IpNet;
use netlink_packet_route::RouteNetlinkMessage;

use super::exec::{PodNs, execute};
use super::netlink::{Netlink, NetlinkSocket};
use super::plan::{self, PodInterface};
use super::{NetError, msg};
use crate::ns::{self, PinnedNs};

/// A netlink connection in one network namespace. Opening one in another namespace costs a
/// helper thread (~0.2 ms); keep it for as long as the namespace is worked on.
#[derive(Debug)]
pub struct NetHandle {
    nl: Box<dyn Netlink>,
    netns: String,
}

impl NetHandle {
    /// A handle in the calling thread's network namespace, labelled `netns` in errors.
    pub fn current(netns: impl Into<String>) -> Result<Self, NetError> {
        let netns = netns.into();
        match NetlinkSocket::open() {
            Ok(s) => Ok(Self::with_netlink(Box::new(s), netns)),
            Err(source) => Err(NetError::Socket { netns, source }),
        }
    }

    /// A handle inside the network namespace `fd`, labelled `netns` in errors.
    pub fn in_netns(fd: BorrowedFd<'_>, netns: impl Into<String>) -> Result<Self, NetError> {
        let netns = netns.into();
        match ns::in_netns(fd, NetlinkSocket::open)? {
            Ok(s) => Ok(Self::with_netlink(Box::new(s), netns)),
            Err(source) => Err(NetError::Socket { netns, source }),
        }
    }

    /// A handle over any [`Netlink`] (a fake in tests).
    pub fn with_netlink(nl: Box<dyn Netlink>, netns: impl Into<String>) -> Self {
        Self {
            nl,
            netns: netns.into(),
        }
    }

    /// The namespace label used in errors.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Sends one request; a refusal becomes `NetError::Netlink` naming `op` and `target`.
    pub(crate) fn send(
        &mut self,
        op: &'static str,
        target: impl FnOnce() -> String,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Option<u32>, NetError> {
        self.nl
            .request(message, flags)
            .map_err(|nack| NetError::Netlink {
                op,
                target: target(),
                netns: self.netns.clone(),
                source: nack.source,
                detail: nack.detail,
            })
    }

    /// The index of interface `name`, or `None` if there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetError> {
        plan::validate_ifname(name)?;
        match self.send("RTM_GETLINK", || name.to_string(), msg::get_link(name), 0) {
            Ok(Some(i)) => Ok(Some(i)),
            Ok(None) => Err(NetError::NoSuchLink {
                name: name.to_string(),
                netns: self.netns.clone(),
            }),
            Err(e) if e.is_errno(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Bridge `name` exists, is up and carries `gateway` (e.g. `10.244.0.1/24`). Idempotent.
    pub fn ensure_bridge(&mut self, name: &str, gateway: IpNet) -> Result<(), NetError> {
        execute(&plan::bridge_plan(name, gateway)?, self, None)
    }

    /// Dummy interface `name` exists, is up and carries `addr`. Idempotent.
    pub fn ensure_dummy(&mut self, name: &str, addr: IpNet) -> Result<(), NetError> {
        execute(&plan::dummy_plan(name, addr)?, self, None)
    }

    /// `addr` on the existing interface `link` (`lo` too). Idempotent.
    pub fn add_address(&mut self, link: &str, addr: IpNet) -> Result<(), NetError> {
        execute(&plan::address_plan(link, addr)?, self, None)
    }

    /// Creates the pod's veth pair with the peer directly inside the pod namespace `pod_ns`
    /// (`pod` is a handle opened there), attaches the host end to the bridge, and inside the
    /// pod brings `lo` and the interface up, adds the address and the default route. On
    /// failure the veth is deleted again.
    pub fn add_pod_interface(
        &mut self,
        pod_ns: BorrowedFd<'_>,
        pod: &mut NetHandle,
        spec: &PodInterface,
    ) -> Result<(), NetError> {
        let steps = plan::pod_interface_plan(spec)?;
        execute(
            &steps,
            self,
            Some(PodNs {
                fd: pod_ns,
                handle: pod,
            }),
        )
    }

    /// The first part of [`NetHandle::add_pod_interface`]: the veth pair `host_ifname` (on
    /// `bridge`) / `pod_ifname` (in `pod_ns`) and `lo` up, without an address — what a pool of
    /// network namespaces prepares ahead of need. On failure the veth is deleted again.
    pub fn add_pod_link(
        &mut self,
        pod_ns: BorrowedFd<'_>,
        pod: &mut NetHandle,
        host_ifname: &str,
        bridge: &str,
        pod_ifname: &str,
    ) -> Result<(), NetError> {
        let steps = plan::pod_link_plan(host_ifname, bridge, pod_ifname)?;
        let pod = PodNs {
            fd: pod_ns,
            handle: pod,
        };
        execute(&steps, self, Some(pod))
    }

    /// The rest of [`NetHandle::add_pod_interface`] for a link made by
    /// [`NetHandle::add_pod_link`]: inside the pod (through `pod`, a handle opened there) the
    /// interface up, the address and the default route of `spec` (its host and bridge names
    /// are not used).
    pub fn configure_pod_interface(
        &mut self,
        pod_ns: BorrowedFd<'_>,
        pod: &mut NetHandle,
        spec: &PodInterface,
    ) -> Result<(), NetError> {
        let steps = plan::pod_address_plan(&spec.pod_ifname, spec.address, spec.gateway)?;
        let pod = PodNs {
            fd: pod_ns,
            handle: pod,
        };
        execute(&steps, self, Some(pod))
    }

    /// [`NetHandle::add_pod_interface`] for a pod netns pinned at `pin` (opens it and a
    /// netlink handle inside it for this one call).
    pub fn add_pod_interface_at(
        &mut self,
        pin: &Path,
        spec: &PodInterface,
    ) -> Result<(), NetError> {
        let fd = PinnedNs::open(pin)?;
        let mut pod = NetHandle::in_netns(fd.as_fd(), pin.display().to_string())?;
        self.add_pod_interface(fd.as_fd(), &mut pod, spec)
    }

    /// Deletes the pod's host-side veth (its peer goes with it). Already gone is fine.
    pub fn remove_pod_interface(&mut self, host_ifname: &str) -> Result<(), NetError> {
        execute(&plan::remove_pod_interface_plan(host_ifname)?, self, None)
    }

    /// Adds or replaces the route `dst via gateway` (host-gw to another node's PodCIDR).
    pub fn add_route(&mut self, dst: IpNet, gateway: IpAddr) -> Result<(), NetError> {
        execute(&plan::route_plan(dst, gateway)?, self, None)
    }

    /// Adds or replaces an `unreachable` route for `dst` (the Service CIDR).
    pub fn add_unreachable_route(&mut self, dst: IpNet) -> Result<(), NetError> {
        execute(&plan::unreachable_plan(dst), self, None)
    }

    /// Deletes the main-table route to exactly `dst`. Already gone is fine.
    pub fn del_route(&mut self, dst: IpNet) -> Result<(), NetError> {
        execute(&plan::del_route_plan(dst), self, None)
    }
}
