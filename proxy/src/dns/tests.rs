//! DNS records and answers from a ClusterState, without sockets.

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;

use super::*;
use crate::state::{ClusterState, ObjectKey};

fn state() -> ClusterState {
    let mut s = ClusterState::default();
    let services = [
        json!({"metadata": {"namespace": "default", "name": "web"},
            "spec": {"clusterIP": "10.96.0.50", "clusterIPs": ["10.96.0.50"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 8443}]}}),
        json!({"metadata": {"namespace": "shop", "name": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
        json!({"metadata": {"namespace": "shop", "name": "empty"},
            "spec": {"clusterIP": "None"}}),
        json!({"metadata": {"namespace": "default", "name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "Example.COM."}}),
        json!({"metadata": {"namespace": "default", "name": "alias"},
            "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}}),
    ];
    for v in services {
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(v).unwrap();
        s.services.insert(ObjectKey::of(&svc.metadata), svc);
    }
    let slices = [
        json!({"metadata": {"namespace": "shop", "name": "db-1",
                "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.0.7"], "conditions": {"ready": true}, "hostname": "db-0"},
                {"addresses": ["10.244.0.8"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.9"], "conditions": {"ready": false}}]}),
        // The same name in another namespace must not leak in.
        json!({"metadata": {"namespace": "default", "name": "db-x",
                "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.9.9"]}]}),
    ];
    for v in slices {
        let slice: k8s_openapi::api::discovery::v1::EndpointSlice =
            serde_json::from_value(v).unwrap();
        s.slices.insert(ObjectKey::of(&slice.metadata), slice);
    }
    s
}

fn ask(records: &Records, name: &str, qtype: RecordType) -> Outcome {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    answer(records, &m)
}

fn reply(outcome: Outcome) -> Message {
    match outcome {
        Outcome::Reply(m) => m,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn a_of(m: &Message) -> Vec<Ipv4Addr> {
    a_in(&m.answers)
}

fn a_in(records: &[hickory_proto::rr::Record]) -> Vec<Ipv4Addr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn records() -> Records {
    Records::build(&state(), "cluster.local")
}

#[test]
fn a_service_name_is_its_cluster_ip_in_any_case() {
    let r = records();
    for name in [
        "web.default.svc.cluster.local.",
        "WEB.Default.svc.cluster.local.",
    ] {
        let m = reply(ask(&r, name, RecordType::A));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(a_of(&m), ["10.96.0.50".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(m.answers[0].ttl, TTL);
        assert_eq!(m.queries.len(), 1, "the question is echoed");
    }
}

#[test]
fn a_headless_service_is_its_ready_endpoints_each_with_a_name_of_its_own() {
    let r = records();
    let m = reply(ask(&r, "db.shop.svc.cluster.local.", RecordType::A));
    assert_eq!(
        a_of(&m),
        [
            "10.244.0.7".parse::<Ipv4Addr>().unwrap(),
            "10.244.0.8".parse().unwrap()
        ],
        "not-ready endpoints and other namespaces' slices are left out"
    );
    let m = reply(ask(&r, "db-0.db.shop.svc.cluster.local.", RecordType::A));
    assert_eq!(a_of(&m), ["10.244.0.7".parse::<Ipv4Addr>().unwrap()]);
    let m = reply(ask(
        &r,
        "10-244-0-8.db.shop.svc.cluster.local.",
        RecordType::A,
    ));
    assert_eq!(a_of(&m), ["10.244.0.8".parse::<Ipv4Addr>().unwrap()]);
    // A headless Service without ready endpoints exists but has no address.
    let m = reply(ask(&r, "empty.shop.svc.cluster.local.", RecordType::A));
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[test]
fn named_ports_have_srv_records() {
    let r = records();
    let m = reply(ask(
        &r,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    ));
    let srv: Vec<(u16, String)> = m
        .answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::SRV(s) => Some((s.port, s.target.to_ascii())),
            _ => None,
        })
        .collect();
    assert_eq!(srv, [(80, "web.default.svc.cluster.local.".to_string())]);
    assert_eq!(
        a_in(&m.additionals),
        ["10.96.0.50".parse::<Ipv4Addr>().unwrap()]
    );
    // Headless: one SRV per ready endpoint, each pointing at the endpoint's own name.
    let m = reply(ask(
        &r,
        "_pg._tcp.db.shop.svc.cluster.local.",
        RecordType::SRV,
    ));
    let mut targets: Vec<String> = m
        .answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::SRV(s) => Some(format!("{}:{}", s.target.to_ascii(), s.port)),
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "10-244-0-8.db.shop.svc.cluster.local.:5432",
            "db-0.db.shop.svc.cluster.local.:5432"
        ]
    );
    // An unnamed port has none.
    let m = reply(ask(
        &r,
        "_8443._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    ));
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[test]
fn external_name_is_a_cname_chased_upstream_or_in_the_cluster() {
    let r = records();
    match ask(&r, "ext.default.svc.cluster.local.", RecordType::A) {
        Outcome::Chase {
            reply,
            target,
            query_type,
        } => {
            assert_eq!(target.to_ascii(), "example.com.");
            assert_eq!(query_type, RecordType::A);
            assert!(
                matches!(&reply.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "example.com.")
            );
        }
        other => panic!("{other:?}"),
    }
    let m = reply(ask(&r, "ext.default.svc.cluster.local.", RecordType::CNAME));
    assert_eq!(m.answers.len(), 1);
    let m = reply(ask(&r, "alias.default.svc.cluster.local.", RecordType::A));
    assert_eq!(
        m.answers.len(),
        2,
        "CNAME then the in-cluster target's address"
    );
    assert_eq!(a_of(&m), ["10.96.0.50".parse::<Ipv4Addr>().unwrap()]);
}

#[test]
fn unknown_cluster_names_are_nxdomain_and_known_names_without_the_type_are_nodata() {
    let r = records();
    for name in [
        "nope.default.svc.cluster.local.",
        "web.nons.svc.cluster.local.",
        // What the search path makes of an external name with ndots:5.
        "example.com.default.svc.cluster.local.",
        "pod.cluster.local.",
    ] {
        let m = reply(ask(&r, name, RecordType::A));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(
            matches!(
                m.authorities.first().map(|a| a.record_type()),
                Some(RecordType::SOA)
            ),
            "SOA for negative caching: {name}"
        );
    }
    for (name, qtype) in [
        ("web.default.svc.cluster.local.", RecordType::AAAA),
        ("default.svc.cluster.local.", RecordType::A),
        ("svc.cluster.local.", RecordType::A),
        ("cluster.local.", RecordType::SOA),
    ] {
        let m = reply(ask(&r, name, qtype));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.answers.is_empty(), "{name}");
    }
}

#[test]
fn names_outside_the_cluster_domain_are_forwarded() {
    let r = records();
    assert!(matches!(
        ask(&r, "example.com.", RecordType::A),
        Outcome::Forward
    ));
    assert!(matches!(
        ask(&r, "notcluster.local.", RecordType::A),
        Outcome::Forward
    ));
    // A different cluster domain: the same state answers under it instead.
    let other = Records::build(&state(), "corp.example.");
    let m = reply(ask(&other, "web.default.svc.corp.example.", RecordType::A));
    assert_eq!(a_of(&m).len(), 1);
    assert!(matches!(
        ask(&other, "web.default.svc.cluster.local.", RecordType::A),
        Outcome::Forward
    ));
}

#[test]
fn malformed_questions_are_refused_with_a_code() {
    let r = records();
    let mut m = Message::query();
    assert_eq!(
        reply(answer(&r, &m)).metadata.response_code,
        ResponseCode::FormErr
    );
    m.add_query(Query::query(
        Name::from_ascii("a.cluster.local.").unwrap(),
        RecordType::A,
    ));
    m.add_query(Query::query(
        Name::from_ascii("b.cluster.local.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        reply(answer(&r, &m)).metadata.response_code,
        ResponseCode::FormErr
    );
    let mut update = Message::query();
    update.metadata.op_code = hickory_proto::op::OpCode::Update;
    update.add_query(Query::query(
        Name::from_ascii("a.cluster.local.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        reply(answer(&r, &update)).metadata.response_code,
        ResponseCode::NotImp
    );
}
