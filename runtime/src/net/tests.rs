//! Unit tests of the pod network layer without root: plans, the exact netlink messages, and
//! the executor (name resolution, tolerated errnos, rollback) over `FakeNet`.

use std::net::IpAddr;
use std::os::fd::AsFd;

use ipnet::IpNet;
use netlink_packet_core::{
    Emitable, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteScope, RouteType};

use super::fake::{FakeNet, POD, World, ifname, veth_peer};
use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn spec() -> PodInterface {
    PodInterface {
        host_ifname: "vethabc".into(),
        bridge: "skiff0".into(),
        pod_ifname: "eth0".into(),
        address: net("10.244.0.2/24"),
        gateway: ip("10.244.0.1"),
    }
}

fn no_index(name: &str) -> Result<u32, NetError> {
    panic!("unexpected lookup of {name}")
}

#[test]
fn interface_names_are_checked_like_the_kernel() {
    assert!(validate_ifname("eth0").is_ok());
    assert!(validate_ifname("a23456789012345").is_ok());
    for bad in ["", "a234567890123456", ".", "..", "a/b", "a b", "a:b"] {
        let e = validate_ifname(bad).unwrap_err();
        assert!(e.to_string().starts_with("invalid interface name"), "{e}");
    }
}

#[test]
fn pod_plan_creates_veth_then_configures_inside_the_pod() {
    let steps = pod_interface_plan(&spec()).unwrap();
    let sides: Vec<Side> = steps.iter().map(|s| s.side).collect();
    assert_eq!(
        sides,
        [Side::Host, Side::Pod, Side::Pod, Side::Pod, Side::Pod]
    );
    assert_eq!(
        steps[0].op,
        Op::CreateVeth {
            name: "vethabc".into(),
            peer: "eth0".into(),
            controller: Some("skiff0".into()),
        }
    );
    assert_eq!(
        steps[0].undo,
        Some(Op::DelLink {
            name: "vethabc".into()
        })
    );
    assert_eq!(steps[1].op, Op::SetUp { link: "lo".into() });
    assert_eq!(
        steps[2].op,
        Op::SetMacUp {
            link: "eth0".into(),
            mac: [0x0a, 0x58, 10, 244, 0, 2],
        }
    );
    assert_eq!(steps[4].op.target(), "0.0.0.0/0 via 10.244.0.1 dev eth0");
}

#[test]
fn pod_plan_rejects_bad_specs() {
    let mut s = spec();
    s.gateway = ip("fd00::1");
    assert!(
        pod_interface_plan(&s)
            .unwrap_err()
            .to_string()
            .contains("address family")
    );
    let mut s = spec();
    s.address = net("10.244.0.1/24");
    assert!(
        pod_interface_plan(&s)
            .unwrap_err()
            .to_string()
            .contains("equals the gateway")
    );
    let mut s = spec();
    s.host_ifname = "veth-much-too-long".into();
    assert!(pod_interface_plan(&s).is_err());
    assert!(route_plan(net("10.244.1.0/24"), ip("fd00::1")).is_err());
}

#[test]
fn bridge_plan_tolerates_what_exists() {
    let steps = bridge_plan("skiff0", net("10.244.0.1/24")).unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0].ok_errnos, &[libc::EEXIST]);
    assert!(steps[1].ok_errnos.is_empty());
    assert_eq!(steps[2].ok_errnos, &[libc::EEXIST]);
    assert!(
        steps
            .iter()
            .all(|s| s.undo.is_none() && s.side == Side::Host)
    );
}

#[test]
fn a_dummy_for_the_node_local_dns_address_is_made_up_and_idempotent() {
    let steps = dummy_plan("skiffdns0", net("10.96.0.10/32")).unwrap();
    let ops: Vec<&Op> = steps.iter().map(|s| &s.op).collect();
    assert_eq!(
        ops,
        [
            &Op::CreateDummy {
                name: "skiffdns0".into()
            },
            &Op::SetUp {
                link: "skiffdns0".into()
            },
            &Op::AddAddress {
                link: "skiffdns0".into(),
                addr: net("10.96.0.10/32")
            },
        ]
    );
    assert_eq!(steps[0].ok_errnos, &[libc::EEXIST]);
    assert_eq!(steps[2].ok_errnos, &[libc::EEXIST]);
    let mut no_index = |_: &str| Ok(7);
    let (m, _) = build_message(&steps[0].op, &mut no_index, None).unwrap();
    let RouteNetlinkMessage::NewLink(l) = &m else {
        panic!("{m:?}")
    };
    assert!(l.header.flags.contains(LinkFlags::Up));
    assert!(
        l.attributes
            .contains(&LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Dummy
            )]))
    );
    assert!(dummy_plan("a/b", net("10.96.0.10/32")).is_err());
    let on_lo = address_plan("lo", net("10.96.0.10/32")).unwrap();
    assert_eq!(on_lo.len(), 1);
    assert_eq!(on_lo[0].ok_errnos, &[libc::EEXIST]);
}

#[test]
fn host_routes_are_truncated_and_deletes_tolerate_absence() {
    let s = route_plan(net("10.244.1.7/24"), ip("192.168.5.2")).unwrap();
    assert_eq!(s[0].op.target(), "10.244.1.0/24 via 192.168.5.2");
    let s = unreachable_plan(net("10.96.0.0/12"));
    assert_eq!(s[0].op.target(), "unreachable 10.96.0.0/12");
    assert_eq!(
        del_route_plan(net("10.96.0.0/12"))[0].ok_errnos,
        &[libc::ESRCH]
    );
    assert_eq!(
        remove_pod_interface_plan("vethabc").unwrap()[0].ok_errnos,
        &[libc::ENODEV]
    );
}

#[test]
fn veth_message_puts_the_peer_in_the_pod_netns_and_the_host_end_up_on_the_bridge() {
    let op = Op::CreateVeth {
        name: "vethabc".into(),
        peer: "eth0".into(),
        controller: Some("skiff0".into()),
    };
    let mut looked_up = Vec::new();
    let mut index = |n: &str| {
        looked_up.push(n.to_string());
        Ok(7)
    };
    let (m, flags) = build_message(&op, &mut index, Some(42)).unwrap();
    assert_eq!(looked_up, ["skiff0"]);
    assert_eq!(flags, NLM_F_CREATE | NLM_F_EXCL);
    let RouteNetlinkMessage::NewLink(link) = &m else {
        panic!("{m:?}")
    };
    assert_eq!(ifname(link), Some("vethabc"));
    assert!(link.header.flags.contains(LinkFlags::Up));
    assert!(link.attributes.contains(&LinkAttribute::Controller(7)));
    let infos = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(i) => Some(i),
            _ => None,
        })
        .unwrap();
    assert!(infos.contains(&LinkInfo::Kind(InfoKind::Veth)));
    let peer = veth_peer(link).unwrap();
    assert_eq!(ifname(peer), Some("eth0"));
    assert!(
        !peer.header.flags.contains(LinkFlags::Up),
        "veth_open would fail"
    );
    assert!(peer.attributes.contains(&LinkAttribute::NetNsFd(42)));
    // Without a pod netns the veth cannot be built.
    assert!(matches!(
        build_message(&op, &mut |_| Ok(7), None),
        Err(NetError::NoPodNs { .. })
    ));
}

#[test]
fn route_messages_have_the_right_type_scope_and_flags() {
    let default = Op::AddRoute(Route {
        dst: net("0.0.0.0/0"),
        kind: RouteKind::Via {
            gateway: ip("10.244.0.1"),
            dev: Some("eth0".into()),
        },
    });
    let (m, flags) = build_message(&default, &mut |_| Ok(3), None).unwrap();
    assert_eq!(flags, NLM_F_CREATE | NLM_F_REPLACE);
    let RouteNetlinkMessage::NewRoute(r) = &m else {
        panic!()
    };
    assert_eq!(r.header.kind, RouteType::Unicast);
    assert_eq!(r.header.destination_prefix_length, 0);
    assert!(
        !r.attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_)))
    );
    assert!(
        r.attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet(
                "10.244.0.1".parse().unwrap()
            )))
    );
    assert!(r.attributes.contains(&RouteAttribute::Oif(3)));

    let unreach = Op::AddRoute(Route {
        dst: net("10.96.0.0/12"),
        kind: RouteKind::Unreachable,
    });
    let (m, _) = build_message(&unreach, &mut no_index, None).unwrap();
    let RouteNetlinkMessage::NewRoute(r) = &m else {
        panic!()
    };
    assert_eq!(r.header.kind, RouteType::Unreachable);
    assert_eq!(r.header.scope, RouteScope::Universe);
    assert_eq!(r.header.destination_prefix_length, 12);

    let (m, _) = build_message(
        &Op::DelRoute {
            dst: net("10.96.0.0/12"),
        },
        &mut no_index,
        None,
    )
    .unwrap();
    let RouteNetlinkMessage::DelRoute(r) = &m else {
        panic!()
    };
    assert_eq!(r.header.scope, RouteScope::NoWhere);
    assert_eq!(r.header.kind, RouteType::Unspec);
}

#[test]
fn lo_is_brought_up_by_index_without_a_lookup() {
    let (m, _) = build_message(&Op::SetUp { link: "lo".into() }, &mut no_index, None).unwrap();
    let RouteNetlinkMessage::SetLink(l) = &m else {
        panic!()
    };
    assert_eq!(l.header.index, LOOPBACK_IFINDEX);
    assert!(l.attributes.is_empty());
}

#[test]
fn every_message_serializes_and_parses_back() {
    let ops = [
        Op::CreateBridge {
            name: "skiff0".into(),
        },
        Op::CreateDummy {
            name: "skiffdns0".into(),
        },
        Op::CreateVeth {
            name: "vethabc".into(),
            peer: "eth0".into(),
            controller: Some("skiff0".into()),
        },
        Op::AddAddress {
            link: "eth0".into(),
            addr: net("10.244.0.2/24"),
        },
        Op::AddAddress {
            link: "eth0".into(),
            addr: net("fd00::2/64"),
        },
        Op::AddRoute(Route {
            dst: net("10.244.1.0/24"),
            kind: RouteKind::Via {
                gateway: ip("192.168.1.2"),
                dev: None,
            },
        }),
        Op::DelLink {
            name: "vethabc".into(),
        },
    ];
    for op in ops {
        let (m, _) = build_message(&op, &mut |_| Ok(5), Some(9)).unwrap();
        let mut nl = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(m.clone()),
        );
        nl.finalize();
        let mut buf = vec![0; nl.buffer_len()];
        nl.emit(&mut buf);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf).unwrap();
        assert_eq!(back.payload, NetlinkPayload::InnerMessage(m), "{op:?}");
    }
}

fn handles(world: &std::sync::Arc<std::sync::Mutex<World>>) -> (NetHandle, NetHandle) {
    (
        NetHandle::with_netlink(Box::new(FakeNet::new(world, "host")), "host"),
        NetHandle::with_netlink(Box::new(FakeNet::new(world, POD)), "pod-a"),
    )
}

#[test]
fn add_pod_interface_sends_seven_requests_in_order() {
    let world = World::new();
    let (mut host, mut pod) = handles(&world);
    host.ensure_bridge("skiff0", net("10.244.0.1/24")).unwrap();
    world.lock().unwrap().log.clear();
    let fd = std::fs::File::open("/dev/null").unwrap();
    host.add_pod_interface(fd.as_fd(), &mut pod, &spec())
        .unwrap();
    let w = world.lock().unwrap();
    let log: Vec<(&str, &str)> = w.log.iter().map(|(n, k)| (n.as_str(), *k)).collect();
    assert_eq!(
        log,
        [
            ("host", "GETLINK"),
            ("host", "NEWLINK"),
            (POD, "SETLINK"),
            (POD, "SETLINK"),
            (POD, "GETLINK"),
            (POD, "NEWADDR"),
            (POD, "NEWROUTE"),
        ]
    );
    assert!(w.has_link("host", "vethabc"));
    assert!(w.has_link(POD, "eth0"));
}

#[test]
fn a_failure_inside_the_pod_deletes_the_veth() {
    let world = World::new();
    let (mut host, mut pod) = handles(&world);
    host.ensure_bridge("skiff0", net("10.244.0.1/24")).unwrap();
    world.lock().unwrap().fail = Some(("NEWROUTE", libc::ENETUNREACH));
    let fd = std::fs::File::open("/dev/null").unwrap();
    let err = host
        .add_pod_interface(fd.as_fd(), &mut pod, &spec())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "RTM_NEWROUTE 0.0.0.0/0 via 10.244.0.1 dev eth0 in netns pod-a: \
         Network is unreachable (os error 101)"
    );
    let w = world.lock().unwrap();
    assert_eq!(w.log.last().unwrap(), &("host".to_string(), "DELLINK"));
    assert!(!w.has_link("host", "vethabc"));
    assert!(!w.has_link(POD, "eth0"));
}

#[test]
fn a_missing_bridge_is_named_and_nothing_is_created() {
    let world = World::new();
    let (mut host, mut pod) = handles(&world);
    let fd = std::fs::File::open("/dev/null").unwrap();
    let err = host
        .add_pod_interface(fd.as_fd(), &mut pod, &spec())
        .unwrap_err();
    assert_eq!(err.to_string(), "interface skiff0 not found in netns host");
    assert!(!world.lock().unwrap().has_link("host", "vethabc"));
}

#[test]
fn ensure_bridge_and_remove_are_idempotent() {
    let world = World::new();
    let (mut host, _) = handles(&world);
    host.ensure_bridge("skiff0", net("10.244.0.1/24")).unwrap();
    host.ensure_bridge("skiff0", net("10.244.0.1/24")).unwrap();
    assert!(world.lock().unwrap().has_link("host", "skiff0"));
    host.remove_pod_interface("vethabc").unwrap();
    host.del_route(net("10.96.0.0/12")).unwrap();
    // Other errors still surface, with the op and the netns.
    world.lock().unwrap().fail = Some(("NEWLINK", libc::EPERM));
    let err = host
        .ensure_bridge("skiff1", net("10.245.0.1/24"))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("RTM_NEWLINK bridge skiff1 in netns host"),
        "{err}"
    );
    assert!(err.is_errno(libc::EPERM));
}

#[test]
fn kernel_detail_is_part_of_the_message() {
    let e = NetError::Netlink {
        op: "RTM_NEWROUTE",
        target: "0.0.0.0/0 via 10.0.0.1".into(),
        netns: "p".into(),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
        detail: Some("Nexthop has invalid gateway".into()),
    };
    assert!(
        e.to_string()
            .ends_with("(kernel: Nexthop has invalid gateway)"),
        "{e}"
    );
}

#[test]
fn the_pod_plan_is_the_link_part_then_the_address_part() {
    let s = spec();
    let link = pod_link_plan(&s.host_ifname, &s.bridge, &s.pod_ifname).unwrap();
    let address = pod_address_plan(&s.pod_ifname, s.address, s.gateway).unwrap();
    assert_eq!(link.len(), 2, "veth, lo up");
    assert!(
        address.iter().all(|step| step.side == Side::Pod),
        "a pooled link is configured from inside the pod only"
    );
    let whole: Vec<Op> = pod_interface_plan(&s)
        .unwrap()
        .into_iter()
        .map(|s| s.op)
        .collect();
    let parts: Vec<Op> = link.into_iter().chain(address).map(|s| s.op).collect();
    assert_eq!(whole, parts);
    assert!(pod_address_plan("eth0", net("10.244.0.1/24"), ip("10.244.0.1")).is_err());
}
