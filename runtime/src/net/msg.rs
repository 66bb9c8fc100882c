//! Turns a plan `Op` into its rtnetlink message and request flags — pure, so the exact
//! attributes (peer in the pod netns, master, `IFF_UP`, scopes, route types) are unit-tested.

use std::os::fd::RawFd;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::NetError;
use super::plan::{Op, RouteKind};

/// The loopback interface's index in every network namespace (`LOOPBACK_IFINDEX`).
pub const LOOPBACK_IFINDEX: u32 = 1;

/// `RTM_GETLINK` for one interface by name.
pub fn get_link(name: &str) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.into()));
    RouteNetlinkMessage::GetLink(m)
}

fn up_link(name: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes.push(LinkAttribute::IfName(name.into()));
    m
}

fn family(net: &IpNet) -> AddressFamily {
    match net {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

fn route_header(dst: &IpNet) -> RouteHeader {
    RouteHeader {
        address_family: family(dst),
        destination_prefix_length: dst.prefix_len(),
        table: RouteHeader::RT_TABLE_MAIN,
        ..Default::default()
    }
}

/// The message and extra request flags for `op`. `index` resolves an interface name in the
/// step's namespace; `pod_ns` is the pod namespace fd for a veth peer.
pub fn build(
    op: &Op,
    index: &mut dyn FnMut(&str) -> Result<u32, NetError>,
    pod_ns: Option<RawFd>,
) -> Result<(RouteNetlinkMessage, u16), NetError> {
    let create = NLM_F_CREATE | NLM_F_EXCL;
    Ok(match op {
        Op::CreateBridge { name } => {
            let mut m = up_link(name);
            m.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                    InfoKind::Bridge,
                )]));
            (RouteNetlinkMessage::NewLink(m), create)
        }
        Op::CreateDummy { name } => {
            let mut m = up_link(name);
            m.attributes
                .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                    InfoKind::Dummy,
                )]));
            (RouteNetlinkMessage::NewLink(m), create)
        }
        Op::CreateVeth {
            name,
            peer,
            controller,
        } => {
            let fd = pod_ns.ok_or(NetError::NoPodNs { op: op.name() })?;
            // The peer cannot be created up: it is opened before the pair is linked, and
            // veth_open then fails with ENOTCONN. The plan brings it up in the pod netns.
            let mut p = LinkMessage::default();
            p.attributes.push(LinkAttribute::IfName(peer.into()));
            p.attributes.push(LinkAttribute::NetNsFd(fd));
            let mut m = up_link(name);
            if let Some(c) = controller {
                m.attributes.push(LinkAttribute::Controller(index(c)?));
            }
            m.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
            ]));
            (RouteNetlinkMessage::NewLink(m), create)
        }
        Op::SetMacUp { link, mac } => {
            let mut m = up_link(link);
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
            (RouteNetlinkMessage::SetLink(m), 0)
        }
        Op::SetUp { link } => {
            let mut m = up_link(link);
            if link == "lo" {
                m.attributes.clear();
                m.header.index = LOOPBACK_IFINDEX;
            }
            (RouteNetlinkMessage::SetLink(m), 0)
        }
        Op::AddAddress { link, addr } => {
            let mut m = AddressMessage::default();
            m.header.family = family(addr);
            m.header.prefix_len = addr.prefix_len();
            m.header.scope = AddressScope::Universe;
            m.header.index = index(link)?;
            if addr.addr().is_ipv4() {
                m.attributes.push(AddressAttribute::Local(addr.addr()));
            }
            m.attributes.push(AddressAttribute::Address(addr.addr()));
            (RouteNetlinkMessage::NewAddress(m), create)
        }
        Op::AddRoute(r) => {
            let mut m = RouteMessage::default();
            m.header = route_header(&r.dst);
            m.header.protocol = RouteProtocol::Static;
            m.header.scope = RouteScope::Universe;
            if r.dst.prefix_len() > 0 {
                m.attributes
                    .push(RouteAttribute::Destination(RouteAddress::from(
                        r.dst.addr(),
                    )));
            }
            match &r.kind {
                RouteKind::Via { gateway, dev } => {
                    m.header.kind = RouteType::Unicast;
                    m.attributes
                        .push(RouteAttribute::Gateway(RouteAddress::from(*gateway)));
                    if let Some(d) = dev {
                        m.attributes.push(RouteAttribute::Oif(index(d)?));
                    }
                }
                RouteKind::Unreachable => m.header.kind = RouteType::Unreachable,
            }
            (
                RouteNetlinkMessage::NewRoute(m),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
        }
        Op::DelRoute { dst } => {
            let mut m = RouteMessage::default();
            m.header = route_header(dst);
            // Match any type, protocol and scope.
            m.header.scope = RouteScope::NoWhere;
            if dst.prefix_len() > 0 {
                m.attributes
                    .push(RouteAttribute::Destination(RouteAddress::from(dst.addr())));
            }
            (RouteNetlinkMessage::DelRoute(m), 0)
        }
        Op::DelLink { name } => {
            let mut m = LinkMessage::default();
            m.attributes.push(LinkAttribute::IfName(name.into()));
            (RouteNetlinkMessage::DelLink(m), 0)
        }
    })
}
