//! The watch's state machine, event by event, without a server.

use super::*;
use serde_json::json;

fn svc(name: &str, ip: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"metadata": {"namespace": "default", "name": name},
        "spec": {"clusterIP": ip, "ports": [{"port": 80}]}}))
    .unwrap()
}

fn slice(name: &str, service: &str, ip: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"metadata": {"namespace": "default", "name": name,
        "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "endpoints": [{"addresses": [ip]}]}))
    .unwrap()
}

fn ev(kind: Type, what: Kind, object: Vec<u8>, at: (u64, u64)) -> ServiceEvent {
    ServiceEvent {
        r#type: kind as i32,
        kind: what as i32,
        object,
        services_revision: at.0,
        slices_revision: at.1,
    }
}

fn synced(at: (u64, u64)) -> ServiceEvent {
    ev(Type::Synced, Kind::Service, Vec::new(), at)
}

fn names(t: &Tracker) -> (Vec<String>, Vec<String>) {
    let s = t.state().expect("a complete state");
    (
        s.services.keys().map(|k| k.name.clone()).collect(),
        s.slices.keys().map(|k| k.name.clone()).collect(),
    )
}

#[test]
fn nothing_is_published_before_the_snapshot_is_closed() {
    let mut t = Tracker::new();
    assert_eq!(t.request().services_revision, 0);
    t.begin();
    let changed = t
        .apply(&ev(
            Type::Snapshot,
            Kind::Service,
            svc("web", "10.96.0.20"),
            (5, 6),
        ))
        .unwrap();
    assert!(!changed);
    t.apply(&ev(
        Type::Snapshot,
        Kind::EndpointSlice,
        slice("web-a", "web", "10.244.0.5"),
        (5, 6),
    ))
    .unwrap();
    assert!(t.state().is_none(), "half a snapshot is never visible");
    assert_eq!(
        t.position(),
        Position::default(),
        "no resume point inside a snapshot"
    );
    assert!(t.apply(&synced((5, 6))).unwrap());
    assert_eq!(names(&t), (vec!["web".into()], vec!["web-a".into()]));
    assert_eq!(
        t.position(),
        Position {
            services: 5,
            slices: 6
        }
    );
    let r = t.request();
    assert_eq!((r.services_revision, r.slices_revision), (5, 6));
}

#[test]
fn changes_apply_in_order_and_move_the_position_of_each_kind() {
    let mut t = Tracker::new();
    t.begin();
    t.apply(&synced((5, 6))).unwrap();
    assert!(
        t.apply(&ev(
            Type::AddedOrModified,
            Kind::Service,
            svc("web", "10.96.0.20"),
            (7, 6)
        ))
        .unwrap()
    );
    assert!(
        t.apply(&ev(
            Type::AddedOrModified,
            Kind::EndpointSlice,
            slice("web-a", "web", "10.244.0.5"),
            (7, 8)
        ))
        .unwrap()
    );
    t.apply(&ev(
        Type::AddedOrModified,
        Kind::Service,
        svc("web", "10.96.0.21"),
        (9, 8),
    ))
    .unwrap();
    let state = t.state().unwrap();
    let ip = state
        .services
        .values()
        .next()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .cluster_ip
        .clone();
    assert_eq!(
        ip.as_deref(),
        Some("10.96.0.21"),
        "a modification replaces the object"
    );
    t.apply(&ev(
        Type::Deleted,
        Kind::EndpointSlice,
        slice("web-a", "web", "10.244.0.5"),
        (9, 10),
    ))
    .unwrap();
    assert_eq!(names(&t), (vec!["web".into()], vec![]));
    assert_eq!(
        t.position(),
        Position {
            services: 9,
            slices: 10
        }
    );
}

#[test]
fn a_resumed_call_expects_no_snapshot_and_a_broken_snapshot_is_dropped() {
    let mut t = Tracker::new();
    t.begin();
    t.apply(&ev(
        Type::Snapshot,
        Kind::Service,
        svc("a", "10.96.0.20"),
        (5, 5),
    ))
    .unwrap();
    // The call breaks mid-snapshot; the next one starts over.
    t.begin();
    t.apply(&ev(
        Type::Snapshot,
        Kind::Service,
        svc("b", "10.96.0.21"),
        (6, 6),
    ))
    .unwrap();
    t.apply(&synced((6, 6))).unwrap();
    assert_eq!(
        names(&t).0,
        ["b"],
        "nothing of the broken snapshot survives"
    );
    // Resuming: changes only, applied to the state in force.
    t.begin();
    t.apply(&ev(
        Type::AddedOrModified,
        Kind::Service,
        svc("c", "10.96.0.22"),
        (7, 6),
    ))
    .unwrap();
    assert_eq!(names(&t).0, ["b", "c"]);
}

#[test]
fn out_of_range_re_snapshots_and_what_is_gone_goes_only_when_the_new_snapshot_closes() {
    let mut t = Tracker::new();
    t.begin();
    for name in ["a", "b", "c"] {
        t.apply(&ev(
            Type::Snapshot,
            Kind::Service,
            svc(name, "10.96.0.20"),
            (5, 5),
        ))
        .unwrap();
    }
    t.apply(&synced((5, 5))).unwrap();
    t.out_of_range();
    assert_eq!(t.request().services_revision, 0, "asks for a snapshot");
    t.begin();
    t.apply(&ev(
        Type::Snapshot,
        Kind::Service,
        svc("a", "10.96.0.20"),
        (50, 50),
    ))
    .unwrap();
    assert_eq!(
        names(&t).0,
        ["a", "b", "c"],
        "the old picture holds meanwhile"
    );
    assert!(t.apply(&synced((50, 50))).unwrap());
    assert_eq!(
        names(&t).0,
        ["a"],
        "b and c were deleted while the node was away"
    );
    assert_eq!(
        t.position(),
        Position {
            services: 50,
            slices: 50
        }
    );
}

#[test]
fn an_undecodable_object_is_an_error_but_the_stream_moves_on() {
    let mut t = Tracker::new();
    t.begin();
    t.apply(&synced((5, 5))).unwrap();
    let bad = ev(
        Type::AddedOrModified,
        Kind::Service,
        b"{not json".to_vec(),
        (6, 5),
    );
    assert!(matches!(
        t.apply(&bad),
        Err(WatchError::Decode {
            kind: "Service",
            ..
        })
    ));
    assert_eq!(t.position().services, 6);
    let unknown = ServiceEvent {
        r#type: 42,
        ..synced((7, 7))
    };
    assert!(matches!(
        t.apply(&unknown),
        Err(WatchError::UnknownType(42))
    ));
}
