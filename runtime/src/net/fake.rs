//! Test support: `FakeNet`, a recording `Netlink` over a shared in-memory world of
//! namespaces (links, addresses, routes) that answers like the kernel where it matters
//! (`ENODEV`, `EEXIST`, a veth peer appearing in the pod namespace) and can fail one request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::route::RouteAttribute;

use super::netlink::{Nack, Netlink};

/// The namespace a veth peer with `IFLA_NET_NS_FD` lands in.
pub(crate) const POD: &str = "pod";

#[derive(Debug, Default)]
pub(crate) struct World {
    /// (namespace, name) → index.
    pub(crate) links: BTreeMap<(String, String), u32>,
    /// (namespace, index, address/prefix).
    pub(crate) addrs: BTreeSet<(String, u32, String)>,
    /// (namespace, request kind) in order.
    pub(crate) log: Vec<(String, &'static str)>,
    /// Every message sent, with its flags.
    pub(crate) sent: Vec<(String, RouteNetlinkMessage, u16)>,
    /// Fail the next request of this kind with this errno.
    pub(crate) fail: Option<(&'static str, i32)>,
    next: u32,
}

impl World {
    pub(crate) fn new() -> Arc<Mutex<Self>> {
        let mut w = World {
            next: 10,
            ..Default::default()
        };
        for ns in ["host", POD] {
            w.links.insert((ns.into(), "lo".into()), 1);
        }
        Arc::new(Mutex::new(w))
    }

    pub(crate) fn has_link(&self, ns: &str, name: &str) -> bool {
        self.links.contains_key(&(ns.to_string(), name.to_string()))
    }

    fn add_link(&mut self, ns: &str, name: &str) -> Result<(), Nack> {
        let key = (ns.to_string(), name.to_string());
        if self.links.contains_key(&key) {
            return Err(Nack::errno(libc::EEXIST));
        }
        self.next += 1;
        self.links.insert(key, self.next);
        Ok(())
    }
}

/// One namespace's view of the world.
#[derive(Debug)]
pub(crate) struct FakeNet {
    pub(crate) world: Arc<Mutex<World>>,
    pub(crate) ns: String,
}

impl FakeNet {
    pub(crate) fn new(world: &Arc<Mutex<World>>, ns: &str) -> Self {
        Self {
            world: world.clone(),
            ns: ns.to_string(),
        }
    }
}

fn kind(m: &RouteNetlinkMessage) -> &'static str {
    match m {
        RouteNetlinkMessage::NewLink(_) => "NEWLINK",
        RouteNetlinkMessage::SetLink(_) => "SETLINK",
        RouteNetlinkMessage::GetLink(_) => "GETLINK",
        RouteNetlinkMessage::DelLink(_) => "DELLINK",
        RouteNetlinkMessage::NewAddress(_) => "NEWADDR",
        RouteNetlinkMessage::NewRoute(_) => "NEWROUTE",
        RouteNetlinkMessage::DelRoute(_) => "DELROUTE",
        _ => "OTHER",
    }
}

pub(crate) fn ifname(m: &LinkMessage) -> Option<&str> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

pub(crate) fn veth_peer(m: &LinkMessage) -> Option<&LinkMessage> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p),
            _ => None,
        }),
        _ => None,
    })
}

impl Netlink for FakeNet {
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Option<u32>, Nack> {
        let mut w = self.world.lock().unwrap();
        let k = kind(&msg);
        w.log.push((self.ns.clone(), k));
        w.sent.push((self.ns.clone(), msg.clone(), flags));
        if let Some((f, errno)) = w.fail
            && f == k
        {
            w.fail = None;
            return Err(Nack::errno(errno));
        }
        let ns = self.ns.clone();
        let idx = |w: &World, name: &str| w.links.get(&(ns.clone(), name.to_string())).copied();
        match &msg {
            RouteNetlinkMessage::GetLink(m) | RouteNetlinkMessage::SetLink(m)
                if m.header.index == 0 =>
            {
                let name = ifname(m).unwrap_or_default();
                idx(&w, name).map(Some).ok_or(Nack::errno(libc::ENODEV))
            }
            RouteNetlinkMessage::SetLink(_) => Ok(None),
            RouteNetlinkMessage::NewLink(m) => {
                w.add_link(&ns, ifname(m).unwrap_or_default())?;
                if let Some(p) = veth_peer(m) {
                    let peer_ns = if p
                        .attributes
                        .iter()
                        .any(|a| matches!(a, LinkAttribute::NetNsFd(_)))
                    {
                        POD
                    } else {
                        ns.as_str()
                    };
                    w.add_link(peer_ns, ifname(p).unwrap_or_default())?;
                }
                Ok(None)
            }
            RouteNetlinkMessage::DelLink(m) => {
                let name = ifname(m).unwrap_or_default().to_string();
                w.links
                    .remove(&(ns.clone(), name))
                    .ok_or(Nack::errno(libc::ENODEV))?;
                // A veth's peer dies with it; the fake only knows the pod's eth0.
                w.links.remove(&(POD.to_string(), "eth0".to_string()));
                Ok(None)
            }
            RouteNetlinkMessage::NewAddress(m) => {
                let a = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(format!("{ip}/{}", m.header.prefix_len)),
                    _ => None,
                });
                if !w.addrs.insert((ns, m.header.index, a.unwrap_or_default())) {
                    return Err(Nack::errno(libc::EEXIST));
                }
                Ok(None)
            }
            RouteNetlinkMessage::NewRoute(m) => {
                let oif = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                });
                if let Some(i) = oif
                    && !w.links.iter().any(|((n, _), v)| *n == ns && *v == i)
                {
                    return Err(Nack::errno(libc::ENODEV));
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}
