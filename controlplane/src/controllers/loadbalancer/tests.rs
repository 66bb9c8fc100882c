//! The LoadBalancer pool's decisions, without an API server.

use super::*;
use serde_json::json;

fn pool(cidr: &str) -> Pool {
    Pool::new(cidr.parse().unwrap())
}

fn svc(name: &str, kind: &str, ip: Option<&str>, created: &str) -> Arc<Service> {
    let mut v = json!({"metadata": {"namespace": "default", "name": name,
            "creationTimestamp": created},
        "spec": {"type": kind, "ports": [{"port": 80}]}});
    if let Some(ip) = ip {
        v["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    }
    Arc::new(serde_json::from_value(v).unwrap())
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn the_pool_leaves_out_network_and_broadcast_except_for_tiny_pools() {
    let got: Vec<Ipv4Addr> = pool("192.0.2.0/30").addresses().collect();
    assert_eq!(got, [ip("192.0.2.1"), ip("192.0.2.2")]);
    let got: Vec<Ipv4Addr> = pool("192.0.2.7/32").addresses().collect();
    assert_eq!(got, [ip("192.0.2.7")]);
    let got: Vec<Ipv4Addr> = pool("192.0.2.4/31").addresses().collect();
    assert_eq!(got, [ip("192.0.2.4"), ip("192.0.2.5")]);
    assert_eq!(pool("192.0.2.0/24").addresses().count(), 254);
}

#[test]
fn a_new_load_balancer_gets_the_first_free_address_and_keeps_it() {
    let p = pool("192.0.2.0/29");
    let a = svc(
        "a",
        "LoadBalancer",
        Some("192.0.2.1"),
        "2026-01-01T00:00:00Z",
    );
    let b = svc("b", "LoadBalancer", None, "2026-01-02T00:00:00Z");
    let c = svc("c", "LoadBalancer", None, "2026-01-03T00:00:00Z");
    let all = vec![a.clone(), b.clone(), c.clone()];
    let mut claims = HashMap::new();
    assert_eq!(decide("default/a", &a, &all, &claims, &p), Decision::Keep);
    assert_eq!(
        decide("default/b", &b, &all, &claims, &p),
        Decision::Assign(ip("192.0.2.2"))
    );
    // b's write is not in the cache yet: c must not get the same address.
    claims.insert("default/b".to_string(), ip("192.0.2.2"));
    assert_eq!(
        decide("default/c", &c, &all, &claims, &p),
        Decision::Assign(ip("192.0.2.3"))
    );
    // b again before its status shows up: the same address, not another.
    assert_eq!(
        decide("default/b", &b, &all, &claims, &p),
        Decision::Assign(ip("192.0.2.2"))
    );
}

#[test]
fn a_type_change_releases_and_other_types_are_left_alone() {
    let p = pool("192.0.2.0/29");
    let was = svc("a", "ClusterIP", Some("192.0.2.1"), "2026-01-01T00:00:00Z");
    assert_eq!(
        decide(
            "default/a",
            &was,
            std::slice::from_ref(&was),
            &HashMap::new(),
            &p
        ),
        Decision::Release
    );
    let plain = svc("b", "NodePort", None, "2026-01-01T00:00:00Z");
    assert_eq!(
        decide(
            "default/b",
            &plain,
            std::slice::from_ref(&plain),
            &HashMap::new(),
            &p
        ),
        Decision::Keep
    );
    // Another implementation's class is not ours.
    let mut classy = (*svc("c", "LoadBalancer", None, "2026-01-01T00:00:00Z")).clone();
    classy.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
    let classy = Arc::new(classy);
    assert_eq!(
        decide(
            "default/c",
            &classy,
            std::slice::from_ref(&classy),
            &HashMap::new(),
            &p
        ),
        Decision::Keep
    );
    // An address outside the pool (someone else's) is not ours to release.
    let foreign = svc(
        "d",
        "ClusterIP",
        Some("198.51.100.1"),
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(
        decide(
            "default/d",
            &foreign,
            std::slice::from_ref(&foreign),
            &HashMap::new(),
            &p
        ),
        Decision::Keep
    );
}

#[test]
fn two_services_never_share_an_address_the_older_keeps_it() {
    let p = pool("192.0.2.0/29");
    let old = svc(
        "old",
        "LoadBalancer",
        Some("192.0.2.1"),
        "2026-01-01T00:00:00Z",
    );
    let new = svc(
        "new",
        "LoadBalancer",
        Some("192.0.2.1"),
        "2026-02-01T00:00:00Z",
    );
    let all = vec![old.clone(), new.clone()];
    assert_eq!(
        decide("default/old", &old, &all, &HashMap::new(), &p),
        Decision::Keep
    );
    assert_eq!(
        decide("default/new", &new, &all, &HashMap::new(), &p),
        Decision::Assign(ip("192.0.2.2"))
    );
}

#[test]
fn a_full_pool_is_exhausted_and_a_requested_address_is_honoured_when_free() {
    let p = pool("192.0.2.1/32");
    let a = svc(
        "a",
        "LoadBalancer",
        Some("192.0.2.1"),
        "2026-01-01T00:00:00Z",
    );
    let b = svc("b", "LoadBalancer", None, "2026-01-02T00:00:00Z");
    let all = vec![a.clone(), b.clone()];
    assert_eq!(
        decide("default/b", &b, &all, &HashMap::new(), &p),
        Decision::Exhausted
    );
    let p = pool("192.0.2.0/28");
    let mut wants = (*svc("c", "LoadBalancer", None, "2026-01-01T00:00:00Z")).clone();
    wants.spec.as_mut().unwrap().load_balancer_ip = Some("192.0.2.9".into());
    let wants = Arc::new(wants);
    assert_eq!(
        decide(
            "default/c",
            &wants,
            std::slice::from_ref(&wants),
            &HashMap::new(),
            &p
        ),
        Decision::Assign(ip("192.0.2.9"))
    );
}
