//! `WatchNodes`: where the other nodes' pods are — each node's PodCIDR and InternalIP, the
//! routes a node installs (host-gw) so its pods reach pods on other nodes. The whole set is
//! sent at once, and again whenever it changes (a node joins, leaves, or changes address),
//! so a node never has to merge deltas.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use skiff_api::node::{NodeRoute, NodeRoutes};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::status_of;
use crate::apiserver::{Change, Client};

/// The route to `node`'s pods, if it has a PodCIDR and an InternalIP.
fn route(node: &Node) -> Option<NodeRoute> {
    let cidr = node.spec.as_ref()?.pod_cidr.clone()?;
    let ip = node
        .status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .clone();
    Some(NodeRoute {
        node_name: node.metadata.name.clone()?,
        pod_cidr: cidr,
        node_ip: ip,
    })
}

/// The routes `me` needs: every other node's, by name.
pub fn routes<'a>(nodes: impl IntoIterator<Item = &'a Node>, me: &str) -> NodeRoutes {
    let by_name: BTreeMap<String, NodeRoute> = nodes
        .into_iter()
        .filter(|n| n.metadata.name.as_deref() != Some(me))
        .filter_map(route)
        .map(|r| (r.node_name.clone(), r))
        .collect();
    NodeRoutes {
        routes: by_name.into_values().collect(),
    }
}

pub(super) type RouteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<NodeRoutes, Status>> + Send + 'static>>;

/// Starts the stream of the routes `node` needs.
pub(super) async fn watch(client: Client, node: String) -> Result<RouteStream, Status> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        if let Err(status) = run(&client, &node, &tx).await {
            let _ = tx.send(Err(status)).await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

async fn run(
    client: &Client,
    me: &str,
    tx: &mpsc::Sender<Result<NodeRoutes, Status>>,
) -> Result<(), Status> {
    let list = client.list::<Node>(None, "").await.map_err(status_of)?;
    let mut nodes: BTreeMap<String, Node> = list
        .items
        .into_iter()
        .filter_map(|n| Some((n.metadata.name.clone()?, n)))
        .collect();
    let mut sent = routes(nodes.values(), me);
    if tx.send(Ok(sent.clone())).await.is_err() {
        return Ok(());
    }
    let mut changes = client
        .watch::<Node>(None, list.revision)
        .await
        .map_err(status_of)?;
    loop {
        let change = tokio::select! {
            () = tx.closed() => return Ok(()),
            change = changes.next() => change,
        };
        match change {
            None => return Err(Status::unavailable("the store's watch ended")),
            Some(Err(e)) => return Err(status_of(e)),
            Some(Ok(Change::Applied(node))) => {
                if let Some(name) = node.metadata.name.clone() {
                    nodes.insert(name, node);
                }
            }
            Some(Ok(Change::Deleted(node))) => {
                if let Some(name) = &node.metadata.name {
                    nodes.remove(name);
                }
            }
        }
        let now = routes(nodes.values(), me);
        if now != sent {
            if tx.send(Ok(now.clone())).await.is_err() {
                return Ok(());
            }
            sent = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        let addresses: Vec<serde_json::Value> = ip
            .into_iter()
            .map(|ip| json!({"type": "InternalIP", "address": ip}))
            .chain([json!({"type": "Hostname", "address": name})])
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": addresses}
        }))
        .unwrap()
    }

    #[test]
    fn every_other_node_with_a_cidr_and_an_address_is_a_route() {
        let nodes = [
            node("a", Some("10.244.0.0/24"), Some("192.0.2.10")),
            node("b", Some("10.244.1.0/24"), Some("192.0.2.11")),
            node("c", None, Some("192.0.2.12")),
            node("d", Some("10.244.3.0/24"), None),
        ];
        let r = routes(&nodes, "a");
        assert_eq!(
            r.routes,
            vec![NodeRoute {
                node_name: "b".into(),
                pod_cidr: "10.244.1.0/24".into(),
                node_ip: "192.0.2.11".into(),
            }]
        );
        assert_eq!(routes(&nodes, "b").routes[0].node_name, "a");
        assert!(routes(&nodes[..1], "a").routes.is_empty());
    }
}
