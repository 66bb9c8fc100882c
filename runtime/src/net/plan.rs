//! Plans: the netlink requests of one network change as data — which namespace each step
//! runs in, what errno it may meet without failing, and how to undo it — built and checked
//! without touching the kernel.

use std::net::IpAddr;

use ipnet::IpNet;

use super::NetError;

/// The namespace a step runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The node's namespace (where the bridge and the host veth ends live).
    Host,
    /// The pod's network namespace.
    Pod,
}

/// What a route does with matching packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKind {
    /// Forward via a gateway, optionally pinned to an interface.
    Via {
        /// The next hop.
        gateway: IpAddr,
        /// The outgoing interface, if given.
        dev: Option<String>,
    },
    /// Fail locally with `EHOSTUNREACH` (`ip route add unreachable …`).
    Unreachable,
}

/// A route in the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination (`0.0.0.0/0` for the default route).
    pub dst: IpNet,
    /// What the route does.
    pub kind: RouteKind,
}

/// One netlink operation. Interfaces are named; the executor resolves names to indices in
/// the step's namespace where the kernel needs an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `RTM_SETLINK`: sets a (down) link's MAC address and brings it up in one message.
    SetMacUp { link: String, mac: [u8; 6] },
    /// `RTM_NEWLINK` bridge, created up.
    CreateBridge {
        /// Bridge name.
        name: String,
    },
    /// `RTM_NEWLINK` dummy, created up: a home for addresses the node answers on itself.
    CreateDummy {
        /// Interface name.
        name: String,
    },
    /// `RTM_NEWLINK` veth: `name` here (up, enslaved to `controller`), its peer `peer`
    /// created directly in the pod namespace (`IFLA_NET_NS_FD`), down.
    CreateVeth {
        /// Host-side name.
        name: String,
        /// Pod-side name.
        peer: String,
        /// Bridge to attach the host side to.
        controller: Option<String>,
    },
    /// `RTM_SETLINK` `IFF_UP`.
    SetUp {
        /// Interface name.
        link: String,
    },
    /// `RTM_NEWADDR`.
    AddAddress {
        /// Interface name.
        link: String,
        /// Address and prefix length.
        addr: IpNet,
    },
    /// `RTM_NEWROUTE` with `NLM_F_REPLACE` (idempotent).
    AddRoute(Route),
    /// `RTM_DELROUTE` of any route to exactly `dst` in the main table.
    DelRoute {
        /// The destination.
        dst: IpNet,
    },
    /// `RTM_DELLINK` (deleting one veth end deletes both).
    DelLink {
        /// Interface name.
        name: String,
    },
}

impl Op {
    /// The netlink request, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateBridge { .. } => "RTM_NEWLINK bridge",
            Op::CreateDummy { .. } => "RTM_NEWLINK dummy",
            Op::CreateVeth { .. } => "RTM_NEWLINK veth",
            Op::SetUp { .. } => "RTM_SETLINK up",
            Op::SetMacUp { .. } => "RTM_SETLINK address+up",
            Op::AddAddress { .. } => "RTM_NEWADDR",
            Op::AddRoute(_) => "RTM_NEWROUTE",
            Op::DelRoute { .. } => "RTM_DELROUTE",
            Op::DelLink { .. } => "RTM_DELLINK",
        }
    }

    /// What the operation is about, for error messages.
    pub fn target(&self) -> String {
        match self {
            Op::CreateBridge { name } | Op::CreateDummy { name } | Op::DelLink { name } => {
                name.clone()
            }
            Op::CreateVeth { name, peer, .. } => format!("{name} (peer {peer})"),
            Op::SetUp { link } => link.clone(),
            Op::SetMacUp { link, mac } => format!(
                "{link} ({})",
                mac.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            ),
            Op::AddAddress { link, addr } => format!("{addr} on {link}"),
            Op::AddRoute(r) => match &r.kind {
                RouteKind::Via { gateway, dev } => match dev {
                    Some(d) => format!("{} via {gateway} dev {d}", r.dst),
                    None => format!("{} via {gateway}", r.dst),
                },
                RouteKind::Unreachable => format!("unreachable {}", r.dst),
            },
            Op::DelRoute { dst } => dst.to_string(),
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Where it runs.
    pub side: Side,
    /// What it does.
    pub op: Op,
    /// Errnos that count as success (e.g. `EEXIST` for "ensure").
    pub ok_errnos: &'static [i32],
    /// How to undo it if a later step fails (only when this step really made a change).
    pub undo: Option<Op>,
}

impl Step {
    fn new(side: Side, op: Op) -> Self {
        Self {
            side,
            op,
            ok_errnos: &[],
            undo: None,
        }
    }

    fn ok(mut self, errnos: &'static [i32]) -> Self {
        self.ok_errnos = errnos;
        self
    }

    fn undo(mut self, op: Op) -> Self {
        self.undo = Some(op);
        self
    }
}

/// The interface of one pod: a veth pair between the node's bridge and the pod namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    /// Host-side veth name (unique on the node, ≤ 15 bytes), e.g. `veth1a2b3c4d`.
    pub host_ifname: String,
    /// The bridge the host side joins.
    pub bridge: String,
    /// The pod-side name, usually `eth0`.
    pub pod_ifname: String,
    /// The pod's address with the pod network's prefix length, e.g. `10.244.0.2/24`.
    pub address: IpNet,
    /// The pod's default gateway (the bridge's address), e.g. `10.244.0.1`.
    pub gateway: IpAddr,
}

/// Checks an interface name as the kernel would (`dev_valid_name`).
pub fn validate_ifname(name: &str) -> Result<(), NetError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        Some("contains '/', ':', NUL or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetError::Invalid {
            what: "interface name",
            value: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn same_family(a: &IpNet, b: &IpAddr, value: String) -> Result<(), NetError> {
    if a.addr().is_ipv4() == b.is_ipv4() {
        Ok(())
    } else {
        Err(NetError::Invalid {
            what: "gateway",
            value,
            reason: "address family differs from the network's",
        })
    }
}

/// Bridge `name` exists, is up and has `gateway` (e.g. `10.244.0.1/24`). Each step tolerates
/// what is already in place; nothing is undone (the bridge is shared by all pods).
pub fn bridge_plan(name: &str, gateway: IpNet) -> Result<Vec<Step>, NetError> {
    validate_ifname(name)?;
    Ok(vec![
        Step::new(Side::Host, Op::CreateBridge { name: name.into() }).ok(&[libc::EEXIST]),
        Step::new(Side::Host, Op::SetUp { link: name.into() }),
        Step::new(
            Side::Host,
            Op::AddAddress {
                link: name.into(),
                addr: gateway,
            },
        )
        .ok(&[libc::EEXIST]),
    ])
}

/// Dummy interface `name` exists, is up and has `addr` (e.g. the node-local cluster DNS
/// address, `10.96.0.10/32`). Idempotent; nothing is undone.
pub fn dummy_plan(name: &str, addr: IpNet) -> Result<Vec<Step>, NetError> {
    validate_ifname(name)?;
    Ok(vec![
        Step::new(Side::Host, Op::CreateDummy { name: name.into() }).ok(&[libc::EEXIST]),
        Step::new(Side::Host, Op::SetUp { link: name.into() }),
        Step::new(
            Side::Host,
            Op::AddAddress {
                link: name.into(),
                addr,
            },
        )
        .ok(&[libc::EEXIST]),
    ])
}

/// `addr` on the existing interface `link` (e.g. `lo`). Already there is fine.
pub fn address_plan(link: &str, addr: IpNet) -> Result<Vec<Step>, NetError> {
    validate_ifname(link)?;
    Ok(vec![
        Step::new(
            Side::Host,
            Op::AddAddress {
                link: link.into(),
                addr,
            },
        )
        .ok(&[libc::EEXIST]),
    ])
}

/// A pod's interface: the veth pair (peer created in the pod namespace, host end up and on
/// the bridge), then inside the pod `lo` and the peer up, the address, the default route. A
/// failure after the veth exists deletes it (which deletes the peer too).
pub fn pod_interface_plan(p: &PodInterface) -> Result<Vec<Step>, NetError> {
    let mut steps = pod_link_plan(&p.host_ifname, &p.bridge, &p.pod_ifname)?;
    steps.extend(pod_address_plan(&p.pod_ifname, p.address, p.gateway)?);
    Ok(steps)
}

/// The first part of [`pod_interface_plan`]: the veth pair and `lo` up, no address. A pool of
/// network namespaces runs it ahead of need, and [`pod_address_plan`] when a pod takes one.
pub fn pod_link_plan(
    host_ifname: &str,
    bridge: &str,
    pod_ifname: &str,
) -> Result<Vec<Step>, NetError> {
    for n in [host_ifname, bridge, pod_ifname] {
        validate_ifname(n)?;
    }
    Ok(vec![
        Step::new(
            Side::Host,
            Op::CreateVeth {
                name: host_ifname.into(),
                peer: pod_ifname.into(),
                controller: Some(bridge.into()),
            },
        )
        .undo(Op::DelLink {
            name: host_ifname.into(),
        }),
        Step::new(Side::Pod, Op::SetUp { link: "lo".into() }),
    ])
}

/// The second part of [`pod_interface_plan`], all inside the pod: the interface up, its
/// address, the default route via `gateway`.
pub fn pod_address_plan(
    pod_ifname: &str,
    address: IpNet,
    gateway: IpAddr,
) -> Result<Vec<Step>, NetError> {
    validate_ifname(pod_ifname)?;
    same_family(&address, &gateway, gateway.to_string())?;
    if address.addr() == gateway {
        return Err(NetError::Invalid {
            what: "pod address",
            value: address.to_string(),
            reason: "equals the gateway",
        });
    }
    let default = match gateway {
        IpAddr::V4(_) => IpNet::V4(Default::default()),
        IpAddr::V6(_) => IpNet::V6(Default::default()),
    };
    Ok(vec![
        Step::new(
            Side::Pod,
            Op::SetMacUp {
                link: pod_ifname.into(),
                mac: mac_of(address.addr()),
            },
        ),
        Step::new(
            Side::Pod,
            Op::AddAddress {
                link: pod_ifname.into(),
                addr: address,
            },
        ),
        Step::new(
            Side::Pod,
            Op::AddRoute(Route {
                dst: default,
                kind: RouteKind::Via {
                    gateway,
                    dev: Some(pod_ifname.into()),
                },
            }),
        ),
    ])
}

/// The pod interface's MAC address, derived from its IP (`0a:58:` + the IPv4 address, a
/// locally administered unicast address): a pod that gets an address an earlier pod had
/// also gets its MAC, so neighbour entries the node still holds for that address stay
/// right and the new pod is reachable at once.
pub fn mac_of(ip: IpAddr) -> [u8; 6] {
    let b = match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x0a, 0x58, b[0], b[1], b[2], b[3]]
}

/// Deletes the host end of a pod's veth (the peer in the pod dies with it). Gone is fine.
pub fn remove_pod_interface_plan(host_ifname: &str) -> Result<Vec<Step>, NetError> {
    validate_ifname(host_ifname)?;
    Ok(vec![
        Step::new(
            Side::Host,
            Op::DelLink {
                name: host_ifname.into(),
            },
        )
        .ok(&[libc::ENODEV]),
    ])
}

/// A host route to `dst` via `gateway` (host-gw: another node's PodCIDR via that node).
pub fn route_plan(dst: IpNet, gateway: IpAddr) -> Result<Vec<Step>, NetError> {
    same_family(&dst, &gateway, gateway.to_string())?;
    Ok(vec![Step::new(
        Side::Host,
        Op::AddRoute(Route {
            dst: dst.trunc(),
            kind: RouteKind::Via { gateway, dev: None },
        }),
    )])
}

/// An `unreachable` host route for `dst` (the Service CIDR: untranslated traffic to a
/// ClusterIP fails locally instead of leaving the node by the default route).
pub fn unreachable_plan(dst: IpNet) -> Vec<Step> {
    vec![Step::new(
        Side::Host,
        Op::AddRoute(Route {
            dst: dst.trunc(),
            kind: RouteKind::Unreachable,
        }),
    )]
}

/// Deletes the host route to `dst`, of any kind. Gone is fine.
pub fn del_route_plan(dst: IpNet) -> Vec<Step> {
    vec![Step::new(Side::Host, Op::DelRoute { dst: dst.trunc() }).ok(&[libc::ESRCH])]
}
