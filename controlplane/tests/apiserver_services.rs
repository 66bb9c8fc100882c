//! Service IPs and node ports through the real kubectl: the `kubernetes` Service, dynamic
//! and explicit ClusterIPs, headless, NodePorts, conflicts as Kubernetes words them,
//! release on delete and on a type change, and no duplicates under concurrent creates.

#[path = "apiserver/kubectl.rs"]
mod harness;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use harness::{Cluster, kubectl_binary, row, rows};

fn in_service_cidr(ip: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().expect("an IPv4 address");
    let [a, b, ..] = ip.octets();
    a == 10 && (96..112).contains(&b)
}

fn node_port_claimed(c: &Cluster, port: &str) -> bool {
    let key = format!("/registry/ranges/servicenodeports/{port}");
    c.runtime
        .block_on(c.store.get(&key))
        .expect("store get")
        .is_some()
}

const EXPLICIT: &str = r#"apiVersion: v1
kind: Service
metadata: {name: __NAME__}
spec:
  clusterIP: __IP__
  ports: [{port: 53, protocol: UDP}]
"#;

#[test]
fn cluster_ips_and_node_ports() {
    let Some(kubectl) = kubectl_binary(33) else {
        return;
    };
    let c = Cluster::start(kubectl);
    let port = c.url().rsplit(':').next().unwrap_or_default().to_owned();

    let t = rows(&c.ok(&["get", "svc"]));
    assert_eq!(
        row(&t, "kubernetes")[..5],
        ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"]
    );
    let ep = c.ok(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[0].ports[0].port}",
    ]);
    assert_eq!(ep.trim(), port);

    c.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let t = rows(&c.ok(&["get", "svc", "web"]));
    let web_ip = row(&t, "web")[2].clone();
    assert!(
        in_service_cidr(&web_ip) && web_ip != "10.96.0.1",
        "{web_ip}"
    );
    assert_eq!(row(&t, "web")[4], "80/TCP");
    let families = c.ok(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.clusterIPs} {.spec.ipFamilies}",
    ]);
    assert_eq!(families.trim(), format!("[\"{web_ip}\"] [\"IPv4\"]"));

    c.ok(&["create", "service", "clusterip", "hl", "--clusterip=None"]);
    assert_eq!(row(&rows(&c.ok(&["get", "svc", "hl"])), "hl")[2], "None");

    let dns = c.manifest(
        "dns.yaml",
        &EXPLICIT
            .replace("__NAME__", "dns")
            .replace("__IP__", "10.96.0.10"),
    );
    c.ok(&["apply", "-f", &dns]);
    assert_eq!(
        row(&rows(&c.ok(&["get", "svc", "dns"])), "dns")[2..5],
        ["10.96.0.10", "<none>", "53/UDP"]
    );
    let dup = c.manifest(
        "dup.yaml",
        &EXPLICIT
            .replace("__NAME__", "dup")
            .replace("__IP__", "10.96.0.10"),
    );
    let err = c.fails(&["apply", "-f", &dup]);
    assert!(err.contains(r#"The Service "dup" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.0.10"}: failed to allocate IP 10.96.0.10: provided IP is already allocated"#), "{err}");
    let out = c.manifest(
        "out.yaml",
        &EXPLICIT
            .replace("__NAME__", "out")
            .replace("__IP__", "10.0.0.1"),
    );
    let err = c.fails(&["apply", "-f", &out]);
    assert!(err.contains("the provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"), "{err}");
    // The IP is immutable.
    let err = c.fails(&[
        "patch",
        "svc",
        "dns",
        "--type=merge",
        "-p",
        r#"{"spec":{"clusterIP":"10.96.0.11"}}"#,
    ]);
    assert!(err.contains("may not change once set"), "{err}");
    // Deleting releases the address: another Service can take it.
    c.ok(&["delete", "svc", "dns"]);
    c.ok(&["apply", "-f", &dup]);
    assert_eq!(
        row(&rows(&c.ok(&["get", "svc", "dup"])), "dup")[2],
        "10.96.0.10"
    );

    c.ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=80:8080",
        "--node-port=30080",
    ]);
    assert_eq!(
        row(&rows(&c.ok(&["get", "svc", "np"])), "np")[4],
        "80:30080/TCP"
    );
    let err = c.fails(&[
        "create",
        "service",
        "nodeport",
        "np2",
        "--tcp=81:8080",
        "--node-port=30080",
    ]);
    assert!(
        err.contains(
            r#"spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"#
        ),
        "{err}"
    );
    let err = c.fails(&[
        "create",
        "service",
        "nodeport",
        "np3",
        "--tcp=81:8080",
        "--node-port=80",
    ]);
    assert!(
        err.contains(
            "provided port is not in the valid range. The range of valid ports is 30000-32767"
        ),
        "{err}"
    );

    // A type change allocates node ports; changing back releases them.
    c.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    let ports = row(&rows(&c.ok(&["get", "svc", "web"])), "web")[4].clone();
    let node_port = ports
        .trim_start_matches("80:")
        .trim_end_matches("/TCP")
        .to_owned();
    assert!(
        (30000..=32767).contains(&node_port.parse::<u32>().unwrap_or(0)),
        "{ports}"
    );
    assert!(node_port_claimed(&c, &node_port));
    assert_eq!(
        row(&rows(&c.ok(&["get", "svc", "web"])), "web")[2],
        web_ip,
        "the IP stays"
    );
    c.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    assert_eq!(
        row(&rows(&c.ok(&["get", "svc", "web"])), "web")[4],
        "80/TCP"
    );
    assert!(!node_port_claimed(&c, &node_port));
    c.ok(&["delete", "svc", "np"]);
    assert!(!node_port_claimed(&c, "30080"));
}

#[test]
fn concurrent_creates_get_distinct_ips_and_ports() {
    let Some(kubectl) = kubectl_binary(33) else {
        return;
    };
    let c = Cluster::start(kubectl);
    let results: Vec<(String, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    let body = format!(
                        r#"{{"metadata":{{"name":"s{i}"}},"spec":{{"type":"NodePort","ports":[{{"port":80}}]}}}}"#
                    );
                    let reply = c.curl("POST", "/api/v1/namespaces/default/services", "application/json", body.as_bytes());
                    assert_eq!(reply.code, 201, "{reply:?}");
                    let svc = reply.json();
                    (
                        svc["spec"]["clusterIP"].as_str().unwrap_or("").to_owned(),
                        svc["spec"]["ports"][0]["nodePort"].to_string(),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let ips: HashSet<_> = results.iter().map(|r| r.0.clone()).collect();
    let ports: HashSet<_> = results.iter().map(|r| r.1.clone()).collect();
    assert_eq!(ips.len(), 24, "{results:?}");
    assert_eq!(ports.len(), 24, "{results:?}");
    assert!(ips.iter().all(|ip| in_service_cidr(ip)));
}
