//! Table tests of the model: which frontends a Service gets and which endpoints serve it.

use super::*;
use serde_json::{Value, json};

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        addresses: vec![Ipv4Addr::new(192, 168, 1, 10)],
    }
}

fn service(name: &str, spec: Value, status: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name},
        "spec": spec,
        "status": status,
    }))
    .expect("a Service")
}

fn slice(service: &str, name: &str, ports: Value, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "namespace": "default", "name": name,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .expect("an EndpointSlice")
}

fn state(services: Vec<Service>, slices: Vec<EndpointSlice>) -> ClusterState {
    let mut state = ClusterState::default();
    for s in services {
        state.services.insert(ObjectKey::of(&s.metadata), s);
    }
    for s in slices {
        state.slices.insert(ObjectKey::of(&s.metadata), s);
    }
    state
}

fn ep(addr: &str, node: &str, ready: Option<bool>, serving: Option<bool>, term: bool) -> Value {
    json!({
        "addresses": [addr],
        "nodeName": node,
        "conditions": {"ready": ready, "serving": serving, "terminating": term},
    })
}

fn web_port() -> Value {
    json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
}

fn key(name: &str, port: &str, protocol: Protocol) -> ServicePortKey {
    ServicePortKey {
        service: ObjectKey::new("default", name),
        port: port.into(),
        protocol,
    }
}

fn addrs(backends: &[Backend]) -> Vec<String> {
    backends
        .iter()
        .map(|b| format!("{}:{}{}", b.addr, b.port, if b.local { "L" } else { "" }))
        .collect()
}

fn cluster_ip(ports: Value) -> Value {
    json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": ports})
}

#[test]
fn endpoint_choice_follows_kube_proxy() {
    // (case, endpoints, expected cluster backends, expected local backends)
    let cases: Vec<(&str, Value, Vec<&str>, Vec<&str>)> = vec![
        (
            "ready endpoints only; local ones first",
            json!([
                ep("10.244.1.3", "node-b", Some(true), None, false),
                ep("10.244.0.2", "node-a", Some(true), None, false),
                ep("10.244.1.4", "node-b", Some(false), Some(false), false),
            ]),
            vec!["10.244.0.2:8080L", "10.244.1.3:8080"],
            vec!["10.244.0.2:8080L"],
        ),
        (
            "unset ready counts as ready",
            json!([{"addresses": ["10.244.1.5"], "nodeName": "node-b"}]),
            vec!["10.244.1.5:8080"],
            vec![],
        ),
        (
            "terminating ones are ignored while any is ready",
            json!([
                ep("10.244.1.3", "node-b", Some(true), Some(true), false),
                ep("10.244.1.4", "node-b", Some(false), Some(true), true),
            ]),
            vec!["10.244.1.3:8080"],
            vec![],
        ),
        (
            "serving terminating ones when nothing is ready",
            json!([
                ep("10.244.1.4", "node-b", Some(false), Some(true), true),
                ep("10.244.1.5", "node-b", Some(false), Some(false), true),
                ep("10.244.1.6", "node-b", Some(false), Some(false), false),
            ]),
            vec!["10.244.1.4:8080"],
            vec![],
        ),
        (
            "the local set falls back on its own",
            json!([
                ep("10.244.1.3", "node-b", Some(true), Some(true), false),
                ep("10.244.0.9", "node-a", Some(false), Some(true), true),
            ]),
            vec!["10.244.1.3:8080"],
            vec!["10.244.0.9:8080L"],
        ),
        ("no endpoints", json!([]), vec![], vec![]),
    ];
    for (case, endpoints, cluster, local) in cases {
        let st = state(
            vec![service("web", cluster_ip(web_port()), json!({}))],
            vec![slice("web", "web-1", web_port(), endpoints)],
        );
        let model = Model::build(&st, &node());
        let sp = &model.ports[&key("web", "http", Protocol::Tcp)];
        assert_eq!(addrs(&sp.backends), cluster, "{case}: cluster set");
        assert_eq!(addrs(&sp.local_backends), local, "{case}: local set");
        assert!(model.warnings.is_empty(), "{case}: {:?}", model.warnings);
    }
}

#[test]
fn frontends_by_service_type() {
    let ports = json!([{"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"}]);
    // (case, spec, status, expected frontends)
    let cases: Vec<(&str, Value, Value, Vec<&str>)> = vec![
        (
            "ClusterIP",
            cluster_ip(ports.clone()),
            json!({}),
            vec!["10.96.0.10:80 ClusterIp"],
        ),
        (
            "NodePort: the ClusterIP and every node address",
            json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": ports}),
            json!({}),
            vec!["10.96.0.10:80 ClusterIp", "192.168.1.10:30080 NodePort"],
        ),
        (
            "LoadBalancer: ingress IPs and node ports",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "ports": ports}),
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}, {"hostname": "lb.example"}]}}),
            vec![
                "10.96.0.10:80 ClusterIp",
                "192.168.1.10:30080 NodePort",
                "203.0.113.7:80 LoadBalancer",
            ],
        ),
        (
            "externalIPs",
            json!({"clusterIP": "10.96.0.10", "externalIPs": ["198.51.100.4"], "ports": ports}),
            json!({}),
            vec!["10.96.0.10:80 ClusterIp", "198.51.100.4:80 ExternalIp"],
        ),
        (
            "headless: no frontend",
            json!({"clusterIP": "None", "ports": ports}),
            json!({}),
            vec![],
        ),
        (
            "dual stack: the IPv4 address only",
            json!({"clusterIP": "fd00::10", "clusterIPs": ["fd00::10", "10.96.0.11"], "ports": ports}),
            json!({}),
            vec!["10.96.0.11:80 ClusterIp"],
        ),
    ];
    for (case, spec, status, expected) in cases {
        let st = state(vec![service("web", spec, status)], vec![]);
        let model = Model::build(&st, &node());
        let sp = &model.ports[&key("web", "http", Protocol::Tcp)];
        let got: Vec<String> = sp
            .frontends
            .iter()
            .map(|f| format!("{}:{} {:?}", f.addr, f.port, f.kind))
            .collect();
        assert_eq!(got, expected, "{case}");
    }
}

#[test]
fn external_name_has_no_port() {
    let spec = json!({"type": "ExternalName", "externalName": "db.example", "ports": web_port()});
    let model = Model::build(
        &state(vec![service("db", spec, json!({}))], vec![]),
        &node(),
    );
    assert!(model.ports.is_empty());
}

#[test]
fn named_and_numeric_ports_match_slice_ports_by_name_and_protocol() {
    let spec = json!({
        "clusterIP": "10.96.0.53",
        "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 5353},
        ],
    });
    let slice_ports = json!([
        {"name": "dns", "port": 5300, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 5353, "protocol": "TCP"},
        {"name": "metrics", "port": 9153, "protocol": "TCP"},
    ]);
    let st = state(
        vec![service("dns", spec, json!({}))],
        vec![slice(
            "dns",
            "dns-1",
            slice_ports,
            json!([ep("10.244.0.7", "node-a", Some(true), None, false)]),
        )],
    );
    let model = Model::build(&st, &node());
    let udp = &model.ports[&key("dns", "dns", Protocol::Udp)];
    let tcp = &model.ports[&key("dns", "dns-tcp", Protocol::Tcp)];
    assert_eq!(addrs(&udp.backends), ["10.244.0.7:5300L"]);
    assert_eq!(addrs(&tcp.backends), ["10.244.0.7:5353L"]);
    assert_eq!(model.ports.len(), 2);

    // An unnamed Service port matches the unnamed slice port.
    let st = state(
        vec![service(
            "one",
            cluster_ip(json!([{"port": 80, "targetPort": 8080}])),
            json!({}),
        )],
        vec![slice(
            "one",
            "one-1",
            json!([{"port": 8080}]),
            json!([ep("10.244.1.1", "node-b", None, None, false)]),
        )],
    );
    let model = Model::build(&st, &node());
    assert_eq!(
        addrs(&model.ports[&key("one", "", Protocol::Tcp)].backends),
        ["10.244.1.1:8080"]
    );
}

#[test]
fn slices_of_other_services_and_namespaces_do_not_count() {
    let mut other_ns = slice(
        "web",
        "web-x",
        web_port(),
        json!([ep("10.244.9.9", "node-b", Some(true), None, false)]),
    );
    other_ns.metadata.namespace = Some("other".into());
    let st = state(
        vec![service("web", cluster_ip(web_port()), json!({}))],
        vec![
            other_ns,
            slice(
                "api",
                "api-1",
                web_port(),
                json!([ep("10.244.8.8", "node-b", Some(true), None, false)]),
            ),
        ],
    );
    let model = Model::build(&st, &node());
    assert!(
        model.ports[&key("web", "http", Protocol::Tcp)]
            .backends
            .is_empty()
    );
}

#[test]
fn affinity_and_traffic_policies() {
    let cases: Vec<(&str, Value, Option<u32>, bool, bool)> = vec![
        ("defaults", json!({}), None, false, false),
        (
            "ClientIP with the default timeout",
            json!({"sessionAffinity": "ClientIP"}),
            Some(DEFAULT_AFFINITY_TIMEOUT),
            false,
            false,
        ),
        (
            "ClientIP with a timeout",
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}),
            Some(30),
            false,
            false,
        ),
        (
            "externalTrafficPolicy Local",
            json!({"type": "NodePort", "externalTrafficPolicy": "Local"}),
            None,
            true,
            false,
        ),
        (
            "internalTrafficPolicy Local",
            json!({"internalTrafficPolicy": "Local"}),
            None,
            false,
            true,
        ),
    ];
    for (case, extra, timeout, etp, itp) in cases {
        let mut spec = cluster_ip(web_port());
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let model = Model::build(
            &state(vec![service("web", spec, json!({}))], vec![]),
            &node(),
        );
        let sp = &model.ports[&key("web", "http", Protocol::Tcp)];
        assert_eq!(
            (sp.affinity_timeout, sp.external_local, sp.internal_local),
            (timeout, etp, itp),
            "{case}"
        );
    }
}

#[test]
fn unsupported_and_conflicting_inputs_are_warnings() {
    let sctp = json!([{"name": "s", "port": 9, "protocol": "SCTP"}]);
    let mut clash = cluster_ip(web_port());
    clash["clusterIP"] = json!("10.96.0.10");
    let st = state(
        vec![
            service("a-first", cluster_ip(web_port()), json!({})),
            service("b-clash", clash, json!({})),
            service("c-sctp", cluster_ip(sctp), json!({})),
            service(
                "d-bad",
                json!({"clusterIP": "10.96.0.300", "ports": web_port()}),
                json!({}),
            ),
        ],
        vec![],
    );
    let model = Model::build(&st, &node());
    assert_eq!(
        model.ports[&key("a-first", "http", Protocol::Tcp)]
            .frontends
            .len(),
        1
    );
    assert!(
        model.ports[&key("b-clash", "http", Protocol::Tcp)]
            .frontends
            .is_empty()
    );
    assert!(!model.ports.contains_key(&key("c-sctp", "s", Protocol::Tcp)));
    assert!(
        model.ports[&key("d-bad", "http", Protocol::Tcp)]
            .frontends
            .is_empty()
    );
    assert_eq!(model.warnings.len(), 3, "{:?}", model.warnings);
    assert!(model.warnings[0].contains("already served for default/a-first"));
}
