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
    /// `RTM_NEWLINK` bridge, created up.
    CreateBridge {
        /// Bridge name.
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
            Op::CreateVeth { .. } => "RTM_NEWLINK veth",
            Op::SetUp { .. } => "RTM_SETLINK up",
            Op::AddAddress { .. } => "RTM_NEWADDR",
            Op::AddRoute(_) => "RTM_NEWROUTE",
            Op::DelRoute { .. } => "RTM_DELROUTE",
            Op::DelLink { .. } => "RTM_DELLINK",
        }
    }

    /// What the operation is about, for error messages.
    pub fn target(&self) -> String {
        match self {
            Op::CreateBridge { name } | Op::DelLink { name } => name.clone(),
            Op::CreateVeth { name, peer, .. } => format!("{name} (peer {peer})"),
            Op::SetUp { link } => link.clone(),
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

/// A pod's interface: the veth pair (peer created in the pod namespace, host end up and on
/// the bridge), then inside the pod `lo` and the peer up, the address, the default route. A
/// failure after the veth exists deletes it (which deletes the peer too).
pub fn pod_interface_plan(p: &PodInterface) -> Result<Vec<Step>, NetError> {
    for n in [&p.host_ifname, &p.bridge, &p.pod_ifname] {
        validate_ifname(n)?;
    }
    same_family(&p.address, &p.gateway, p.gateway.to_string())?;
    if p.address.addr() == p.gateway {
        return Err(NetError::Invalid {
            what: "pod address",
            value: p.address.to_string(),
            reason: "equals the gateway",
        });
    }
    let default = match p.gateway {
        IpAddr::V4(_) => IpNet::V4(Default::default()),
        IpAddr::V6(_) => IpNet::V6(Default::default()),
    };
    Ok(vec![
        Step::new(
            Side::Host,
            Op::CreateVeth {
                name: p.host_ifname.clone(),
                peer: p.pod_ifname.clone(),
                controller: Some(p.bridge.clone()),
            },
        )
        .undo(Op::DelLink {
            name: p.host_ifname.clone(),
        }),
        Step::new(Side::Pod, Op::SetUp { link: "lo".into() }),
        Step::new(
            Side::Pod,
            Op::SetUp {
                link: p.pod_ifname.clone(),
            },
        ),
        Step::new(
            Side::Pod,
            Op::AddAddress {
                link: p.pod_ifname.clone(),
                addr: p.address,
            },
        ),
        Step::new(
            Side::Pod,
            Op::AddRoute(Route {
                dst: default,
                kind: RouteKind::Via {
                    gateway: p.gateway,
                    dev: Some(p.pod_ifname.clone()),
                },
            }),
        ),
    ])
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
