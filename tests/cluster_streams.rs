//! End to end: `kubectl logs`, `exec`, `attach` and `port-forward` from the real kubectl
//! (1.33, WebSocket; 1.29, SPDY) through the real `skiff up` — its API server, the stream
//! tunnel its kubelet keeps open, and real pods. The checks are `tests/streams/kubectl.rs`,
//! the same ones the API server's tests run against a stand-in node. Also: `--previous`
//! after a restart, the log options, and 100 sessions opened and closed leave no growth in
//! the node's file descriptors, tokio tasks, stream sessions or pod processes.
//! Needs root, `ip`, `nsenter`, python3, curl and kubectl 1.33 and 1.29.

#[path = "streams/kubectl.rs"]
#[allow(dead_code)] // the checks this file does not use run against the stand-in node
mod kubectl;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kubectl::{Forward, KUBECTL_1_29, KUBECTL_1_33, Kubectl, PATIENCE};
use support::cleanup::{self, wait_for};
use support::cluster::{Up, ready};

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: talker, labels: {app: talker}}
spec:
  containers:
  - name: app
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo line $i; sleep 1; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - name: app
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo instance $(cat /proc/sys/kernel/random/uuid); sleep 2; exit 1"]
---
apiVersion: v1
kind: Pod
metadata: {name: attachee}
spec:
  restartPolicy: Never
  containers:
  - name: app
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "echo attached to app; exec cat"]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: httpd
        image: skiff.test/busybox:latest
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "mkdir -p /tmp/www; for i in $(seq 0 19); do echo body-$i > /tmp/www/$i; done; echo serving; exec httpd -f -p 8080 -h /tmp/www"]
"#;

/// What `GET /i` of the web pod answers.
fn body(i: usize) -> Vec<u8> {
    format!("body-{i}\n").into_bytes()
}

/// The running pod of the web Deployment.
fn web_pod(k: &Kubectl) -> String {
    let mut name = String::new();
    wait_for("the web pod to run", PATIENCE, || {
        name = k.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ]);
        !name.is_empty()
    });
    name
}

fn running(k: &Kubectl, pods: &[&str]) {
    for pod in pods {
        wait_for(&format!("pod {pod} to run"), PATIENCE, || {
            k.run(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"])
                .stdout
                .starts_with(b"Running")
        });
    }
}

/// `kubectl logs` and its options, `logs -f`, selectors, `--previous` and a wrong container.
fn logs(k: &Kubectl) {
    wait_for("talker's third line", PATIENCE, || {
        k.ok(&["logs", "talker"]).lines().count() >= 3
    });
    kubectl::logs_and_follow(k, "talker", 2, || {});
    let tail = k.ok(&["logs", "talker", "--tail=1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.starts_with("line "), "{tail}");
    let stamped = k.ok(&["logs", "talker", "--timestamps", "--tail=2"]);
    for line in stamped.lines() {
        let (stamp, rest) = line.split_once(' ').unwrap_or_default();
        assert!(stamp.len() > 20 && stamp.ends_with('Z'), "{line}");
        assert!(rest.starts_with("line "), "{line}");
    }
    assert_eq!(k.ok(&["logs", "talker", "--limit-bytes=4"]), "line");
    assert!(
        k.ok(&["logs", "talker", "--since=1h"])
            .starts_with("line 1\n")
    );
    assert!(
        k.ok(&["logs", "-l", "app=talker", "--tail=1"])
            .starts_with("line ")
    );
    assert!(k.ok(&["logs", "deploy/web"]).contains("serving"));
    let out = k.run(&["logs", "talker", "-c", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("container nope is not valid for pod talker"),
        "{err}"
    );
    kubectl::missing_container(k, "talker");

    // --previous: the instance before the restart, which is not the current one.
    wait_for("crasher to restart", PATIENCE, || {
        let restarts = k.ok(&[
            "get",
            "pod",
            "crasher",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ]);
        restarts.trim().parse::<u32>().unwrap_or(0) >= 1
    });
    let previous = k.ok(&["logs", "crasher", "--previous"]);
    assert!(previous.starts_with("instance "), "{previous:?}");
    wait_for("the current instance's log", PATIENCE, || {
        let now = k.ok(&["logs", "crasher"]);
        now.starts_with("instance ") && now != previous
    });
}

/// Exec with exit codes, 10 MB through `cat`, and a terminal that is resized.
fn exec(k: &Kubectl, pod: &str) -> f64 {
    kubectl::exec_exit_codes(k, pod);
    let rate = kubectl::exec_pipes_through_cat(k, pod, 10);
    // `stty size` in the container sees the terminal's size, then the new one.
    let shell = "while :; do s=$(stty size); echo \"size ${s#* }x${s% *}\"; \
                 read -t 1 -n 1 c && exit 0; done";
    kubectl::exec_tty_with_resize(k, pod, &["sh", "-c", shell]);
    rate
}

/// `kubectl attach -i`: the container's output, and stdin reaching it (`stdinOnce`: the
/// container's stdin closes when kubectl's does, so `cat` ends and so does the session).
fn attach(k: &Kubectl) {
    let out = k.run_with_stdin(&["attach", "-i", "attachee"], b"hello through attach\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello through attach"), "{stdout}");
}

/// One metric of the kubelet's `/metrics` (in the cluster's namespace, on loopback).
fn metric(name: &str) -> u64 {
    let mut conn = TcpStream::connect("127.0.0.1:10255").expect("kubelet metrics");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What the node holds: (fds of skiff, tokio tasks, stream sessions, pod processes).
fn holdings(up: &Up) -> (usize, u64, u64, usize) {
    (
        open_fds(up.pid()),
        metric("skiff_tokio_alive_tasks"),
        metric("skiff_kubelet_stream_sessions"),
        cleanup::processes_in(&up.cgroup_parent),
    )
}

/// 100 sessions (exec, and port-forward with a request each) opened and closed: the node
/// ends up holding what it held before.
fn no_leaks(up: &Up, k: &Kubectl, pod: &str) {
    // Settle: sessions of earlier checks end as their kubectl did.
    wait_for("earlier sessions to end", PATIENCE, || {
        metric("skiff_kubelet_stream_sessions") == 0
    });
    let before = holdings(up);
    for i in 0..50 {
        let out = k.run(&["exec", pod, "--", "sh", "-c", "echo $$"]);
        assert!(out.status.success(), "exec {i}");
        let forward = Forward::start(k, pod, 8080);
        let got = kubectl::wait_output(kubectl::curl(forward.local, "/3"), PATIENCE, "curl");
        assert_eq!(got.stdout, body(3), "request {i} through port-forward");
        drop(forward);
    }
    // A killed kubectl in the middle of a long exec ends the node's process too.
    let mut child = k
        .command(&["exec", "-i", pod, "--", "sleep", "600"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl exec");
    wait_for("the exec to reach the node", PATIENCE, || {
        metric("skiff_kubelet_stream_sessions") >= 1
    });
    let _ = child.kill();
    let _ = child.wait();
    let mut after = holdings(up);
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        after = holdings(up);
        // A few fds and tasks of slack: connections the API server keeps (its own client's
        // pool, a kubectl connection not yet reaped) come and go.
        if after.0 <= before.0 + 4 && after.1 <= before.1 + 4 && after.2 == 0 && after.3 <= before.3
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "node before 100 sessions (fds, tasks, sessions, processes): {before:?}, after: {after:?}"
    );
    assert!(after.0 <= before.0 + 4, "fds grew: {before:?} → {after:?}");
    assert!(
        after.1 <= before.1 + 4,
        "tasks grew: {before:?} → {after:?}"
    );
    assert_eq!(after.2, 0, "sessions left open: {after:?}");
    assert!(
        after.3 <= before.3,
        "pod processes grew: {before:?} → {after:?}"
    );
}

#[test]
fn kubectl_logs_exec_attach_and_port_forward_through_a_real_node() {
    let Some(mut up) = ready() else {
        return;
    };
    for binary in [KUBECTL_1_33, KUBECTL_1_29] {
        if !Path::new(binary).exists() {
            assert!(std::env::var_os("CI").is_none(), "{binary} is missing");
            eprintln!("skipping: {binary} not found");
            return;
        }
    }
    up.start();
    up.apply(PODS);
    std::thread::scope(|s| {
        s.spawn(|| {
            up.enter_netns();
            let k33 = Kubectl::new(KUBECTL_1_33, &up.kubeconfig());
            let k29 = Kubectl::new(KUBECTL_1_29, &up.kubeconfig());
            running(&k33, &["talker", "crasher", "attachee"]);
            let web = web_pod(&k33);

            logs(&k33);
            kubectl::logs_and_follow(&k29, "talker", 1, || {});

            let ws = exec(&k33, &web);
            let spdy = exec(&k33.spdy_exec(), &web);
            let old = exec(&k29, &web);
            eprintln!(
                "kubectl exec -i of 10 MB through cat: {ws:.1} MB/s (1.33, WebSocket), \
                 {spdy:.1} MB/s (1.33, SPDY), {old:.1} MB/s (1.29)"
            );
            attach(&k33);

            for k in [&k33, &k33.spdy_port_forward(), &k29] {
                kubectl::port_forward_concurrently(k, &web, 8080, 20, body);
            }
            no_leaks(&up, &k33, &web);
        })
        .join()
        .expect("the checks");
    });
}
