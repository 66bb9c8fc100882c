//! Unit tests of `rollout::decide` with fixed timestamps.
use super::*;
use serde_json::json;

fn now() -> Timestamp {
    "2026-03-01T10:00:00Z".parse().unwrap()
}

fn deployment(image: &str, replicas: i32, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "uid": "d-1", "generation": 1,
            "annotations": {"kubernetes.io/change-cause": "v"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "strategy": strategy,
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}}))
    .unwrap()
}

fn rolling(surge: serde_json::Value, unavailable: serde_json::Value) -> serde_json::Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

/// A ReplicaSet of `d`'s current template at `revision` with `replicas` (all available).
fn set_of(
    d: &Deployment,
    revision: u64,
    replicas: i32,
    available: i32,
    created: &str,
) -> Arc<ReplicaSet> {
    let hash = template_hash(&d.spec.as_ref().unwrap().template, None);
    let mut rs = new_replica_set(d, &hash, replicas, revision);
    rs.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
    rs.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
        replicas,
        available_replicas: Some(available),
        ready_replicas: Some(available),
        ..Default::default()
    });
    Arc::new(rs)
}

fn scales(decision: &Decision) -> Vec<(String, i32)> {
    decision
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Scale { name, replicas, .. } => Some((name.clone(), *replicas)),
            _ => None,
        })
        .collect()
}

#[test]
fn surge_and_unavailability_resolve_percentages_like_kubernetes() {
    let d = |s, u| deployment("a", 10, rolling(s, u));
    assert_eq!(
        surge_and_unavailable(&d(json!("25%"), json!("25%"))),
        (3, 2)
    );
    assert_eq!(surge_and_unavailable(&d(json!(1), json!(0))), (1, 0));
    assert_eq!(surge_and_unavailable(&d(json!(0), json!(0))), (0, 1));
    assert_eq!(
        surge_and_unavailable(&deployment("a", 4, json!({"type": "Recreate"}))),
        (0, 4)
    );
}

#[test]
fn hashes_ignore_empty_fields_and_the_hash_label() {
    let d = deployment("a", 1, json!({}));
    let t = d.spec.as_ref().unwrap().template.clone();
    let mut with_empties: serde_json::Value = serde_json::to_value(&t).unwrap();
    with_empties["spec"]["volumes"] = json!([]);
    with_empties["metadata"]["annotations"] = json!({});
    with_empties["metadata"]["labels"][HASH_LABEL] = json!("xyz");
    let t2: PodTemplateSpec = serde_json::from_value(with_empties).unwrap();
    assert!(same_template(&t, &t2));
    assert_eq!(template_hash(&t, None), template_hash(&t2, None));
    assert_ne!(template_hash(&t, None), template_hash(&t, Some(1)));
    let other = deployment("b", 1, json!({}));
    assert!(!same_template(&t, &other.spec.unwrap().template));
    assert!(
        template_hash(&t, None)
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
    );
}

#[test]
fn a_first_rollout_creates_the_new_set_at_revision_1() {
    let d = deployment("a", 5, rolling(json!(1), json!(0)));
    let decision = decide(&d, &[], 0, now());
    let [Action::Create(rs)] = decision.actions.as_slice() else {
        panic!("{:?}", decision.actions);
    };
    assert_eq!(
        rs.spec.as_ref().unwrap().replicas,
        Some(5),
        "within replicas + surge"
    );
    assert_eq!(revision(rs), 1);
    let annotations = rs.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["kubernetes.io/change-cause"], "v");
    let labels = rs.metadata.labels.as_ref().unwrap();
    assert!(labels.contains_key(HASH_LABEL));
    assert_eq!(decision.revision.as_deref(), Some("1"));
    assert_eq!(
        decision.events[0].1,
        format!("Scaled up replica set {} from 0 to 5", name(rs.as_ref()))
    );
}

#[test]
fn rolling_update_surges_by_one_then_waits_for_availability() {
    let v1 = deployment("a", 5, rolling(json!(1), json!(0)));
    let old = set_of(&v1, 1, 5, 5, "2026-03-01T09:00:00Z");
    let v2 = deployment("b", 5, rolling(json!(1), json!(0)));
    // Step 1: the new set is created with one replica (5 + 1 surge - 5).
    let d = decide(&v2, std::slice::from_ref(&old), 5, now());
    let [Action::Create(new)] = d.actions.as_slice() else {
        panic!("{:?}", d.actions);
    };
    assert_eq!(new.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(revision(new), 2);
    // Step 2: new has 1 replica, not yet available: nothing may shrink or grow.
    let mut new = (**new).clone();
    new.metadata.creation_timestamp = Some(Time(now()));
    new.status = Some(Default::default());
    let new = Arc::new(new);
    let d = decide(&v2, &[old.clone(), new.clone()], 5, now());
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    // Step 3: the new replica is available: one old replica goes.
    let mut available = (*new).clone();
    available.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
        replicas: 1,
        available_replicas: Some(1),
        ..Default::default()
    });
    let d = decide(&v2, &[old.clone(), Arc::new(available)], 5, now());
    assert_eq!(scales(&d), vec![(name(old.as_ref()).to_owned(), 4)]);
}

#[test]
fn max_unavailable_lets_old_replicas_go_first() {
    let v1 = deployment("a", 4, rolling(json!(0), json!(2)));
    let old = set_of(&v1, 1, 4, 4, "2026-03-01T09:00:00Z");
    let v2 = deployment("b", 4, rolling(json!(0), json!(2)));
    let hash = template_hash(&v2.spec.as_ref().unwrap().template, None);
    let mut new = new_replica_set(&v2, &hash, 0, 2);
    new.metadata.creation_timestamp = Some(Time(now()));
    let d = decide(&v2, &[old.clone(), Arc::new(new)], 4, now());
    assert_eq!(scales(&d), vec![(name(old.as_ref()).to_owned(), 2)]);
}

#[test]
fn recreate_scales_old_to_zero_and_waits_for_old_pods() {
    let v1 = deployment("a", 3, json!({"type": "Recreate"}));
    let old = set_of(&v1, 1, 3, 3, "2026-03-01T09:00:00Z");
    let v2 = deployment("b", 3, json!({"type": "Recreate"}));
    let d = decide(&v2, std::slice::from_ref(&old), 3, now());
    assert_eq!(scales(&d), vec![(name(old.as_ref()).to_owned(), 0)]);
    let stopped = set_of(&v1, 1, 0, 0, "2026-03-01T09:00:00Z");
    assert!(
        decide(&v2, std::slice::from_ref(&stopped), 2, now())
            .actions
            .is_empty(),
        "old pods still running"
    );
    let d = decide(&v2, &[stopped], 0, now());
    assert!(
        matches!(d.actions.as_slice(), [Action::Create(rs)] if rs.spec.as_ref().unwrap().replicas == Some(3))
    );
}

#[test]
fn undo_makes_the_old_set_new_again_with_the_next_revision() {
    let v1 = deployment("a", 2, rolling(json!(1), json!(0)));
    let v2 = deployment("b", 2, rolling(json!(1), json!(0)));
    let first = set_of(&v1, 1, 0, 0, "2026-03-01T09:00:00Z");
    let second = set_of(&v2, 2, 2, 2, "2026-03-01T09:30:00Z");
    let d = decide(&v1, &[first.clone(), second], 2, now());
    let scaled = d.actions.iter().find_map(|a| match a {
        Action::Scale {
            name: n,
            replicas,
            annotations,
        } if n == name(first.as_ref()) => Some((*replicas, annotations[REVISION].clone())),
        _ => None,
    });
    assert_eq!(scaled, Some((1, "3".to_owned())));
    assert_eq!(d.revision.as_deref(), Some("3"));
}

#[test]
fn scaling_down_a_settled_deployment_scales_its_set() {
    let d5 = deployment("a", 5, rolling(json!(1), json!(0)));
    let rs = set_of(&d5, 1, 5, 5, "2026-03-01T09:00:00Z");
    let d2 = deployment("a", 2, rolling(json!(1), json!(0)));
    assert_eq!(
        scales(&decide(&d2, std::slice::from_ref(&rs), 0, now())),
        vec![(name(rs.as_ref()).to_owned(), 2)]
    );
}

#[test]
fn history_beyond_the_limit_is_deleted_oldest_first() {
    let mut sets = Vec::new();
    for (i, image) in ["a", "b", "c", "d"].iter().enumerate() {
        let d = deployment(image, 1, rolling(json!(1), json!(0)));
        let live = if *image == "d" { 1 } else { 0 };
        sets.push(set_of(
            &d,
            i as u64 + 1,
            live,
            live,
            &format!("2026-03-01T0{}:00:00Z", i + 1),
        ));
    }
    let mut current = deployment("d", 1, rolling(json!(1), json!(0)));
    current.spec.as_mut().unwrap().revision_history_limit = Some(1);
    let d = decide(&current, &sets, 0, now());
    let deleted: Vec<&str> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        deleted,
        vec![name(sets[0].as_ref()), name(sets[1].as_ref())]
    );
}

#[test]
fn status_reports_completion_and_the_progress_deadline() {
    let mut d = deployment("a", 2, rolling(json!(1), json!(0)));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(60);
    let mut done = (*set_of(&d, 1, 2, 2, "2026-03-01T09:00:00Z")).clone();
    done.status.as_mut().unwrap().observed_generation = done.metadata.generation;
    let decision = decide(&d, &[Arc::new(done)], 0, now());
    let s = &decision.status;
    assert_eq!(
        (s.replicas, s.updated_replicas, s.available_replicas),
        (Some(2), Some(2), Some(2))
    );
    assert_eq!(s.observed_generation, Some(1));
    let progressing = s
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );

    // Stuck: no pod ever becomes available. After 60 s without progress: exceeded.
    let stuck = set_of(&d, 1, 2, 0, "2026-03-01T09:00:00Z");
    let first = decide(&d, std::slice::from_ref(&stuck), 0, now());
    assert_eq!(first.again, Some(Duration::from_secs(60)));
    d.status = Some(first.status);
    let later: Timestamp = "2026-03-01T10:00:30Z".parse().unwrap();
    let mid = decide(&d, std::slice::from_ref(&stuck), 0, later);
    assert_eq!(mid.again, Some(Duration::from_secs(30)));
    let after: Timestamp = "2026-03-01T10:01:00Z".parse().unwrap();
    let late = decide(&d, &[stuck], 0, after);
    let c = late
        .status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some("ProgressDeadlineExceeded"))
    );
}

#[test]
fn a_paused_deployment_does_not_roll_out() {
    let v1 = deployment("a", 2, rolling(json!(1), json!(0)));
    let old = set_of(&v1, 1, 2, 2, "2026-03-01T09:00:00Z");
    let mut v2 = deployment("b", 2, rolling(json!(1), json!(0)));
    v2.spec.as_mut().unwrap().paused = Some(true);
    let d = decide(&v2, &[old], 2, now());
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    let c = d
        .status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(c.reason.as_deref(), Some("DeploymentPaused"));
}
