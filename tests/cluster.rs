//! End to end: `skiff up` (the real binary) brings up a one-node cluster inside a network
//! namespace of the test's own, and the real kubectl drives it. Pods really run, get
//! addresses, serve HTTP, crash and restart with back-off, fail with the messages users
//! know, resolve Service names through the node's cluster DNS, survive a `kill -9` of skiff
//! itself, and go away when deleted.
//! Needs root, `ip`, `nsenter`, python3 and kubectl 1.33 (the machine image has it).

mod support;

use support::cleanup::wait_for;
use support::cluster::{Up, ready};

use std::process::Command;
use std::time::Duration;

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: skiff.test/busybox:latest
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "hostname > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
"#;

const RESOLVER: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: resolver}
spec:
  containers:
  - name: c
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /tmp/www; while true; do nslookup web.default.svc.cluster.local > /tmp/www/fqdn 2>&1; nslookup web > /tmp/www/short 2>&1; sleep 1; done & exec httpd -f -p 8080 -h /tmp/www"]
"#;

const BROKEN: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - {name: c, image: skiff.test/busybox:latest, imagePullPolicy: IfNotPresent,
     command: ["sh", "-c", "echo dying; exit 1"]}
---
apiVersion: v1
kind: Pod
metadata: {name: nocmd}
spec:
  containers:
  - {name: c, image: skiff.test/busybox:latest, imagePullPolicy: IfNotPresent,
     command: ["no-such-command"]}
---
apiVersion: v1
kind: Pod
metadata: {name: noimage}
spec:
  containers:
  - {name: c, image: "127.0.0.1:1/nothing:1"}
"#;

const CONFIGURED: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: cfg, labels: {app: cfg}}
spec:
  containers:
  - name: c
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "env > /tmp/env; stat -c %a /etc/secret/..data/token > /tmp/mode; stat -f -c %T /etc/secret > /tmp/fstype; exec httpd -f -p 8080 -h /"]
    env:
    - {name: FROM_CM, valueFrom: {configMapKeyRef: {name: settings, key: greeting}}}
    - {name: MY_POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MY_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    volumeMounts:
    - {name: config, mountPath: /etc/config}
    - {name: secret, mountPath: /etc/secret}
  volumes:
  - {name: config, configMap: {name: settings}}
  - {name: secret, secret: {secretName: creds}}
"#;

const PROBED: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: live
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 3600"]
    livenessProbe: {exec: {command: [cat, /tmp/alive]}, periodSeconds: 1, failureThreshold: 2}
  - name: ready
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir /tmp/www; sleep 6; touch /tmp/www/ready; exec httpd -f -p 8080 -h /tmp/www"]
    readinessProbe: {httpGet: {path: /ready, port: 8080}, periodSeconds: 1}
"#;

const INIT: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: init}
spec:
  initContainers:
  - {name: one, image: skiff.test/busybox:latest, imagePullPolicy: IfNotPresent,
     command: ["sh", "-c", "echo one >> /work/order"],
     volumeMounts: [{name: work, mountPath: /work}]}
  - {name: two, image: skiff.test/busybox:latest, imagePullPolicy: IfNotPresent,
     command: ["sh", "-c", "sleep 8; echo two >> /work/order"],
     volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - {name: web, image: skiff.test/busybox:latest, imagePullPolicy: IfNotPresent,
     command: ["sh", "-c", "echo main >> /work/order; exec httpd -f -p 8080 -h /work"],
     volumeMounts: [{name: work, mountPath: /work}]}
  volumes: [{name: work, emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: initloop}
spec:
  initContainers:
  - {name: bad, image: skiff.test/busybox:latest, imagePullPolicy: IfNotPresent,
     command: ["sh", "-c", "exit 3"]}
  containers:
  - {name: c, image: skiff.test/busybox:latest, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: initnever}
spec:
  restartPolicy: Never
  initContainers:
  - {name: bad, image: skiff.test/busybox:latest, imagePullPolicy: IfNotPresent,
     command: ["sh", "-c", "exit 1"]}
  containers:
  - {name: c, image: skiff.test/busybox:latest, imagePullPolicy: IfNotPresent, command: ["sleep", "3600"]}
"#;

/// Hooks and a graceful delete; `HOSTOUT` is replaced by a directory of the test's.
const HOOKS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: hooks}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: c
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    # SIGTERM ignored: only the grace period's SIGKILL ends it.
    command: ["sh", "-c", "trap '' TERM; exec httpd -f -p 8080 -h /www"]
    lifecycle:
      postStart: {exec: {command: ["sh", "-c", "echo started > /www/poststart"]}}
      preStop: {exec: {command: ["sh", "-c", "echo stopping > /out/prestop"]}}
    volumeMounts:
    - {name: www, mountPath: /www}
    - {name: out, mountPath: /out}
  volumes:
  - {name: www, emptyDir: {}}
  - {name: out, hostPath: {path: HOSTOUT, type: DirectoryOrCreate}}
---
apiVersion: v1
kind: Pod
metadata: {name: badhook}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    lifecycle:
      postStart: {exec: {command: ["sh", "-c", "exit 7"]}}
---
apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  containers:
  - name: hog
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    # busybox dd allocates its block: 256 MiB cannot fit in 32 MiB.
    command: ["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"]
    resources: {limits: {memory: 32Mi}}
"#;

/// The web pods: name → (ip, restartCount), once all three run.
fn web_pods(up: &Up) -> Vec<(String, String, String)> {
    let text = up.jsonpath(
        &["pods", "-l", "app=web"],
        "{range .items[*]}{.metadata.name} {.status.phase} {.status.podIP} {.status.containerStatuses[0].restartCount}{\"\\n\"}{end}",
    );
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[1] == "Running")
                .then(|| (f[0].to_owned(), f[2].to_owned(), f[3].to_owned()))
        })
        .collect()
}

#[test]
fn skiff_up_runs_a_deployment_restarts_crashes_and_survives_its_own_restart() {
    let Some(mut up) = ready() else {
        return;
    };
    up.start();
    // Untranslated Service addresses fail on the node, never leave it.
    wait_for(
        "the Service range's unreachable route",
        Duration::from_secs(20),
        || {
            let out = up
                .in_netns("ip")
                .args(["route", "show", "10.96.0.0/12"])
                .output();
            out.is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).starts_with("unreachable 10.96.0.0/12")
            })
        },
    );

    // The node answers cluster DNS itself on the kube-dns address (a dummy interface).
    let cluster_ip_of = |out: &str, ip: &str| {
        out.lines()
            .skip_while(|l| !l.starts_with("Name:"))
            .any(|l| l.split_whitespace().last() == Some(ip))
    };
    wait_for("cluster DNS on 10.96.0.10", Duration::from_secs(20), || {
        let out = up
            .in_netns("busybox")
            .args([
                "nslookup",
                "kubernetes.default.svc.cluster.local",
                "10.96.0.10",
            ])
            .output();
        out.is_ok_and(|o| cluster_ip_of(&String::from_utf8_lossy(&o.stdout), "10.96.0.1"))
    });
    let svc = up.kubectl_ok(&["get", "svc", "-n", "kube-system", "kube-dns"]);
    assert!(svc.contains("10.96.0.10"), "{svc}");

    // A Deployment of three web servers: three Running pods, three addresses, each serving.
    up.apply(WEB);
    let mut pods = Vec::new();
    wait_for("3 running web pods", Duration::from_secs(60), || {
        pods = web_pods(&up);
        pods.len() == 3
    });
    let mut ips: Vec<&String> = pods.iter().map(|p| &p.1).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "distinct pod IPs: {pods:?}");
    for (name, ip, _) in &pods {
        assert!(ip.starts_with("10.244."), "{ip} is in the node's PodCIDR");
        let body = up.http_get(&format!("http://{ip}:8080/index.html"));
        assert_eq!(
            body.as_deref().map(str::trim),
            Some(name.as_str()),
            "pod {name} at {ip}"
        );
    }

    // The kubelet's /metrics (on loopback in the node's namespace): three pods started and
    // running, each start in the SLI histogram.
    let metrics = up
        .http_get("http://127.0.0.1:10255/metrics")
        .unwrap_or_default();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(-1.0)
    };
    assert!(value("kubelet_running_pods ") >= 3.0, "{metrics}");
    assert!(
        value("kubelet_pod_start_sli_duration_seconds_count ") >= 3.0,
        "{metrics}"
    );
    // Pods resolve Service names through the node's DNS (resolv.conf → 10.96.0.10 via the
    // bridge), by the full name and by the short name through the search path.
    up.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
    ]);
    let web_ip = up.jsonpath(&["svc", "web"], "{.spec.clusterIP}");
    assert!(web_ip.starts_with("10."), "{web_ip}");
    up.apply(RESOLVER);
    let mut resolver_ip = String::new();
    wait_for("the resolver pod", Duration::from_secs(60), || {
        resolver_ip = up.jsonpath(&["pod", "resolver"], "{.status.podIP}");
        up.jsonpath(&["pod", "resolver"], "{.status.phase}") == "Running" && !resolver_ip.is_empty()
    });
    for file in ["fqdn", "short"] {
        wait_for(
            &format!("the pod to resolve web ({file})"),
            Duration::from_secs(30),
            || {
                up.http_get(&format!("http://{resolver_ip}:8080/{file}"))
                    .is_some_and(|out| cluster_ip_of(&out, &web_ip))
            },
        );
    }
    up.kubectl_ok(&["delete", "pod", "resolver", "--wait=true", "--timeout=60s"]);
    up.kubectl_ok(&["delete", "svc", "web"]);

    // Failures as users see them in `kubectl get pods` and in the container status.
    up.apply(BROKEN);
    wait_for("CrashLoopBackOff", Duration::from_secs(60), || {
        up.kubectl_ok(&["get", "pod", "crash"])
            .contains("CrashLoopBackOff")
    });
    let restarts = up.jsonpath(
        &["pod", "crash"],
        "{.status.containerStatuses[0].restartCount}",
    );
    assert!(
        restarts.trim().parse::<u32>().unwrap_or(0) >= 1,
        "restarts: {restarts}"
    );
    let last = up.jsonpath(
        &["pod", "crash"],
        "{.status.containerStatuses[0].lastState.terminated.exitCode}",
    );
    assert_eq!(last.trim(), "1");
    wait_for("RunContainerError", Duration::from_secs(30), || {
        let reason = up.jsonpath(
            &["pod", "nocmd"],
            "{.status.containerStatuses[0].state.waiting.reason}",
        );
        reason == "RunContainerError"
    });
    let message = up.jsonpath(
        &["pod", "nocmd"],
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(message.contains("no-such-command"), "{message}");
    wait_for("an image pull error", Duration::from_secs(30), || {
        let reason = up.jsonpath(
            &["pod", "noimage"],
            "{.status.containerStatuses[0].state.waiting.reason}",
        );
        reason == "ErrImagePull" || reason == "ImagePullBackOff"
    });
    let message = up.jsonpath(
        &["pod", "noimage"],
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(message.contains("127.0.0.1:1/nothing:1"), "{message}");
    up.kubectl_ok(&[
        "delete",
        "pod",
        "crash",
        "nocmd",
        "noimage",
        "--wait=true",
        "--timeout=60s",
    ]);

    // Env from a ConfigMap and the downward API; a configMap volume that follows changes;
    // a secret volume on tmpfs with files 0400.
    up.apply(CONFIGURED);
    let mut ip = String::new();
    wait_for("the configured pod", Duration::from_secs(60), || {
        ip = up.jsonpath(&["pod", "cfg"], "{.status.podIP}");
        up.jsonpath(&["pod", "cfg"], "{.status.phase}") == "Running" && !ip.is_empty()
    });
    let get = |path: &str| up.http_get(&format!("http://{ip}:8080{path}"));
    wait_for("the pod's httpd", Duration::from_secs(20), || {
        get("/tmp/env").is_some()
    });
    let env = get("/tmp/env").unwrap_or_default();
    for want in ["FROM_CM=hello", "MY_POD=cfg", &format!("MY_IP={ip}")] {
        assert!(env.lines().any(|l| l == want), "{want} in {env}");
    }
    assert_eq!(get("/tmp/mode").as_deref().map(str::trim), Some("400"));
    assert_eq!(get("/tmp/fstype").as_deref().map(str::trim), Some("tmpfs"));
    assert_eq!(get("/etc/secret/token").as_deref(), Some("s3cret"));
    assert_eq!(get("/etc/config/greeting").as_deref(), Some("hello"));
    up.kubectl_ok(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"greeting":"bye"}}"#,
    ]);
    wait_for(
        "the ConfigMap change in the file",
        Duration::from_secs(30),
        || get("/etc/config/greeting").as_deref() == Some("bye"),
    );
    up.kubectl_ok(&["delete", "pod", "cfg", "--wait=true", "--timeout=60s"]);

    // Probes: a failing liveness probe restarts its container; a readiness probe holds
    // Ready back until it passes.
    up.apply(PROBED);
    let ready_of = |c: &str| {
        up.jsonpath(
            &["pod", "probed"],
            &format!("{{.status.containerStatuses[?(@.name==\"{c}\")].ready}}"),
        )
    };
    wait_for("the probed pod to run", Duration::from_secs(60), || {
        up.jsonpath(&["pod", "probed"], "{.status.phase}") == "Running"
    });
    assert_eq!(
        ready_of("ready"),
        "false",
        "not ready before its probe passes"
    );
    wait_for("readiness", Duration::from_secs(30), || {
        ready_of("ready") == "true"
    });
    wait_for("a liveness restart", Duration::from_secs(60), || {
        let n = up.jsonpath(
            &["pod", "probed"],
            "{.status.containerStatuses[?(@.name==\"live\")].restartCount}",
        );
        n.trim().parse::<u32>().unwrap_or(0) >= 1
    });
    let events = up.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=probed",
    ]);
    assert!(events.contains("Liveness probe failed"), "{events}");
    up.kubectl_ok(&["delete", "pod", "probed", "--wait=true", "--timeout=60s"]);

    // Init containers: one after another, each to exit 0, before the container; a failing
    // one runs again with back-off, or fails the pod under restartPolicy Never.
    up.apply(INIT);
    wait_for("Init:1/2", Duration::from_secs(60), || {
        up.kubectl_ok(&["get", "pod", "init"]).contains("Init:1/2")
    });
    let mut ip = String::new();
    wait_for("the initialized pod", Duration::from_secs(60), || {
        ip = up.jsonpath(&["pod", "init"], "{.status.podIP}");
        up.kubectl_ok(&["get", "pod", "init"]).contains("Running")
    });
    let initialized = up.jsonpath(
        &["pod", "init"],
        "{.status.conditions[?(@.type==\"Initialized\")].status}",
    );
    assert_eq!(initialized, "True");
    let reasons = up.jsonpath(
        &["pod", "init"],
        "{.status.initContainerStatuses[*].state.terminated.reason}",
    );
    assert_eq!(reasons, "Completed Completed");
    wait_for("the init pod's httpd", Duration::from_secs(20), || {
        up.http_get(&format!("http://{ip}:8080/order")).is_some()
    });
    assert_eq!(
        up.http_get(&format!("http://{ip}:8080/order")).as_deref(),
        Some("one\ntwo\nmain\n"),
        "in order, each once"
    );
    wait_for("Init:CrashLoopBackOff", Duration::from_secs(60), || {
        up.kubectl_ok(&["get", "pod", "initloop"])
            .contains("Init:CrashLoopBackOff")
    });
    let restarts = up.jsonpath(
        &["pod", "initloop"],
        "{.status.initContainerStatuses[0].restartCount}",
    );
    assert!(
        restarts.trim().parse::<u32>().unwrap_or(0) >= 1,
        "{restarts}"
    );
    let app = up.jsonpath(
        &["pod", "initloop"],
        "{.status.containerStatuses[0].state.waiting.reason}",
    );
    assert_eq!(app, "PodInitializing", "the container never started");
    wait_for("Init:Error and Failed", Duration::from_secs(60), || {
        up.jsonpath(&["pod", "initnever"], "{.status.phase}") == "Failed"
            && up
                .kubectl_ok(&["get", "pod", "initnever"])
                .contains("Init:Error")
    });
    up.kubectl_ok(&[
        "delete",
        "pod",
        "init",
        "initloop",
        "initnever",
        "--wait=true",
        "--timeout=60s",
    ]);

    // Hooks: postStart's effect is there once the container shows Running; a failing
    // postStart kills the container; preStop runs on delete, and the grace period holds
    // (the container ignores SIGTERM). And a container over its memory limit: OOMKilled.
    let out = up.dir.path().join("hostout");
    up.apply(&HOOKS.replace("HOSTOUT", out.to_str().unwrap_or_default()));
    wait_for("the hooked pod", Duration::from_secs(60), || {
        ip = up.jsonpath(&["pod", "hooks"], "{.status.podIP}");
        !up.jsonpath(
            &["pod", "hooks"],
            "{.status.containerStatuses[0].state.running}",
        )
        .is_empty()
    });
    wait_for("the hooked pod's httpd", Duration::from_secs(20), || {
        up.http_get(&format!("http://{ip}:8080/poststart"))
            .is_some()
    });
    assert_eq!(
        up.http_get(&format!("http://{ip}:8080/poststart"))
            .as_deref(),
        Some("started\n")
    );
    wait_for("FailedPostStartHook", Duration::from_secs(60), || {
        let events = up.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=badhook",
        ]);
        let restarts = up.jsonpath(
            &["pod", "badhook"],
            "{.status.containerStatuses[0].restartCount}",
        );
        events.contains("FailedPostStartHook") && restarts.trim() != "0"
    });
    wait_for("OOMKilled", Duration::from_secs(60), || {
        let last = up.jsonpath(
            &["pod", "oom"],
            "{.status.containerStatuses[0].lastState.terminated.reason} {.status.containerStatuses[0].lastState.terminated.exitCode}",
        );
        last == "OOMKilled 137"
    });
    up.kubectl_ok(&["delete", "pod", "hooks", "--wait=false"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        up.jsonpath(&["pod", "hooks"], "{.metadata.name}"),
        "hooks",
        "still terminating within its grace period"
    );
    wait_for("the hooked pod to go", Duration::from_secs(3 + 30), || {
        up.kubectl(&["get", "pod", "hooks"]).2.contains("NotFound")
    });
    assert_eq!(
        std::fs::read_to_string(out.join("prestop")).ok().as_deref(),
        Some("stopping\n"),
        "preStop ran"
    );
    up.kubectl_ok(&[
        "delete",
        "pod",
        "badhook",
        "oom",
        "--wait=true",
        "--timeout=60s",
    ]);

    // kill -9 of skiff (control plane and kubelet at once), then start again: the pods
    // were never stopped, nothing restarted, same addresses, still serving.
    up.kill9();
    up.start();
    std::thread::sleep(Duration::from_secs(2));
    let after = web_pods(&up);
    assert_eq!(after, pods, "pods, addresses and restart counts unchanged");
    for (name, ip, _) in &after {
        let body = up.http_get(&format!("http://{ip}:8080/index.html"));
        assert_eq!(body.as_deref().map(str::trim), Some(name.as_str()));
    }

    // Deleting the Deployment removes the pods from the node: their addresses stop
    // answering.
    up.kubectl_ok(&["delete", "deploy", "web"]);
    wait_for("the web pods to go", Duration::from_secs(60), || {
        up.kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "name"])
            .trim()
            .is_empty()
    });
    for (_, ip, _) in &pods {
        assert!(
            up.http_get(&format!("http://{ip}:8080/index.html"))
                .is_none(),
            "{ip} still answers"
        );
    }
}

/// A pod that connects to a Service address 30 times in a loop and serves what it got.
fn service_client(target: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  containers:
  - name: c
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /tmp/www; while true; do for i in $(seq 30); do wget -q -O - http://{target}/index.html 2>&1; done > /tmp/www/tmp; mv /tmp/www/tmp /tmp/www/out; sleep 1; done & exec httpd -f -p 8080 -h /tmp/www"]
"#
    )
}

#[test]
fn skiff_up_balances_a_pods_connections_over_a_clusterip_through_bpf() {
    let Some(mut up) = ready() else {
        return;
    };
    up.start();
    up.apply(WEB);
    let mut pods = Vec::new();
    wait_for("3 running web pods", Duration::from_secs(60), || {
        pods = web_pods(&up);
        pods.len() == 3
    });
    up.kubectl_ok(&[
        "expose",
        "deployment",
        "web",
        "--port",
        "80",
        "--target-port",
        "8080",
    ]);
    let web_ip = up.jsonpath(&["svc", "web"], "{.spec.clusterIP}");
    up.apply(&service_client(&web_ip));
    let mut client_ip = String::new();
    wait_for("the client pod", Duration::from_secs(60), || {
        client_ip = up.jsonpath(&["pod", "client"], "{.status.podIP}");
        up.jsonpath(&["pod", "client"], "{.status.phase}") == "Running" && !client_ip.is_empty()
    });
    // The endpoints controller and the proxy's feed take a moment: wait for a round in which
    // all 30 connects of the pod went through the ClusterIP to a web pod.
    let names: Vec<&str> = pods.iter().map(|p| p.0.as_str()).collect();
    let mut last = String::new();
    let mut seen = std::collections::BTreeSet::new();
    wait_for(
        "30 requests from a pod through the ClusterIP",
        Duration::from_secs(60),
        || {
            last = up
                .http_get(&format!("http://{client_ip}:8080/out"))
                .unwrap_or_default();
            let lines: Vec<&str> = last.lines().collect();
            let ok = lines.len() == 30 && lines.iter().all(|l| names.contains(&l.trim()));
            if !ok {
                eprintln!("client pod saw: {last:?}");
            }
            if ok {
                seen = lines.iter().map(|l| l.trim().to_owned()).collect();
            }
            ok
        },
    );
    assert!(
        seen.len() >= 2,
        "30 connections spread over the web pods: {last}"
    );
    let shown = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["proxy", "show", "--pin-dir"])
        .arg(up.data().join("node/bpf"))
        .output()
        .expect("skiff proxy show");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains(&format!("{web_ip}:80")), "{shown}");
    // The cluster DNS address is the proxy's own, never a translated frontend.
    assert!(!shown.contains("10.96.0.10:53"), "{shown}");
}
