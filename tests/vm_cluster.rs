//! Issue 9's real VM nodes, in CI: `vagrant/qemu/cluster.sh` boots a control-plane guest and
//! a worker guest (QEMU TCG, full cgroup v2) joined by a private `-netdev socket` link on
//! 127.0.0.1, each provisioned by `vagrant/provision.sh` as a Vagrant VM is — the worker
//! joins with a join token and the CA's hash, both made before either guest starts. From
//! the host, the real kubectl drives the cluster through the API server's forwarded port:
//! both nodes Ready, a Deployment pinned to the worker Running there, its Service's
//! endpoints, and an HTTP request from the control-plane guest (a hostNetwork pod there,
//! whose memory limit only cgroup v2 can show) crossing the link to the pod on the worker
//! (the nodes route each other's PodCIDRs, host-gw), then the same through the Service's
//! ClusterIP, which the control-plane node's eBPF data plane translates to that pod.
//!
//! Needs root, qemu-system-x86_64, busybox, openssl, python3, ss and kubectl 1.33; skips
//! without them, fails under `CI`. By hand: `cargo test --test vm_cluster -- --nocapture`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::vm::{Runner, script};

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const WORKER: &str = "worker-1";
const CONTROL_PLANE: &str = "cp";
/// Where the HTTP request to the pod comes from: across the link from the worker's pod.
const CLIENT_NODE: &str = CONTROL_PLANE;
/// The guests' own limit (cluster.sh kills QEMU after it).
const GUEST_TIMEOUT_SECS: u32 = 1200;

/// The running cluster, its output dir and kubectl against it. Dropping it on a failing
/// test prints the pods and the guests' consoles (which carry the daemons' logs), then ends
/// the guests.
struct Cluster {
    runner: Option<Runner>,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--request-timeout", "30s"])
            .args(args)
            .output()
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.kubectl(args);
        assert!(ok, "kubectl {args:?}: {stdout}{stderr}");
        stdout
    }

    fn apply(&self, yaml: &str) {
        let path = self.dir.path().join("manifest.yaml");
        std::fs::write(&path, yaml).expect("write manifest");
        self.kubectl_ok(&["apply", "-f", path.to_str().unwrap_or_default()]);
    }

    fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let expr = format!("jsonpath={path}");
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", &expr]);
        self.kubectl(&args).1
    }

    /// Runs `script` in a busybox pod on `node`'s host network and waits for it to end;
    /// true if it exited 0.
    fn run_on(&self, name: &str, node: &str, script: &str) -> bool {
        self.apply(&probe_pod(name, node, script));
        let phase = wait_for(
            &format!("pod {name} to end"),
            Duration::from_secs(240),
            || {
                let phase = self.jsonpath(&["pod", name], "{.status.phase}");
                matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
            },
        );
        phase == "Succeeded"
    }

    fn console_tails(&self) -> String {
        ["cp.log", "worker.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read(self.dir.path().join(name)).unwrap_or_default();
                let text = String::from_utf8_lossy(&text).replace(['\r', '\u{1b}'], "");
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                format!("--- {name} (last lines) ---\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- pods ---\n{}",
                self.kubectl(&["get", "pods", "-o", "wide"]).1
            );
            eprintln!("{}", self.console_tails());
        }
        self.runner.take();
    }
}

/// Calls `probe` until it returns `Some`, at most `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {kubernetes.io/hostname: worker-1}
      containers:
      - name: httpd
        image: skiff.test/busybox:latest
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "hostname > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
        ports: [{name: http, containerPort: 8080}]
        resources: {limits: {memory: 64Mi}}
        readinessProbe:
          httpGet: {path: /index.html, port: http}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"#;

/// A pod on `node`'s host network running `script` once, with a 48 MiB memory limit.
fn probe_pod(name: &str, node: &str, script: &str) -> String {
    let script = serde_json::to_string(script).expect("json string");
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: probe
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    resources: {{limits: {{memory: 48Mi}}}}
    command: ["sh", "-c", {script}]
"#
    )
}

/// An HTTP/1.0 GET with busybox `nc` (Debian's static busybox `wget` crashes) whose body
/// must contain the line `want`.
fn http_get(ip: &str, port: u16, want: &str) -> String {
    format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc {ip} {port} | grep -qx '{want}'")
}

fn start() -> Option<Cluster> {
    let tools = ["qemu-system-x86_64", "busybox", "openssl", "python3", "ss"];
    if !support::privileged_with(&tools) {
        return None;
    }
    if !Path::new(KUBECTL).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: {KUBECTL} is missing"
        );
        eprintln!("skipping: {KUBECTL} not found (kubectl is part of the machine image)");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(script("cluster.sh"));
    cmd.arg("-q")
        .arg("-o")
        .arg(dir.path())
        .arg("-b")
        .arg(env!("CARGO_BIN_EXE_skiff"))
        .arg("-s")
        .arg(env!("CARGO_BIN_EXE_skiff-setup"))
        .arg("-t")
        .arg(GUEST_TIMEOUT_SECS.to_string());
    let runner = Runner::spawn(cmd);
    let ready = runner.wait_line(Duration::from_secs(900), |l| l.starts_with("ready "));
    let stderr = runner.stderr();
    let cluster = Cluster {
        runner: Some(runner),
        kubeconfig: dir.path().join("kubeconfig"),
        dir,
    };
    assert!(ready.is_some(), "the cluster did not come up\n{stderr}");
    Some(cluster)
}

#[test]
fn a_deployment_runs_on_the_worker_of_a_two_guest_cluster() {
    let begin = Instant::now();
    let Some(mut cluster) = start() else {
        return;
    };
    let up = begin.elapsed();

    // Both nodes joined (the worker by token + CA hash) and are Ready.
    wait_for("both nodes Ready", Duration::from_secs(300), || {
        let ready = cluster.jsonpath(
            &["nodes"],
            r#"{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}"#,
        );
        let want = format!("{CONTROL_PLANE}=True {WORKER}=True");
        (ready.trim() == want).then_some(())
    });
    let addresses = cluster.jsonpath(
        &["node", WORKER],
        r#"{.status.addresses[?(@.type=="InternalIP")].address}"#,
    );
    assert_eq!(
        addresses, "192.168.56.11",
        "the worker's address on the private link"
    );
    let nodes_ready = begin.elapsed();

    // The Deployment lands on the worker and its pod becomes Ready there.
    cluster.apply(WEB);
    let (pod, ip) = wait_for(
        "the web pod Ready on the worker",
        Duration::from_secs(300),
        || {
            let row = cluster.jsonpath(
            &["pods", "-l", "app=web"],
            r#"{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}"#,
        );
            let fields: Vec<&str> = row.split_whitespace().collect();
            match fields.as_slice() {
                [pod, node, ip, "True"] => {
                    assert_eq!(*node, WORKER, "the nodeSelector puts the pod on the worker");
                    Some((pod.to_string(), ip.to_string()))
                }
                _ => None,
            }
        },
    );
    let pod_ready = begin.elapsed();
    let endpoints = cluster.jsonpath(&["endpoints", "web"], "{.subsets[*].addresses[*].ip}");
    assert_eq!(endpoints, ip, "the Service selects the pod on the worker");

    // A request over the network reaches the pod; the probe's own memory limit shows in
    // its cgroup v2 memory.max (48 MiB), which a v1 or hybrid node does not have.
    let script = format!(
        "test \"$(cat /sys/fs/cgroup/memory.max)\" = 50331648 && {}",
        http_get(&ip, 8080, &pod)
    );
    assert!(
        cluster.run_on("probe-pod", CLIENT_NODE, &script),
        "GET http://{ip}:8080/ from {CLIENT_NODE} did not answer {pod}, or memory.max is not v2's"
    );
    // The same request with the wrong expectation fails: the check can fail.
    assert!(
        !cluster.run_on(
            "probe-wrong",
            CLIENT_NODE,
            &http_get(&ip, 8080, "not-the-pod")
        ),
        "a check that cannot fail"
    );
    let cluster_ip = cluster.jsonpath(&["service", "web"], "{.spec.clusterIP}");
    assert!(
        cluster.run_on(
            "probe-service",
            CONTROL_PLANE,
            &http_get(&cluster_ip, 80, &pod)
        ),
        "GET http://{cluster_ip}/ from {CONTROL_PLANE} did not reach {pod}"
    );
    let requested = begin.elapsed();

    let runner = cluster.runner.take().expect("the runner");
    let (code, _, stderr) = runner.finish(Duration::from_secs(60));
    let timing = stderr
        .lines()
        .find(|l| l.starts_with("cluster.sh: timing: "))
        .unwrap_or("no timing line");
    println!(
        "timing: cluster up {:.1} s, nodes Ready {:.1} s, pod Ready {:.1} s, requests done {:.1} s, \
         torn down {:.1} s; {timing}",
        up.as_secs_f64(),
        nodes_ready.as_secs_f64(),
        pod_ready.as_secs_f64(),
        requested.as_secs_f64(),
        begin.elapsed().as_secs_f64(),
    );
    assert_eq!(code, Some(0), "cluster.sh did not stop cleanly: {stderr}");
}
