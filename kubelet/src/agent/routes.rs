//! Routes to the other nodes' pods (host-gw): the control plane streams every other node's
//! PodCIDR and InternalIP (`WatchNodes`); the node keeps one route `PODCIDR via NODEIP` per
//! node in its network namespace, through the runtime's netlink code. What to change is a
//! pure plan ([`plan`]) from what is installed to what is wanted; the installed set is kept
//! in `STATE/routes.json`, so a restarted kubelet removes routes of nodes that left
//! meanwhile. Forwarding (`net.ipv4.ip_forward`) is turned on when the first route goes in:
//! a node routing between its pods and other nodes forwards.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use ipnet::{IpNet, Ipv4Net};
use skiff_api::node::{NodeRoutes, WatchNodesRequest};

use super::AgentError;
use super::conn::Client;
use crate::local::LocalPods;

/// Destination → next hop.
pub type RouteSet = BTreeMap<IpNet, IpAddr>;

/// One change to the node's routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// Add, or replace the next hop of, the route to `dst`.
    Set {
        dst: IpNet,
        via: IpAddr,
    },
    Delete {
        dst: IpNet,
    },
}

/// The routes the control plane's set asks for: well-formed entries only, never one into
/// this node's own PodCIDR or via this node itself.
pub fn wanted(routes: &NodeRoutes, own_cidr: Ipv4Net, own_ip: IpAddr) -> RouteSet {
    routes
        .routes
        .iter()
        .filter_map(|r| {
            let dst: IpNet = r.pod_cidr.parse().ok()?;
            let via: IpAddr = r.node_ip.parse().ok()?;
            let overlaps = match dst {
                IpNet::V4(d) => d.contains(&own_cidr.network()) || own_cidr.contains(&d.network()),
                IpNet::V6(_) => false,
            };
            let same_family = dst.addr().is_ipv4() == via.is_ipv4();
            (!overlaps && via != own_ip && same_family).then_some((dst.trunc(), via))
        })
        .collect()
}

/// What turns `installed` into `wanted`: deletions first, then additions and new next hops.
pub fn plan(installed: &RouteSet, wanted: &RouteSet) -> Vec<RouteChange> {
    let deletes = installed
        .keys()
        .filter(|dst| !wanted.contains_key(*dst))
        .map(|dst| RouteChange::Delete { dst: *dst });
    let sets = wanted
        .iter()
        .filter(|(dst, via)| installed.get(*dst) != Some(*via))
        .map(|(dst, via)| RouteChange::Set {
            dst: *dst,
            via: *via,
        });
    deletes.chain(sets).collect()
}

/// The routes of this node, applied and remembered.
pub struct Routes {
    pods: Arc<LocalPods>,
    file: PathBuf,
    installed: RouteSet,
}

impl Routes {
    /// The routes a previous run installed (none when it never did).
    pub fn load(pods: Arc<LocalPods>, state_dir: &std::path::Path) -> Routes {
        let file = state_dir.join("routes.json");
        let installed = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, String>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(dst, via)| Some((dst.parse().ok()?, via.parse().ok()?)))
            .collect();
        Routes {
            pods,
            file,
            installed,
        }
    }

    /// Makes the node's routes `wanted`; a change that fails is logged and tried again with
    /// the next set.
    pub fn apply(&mut self, wanted: &RouteSet) {
        let changes = plan(&self.installed, wanted);
        if changes.is_empty() {
            return;
        }
        if !wanted.is_empty()
            && let Err(e) = self.pods.enable_forwarding()
        {
            tracing::warn!(error = %e, "turning on IPv4 forwarding for host-gw routes");
        }
        for change in changes {
            let result = match &change {
                RouteChange::Set { dst, via } => self.pods.route_via(*dst, *via),
                RouteChange::Delete { dst } => self.pods.del_route(*dst),
            };
            match (result, change) {
                (Ok(()), RouteChange::Set { dst, via }) => {
                    tracing::info!(%dst, %via, "route to another node's pods");
                    self.installed.insert(dst, via);
                }
                (Ok(()), RouteChange::Delete { dst }) => {
                    tracing::info!(%dst, "route to a departed node's pods removed");
                    self.installed.remove(&dst);
                }
                (Err(e), change) => tracing::warn!(?change, error = %e, "changing a route"),
            }
        }
        let saved: BTreeMap<String, String> = self
            .installed
            .iter()
            .map(|(d, v)| (d.to_string(), v.to_string()))
            .collect();
        let tmp = self.file.with_extension("tmp");
        let written = std::fs::write(&tmp, serde_json::to_vec(&saved).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = written {
            tracing::warn!(file = %self.file.display(), error = %e, "remembering the routes");
        }
    }
}

/// Follows `WatchNodes` until the stream breaks, keeping the routes in step.
pub async fn follow(
    mut client: Client,
    node_name: String,
    own_cidr: Ipv4Net,
    own_ip: IpAddr,
    routes: Arc<tokio::sync::Mutex<Routes>>,
) -> Result<(), AgentError> {
    let mut stream = client
        .watch_nodes(WatchNodesRequest { node_name })
        .await?
        .into_inner();
    while let Some(set) = stream.next().await {
        let want = wanted(&set?, own_cidr, own_ip);
        let routes = routes.clone();
        let applied = tokio::task::spawn_blocking(move || routes.blocking_lock().apply(&want));
        if let Err(e) = applied.await {
            tracing::warn!(error = %e, "applying routes");
        }
    }
    Err(AgentError::Rpc(tonic::Status::unavailable(
        "the node watch ended",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::node::NodeRoute;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(entries: &[(&str, &str)]) -> RouteSet {
        entries.iter().map(|(d, v)| (net(d), ip(v))).collect()
    }

    #[test]
    fn wanted_keeps_sound_routes_only() {
        let route = |name: &str, cidr: &str, node_ip: &str| NodeRoute {
            node_name: name.into(),
            pod_cidr: cidr.into(),
            node_ip: node_ip.into(),
        };
        let from = NodeRoutes {
            routes: vec![
                route("b", "10.244.1.0/24", "192.0.2.11"),
                route("c", "10.244.2.7/24", "192.0.2.12"), // host bits: truncated
                route("self-cidr", "10.244.0.0/24", "192.0.2.13"),
                route("wider", "10.244.0.0/16", "192.0.2.14"),
                route("via-me", "10.244.5.0/24", "192.0.2.10"),
                route("garbage", "nope", "192.0.2.15"),
                route("mixed", "10.244.6.0/24", "2001:db8::1"),
            ],
        };
        let own: Ipv4Net = "10.244.0.0/24".parse().unwrap();
        assert_eq!(
            wanted(&from, own, ip("192.0.2.10")),
            set(&[
                ("10.244.1.0/24", "192.0.2.11"),
                ("10.244.2.0/24", "192.0.2.12")
            ])
        );
    }

    #[test]
    fn the_plan_deletes_departed_nodes_and_sets_new_or_moved_ones() {
        let installed = set(&[
            ("10.244.1.0/24", "192.0.2.11"),
            ("10.244.2.0/24", "192.0.2.12"),
            ("10.244.3.0/24", "192.0.2.13"),
        ]);
        let wanted = set(&[
            ("10.244.1.0/24", "192.0.2.11"), // unchanged
            ("10.244.2.0/24", "192.0.2.22"), // moved
            ("10.244.4.0/24", "192.0.2.14"), // new
        ]);
        assert_eq!(
            plan(&installed, &wanted),
            vec![
                RouteChange::Delete {
                    dst: net("10.244.3.0/24")
                },
                RouteChange::Set {
                    dst: net("10.244.2.0/24"),
                    via: ip("192.0.2.22")
                },
                RouteChange::Set {
                    dst: net("10.244.4.0/24"),
                    via: ip("192.0.2.14")
                },
            ]
        );
        assert!(plan(&wanted, &wanted).is_empty());
        assert_eq!(plan(&wanted, &RouteSet::new()).len(), 3);
    }
}
