//! kubectl 1.33's `create …` sends protobuf bodies: each kind it makes is created and
//! reads back as the JSON kubectl 1.29 would have produced; broken bodies are 400 Statuses.

#[path = "apiserver/kubectl.rs"]
mod harness;

use harness::{Cluster, kubectl_binary};
use serde_json::Value;

fn get_json(c: &Cluster, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&c.ok(&all)).expect("kubectl -o json")
}

#[test]
fn kubectl_1_33_create_sends_protobuf() {
    let Some(kubectl) = kubectl_binary(33) else {
        return;
    };
    let c = Cluster::start(kubectl);
    assert!(
        c.ok(&["create", "namespace", "team"])
            .contains("namespace/team created")
    );
    let err = c.fails(&["create", "namespace", "team"]);
    assert!(err.contains("namespaces \"team\" already exists"), "{err}");
    let out = c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--replicas=2",
        "--port=8080",
        "-n",
        "team",
    ]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let out = c.ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=two",
        "-n",
        "team",
    ]);
    assert!(out.contains("configmap/cfg created"), "{out}");
    let out = c.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=user=admin",
        "-n",
        "team",
    ]);
    assert!(out.contains("secret/db created"), "{out}");
    let out = c.ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:8080",
        "-n",
        "team",
    ]);
    assert!(out.contains("service/web created"), "{out}");

    let ns = get_json(&c, &["ns", "team"]);
    assert_eq!(ns["status"]["phase"], "Active");
    assert!(
        ns["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );

    let d = get_json(&c, &["deploy", "web", "-n", "team"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(d["metadata"]["generation"], 1);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["name"], "nginx");
    assert_eq!(pod["containers"][0]["image"], "nginx:1.27");
    assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 8080);
    assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(pod["restartPolicy"], "Always");
    // Go writes every non-pointer field; none of those zero values may leak into the object.
    for absent in ["hostNetwork", "nodeName", "serviceAccountName"] {
        assert!(pod.get(absent).is_none(), "{absent} in {pod}");
    }
    for absent in ["generateName", "selfLink", "deletionTimestamp"] {
        assert!(d["metadata"].get(absent).is_none(), "{absent} in {d}");
    }
    assert!(d["spec"].get("paused").is_none(), "{d}");

    let cm = get_json(&c, &["cm", "cfg", "-n", "team"]);
    assert_eq!(cm["data"], serde_json::json!({"a": "1", "b": "two"}));
    let secret = get_json(&c, &["secret", "db", "-n", "team"]);
    assert_eq!(secret["data"]["user"], "YWRtaW4=");
    assert_eq!(secret["type"], "Opaque");
    let svc = get_json(&c, &["svc", "web", "-n", "team"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["ports"][0]["name"], "80-8080");
    assert_eq!(svc["spec"]["selector"]["app"], "web");

    let err = c.fails(&["create", "configmap", "x", "-n", "missing"]);
    assert!(err.contains("namespaces \"missing\" not found"), "{err}");
}

#[test]
fn broken_protobuf_bodies_are_400_statuses() {
    let Some(kubectl) = kubectl_binary(33) else {
        return;
    };
    let c = Cluster::start(kubectl);
    let pb = "application/vnd.kubernetes.protobuf";
    let path = "/api/v1/namespaces/default/configmaps";
    for body in [&b"garbage"[..], b"k8s\0\x0a\xff", b"k8s\0\x12\x05ab"] {
        let reply = c.curl("POST", path, pb, body);
        assert_eq!(reply.code, 400, "{reply:?}");
        let status = reply.json();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "BadRequest");
        assert!(
            status["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("error decoding protobuf body")),
            "{status}"
        );
    }
    let list = c.curl("GET", path, "", b"").json();
    assert_eq!(list["items"], serde_json::json!([]));
}
