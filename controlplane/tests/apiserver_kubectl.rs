//! End to end: the real kubectl (1.33 and 1.29, the versions the machine's dispatcher picks
//! between) against an in-process API server on 127.0.0.1, asserting on what users read.

#[path = "apiserver/kubectl.rs"]
mod harness;

use harness::{Cluster, Streaming, kubectl_binary, row, rows};

const APP: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: demo
  labels: {app: web}
data:
  greeting: hello
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  replicas: 2
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
        - containerPort: 8080
"#;

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: demo
  labels: {app: web}
spec:
  containers:
  - name: nginx
    image: nginx:1.27
"#;

/// Apply, get in every form, watch, scale, errors and delete with kubectl `1.<minor>`.
fn workflow(minor: u32) {
    let Some(kubectl) = kubectl_binary(minor) else {
        return;
    };
    let c = Cluster::start(kubectl);
    let version = c.ok(&["version", "-o", "json"]);
    assert!(version.contains("\"minor\": \"33\""), "{version}");

    let app = c.manifest("app.yaml", APP);
    let out = c.ok(&["apply", "-f", &app]);
    for line in [
        "namespace/demo created",
        "configmap/web-config created",
        "service/web created",
        "deployment.apps/web created",
    ] {
        assert!(out.contains(line), "missing {line:?} in {out}");
    }
    let pod = c.manifest("pod.yaml", POD);
    assert!(c.ok(&["apply", "-f", &pod]).contains("pod/web-0 created"));

    let t = rows(&c.ok(&["get", "deploy", "-n", "demo"]));
    assert_eq!(t[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    // No node is registered: the pods the controllers create stay Pending.
    let web = row(&t, "web");
    assert_eq!(
        (&web[..2], web[3].as_str()),
        (&["web".to_owned(), "0/2".to_owned()][..], "0")
    );

    let t = rows(&c.ok(&["get", "deploy", "-n", "demo", "-o", "wide"]));
    assert_eq!(t[0][5..], ["CONTAINERS", "IMAGES", "SELECTOR"]);
    assert_eq!(row(&t, "web")[5..], ["nginx", "nginx:1.27", "app=web"]);

    let t = rows(&c.ok(&["get", "pods", "-n", "demo"]));
    assert_eq!(t[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(&row(&t, "web-0")[..4], ["web-0", "0/1", "Pending", "0"]);
    let t = rows(&c.ok(&["get", "pods", "-n", "demo", "-o", "wide"]));
    assert_eq!(
        t[0][5..],
        ["IP", "NODE", "NOMINATED", "NODE", "READINESS", "GATES"]
    );

    let t = rows(&c.ok(&["get", "svc", "-n", "demo"]));
    assert_eq!(
        t[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(row(&t, "web")[1], "ClusterIP");
    assert_eq!(row(&t, "web")[4], "80/TCP");

    let t = rows(&c.ok(&["get", "cm", "-n", "demo"]));
    assert_eq!(t[0], ["NAME", "DATA", "AGE"]);
    assert_eq!(&row(&t, "web-config")[..2], ["web-config", "1"]);

    let yaml = c.ok(&["get", "deploy", "web", "-n", "demo", "-o", "yaml"]);
    for needle in [
        "kind: Deployment",
        "uid: ",
        "resourceVersion: \"",
        "generation: 1",
        "replicas: 2",
        "dnsPolicy: ClusterFirst",
        "imagePullPolicy: IfNotPresent",
        "creationTimestamp: \"",
    ] {
        assert!(yaml.contains(needle), "missing {needle:?} in {yaml}");
    }

    let t = rows(&c.ok(&["get", "cm", "-A"]));
    assert_eq!(t[0], ["NAMESPACE", "NAME", "DATA", "AGE"]);
    assert_eq!(row(&t, "web-config")[0], "demo");

    let t = rows(&c.ok(&["get", "deploy", "-n", "demo", "--show-labels"]));
    assert_eq!(t[0].last().map(String::as_str), Some("LABELS"));
    assert_eq!(row(&t, "web").last().map(String::as_str), Some("app=web"));

    let all = c.ok(&["get", "all", "-n", "demo"]);
    for needle in ["pod/web-0", "service/web", "deployment.apps/web"] {
        assert!(all.contains(needle), "missing {needle:?} in {all}");
    }
    let ns = rows(&c.ok(&["get", "ns"]));
    assert_eq!(row(&ns, "demo")[1], "Active");
    assert_eq!(row(&ns, "default")[1], "Active");

    // scale: stored through the scale subresource, generation bumped.
    assert!(
        c.ok(&["scale", "deploy", "web", "-n", "demo", "--replicas=5"])
            .contains("deployment.apps/web scaled")
    );
    let scaled = c.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.replicas} {.metadata.generation}",
    ]);
    assert_eq!(scaled.trim(), "5 2");

    // get -w sees an update made by another client.
    let watch = Streaming::spawn(c.command(&["get", "cm", "web-config", "-n", "demo", "-w"]));
    watch.wait_for("the initial row", |l| {
        l.iter().any(|x| x.starts_with("web-config"))
    });
    c.ok(&[
        "patch",
        "cm",
        "web-config",
        "-n",
        "demo",
        "--type=merge",
        "-p",
        r#"{"data":{"second":"2"}}"#,
    ]);
    let lines = watch.wait_for("the updated row", |l| {
        l.iter().any(|x| {
            rows(x)
                .first()
                .is_some_and(|r| r.len() >= 2 && r[0] == "web-config" && r[1] == "2")
        })
    });
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "DATA", "AGE"]
    );
    drop(watch);

    // label and annotate send strategic merge patches without lists.
    assert!(
        c.ok(&["label", "deploy", "web", "-n", "demo", "tier=front"])
            .contains("deployment.apps/web labeled")
    );
    assert!(
        c.ok(&["annotate", "deploy", "web", "-n", "demo", "note=hi"])
            .contains("deployment.apps/web annotated")
    );
    let labels = c.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.metadata.labels.tier} {.metadata.annotations.note}",
    ]);
    assert_eq!(labels.trim(), "front hi");

    // edit: kubectl GETs the object, runs $KUBE_EDITOR on it and PATCHes the difference.
    let editor = c.manifest(
        "editor.sh",
        "#!/bin/sh\nsed -i -e 's/replicas: 5/replicas: 4/' -e 's/note: hi/note: edited/' \"$1\"\n",
    );
    let out = c
        .command(&["edit", "deploy", "web", "-n", "demo"])
        .env("KUBE_EDITOR", format!("sh {editor}"))
        .output()
        .expect("kubectl edit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("deployment.apps/web edited"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let edited = c.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.replicas} {.metadata.annotations.note} {.metadata.labels.tier}",
    ]);
    assert_eq!(edited.trim(), "4 edited front");

    errors(&c);

    let out = c.ok(&["delete", "-f", &app, "--wait"]);
    for line in [
        "configmap \"web-config\" deleted",
        "service \"web\" deleted",
        "deployment.apps \"web\" deleted",
    ] {
        assert!(out.contains(line), "missing {line:?} in {out}");
    }
    let out = c.run(&["get", "deploy", "-n", "demo"]);
    assert!(
        out.stderr.contains("No resources found in demo namespace."),
        "{out:?}"
    );
}

/// The error messages a user reads.
fn errors(c: &Cluster) {
    let err = c.fails(&["get", "cm", "nope", "-n", "demo"]);
    assert!(
        err.contains("Error from server (NotFound): configmaps \"nope\" not found"),
        "{err}"
    );
    let err = c.fails(&["get", "deploy", "nope", "-n", "demo"]);
    assert!(err.contains("deployments.apps \"nope\" not found"), "{err}");

    let bad = c.manifest(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n  namespace: demo\n",
    );
    let err = c.fails(&["apply", "-f", &bad]);
    assert!(err.contains("The ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{err}");

    let unknown = c.manifest("unknown.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typo\n  namespace: demo\ndta:\n  a: b\n");
    let err = c.fails(&["apply", "-f", &unknown]);
    assert!(
        err.contains("strict decoding error: unknown field \"dta\""),
        "{err}"
    );
    assert!(
        c.fails(&["get", "cm", "typo", "-n", "demo"])
            .contains("NotFound")
    );

    let err = c.fails(&["--token=wrong", "get", "pods"]);
    assert!(
        err.contains("You must be logged in to the server (Unauthorized)"),
        "{err}"
    );

    let err = c.fails(&["get", "widgets"]);
    assert!(
        err.contains("the server doesn't have a resource type \"widgets\""),
        "{err}"
    );
}

#[test]
fn kubectl_1_33_end_to_end() {
    workflow(33);
}

#[test]
fn kubectl_1_29_end_to_end() {
    workflow(29);
}
