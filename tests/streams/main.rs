//! End to end: real kubectl (1.33, which speaks WebSocket, and 1.29, which speaks SPDY)
//! against the real `skiff apiserver` binary, whose node service a test double of a node
//! (`node.rs`, a gRPC client with a real node certificate) dials. Covers `kubectl logs`
//! and `-f`, `exec` exit codes, `exec -i` of 10 MB through `cat`, `exec -it` under a
//! pseudo-terminal with a resize, `attach`, `port-forward` with 20 concurrent requests
//! over WebSocket and SPDY, and who may open streams. The kubectl-facing checks
//! (`kubectl.rs`) take only a kubeconfig and pod names, to be rerun against a real node.
//! Loopback only; needs no root. Needs kubectl 1.33 and 1.29, curl and python3.

mod kubectl;
mod node;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kubectl::{Forward, KUBECTL_1_29, KUBECTL_1_33, Kubectl, PATIENCE};
use node::{FakeNode, Join};

/// `skiff apiserver` on loopback ports of its own.
struct Cluster {
    dir: tempfile::TempDir,
    child: Child,
    api_url: String,
    node_url: String,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["apiserver", "--no-controllers", "--data-dir"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--node-listen", "127.0.0.1:0"])
            .env(
                "RUST_LOG",
                "warn,skiff_controlplane::apiserver::stream=debug",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start skiff apiserver");
        let stderr = child.stderr.take().expect("stderr");
        let log_path = dir.path().join("apiserver.log");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(log_path).expect("log");
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.starts_with("skiff apiserver listening on ") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(PATIENCE)
            .expect("the API server said where it listens");
        // "skiff apiserver listening on https://A; nodes dial https://B; kubeconfig: …"
        let url = |after: &str| {
            line.split(after)
                .nth(1)
                .and_then(|rest| rest.split(';').next())
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("no address after {after:?} in {line:?}"))
        };
        Cluster {
            api_url: url("listening on "),
            node_url: url("nodes dial "),
            dir,
            child,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn kubeconfig(&self) -> PathBuf {
        self.data().join("kubeconfig")
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data().join("pki/ca.crt")).expect("ca")
    }

    fn join_token(&self) -> String {
        std::fs::read_to_string(self.data().join("join-token"))
            .expect("join token")
            .trim()
            .to_owned()
    }

    fn node(&self, name: &str) -> FakeNode {
        let (ca, token) = (self.ca_pem(), self.join_token());
        let join = Join {
            api_url: &self.api_url,
            node_url: &self.node_url,
            ca_pem: &ca,
            join_token: &token,
        };
        FakeNode::start(&join, name)
    }

    fn kubectl(&self, binary: &str) -> Kubectl {
        Kubectl::new(binary, &self.kubeconfig())
    }

    /// Creates `pod` with one container per name, bound to `node`; its uid.
    fn pod(&self, pod: &str, node: &str, containers: &[&str]) -> String {
        let containers: Vec<serde_json::Value> = containers
            .iter()
            .map(|c| serde_json::json!({"name": c, "image": "busybox"}))
            .collect();
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": "default"},
            "spec": {"nodeName": node, "containers": containers},
        });
        let path = self.dir.path().join(format!("{pod}.json"));
        std::fs::write(&path, manifest.to_string()).expect("manifest");
        let k = self.kubectl(KUBECTL_1_33);
        k.ok(&["apply", "-f", path.to_str().unwrap_or_default()]);
        k.ok(&["get", "pod", pod, "-o", "jsonpath={.metadata.uid}"])
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- apiserver log ---\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `/N` answers on the loopback server behind port-forward.
fn body(i: usize) -> Vec<u8> {
    let mut b = format!("reply {i}\n").into_bytes();
    b.extend(kubectl::noise(64 * 1024 + i, i as u64 + 1));
    b
}

/// A tiny HTTP/1.0-style server on 127.0.0.1 answering `GET /N` with `body(N)`.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let n: usize = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|p| p.trim_start_matches('/').parse().ok())
                    .unwrap_or(0);
                let body = body(n);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            });
        }
    });
    port
}

/// `kubectl exec -it POD -- tty-sizes` under a pseudo-terminal that is resized once; the
/// node saw both sizes as resize frames.
fn exec_tty_with_resize(k: &Kubectl, node: &FakeNode, pod: &str) {
    node.seen.resizes.lock().unwrap().clear();
    kubectl::exec_tty_with_resize(k, pod, &["tty-sizes"]);
    let resizes = node.seen.resizes.lock().unwrap().clone();
    assert!(
        resizes.contains(&(80, 24)) && resizes.contains(&(100, 30)),
        "resize frames at the node: {resizes:?}"
    );
}

/// `kubectl attach -i` gets the container's output and its stdin reaches it.
fn attach(k: &Kubectl, pod: &str) {
    let out = k.run_with_stdin(&["attach", "-i", pod], b"hello through attach\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("attached to app"), "{stdout}");
    assert!(stdout.contains("hello through attach"), "{stdout}");
}

/// A user who goes away ends the node's work: an `exec -i` of a long command, killed.
fn closing_the_client_ends_the_session(k: &Kubectl, node: &FakeNode, pod: &str) {
    let before = node.seen.cancelled.load(Ordering::SeqCst);
    let mut child = k
        .command(&["exec", "-i", pod, "--", "sleep", "600"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl exec");
    let deadline = Instant::now() + PATIENCE;
    while node.seen.live.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the exec never reached the node");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        node.wait_idle(PATIENCE),
        "the node's session outlived kubectl"
    );
    assert!(node.seen.cancelled.load(Ordering::SeqCst) > before);
}

fn logs_offer(node: &FakeNode) -> skiff_api::node::LogsOffer {
    node.offers()
        .into_iter()
        .rev()
        .find_map(|o| match o.kind {
            Some(skiff_api::node::offer::Kind::Logs(l)) => Some(l),
            _ => None,
        })
        .expect("a logs offer")
}

#[test]
fn kubectl_1_33_logs_exec_and_attach_over_websocket_and_spdy() {
    let cluster = Cluster::start();
    let node = cluster.node("fake-1");
    for (pod, container) in [("logs", "app"), ("sh", "main"), ("attach-me", "app")] {
        let uid = cluster.pod(pod, "fake-1", &[container]);
        node.set_running("default", pod, &uid);
    }
    let k = cluster.kubectl(KUBECTL_1_33);

    // Logs, and -f: a line written while following arrives; stopping kubectl ends the
    // node's side.
    kubectl::logs_and_follow(&k, "logs", 3, || node.seen.next_log_line.notify_one());
    assert!(node.wait_idle(PATIENCE), "the follow outlived kubectl");
    k.ok(&[
        "logs",
        "logs",
        "--tail=2",
        "--timestamps",
        "--since=1h",
        "--limit-bytes=100",
    ]);
    let offer = logs_offer(&node);
    let hour_ago = jiff::Timestamp::now().as_second() - 3600;
    assert_eq!(
        (
            offer.container.as_str(),
            offer.tail_lines,
            offer.timestamps,
            offer.limit_bytes
        ),
        ("app", 2, true, 100)
    );
    assert!(
        (offer.since_unix - hour_ago).abs() < 300,
        "{}",
        offer.since_unix
    );
    let previous = k.run(&["logs", "logs", "--previous"]);
    assert!(!previous.status.success());
    let stderr = String::from_utf8_lossy(&previous.stderr);
    assert!(
        stderr.contains("previous terminated container \"app\" in pod \"logs\" not found"),
        "{stderr}"
    );

    for (transport, k) in [("websocket", k.clone()), ("spdy", k.spdy_exec())] {
        eprintln!("exec and attach over {transport}");
        kubectl::exec_exit_codes(&k, "sh");
        let rate = kubectl::exec_pipes_through_cat(&k, "sh", 10);
        eprintln!("exec -i cat over {transport}: {rate:.1} MB/s");
        exec_tty_with_resize(&k, &node, "sh");
        attach(&k, "attach-me");
        closing_the_client_ends_the_session(&k, &node, "sh");
    }
    kubectl::missing_container(&k, "sh");
    assert!(node.wait_idle(PATIENCE), "sessions left open at the node");
}

#[test]
fn kubectl_1_29_speaks_spdy_for_exec_attach_and_port_forward() {
    let cluster = Cluster::start();
    let node = cluster.node("fake-1");
    for (pod, container) in [("sh", "main"), ("attach-me", "app"), ("web", "httpd")] {
        let uid = cluster.pod(pod, "fake-1", &[container]);
        node.set_running("default", pod, &uid);
    }
    node.map_port(80, http_server());
    let k = cluster.kubectl(KUBECTL_1_29);
    kubectl::exec_exit_codes(&k, "sh");
    kubectl::exec_pipes_through_cat(&k, "sh", 10);
    exec_tty_with_resize(&k, &node, "sh");
    attach(&k, "attach-me");
    kubectl::port_forward_concurrently(&k, "web", 80, 20, body);
    kubectl::missing_container(&k, "sh");
    assert!(node.wait_idle(PATIENCE), "sessions left open at the node");
}

#[test]
fn port_forward_serves_concurrent_connections_over_websocket_and_spdy() {
    let cluster = Cluster::start();
    let node = cluster.node("fake-1");
    let uid = cluster.pod("web", "fake-1", &["httpd"]);
    node.set_running("default", "web", &uid);
    node.map_port(80, http_server());
    let k = cluster.kubectl(KUBECTL_1_33);
    for (transport, k) in [("websocket", k.clone()), ("spdy", k.spdy_port_forward())] {
        eprintln!("port-forward over {transport}");
        kubectl::port_forward_concurrently(&k, "web", 80, 20, body);
        assert!(
            node.wait_idle(PATIENCE),
            "connections left open at the node"
        );
    }
    // A connection the pod refuses: the node's error reaches kubectl on the error stream
    // and kubectl prints it. (kubectl 1.28+ then closes the whole forward — "lost
    // connection to pod" — as it does against kube-apiserver; that part is kubectl's.)
    let mut forward = Forward::start(&k, "web", 81);
    let out = kubectl::wait_output(kubectl::curl(forward.local, "/1"), PATIENCE, "curl");
    assert!(!out.status.success(), "a refused connection gave an answer");
    let said = forward.stderr(PATIENCE).join("\n");
    assert!(
        said.contains("error forwarding port 81 to pod web") && said.contains("connection refused"),
        "{said}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while forward.running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "after a refused connection kubectl 1.33 is {}",
        if forward.running() {
            "still running"
        } else {
            "gone"
        }
    );
}

/// Mints a node token (admin) and writes a kubeconfig that uses it.
fn node_kubeconfig(cluster: &Cluster, node: &str) -> PathBuf {
    let admin = std::fs::read_to_string(cluster.kubeconfig()).expect("kubeconfig");
    let token = admin
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("the admin token")
        .trim()
        .to_owned();
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "--cacert"])
        .arg(cluster.data().join("pki/ca.crt"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}/skiff/v1/nodes/{node}/token", cluster.api_url))
        .output()
        .expect("curl");
    let minted: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let node_token = minted["token"].as_str().expect("token");
    let path = cluster.dir.path().join(format!("{node}.kubeconfig"));
    std::fs::write(&path, admin.replace(&token, node_token)).expect("write");
    path
}

#[test]
fn only_the_admin_opens_streams_and_only_to_the_right_node() {
    let cluster = Cluster::start();
    let node = cluster.node("fake-1");
    let other = cluster.node("fake-2");
    let uid = cluster.pod("sh", "fake-1", &["main"]);
    node.set_running("default", "sh", &uid);
    cluster.pod("ghost-pod", "ghost", &["main"]);
    let k = cluster.kubectl(KUBECTL_1_33);

    // Even the pod's own node may not exec into it with its token.
    let as_node = Kubectl::new(KUBECTL_1_33, &node_kubeconfig(&cluster, "fake-1"));
    let out = as_node.run(&["exec", "sh", "--", "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("User \"system:node:fake-1\" cannot create resource \"pods/exec\""),
        "{stderr}"
    );
    assert!(
        node.offers().is_empty(),
        "a refused request reached the node"
    );

    // A node with no tunnel: the user reads why.
    let out = k.run(&["logs", "ghost-pod"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("error dialing backend: node \"ghost\" has no stream connection"),
        "{stderr}"
    );

    // Another node cannot take an offer; unknown ids are unknown; the right node can.
    node.hold("sh");
    let logs = k
        .command(&["logs", "sh"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("logs");
    let offer = node.take_held(PATIENCE).expect("the offer reached fake-1");
    assert_eq!(other.try_open(&offer.id), tonic::Code::PermissionDenied);
    assert_eq!(node.try_open("0123456789abcdef"), tonic::Code::NotFound);
    node.answer(offer);
    let out = kubectl::wait_output(logs, PATIENCE, "kubectl logs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line 1\nline 2\nline 3\n"
    );
    kubectl::missing_container(&k, "sh");
}
