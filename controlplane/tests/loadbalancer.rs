//! Service kinds as users make and read them with the real kubectl, and the LoadBalancer
//! address pool controller through the real API server: `kubectl expose`, `kubectl create
//! service nodeport|externalname|loadbalancer`, EXTERNAL-IP from the pool, PORT(S)
//! `80:3xxxx/TCP`, no address shared, addresses released on delete and on type change.

#[path = "apiserver/kubectl.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{Cluster, kubectl_binary, row, rows};
use skiff_controlplane::controllers::{Config, ControllerManager};

const DEPLOY: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: nginx:1.27, ports: [{containerPort: 8080}]}]
"#;

/// The pool: 192.0.2.0/30 has two usable addresses.
const POOL: &str = "192.0.2.0/30";

fn start() -> Option<Cluster> {
    let mut cluster = Cluster::start(kubectl_binary(33)?);
    let client = cluster.server.as_ref().expect("server").client();
    drop(cluster.controllers.take());
    cluster.controllers = Some({
        let _guard = cluster.runtime.enter();
        let config = Config {
            loadbalancer_pool: Some(POOL.parse().expect("pool")),
            ..Config::default()
        };
        ControllerManager::start(client, config)
    });
    Some(cluster)
}

/// The `kubectl get svc NAME` row's cells: NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE.
fn svc_row(c: &Cluster, name: &str) -> Vec<String> {
    let table = c.ok(&["get", "svc", name]);
    row(&rows(&table), name).to_vec()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

fn node_port_cell(cell: &str, port: u16) -> bool {
    // "80:31234/TCP"
    let Some((ports, proto)) = cell.split_once('/') else {
        return false;
    };
    let Some((svc, node)) = ports.split_once(':') else {
        return false;
    };
    proto == "TCP"
        && svc == port.to_string()
        && node
            .parse::<u16>()
            .is_ok_and(|n| (30000..=32767).contains(&n))
}

#[test]
fn service_kinds_read_as_users_expect_and_load_balancers_get_pool_addresses() {
    let Some(c) = start() else {
        return;
    };
    let deploy = c.manifest("deploy.yaml", DEPLOY);
    c.ok(&["apply", "-f", &deploy]);

    // kubectl expose: a ClusterIP Service selecting the Deployment's pods.
    c.ok(&[
        "expose",
        "deployment",
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
    ]);
    let web = svc_row(&c, "web");
    assert_eq!(web[1], "ClusterIP");
    assert!(web[2].starts_with("10."), "a cluster IP: {web:?}");
    assert_eq!((web[3].as_str(), web[4].as_str()), ("<none>", "80/TCP"));
    let selector = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.selector.app}"]);
    assert_eq!(selector, "web");

    // NodePort: a port from the node-port range.
    c.ok(&["create", "service", "nodeport", "np", "--tcp", "80:8080"]);
    let np = svc_row(&c, "np");
    assert_eq!(np[1], "NodePort");
    assert!(node_port_cell(&np[4], 80), "{np:?}");

    // ExternalName: no cluster IP, the name as the external address.
    c.ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name",
        "example.com",
    ]);
    let ext = svc_row(&c, "ext");
    assert_eq!(
        (ext[1].as_str(), ext[2].as_str(), ext[3].as_str()),
        ("ExternalName", "<none>", "example.com")
    );

    // LoadBalancer: an address from the pool, and a node port.
    c.ok(&[
        "create",
        "service",
        "loadbalancer",
        "lb1",
        "--tcp",
        "80:8080",
    ]);
    let mut lb1 = Vec::new();
    wait_for("lb1's address", || {
        lb1 = svc_row(&c, "lb1");
        lb1[3] != "<pending>"
    });
    assert_eq!(lb1[1], "LoadBalancer");
    assert!(node_port_cell(&lb1[4], 80), "{lb1:?}");
    let pool: Vec<String> = vec!["192.0.2.1".into(), "192.0.2.2".into()];
    assert!(pool.contains(&lb1[3]), "{lb1:?}");
    c.ok(&[
        "create",
        "service",
        "loadbalancer",
        "lb2",
        "--tcp",
        "443:8443",
    ]);
    let mut lb2 = Vec::new();
    wait_for("lb2's address", || {
        lb2 = svc_row(&c, "lb2");
        lb2[3] != "<pending>"
    });
    assert!(pool.contains(&lb2[3]), "{lb2:?}");
    assert_ne!(lb1[3], lb2[3], "no two Services share an address");

    // The pool is full: a third waits, visibly.
    c.ok(&[
        "create",
        "service",
        "loadbalancer",
        "lb3",
        "--tcp",
        "80:8080",
    ]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(svc_row(&c, "lb3")[3], "<pending>");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=lb3",
    ]);
    assert!(events.contains("AllocationFailed"), "{events}");

    // Deleting lb1 frees its address for lb3.
    c.ok(&["delete", "svc", "lb1"]);
    wait_for("lb3 to get lb1's address", || {
        svc_row(&c, "lb3")[3] == lb1[3]
    });

    // lb2 stops being a LoadBalancer: its address goes, and it is free again.
    c.ok(&[
        "patch",
        "svc",
        "lb2",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    wait_for("lb2's address to be released", || {
        c.ok(&[
            "get",
            "svc",
            "lb2",
            "-o",
            "jsonpath={.status.loadBalancer.ingress}",
        ])
        .trim()
        .is_empty()
    });
    c.ok(&[
        "create",
        "service",
        "loadbalancer",
        "lb4",
        "--tcp",
        "80:8080",
    ]);
    wait_for("lb4 to get lb2's old address", || {
        svc_row(&c, "lb4")[3] == lb2[3]
    });
    let described = c.ok(&["describe", "svc", "lb4"]);
    assert!(
        described.contains(&format!("LoadBalancer Ingress:     {}", lb2[3])),
        "{described}"
    );
}
