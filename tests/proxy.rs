//! The eBPF Service data plane with real traffic: network namespaces as a LAN, an outside
//! host and two nodes with pods behind bridges; `skiff proxy apply` programs the node's
//! data plane (socket hooks on a child cgroup of the test's own, tc on node 1's uplink);
//! clients are processes in that cgroup (socket path) or on the outside host (tc path).
//! Root only; under CI a missing prerequisite fails the test.

mod support;

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::netlab::{Lab, json, read_until, run, script};

fn ready() -> bool {
    support::privileged_with(&["ip", "nsenter", "python3", "busybox"])
}

/// node1 (192.168.77.2, pods 10.244.1.0/24: p1 p2 p3), node2 (.3, pod q1 in
/// 10.244.2.0/24), an outside host (.1), all on one LAN bridge. Node 1 runs the data plane.
struct Cluster {
    lab: Lab,
    pin_dir: PathBuf,
    file: PathBuf,
}

const NODE1: &str = "192.168.77.2";
const HOST: &str = "192.168.77.1";

impl Cluster {
    fn new() -> Cluster {
        let mut lab = Lab::new();
        for ns in ["lan", "host", "node1", "node2", "p1", "p2", "p3", "q1"] {
            lab.add_netns(ns);
        }
        lab.bridge("lan", "br0", None);
        for (ns, last) in [("host", 1), ("node1", 2), ("node2", 3)] {
            let addr = format!("192.168.77.{last}/24");
            lab.link(("lan", ns, None), (ns, "eth0", Some(&addr)));
            lab.enslave("lan", ns, "br0");
        }
        for (node, n, pods) in [
            ("node1", 1, &["p1", "p2", "p3"][..]),
            ("node2", 2, &["q1"][..]),
        ] {
            lab.bridge(node, "cbr0", Some(&format!("10.244.{n}.1/24")));
            for (i, pod) in pods.iter().enumerate() {
                let addr = format!("10.244.{n}.{}/24", 11 + i);
                lab.link((node, pod, None), (pod, "eth0", Some(&addr)));
                lab.enslave(node, pod, "cbr0");
                lab.ip(
                    pod,
                    &["route", "add", "default", "via", &format!("10.244.{n}.1")],
                );
            }
            lab.sh(node, "sysctl -qw net.ipv4.ip_forward=1");
            // As the kubelet does: untranslated Service traffic fails here, fast.
            lab.ip(node, &["route", "add", "unreachable", "10.96.0.0/12"]);
        }
        lab.ip(
            "node1",
            &["route", "add", "10.244.2.0/24", "via", "192.168.77.3"],
        );
        lab.ip(
            "node2",
            &["route", "add", "10.244.1.0/24", "via", "192.168.77.2"],
        );
        let pin_dir = lab.dir.path().join("bpf");
        let file = lab.dir.path().join("objects.yaml");
        Cluster { lab, pin_dir, file }
    }

    /// A busybox httpd on port 8080 in a pod: `/` answers the pod's name, `/cgi-bin/who`
    /// its name and the client address it sees.
    fn httpd(&mut self, pod: &str) {
        let root = self.lab.dir.path().join(format!("www-{pod}"));
        std::fs::create_dir_all(root.join("cgi-bin")).unwrap();
        std::fs::write(root.join("index.html"), format!("{pod}\n")).unwrap();
        let who = root.join("cgi-bin/who");
        std::fs::write(
            &who,
            format!("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n{pod} %s:%s\\n' \"$REMOTE_ADDR\" \"$REMOTE_PORT\"\n"),
        )
        .unwrap();
        run(Command::new("chmod").arg("755").arg(&who));
        let root = root.to_string_lossy().into_owned();
        self.lab
            .spawn(pod, &["busybox", "httpd", "-f", "-p", "8080", "-h", &root]);
        self.lab.wait_port(pod, "127.0.0.1", 8080);
    }

    /// netserver.py (tcp line echo or udp echo) in a pod.
    fn netserver(&mut self, pod: &str, mode: &str, port: u16) {
        let server = script("netserver.py");
        let port_s = port.to_string();
        self.lab.spawn(
            pod,
            &[
                "python3",
                server.to_str().unwrap(),
                mode,
                pod,
                "0.0.0.0",
                &port_s,
            ],
        );
        if mode == "tcp" {
            self.lab.wait_port(pod, "127.0.0.1", port);
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// `skiff proxy apply` as node 1's data plane, with `args` after the common ones.
    fn proxy_cmd(&mut self, extra: &[&str]) -> Command {
        let cgroup = self.lab.cgroup();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.lab.netns_path("node1")))
            .arg(env!("CARGO_BIN_EXE_skiff"))
            .args(["proxy", "apply", "-f"])
            .arg(&self.file)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--cgroup")
            .arg(&cgroup)
            .args([
                "--uplink",
                "eth0",
                "--node-name",
                "node1",
                "--node-ip",
                NODE1,
            ])
            .args(extra);
        cmd
    }

    /// Writes the objects file and applies it; returns the command's stderr.
    fn apply(&mut self, objects: &str) -> String {
        std::fs::write(&self.file, objects).unwrap();
        let out = self.proxy_cmd(&[]).output().unwrap();
        assert!(
            out.status.success(),
            "skiff proxy apply: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn show(&self) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["proxy", "show", "-o", "json", "--pin-dir"])
            .arg(&self.pin_dir)
            .output()
            .unwrap();
        json(&out)
    }

    /// netclient.py from node 1, in the data plane's cgroup (a pod or process on the node).
    fn client(&mut self, args: &[&str]) -> Value {
        let client = script("netclient.py");
        let mut full = vec!["python3", client.to_str().unwrap()];
        full.extend_from_slice(args);
        json(&self.lab.in_cgroup("node1", &full).output().unwrap())
    }

    /// netclient.py on the outside host.
    fn outside(&self, args: &[&str]) -> Value {
        let client = script("netclient.py");
        let mut full = vec!["python3", client.to_str().unwrap()];
        full.extend_from_slice(args);
        json(&self.lab.cmd("host", &full).output().unwrap())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Detach and unpin before the lab removes the cgroup and namespaces.
        let _ = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["proxy", "reset", "--pin-dir"])
            .arg(&self.pin_dir)
            .status();
    }
}

fn service(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {spec}\n---\n"
    )
}

/// An EndpointSlice of `service` with (address, node, ready) endpoints on `port`.
fn slice(
    service: &str,
    port_name: &str,
    protocol: &str,
    port: u16,
    endpoints: &[(&str, &str, bool)],
) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(addr, node, ready)| {
            format!("- {{addresses: [{addr}], nodeName: {node}, conditions: {{ready: {ready}, serving: {ready}, terminating: {}}}}}", !ready)
        })
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-{port_name}, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: {port_name}, port: {port}, protocol: {protocol}}}]\nendpoints:\n{}\n---\n",
        eps.join("\n")
    )
}

const P1: &str = "10.244.1.11";
const P2: &str = "10.244.1.12";
const P3: &str = "10.244.1.13";
const Q1: &str = "10.244.2.11";

fn web(extra_spec: &str) -> String {
    service(
        "web",
        &format!(
            "{{clusterIP: 10.96.0.10, ports: [{{name: http, port: 80, targetPort: 8080}}]{extra_spec}}}"
        ),
    ) + &slice(
        "web",
        "http",
        "TCP",
        8080,
        &[
            (P1, "node1", true),
            (P2, "node1", true),
            (P3, "node1", true),
        ],
    )
}

fn count(v: &Value, key: &str) -> u64 {
    v["bodies"][key].as_u64().unwrap_or(0)
}

#[test]
fn clusterip_spreads_over_three_httpd_backends_and_the_peer_is_the_service() {
    if !ready() {
        return;
    }
    let mut c = Cluster::new();
    for pod in ["p1", "p2", "p3"] {
        c.httpd(pod);
    }
    c.apply(&web(""));
    let v = c.client(&["http", "300", "10.96.0.10", "80", "/"]);
    assert_eq!(v["errors"], Value::Array(vec![]), "{v}");
    // Each backend's share of 300 requests: mean 100, sd 8.2; ±5 sd.
    for pod in ["p1", "p2", "p3"] {
        let n = count(&v, pod);
        assert!((59..=141).contains(&n), "{pod} got {n} of 300: {v}");
    }
    assert_eq!(
        v["peer"],
        serde_json::json!(["10.96.0.10", 80]),
        "getpeername shows the Service"
    );
    let shown = c.show();
    assert_eq!(shown["frontends"][0]["frontend"], "10.96.0.10:80");
    assert!(shown["state"]["sockets"].as_u64().unwrap() >= 1);
}

#[test]
fn udp_through_a_clusterip_answers_from_the_service_address() {
    if !ready() {
        return;
    }
    let mut c = Cluster::new();
    c.netserver("p1", "udp", 5353);
    c.netserver("p2", "udp", 5353);
    let objects = service(
        "dns",
        "{clusterIP: 10.96.0.53, ports: [{name: dns, port: 53, protocol: UDP, targetPort: 5353}]}",
    ) + &slice(
        "dns",
        "dns",
        "UDP",
        5353,
        &[(P1, "node1", true), (P2, "node1", true)],
    );
    c.apply(&objects);
    let v = c.client(&["udp", "40", "10.96.0.53", "53"]);
    assert_eq!(v["errors"], Value::Array(vec![]), "{v}");
    let total = |kind: &str| -> u64 {
        v[kind]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum()
    };
    assert_eq!((total("connected"), total("unconnected")), (40, 40), "{v}");
    assert_eq!(
        v["connected"].as_object().unwrap().len(),
        1,
        "a connected socket keeps its backend: {v}"
    );
    assert_eq!(
        v["sources"],
        serde_json::json!([["10.96.0.53", 53]]),
        "replies come from the Service: {v}"
    );
}

#[test]
fn a_service_without_endpoints_refuses_at_once() {
    if !ready() {
        return;
    }
    let mut c = Cluster::new();
    let objects = service(
        "empty",
        "{clusterIP: 10.96.0.11, ports: [{name: http, port: 80}]}",
    ) + &slice("empty", "http", "TCP", 8080, &[(P1, "node1", false)])
        + &service(
            "none",
            "{clusterIP: 10.96.0.12, ports: [{name: http, port: 80}]}",
        );
    c.apply(&objects);
    for addr in ["10.96.0.11", "10.96.0.12"] {
        let v = c.client(&["refuse", addr, "80"]);
        assert_eq!(
            v["errnos"],
            serde_json::json!([111, 111, 111, 111, 111]),
            "ECONNREFUSED from {addr}: {v}"
        );
        // The median of 5 connects: a refusal is immediate, a hang would be seconds.
        assert!(
            v["ms"].as_f64().unwrap() < 10.0,
            "refused within 10 ms: {v}"
        );
    }
}

#[test]
fn session_affinity_sticks_to_one_backend() {
    if !ready() {
        return;
    }
    let mut c = Cluster::new();
    for pod in ["p1", "p2", "p3"] {
        c.httpd(pod);
    }
    c.apply(&web(
        ", sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}",
    ));
    let v = c.client(&["http", "30", "10.96.0.10", "80", "/"]);
    assert_eq!(v["errors"], Value::Array(vec![]), "{v}");
    assert_eq!(
        v["bodies"].as_object().unwrap().len(),
        1,
        "one backend for all 30: {v}"
    );
    assert_eq!(c.show()["state"]["affinity"], 1);
}

#[test]
fn removing_a_backend_stops_new_connections_while_an_established_one_finishes() {
    if !ready() {
        return;
    }
    let mut c = Cluster::new();
    for pod in ["p1", "p2", "p3"] {
        c.netserver(pod, "tcp", 9000);
    }
    let objects = |pods: &[(&str, &str, bool)]| {
        service(
            "echo",
            "{clusterIP: 10.96.0.20, ports: [{name: echo, port: 9000}]}",
        ) + &slice("echo", "echo", "TCP", 9000, pods)
    };
    c.apply(&objects(&[
        (P1, "node1", true),
        (P2, "node1", true),
        (P3, "node1", true),
    ]));

    let client = script("netclient.py");
    let mut hold = c
        .lab
        .in_cgroup(
            "node1",
            &[
                "python3",
                client.to_str().unwrap(),
                "hold",
                "10.96.0.20",
                "9000",
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = hold.stdin.take().unwrap();
    let mut out = BufReader::new(hold.stdout.take().unwrap());
    c.lab.adopt(hold);
    let mut ask = |stdin: &mut std::process::ChildStdin| -> String {
        writeln!(stdin, "who").unwrap();
        let line = read_until(&mut out, Duration::from_secs(10), |l| l.starts_with('{'));
        let v: Value = serde_json::from_str(&line).unwrap();
        v["reply"]
            .as_str()
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    let held = ask(&mut stdin);

    let remaining: Vec<(&str, &str, bool)> = [("p1", P1), ("p2", P2), ("p3", P3)]
        .into_iter()
        .filter(|(pod, _)| *pod != held)
        .map(|(_, addr)| (addr, "node1", true))
        .collect();
    c.apply(&objects(&remaining));
    let v = c.client(&["http", "30", "10.96.0.20", "9000", "/"]);
    assert_eq!(v["errors"], Value::Array(vec![]), "{v}");
    assert_eq!(
        count(&v, &held),
        0,
        "no new connection to the removed {held}: {v}"
    );
    assert_eq!(
        ask(&mut stdin),
        held,
        "the established connection still talks to {held}"
    );
}

#[test]
fn nodeport_and_lb_from_another_host_reach_a_pod_on_the_other_node_and_local_policy_keeps_the_client()
 {
    if !ready() {
        return;
    }
    let mut c = Cluster::new();
    c.httpd("p1");
    c.httpd("q1");
    let objects = service(
        "remote",
        "{type: NodePort, clusterIP: 10.96.0.30, ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]}",
    ) + &slice("remote", "http", "TCP", 8080, &[(Q1, "node2", true)])
        + &service(
            "local",
            "{type: NodePort, clusterIP: 10.96.0.31, externalTrafficPolicy: Local, ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30081}]}",
        )
        + &slice(
            "local",
            "http",
            "TCP",
            8080,
            &[(P1, "node1", true), (Q1, "node2", true)],
        )
        + &service(
            "nolocal",
            "{type: NodePort, clusterIP: 10.96.0.32, externalTrafficPolicy: Local, ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30082}]}",
        )
        + &slice("nolocal", "http", "TCP", 8080, &[(Q1, "node2", true)])
        + "apiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: default}\n\
           spec: {type: LoadBalancer, clusterIP: 10.96.0.33, externalIPs: [198.51.100.11], \
           ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30083}]}\n\
           status: {loadBalancer: {ingress: [{ip: 198.51.100.10}]}}\n---\n"
        + &slice("lb", "http", "TCP", 8080, &[(Q1, "node2", true)]);
    c.apply(&objects);
    // The outside host reaches LoadBalancer and external IPs through node 1 (what an LB or
    // an ARP/BGP announcement would arrange).
    c.lab
        .ip("host", &["route", "add", "198.51.100.0/24", "via", NODE1]);

    // Through tc on node 1: DNAT to q1 on node 2, SNAT to node 1's address.
    let v = c.outside(&["http", "20", NODE1, "30080", "/cgi-bin/who"]);
    assert_eq!(v["errors"], Value::Array(vec![]), "{v}");
    assert_eq!(count(&v, "q1"), 20, "{v}");
    // (busybox httpd listens dual-stack: it shows IPv4 peers as ::ffff:a.b.c.d)
    let seen_by_backend = |v: &Value| {
        v["last"]
            .as_str()
            .unwrap()
            .replace("[::ffff:", "")
            .replace(']', "")
    };
    assert!(
        seen_by_backend(&v).starts_with(&format!("q1 {NODE1}:")),
        "SNAT: {v}"
    );
    assert_eq!(
        v["peer"],
        serde_json::json!([NODE1, 30080]),
        "the reply comes from the NodePort"
    );

    // externalTrafficPolicy Local: only node 1's pod, and it sees the real client.
    let v = c.outside(&["http", "20", NODE1, "30081", "/cgi-bin/who"]);
    assert_eq!(v["errors"], Value::Array(vec![]), "{v}");
    assert_eq!(count(&v, "p1"), 20, "{v}");
    assert!(
        seen_by_backend(&v).starts_with(&format!("p1 {HOST}:")),
        "client kept: {v}"
    );

    // Local with no local endpoint: dropped, as kube-proxy does.
    let v = c.outside(&["refuse", NODE1, "30082", "0.5"]);
    assert!(
        !v["errnos"].as_array().unwrap().contains(&Value::from(0)),
        "{v}"
    );

    // LoadBalancer ingress IP and externalIP, through tc the same way.
    for ip in ["198.51.100.10", "198.51.100.11"] {
        let v = c.outside(&["http", "5", ip, "80", "/"]);
        assert_eq!(count(&v, "q1"), 5, "{ip}: {v}");
        assert_eq!(v["peer"], serde_json::json!([ip, 80]), "{v}");
    }

    // The same NodePort from the node itself (socket path, not tc).
    let v = c.client(&["http", "5", NODE1, "30080", "/cgi-bin/who"]);
    assert_eq!(count(&v, "q1"), 5, "{v}");
    assert!(c.show()["state"]["conntrack"].as_u64().unwrap() >= 2);
}

#[test]
fn a_killed_proxy_restarts_without_a_failed_request_and_removes_a_stale_service() {
    if !ready() {
        return;
    }
    let mut c = Cluster::new();
    for pod in ["p1", "p2", "p3"] {
        c.httpd(pod);
    }
    let stale = service(
        "stale",
        "{clusterIP: 10.96.0.99, ports: [{name: http, port: 80}]}",
    );
    std::fs::write(&c.file, web("") + &stale).unwrap();
    let mut proxy = c
        .proxy_cmd(&["--watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(proxy.stdout.take().unwrap());
    read_until(&mut out, Duration::from_secs(30), |l| {
        l.contains("service ports")
    });
    let proxy_pid = proxy.id().to_string();
    c.lab.adopt(proxy);

    let stop = c.lab.dir.path().join("stop");
    let client = script("netclient.py");
    let looping = c
        .lab
        .in_cgroup(
            "node1",
            &[
                "python3",
                client.to_str().unwrap(),
                "loop",
                "10.96.0.10",
                "80",
                stop.to_str().unwrap(),
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    run(Command::new("kill").args(["-9", &proxy_pid]));
    std::thread::sleep(Duration::from_millis(500));

    // Restarted with the state of now: the stale Service is gone.
    let stderr = c.apply(&web(""));
    assert!(
        !stderr.contains("attached:"),
        "the pinned links were kept, not re-attached: {stderr}"
    );
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(&stop, "").unwrap();
    let v = json(&looping.wait_with_output().unwrap());
    assert_eq!(v["errors"], Value::Array(vec![]), "{v}");
    assert!(v["ok"].as_u64().unwrap() >= 20, "the loop kept going: {v}");
    let frontends: Vec<String> = c.show()["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["frontend"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(frontends, ["10.96.0.10:80"], "the stale Service is removed");
}

#[test]
fn bad_objects_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "kind: Pod\nmetadata: {name: x}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["proxy", "apply", "--cgroup", "none", "--pin-dir"])
        .arg(dir.path().join("bpf"))
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let _ = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["proxy", "reset", "--pin-dir"])
        .arg(dir.path().join("bpf"))
        .status();
}

#[test]
fn replacing_the_programs_keeps_traffic_flowing_and_leaves_one_attachment_each() {
    if !ready() || !support::privileged_with(&["bpftool"]) {
        return;
    }
    let mut c = Cluster::new();
    for pod in ["p1", "p2"] {
        c.httpd(pod);
    }
    let objects = service(
        "web",
        "{type: NodePort, clusterIP: 10.96.0.10, ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]}",
    ) + &slice(
        "web",
        "http",
        "TCP",
        8080,
        &[(P1, "node1", true), (P2, "node1", true)],
    );
    c.apply(&objects);

    let client = script("netclient.py");
    let client = client.to_str().unwrap();
    let stop = c.lab.dir.path().join("stop");
    let stop = stop.to_str().unwrap();
    let inside = c
        .lab
        .in_cgroup(
            "node1",
            &["python3", client, "loop", "10.96.0.10", "80", stop],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let outside = c
        .lab
        .cmd("host", &["python3", client, "loop", NODE1, "30080", stop])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // Another build's programs: without their program pins, the running links no longer
    // count as this build's, and every attachment is replaced in place.
    for entry in std::fs::read_dir(c.pin_dir.join("progs")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let stderr = c.apply(&objects);
    assert_eq!(
        stderr.matches("@cgroup-").count() + stderr.matches("@tc-").count(),
        6,
        "{stderr}"
    );
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(stop, "").unwrap();
    for (name, child) in [("in the cgroup", inside), ("from outside", outside)] {
        let v = json(&child.wait_with_output().unwrap());
        assert_eq!(v["errors"], Value::Array(vec![]), "{name}: {v}");
        assert!(v["ok"].as_u64().unwrap() >= 10, "{name}: {v}");
    }
    // One program per hook on the cgroup: the old links went with their pins.
    let cgroup = c.lab.cgroup();
    let shown = run(Command::new("bpftool")
        .arg("cgroup")
        .arg("show")
        .arg(&cgroup));
    for hook in [
        "skiff_connect4",
        "skiff_sendmsg4",
        "skiff_recvmsg4",
        "skiff_getpeer4",
    ] {
        assert_eq!(shown.matches(hook).count(), 1, "{hook}: {shown}");
    }
}
