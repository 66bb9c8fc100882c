//! Node tokens: a node reads and writes its own Node and Lease and the pods bound to it
//! (and their status); anything else is a 403 Status in Kubernetes' words, and the store
//! is unchanged. Minting is admin-only; minting again revokes the old token.

#[path = "apiserver/kubectl.rs"]
mod harness;

use harness::{Cluster, kubectl_binary};
use serde_json::json;

const OBJECTS: &str = r#"apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: default}
spec:
  nodeName: n1
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: default}
spec:
  nodeName: n2
  containers: [{name: c, image: busybox}]
"#;

#[test]
fn node_tokens_reach_only_their_own_objects() {
    let Some(kubectl) = kubectl_binary(33) else {
        return;
    };
    let c = Cluster::start(kubectl);
    c.ok(&["apply", "-f", &c.manifest("objects.yaml", OBJECTS)]);
    let minted = c.curl("POST", "/skiff/v1/nodes/n1/token", "application/json", b"");
    assert_eq!(minted.code, 201, "{minted:?}");
    let token = minted.json()["token"].as_str().expect("token").to_owned();
    let as_node = format!("--token={token}");
    let node = |args: &[&str]| {
        let mut all = vec![as_node.as_str()];
        all.extend_from_slice(args);
        c.run(&all)
    };

    let out = node(&["get", "node", "n1"]);
    assert!(out.ok && out.stdout.contains("n1"), "{out:?}");
    let out = node(&["get", "node", "n2"]);
    assert!(out.stderr.contains(r#"Error from server (Forbidden): nodes "n2" is forbidden: User "system:node:n1" cannot get resource "nodes" in API group "" at the cluster scope: no relationship found between node 'n1' and this object"#), "{out:?}");
    let out = node(&["get", "pods", "-A"]);
    assert!(out.stderr.contains(r#"pods is forbidden: User "system:node:n1" cannot list resource "pods" in API group "" at the cluster scope"#), "{out:?}");
    let out = node(&["get", "pods", "-A", "--field-selector", "spec.nodeName=n1"]);
    assert!(
        out.ok && out.stdout.contains("p1") && !out.stdout.contains("p2"),
        "{out:?}"
    );
    assert!(node(&["get", "pod", "p1"]).ok);
    let out = node(&["get", "pod", "p2"]);
    assert!(out.stderr.contains(r#"pods "p2" is forbidden"#), "{out:?}");
    let out = node(&["get", "pod", "missing"]);
    assert!(out.stderr.contains("Forbidden"), "{out:?}");
    let out = node(&["get", "secrets"]);
    assert!(out.stderr.contains("Forbidden"), "{out:?}");
    let out = node(&["create", "configmap", "x", "--from-literal=a=b"]);
    assert!(
        out.stderr.contains(r#"configmaps "x" is forbidden"#),
        "{out:?}"
    );
    let out = node(&["label", "node", "n1", "ready=yes"]);
    assert!(out.ok, "{out:?}");
    let out = node(&["delete", "node", "n1"]);
    assert!(
        out.stderr.contains("cannot delete resource \"nodes\""),
        "{out:?}"
    );

    // Pod status of a bound pod: yes; of another node's pod, or the pod's spec: no.
    let status = json!({"status": {"phase": "Running"}}).to_string();
    let status_path = |pod: &str| format!("/api/v1/namespaces/default/pods/{pod}/status");
    let mp = "application/merge-patch+json";
    let ok = c.curl_as(&token, "PATCH", &status_path("p1"), mp, status.as_bytes());
    assert_eq!(ok.code, 200, "{ok:?}");
    let denied = c.curl_as(&token, "PATCH", &status_path("p2"), mp, status.as_bytes());
    assert_eq!(denied.code, 403, "{denied:?}");
    assert_eq!(denied.json()["reason"], "Forbidden");
    assert_eq!(denied.json()["kind"], "Status");
    let spec = json!({"spec": {"activeDeadlineSeconds": 5}}).to_string();
    let denied = c.curl_as(
        &token,
        "PATCH",
        "/api/v1/namespaces/default/pods/p1",
        mp,
        spec.as_bytes(),
    );
    assert_eq!(denied.code, 403, "{denied:?}");
    let phases = c.ok(&["get", "pods", "-o", "jsonpath={.items[*].status.phase}"]);
    assert_eq!(phases.trim(), "Running Pending");

    // Its Lease in kube-node-lease.
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}})
    .to_string();
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    let created = c.curl_as(&token, "POST", leases, "application/json", lease.as_bytes());
    assert_eq!(created.code, 201, "{created:?}");
    let other = lease.replace("\"n1\"", "\"n2\"");
    assert_eq!(
        c.curl_as(&token, "POST", leases, "application/json", other.as_bytes())
            .code,
        403
    );

    // Minting is for the admin; a new token revokes the old one.
    assert_eq!(
        c.curl_as(
            &token,
            "POST",
            "/skiff/v1/nodes/n2/token",
            "application/json",
            b""
        )
        .code,
        403
    );
    assert_eq!(
        c.curl("POST", "/skiff/v1/nodes/n1/token", "application/json", b"")
            .code,
        201
    );
    let out = node(&["get", "node", "n1"]);
    assert!(out.stderr.contains("Unauthorized"), "{out:?}");
}
