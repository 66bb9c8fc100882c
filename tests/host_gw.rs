//! End to end: two nodes, each a `skiff kubelet` process in a network namespace of its own,
//! joined by a bridge in a third namespace (the test's "LAN", where `skiff apiserver` runs;
//! `tests/support/multinode.rs`). Each node learns the other's PodCIDR and address over
//! `WatchNodes` and routes `PODCIDR via NODEIP`, so a pod on one node fetches a page from a
//! pod on the other; when a node goes away, the other removes its route. Needs root, `ip`,
//! `nsenter`, python3, busybox and kubectl 1.33.

mod support;

use std::time::Duration;

use support::cleanup::wait_for;
use support::multinode::{CP1, Cluster, ready};

fn routes(lan: &Cluster, who: &str) -> String {
    let out = lan
        .in_netns(who, "ip")
        .args(["-4", "route", "show", "root", "10.244.0.0/16"])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pod pinned to `node`: `httpd` serving /www, whose index names the pod; `fetch` (a URL)
/// is fetched in a loop into /www/fetched.
fn pod(name: &str, node: &str, fetch: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www; echo {name} > /www/index.html; (while true; do [ -n '{fetch}' ] && wget -q -O /www/fetched.tmp '{fetch}' && mv /www/fetched.tmp /www/fetched; sleep 0.5; done) & exec httpd -f -p 8080 -h /www"]
"#
    )
}

#[test]
fn pods_on_two_nodes_reach_each_other_through_host_gw_routes() {
    let Some(mut lan) = ready(&["a", "b"]) else {
        return;
    };
    lan.start_control_plane(CP1);
    lan.start_node("a", CP1);
    lan.start_node("b", CP1);
    lan.wait_ready(&["a", "b"], Duration::from_secs(60));
    let cidr = |node: &str| lan.jsonpath(&["node", node], "{.spec.podCIDR}");
    let (cidr_a, cidr_b) = (cidr("a"), cidr("b"));
    assert_ne!(cidr_a, cidr_b, "each node has its own PodCIDR");
    let (ip_node_a, ip_node_b) = (lan.node_ip("a"), lan.node_ip("b"));
    wait_for(
        "each node's route to the other",
        Duration::from_secs(30),
        || {
            routes(&lan, "a").contains(&format!("{cidr_b} via {ip_node_b} dev eth0"))
                && routes(&lan, "b").contains(&format!("{cidr_a} via {ip_node_a} dev eth0"))
        },
    );

    // A pod on each node; the one on b fetches the one on a's page across the LAN.
    lan.apply(&pod("web-a", "a", ""));
    let mut ip_a = String::new();
    wait_for("the pod on a", Duration::from_secs(60), || {
        ip_a = lan.jsonpath(&["pod", "web-a"], "{.status.podIP}");
        !ip_a.is_empty()
            && lan
                .http_get("a", &format!("http://{ip_a}:8080/index.html"))
                .is_some()
    });
    lan.apply(&pod(
        "web-b",
        "b",
        &format!("http://{ip_a}:8080/index.html"),
    ));
    let mut ip_b = String::new();
    wait_for(
        "the pod on b to fetch from a",
        Duration::from_secs(60),
        || {
            ip_b = lan.jsonpath(&["pod", "web-b"], "{.status.podIP}");
            !ip_b.is_empty()
                && lan
                    .http_get("b", &format!("http://{ip_b}:8080/fetched"))
                    .as_deref()
                    == Some("web-a\n")
        },
    );
    assert!(
        ip_a.starts_with(cidr_a.trim_end_matches("0/24")),
        "{ip_a} in {cidr_a}"
    );
    assert!(
        ip_b.starts_with(cidr_b.trim_end_matches("0/24")),
        "{ip_b} in {cidr_b}"
    );
    // And from node a's side to the pod on b.
    assert_eq!(
        lan.http_get("a", &format!("http://{ip_b}:8080/index.html"))
            .as_deref(),
        Some("web-b\n")
    );

    // Node b leaves (its Node deleted): a removes the route to b's pods.
    lan.kubectl_ok(&["delete", "pod", "web-b", "--wait=true", "--timeout=60s"]);
    lan.stop("b");
    lan.kubectl_ok(&["delete", "node", "b"]);
    wait_for("a's route to b to go", Duration::from_secs(30), || {
        !routes(&lan, "a").contains(&cidr_b)
    });
}
