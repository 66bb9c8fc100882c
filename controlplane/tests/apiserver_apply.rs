//! `kubectl apply` of a changed Deployment (client-side: a strategic merge patch with
//! `$setElementOrder`, `$patch: delete`, `$retainKeys`) gives what Kubernetes gives, with
//! kubectl 1.33 and 1.29; `kubectl apply --server-side` creates, merges, tracks managers
//! in `managedFields` and refuses another manager's fields unless forced.

#[path = "apiserver/kubectl.rs"]
mod harness;

use harness::{Cluster, kubectl_binary};
use serde_json::{Value, json};

const V1: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports:
        - containerPort: 80
        - containerPort: 443
        env:
        - {name: A, value: "1"}
        - {name: B, value: "2"}
      - name: sidecar
        image: busybox:1.36
        args: [sleep, "3600"]
"#;

const V2: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  replicas: 3
  strategy:
    type: Recreate
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: init-like
        image: busybox:1.36
      - name: nginx
        image: nginx:1.28
        ports:
        - containerPort: 80
        env:
        - {name: C, value: "3"}
        - {name: A, value: "1"}
"#;

fn deployment(c: &Cluster) -> Value {
    let out = c.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    serde_json::from_str(&out).expect("json")
}

fn client_side(minor: u32) {
    let Some(kubectl) = kubectl_binary(minor) else {
        return;
    };
    let c = Cluster::start(kubectl);
    c.ok(&["apply", "-f", &c.manifest("v1.yaml", V1)]);
    // Someone scales by hand and adds an env var the manifest never had.
    c.ok(&["set", "env", "deploy/web", "-c", "nginx", "EXTRA=x"]);
    let out = c.ok(&["apply", "-f", &c.manifest("v2.yaml", V2)]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let d = deployment(&c);
    assert_eq!(
        d["metadata"]["labels"],
        json!({"app": "web", "tier": "front"})
    );
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(d["metadata"]["generation"], 3);
    let containers = &d["spec"]["template"]["spec"]["containers"];
    let names: Vec<&str> = containers
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["init-like", "nginx"]);
    let nginx = &containers[1];
    assert_eq!(nginx["image"], "nginx:1.28");
    assert_eq!(
        nginx["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    // Manifest order, and the hand-added variable kept (kubectl only removes what it set).
    assert_eq!(
        nginx["env"],
        json!([{"name": "C", "value": "3"}, {"name": "A", "value": "1"}, {"name": "EXTRA", "value": "x"}])
    );
    // Applying the same manifest again changes nothing (kubectl still sends the element
    // order, because of the hand-added variable; the spec stays as it was). The controllers
    // write the status meanwhile, so the resourceVersion is no witness.
    let before = (d["metadata"]["generation"].clone(), d["spec"].clone());
    c.ok(&["apply", "-f", &c.manifest("v2.yaml", V2)]);
    let after = deployment(&c);
    assert_eq!(
        (
            after["metadata"]["generation"].clone(),
            after["spec"].clone()
        ),
        before
    );
}

#[test]
fn client_side_apply_of_a_changed_deployment_1_33() {
    client_side(33);
}

#[test]
fn client_side_apply_of_a_changed_deployment_1_29() {
    client_side(29);
}

#[test]
fn server_side_apply_tracks_managers_and_conflicts() {
    let Some(kubectl) = kubectl_binary(33) else {
        return;
    };
    let c = Cluster::start(kubectl);
    let v1 = c.manifest("v1.yaml", V1);
    let out = c.ok(&["apply", "--server-side", "-f", &v1]);
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    let d = deployment(&c);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    let managers = &d["metadata"]["managedFields"];
    assert_eq!(managers[0]["manager"], "kubectl");
    assert_eq!(managers[0]["operation"], "Apply");
    assert!(
        managers[0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
            .get("k:{\"name\":\"sidecar\"}")
            .is_some()
    );

    // The same manager drops the sidecar and changes the image: both happen.
    let out = c.ok(&["apply", "--server-side", "-f", &c.manifest("v2.yaml", V2)]);
    assert!(out.contains("serverside-applied"), "{out}");
    let d = deployment(&c);
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap_or(""))
        .collect();
    assert!(!names.contains(&"sidecar"), "{names:?}");
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");

    // Another manager wanting a different replica count conflicts, naming kubectl.
    let other = c.manifest(
        "other.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 7}\n",
    );
    let err = c.fails(&[
        "apply",
        "--server-side",
        "--field-manager=autoscaler",
        "-f",
        &other,
    ]);
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"kubectl\""),
        "{err}"
    );
    assert!(err.contains(".spec.replicas"), "{err}");
    assert_eq!(deployment(&c)["spec"]["replicas"], 3);
    c.ok(&[
        "apply",
        "--server-side",
        "--field-manager=autoscaler",
        "--force-conflicts",
        "-f",
        &other,
    ]);
    let d = deployment(&c);
    assert_eq!(d["spec"]["replicas"], 7);
    let autoscaler = d["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["manager"] == "autoscaler").cloned())
        .expect("autoscaler entry");
    assert_eq!(
        autoscaler["fieldsV1"],
        json!({"f:spec": {"f:replicas": {}}})
    );

    // A plain write records an Update entry for what it changed.
    c.ok(&["label", "deploy", "web", "team=a"]);
    let d = deployment(&c);
    let label = d["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["operation"] == "Update").cloned())
        .expect("update entry");
    assert_eq!(label["manager"], "kubectl-label");
    assert_eq!(
        label["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:team": {}}}})
    );
}
