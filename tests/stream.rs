//! The node's end of `kubectl logs`, `exec`, `attach` and `port-forward`: real pods from the
//! busybox test image, driven through `skiff_kubelet::stream::serve` in process (the test
//! plays the control plane with a pair of frame channels). Needs root; pods live on a bridge
//! in a network namespace the test creates, and everything is removed on drop.

mod support;

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use skiff_api::node::offer::Kind;
use skiff_api::node::{AttachOffer, ExecOffer, LogsOffer, PortForwardOffer};
use support::pods::{Output, StreamNode, offer_for, open_with};
use support::runtime::ready;

const IMAGE: &str = support::pods::IMAGE;

fn exec(container: &str, command: &[&str], stdin: bool, tty: bool) -> Kind {
    Kind::Exec(ExecOffer {
        container: container.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        stdin,
        stdout: true,
        stderr: !tty,
        tty,
    })
}

fn logs(container: &str) -> LogsOffer {
    LogsOffer {
        container: container.into(),
        follow: false,
        previous: false,
        tail_lines: -1,
        since_unix: 0,
        timestamps: false,
        limit_bytes: 0,
    }
}

fn port(port: u32) -> Kind {
    Kind::PortForward(PortForwardOffer { port })
}

/// The PIDs (host view) of the processes in `pid`'s PID namespace other than `pid` itself.
fn others_in_pid_namespace(pid: i32) -> Vec<i32> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| p != pid)
        .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|n| n == ns))
        .collect()
}

/// This process's children (exec helpers are).
fn children() -> Vec<i32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Waits for `cond`, up to `secs` seconds (what is waited for is an event, not a time).
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_exit_codes_stdin_and_a_tty() {
    if !ready() {
        return;
    }
    let node = StreamNode::new("exec");
    let pod = node.run_pod(
        "00000000-0000-4000-8000-00000000e0ec",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: exec}}\nspec:\n  containers:\n  \
             - name: main\n    image: {IMAGE}\n    command: [sleep, '1000']\n"
        ),
    );

    let out = node
        .open(
            &pod,
            exec(
                "main",
                &["sh", "-c", "echo out; echo err >&2"],
                false,
                false,
            ),
        )
        .finish()
        .await;
    assert_eq!((out.text(1), out.text(2)), ("out\n".into(), "err\n".into()));
    assert_eq!(out.exit, Some((0, String::new())));
    let out = node
        .open(&pod, exec("main", &["sh", "-c", "exit 3"], false, false))
        .finish()
        .await;
    assert_eq!(out.exit, Some((3, String::new())));

    // 10 MB through `cat`, unchanged, while output is read at the same time.
    let data: Vec<u8> = (0..10_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let want = Sha256::digest(&data);
    let mut session = node.open(&pod, exec("main", &["cat"], true, false));
    let input = session.input();
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(32 * 1024) {
            let frame = skiff_api::node::StreamFrame {
                frame: Some(skiff_api::node::stream_frame::Frame::Data(
                    skiff_api::node::Data {
                        channel: 0,
                        data: chunk.to_vec(),
                    },
                )),
            };
            input.send(frame).await.unwrap();
        }
        let close = skiff_api::node::StreamFrame {
            frame: Some(skiff_api::node::stream_frame::Frame::Close(0)),
        };
        input.send(close).await.unwrap();
    });
    let mut out = Output::default();
    session.finish_into(&mut out).await;
    writer.await.unwrap();
    let got = out.channels.remove(&1).unwrap_or_default();
    assert_eq!(got.len(), 10_000_000);
    assert_eq!(Sha256::digest(&got), want, "cat gave back other bytes");
    assert_eq!(out.exit, Some((0, String::new())));

    // A tty: `stty size` sees the size the user's terminal sent.
    let session = node.open(
        &pod,
        exec("main", &["sh", "-c", "read go; stty size; tty"], true, true),
    );
    session.resize(101, 33).await;
    session.data(0, b"go\n").await;
    let out = session.finish().await;
    let text = out.text(1).replace("\r\n", "\n");
    assert_eq!(text, "go\n33 101\n/dev/pts/0\n");
    assert_eq!(out.exit, Some((0, String::new())));

    // What cannot run is an error users read.
    let out = node
        .open(&pod, exec("main", &["no-such-tool"], false, false))
        .finish()
        .await;
    assert_eq!(
        out.exit.unwrap().1,
        "failed to exec in container \"main\": exec \"no-such-tool\": executable file not found in $PATH"
    );
    let out = node
        .open(&pod, exec("nope", &["true"], false, false))
        .finish()
        .await;
    assert_eq!(
        out.exit.unwrap().1,
        "container nope is not valid for pod exec"
    );
    let mut other = (*pod).clone();
    other.metadata.uid = Some("00000000-0000-4000-8000-0000000000ff".into());
    let out = node
        .open(&other, exec("main", &["true"], false, false))
        .finish()
        .await;
    assert_eq!(
        out.exit.unwrap().1,
        "pod default/exec (uid 00000000-0000-4000-8000-0000000000ff) does not run on this node"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_mid_exec_leaves_no_process_behind() {
    if !ready() {
        return;
    }
    let node = StreamNode::new("gone");
    let uid = "00000000-0000-4000-8000-00000000900e";
    let pod = node.run_pod(
        uid,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: gone}}\nspec:\n  containers:\n  \
             - name: main\n    image: {IMAGE}\n    command: [sleep, '1000']\n"
        ),
    );
    let init = node.init_pid(uid, "main");
    for tty in [false, true] {
        let mut session = node.open(
            &pod,
            exec(
                "main",
                &["sh", "-c", "sleep 1000 & echo started; sleep 1000"],
                true,
                tty,
            ),
        );
        let mut out = Output::default();
        session.read_until(&mut out, 1, "started").await;
        assert!(others_in_pid_namespace(init).len() >= 3, "the exec runs");
        session.hang_up().await;
        // The exec'd processes are killed and the helper reaped: only the workload is left.
        assert!(
            eventually(10, || others_in_pid_namespace(init).len() == 1
                && children().is_empty())
            .await,
            "left behind (tty {tty}): {:?} in the container, children {:?}",
            others_in_pid_namespace(init),
            children()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_across_rotation_and_serve_tail_since_timestamps_and_limit() {
    if !ready() {
        return;
    }
    let node = StreamNode::new("logs");
    let uid = "00000000-0000-4000-8000-0000000010c5";
    // `big` writes 111111 lines of 100 bytes: over 10 MiB of log with the CRI prefixes, so
    // skiff-init rotates the file while it is followed.
    let line = "a".repeat(99);
    let pod = node.run_pod(
        uid,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: logs}}\nspec:\n  containers:\n  \
             - name: quiet\n    image: {IMAGE}\n    command: [sh, -c, 'echo first; echo second; echo third; sleep 1000']\n  \
             - name: big\n    image: {IMAGE}\n    command: [sh, -c, 'sleep 1; echo start; yes {line} | head -n 111111; echo end; sleep 1']\n"
        ),
    );
    let follow = LogsOffer {
        follow: true,
        ..logs("big")
    };
    let session = node.open(&pod, Kind::Logs(follow));
    let out = session.finish().await;
    assert_eq!(
        out.exit,
        Some((0, String::new())),
        "follow ends when the container does"
    );
    let text = out.text(1);
    let mut want = String::from("start\n");
    for _ in 0..111_111 {
        want.push_str(&line);
        want.push('\n');
    }
    want.push_str("end\n");
    assert_eq!(text.len(), want.len());
    assert!(
        text == want,
        "the followed log differs from what was written"
    );
    let dir = node
        .dir
        .path()
        .join(format!("root/run/pods/{uid}/logs/big"));
    assert!(
        dir.join("0.log.1").exists(),
        "the log rotated while followed"
    );

    node.wait_log(uid, "quiet", "third");
    let run = |offer: LogsOffer| {
        let session = node.open(&pod, Kind::Logs(offer));
        async move { session.finish().await }
    };
    let out = run(LogsOffer {
        tail_lines: 2,
        ..logs("quiet")
    })
    .await;
    assert_eq!(
        (out.text(1), out.exit),
        ("second\nthird\n".into(), Some((0, String::new())))
    );
    assert_eq!(
        run(LogsOffer {
            tail_lines: 0,
            ..logs("quiet")
        })
        .await
        .text(1),
        ""
    );
    assert_eq!(
        run(LogsOffer {
            limit_bytes: 8,
            ..logs("quiet")
        })
        .await
        .text(1),
        "first\nse"
    );
    let hour_ahead = jiff::Timestamp::now().as_second() + 3600;
    assert_eq!(
        run(LogsOffer {
            since_unix: hour_ahead,
            ..logs("quiet")
        })
        .await
        .text(1),
        ""
    );
    assert_eq!(
        run(LogsOffer {
            since_unix: 1,
            ..logs("quiet")
        })
        .await
        .text(1),
        "first\nsecond\nthird\n"
    );
    let stamped = run(LogsOffer {
        timestamps: true,
        tail_lines: 1,
        ..logs("quiet")
    })
    .await
    .text(1);
    let (time, rest) = stamped.split_once(' ').unwrap();
    assert_eq!(rest, "third\n");
    assert_eq!(time.len(), "2006-01-02T15:04:05.000000000Z".len(), "{time}");
    assert!(time.parse::<jiff::Timestamp>().is_ok(), "{time}");

    // Following a running container: lines written later arrive, and hanging up ends it.
    let mut session = node.open(
        &pod,
        Kind::Logs(LogsOffer {
            follow: true,
            tail_lines: 1,
            ..logs("quiet")
        }),
    );
    let mut out = Output::default();
    session.read_until(&mut out, 1, "third\n").await;
    assert_eq!(out.text(1), "third\n");
    session.hang_up().await;

    let out = run(LogsOffer {
        previous: true,
        ..logs("quiet")
    })
    .await;
    assert_eq!(
        out.exit.unwrap().1,
        "previous terminated container \"quiet\" in pod \"logs\" not found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_is_the_instance_before_the_last_restart() {
    if !ready() {
        return;
    }
    let node = StreamNode::new("prev");
    let uid = "00000000-0000-4000-8000-00000000b4e1";
    let pod = node.run_pod(
        uid,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: prev}}\nspec:\n  volumes:\n  - {{name: data, emptyDir: {{}}}}\n  \
             containers:\n  - name: c\n    image: {IMAGE}\n    volumeMounts:\n    - {{name: data, mountPath: /data}}\n    \
             command: [sh, -c, 'n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo run-$n']\n"
        ),
    );
    let record = node.pods.record(uid).unwrap();
    let exited = || {
        matches!(
            node.pods.container_status(&record, "c").unwrap().state,
            skiff_runtime::container::State::Exited(_)
        )
    };
    let read = |previous: bool| {
        let session = node.open(
            &pod,
            Kind::Logs(LogsOffer {
                previous,
                ..logs("c")
            }),
        );
        async move { session.finish().await }
    };
    assert!(eventually(30, exited).await);
    assert_eq!(
        read(true).await.exit.unwrap().1,
        "previous terminated container \"c\" in pod \"prev\" not found"
    );
    for run in 2..=3 {
        node.pods.recreate_container(&record, "c").unwrap();
        node.pods.start_container(&record, "c").unwrap();
        assert!(eventually(30, exited).await);
        assert_eq!(read(false).await.text(1), format!("run-{run}\n"));
        let previous = read(true).await;
        assert_eq!(previous.text(1), format!("run-{}\n", run - 1));
        assert_eq!(previous.exit, Some((0, String::new())));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_reaches_the_workload_stdin_output_and_terminal_also_after_a_restart() {
    if !ready() {
        return;
    }
    let node = StreamNode::new("attach");
    let uid = "00000000-0000-4000-8000-0000000a77ac";
    let pod = node.run_pod(
        uid,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: attach}}\nspec:\n  containers:\n  \
             - name: echo\n    image: {IMAGE}\n    stdin: true\n    stdinOnce: true\n    \
             command: [sh, -c, 'while read l; do echo got-$l; echo err-$l >&2; done; echo bye; exit 5']\n  \
             - name: term\n    image: {IMAGE}\n    stdin: true\n    tty: true\n    command: [sh]\n"
        ),
    );
    let attach = |container: &str, tty: bool| {
        Kind::Attach(AttachOffer {
            container: container.into(),
            stdin: true,
            stdout: true,
            stderr: !tty,
            tty,
        })
    };
    // A kubelet that restarted (a new LocalPods and index over the same state) attaches too.
    let restarted = node.restarted();
    let mut session = open_with(restarted, offer_for(&pod, attach("echo", false)));
    session.data(0, b"hello\n").await;
    let mut out = Output::default();
    session.read_until(&mut out, 1, "got-hello\n").await;
    session.read_until(&mut out, 2, "err-hello\n").await;
    // stdinOnce: the user's end of input is the workload's.
    session.close(0).await;
    session.finish_into(&mut out).await;
    assert_eq!(out.text(1), "got-hello\nbye\n");
    assert_eq!(out.exit, Some((5, String::new())));
    let out = node.open(&pod, attach("echo", false)).finish().await;
    assert_eq!(
        out.exit.unwrap().1,
        "container \"echo\" in pod \"attach\" is not running"
    );

    // A container with a tty: resize, then a command typed at its shell.
    let mut session = node.open(&pod, attach("term", true));
    session.resize(101, 33).await;
    session.data(0, b"stty size\n").await;
    let mut out = Output::default();
    session.read_until(&mut out, 1, "33 101").await;
    session.data(0, b"exit 7\n").await;
    session.finish_into(&mut out).await;
    assert_eq!(out.exit, Some((7, String::new())), "{}", out.text(1));
}

/// GET `path` through one forwarded connection; the response.
async fn get(node: &StreamNode, pod: &k8s_openapi::api::core::v1::Pod, path: &str) -> Output {
    let mut session = node.open(pod, port(8080));
    session
        .data(0, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await;
    // Like curl: read the response to its end (the server closes), then close.
    let mut out = Output::default();
    loop {
        match session.next().await {
            Some(skiff_api::node::stream_frame::Frame::Data(d)) => {
                out.channels.entry(d.channel).or_default().extend(d.data);
            }
            Some(skiff_api::node::stream_frame::Frame::Exit(e)) => {
                out.exit = Some((e.code, e.error));
                return out;
            }
            other => panic!("{other:?}"),
        }
        if out.text(1).ends_with("</end>\n") || out.text(1).contains("\r\n\r\nhello-from-pod\n") {
            session.close(0).await;
            session.finish_into(&mut out).await;
            return out;
        }
    }
}

fn web_pod(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  \
         - name: web\n    image: {IMAGE}\n    command: [sh, -c, 'mkdir -p /www && echo hello-from-pod > /www/index.html && \
         seq 1 20000 > /www/big.txt && echo \"</end>\" >> /www/big.txt && exec httpd -f -p 8080 -h /www']\n  \
         - name: main\n    image: {IMAGE}\n    command: [sleep, '1000']\n"
    )
}

/// Waits until httpd answers through a forward.
async fn wait_for_httpd(node: &StreamNode, pod: &k8s_openapi::api::core::v1::Pod) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = get(node, pod, "/index.html").await;
        if out.text(1).contains("hello-from-pod") {
            return;
        }
        assert!(Instant::now() < deadline, "httpd never answered: {out:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_httpd_in_the_pod_netns_with_20_concurrent_connections() {
    if !ready() {
        return;
    }
    let node = StreamNode::new("pf");
    let uid = "00000000-0000-4000-8000-0000000000bf";
    let pod = node.run_pod(uid, &web_pod("web"));
    wait_for_httpd(&node, &pod).await;

    let big: String = (1..=20000).map(|i| format!("{i}\n")).collect::<String>() + "</end>\n";
    let gets = (0..20usize).map(|i| {
        let path = if i.is_multiple_of(2) {
            "/big.txt"
        } else {
            "/index.html"
        };
        get(&node, &pod, path)
    });
    let results = futures::future::join_all(gets).await;
    for (i, out) in results.iter().enumerate() {
        let text = out.text(1);
        let (head, body) = text.split_once("\r\n\r\n").expect("a response");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{i}: {head}");
        let want = if i.is_multiple_of(2) {
            big.as_str()
        } else {
            "hello-from-pod\n"
        };
        assert!(body == want, "{i}: body of {} bytes differs", body.len());
        assert_eq!(out.exit, Some((0, String::new())), "{i}");
    }

    let out = node.open(&pod, port(9)).finish().await;
    assert_eq!(
        out.exit.unwrap().1,
        format!(
            "error forwarding port 9 to pod web, uid {uid}: failed to connect to localhost:9 \
             inside the pod's network namespace: connection refused"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_exec_and_port_forward_sessions_leave_no_fds_threads_tasks_or_processes() {
    if !ready() {
        return;
    }
    let node = StreamNode::new("leak");
    let uid = "00000000-0000-4000-8000-00000000100c";
    let pod = node.run_pod(uid, &web_pod("leak"));
    wait_for_httpd(&node, &pod).await;
    let init = node.init_pid(uid, "main");

    // One round: an exec of `cat` and a forwarded GET; odd rounds hang up half-way.
    let round = |i: usize| {
        let node = &node;
        let pod = &pod;
        async move {
            let mut session = node.open(pod, exec("main", &["cat"], true, false));
            let ping = format!("ping-{i}\n");
            session.data(0, ping.as_bytes()).await;
            let mut out = Output::default();
            session.read_until(&mut out, 1, &ping).await;
            if i.is_multiple_of(2) {
                session.close(0).await;
                session.finish_into(&mut out).await;
                assert_eq!(out.exit, Some((0, String::new())));
            } else {
                session.hang_up().await;
            }
            let mut session = node.open(pod, port(8080));
            session.data(0, b"GET /index.html HTTP/1.0\r\n\r\n").await;
            let mut out = Output::default();
            session.read_until(&mut out, 1, "hello-from-pod").await;
            if i.is_multiple_of(2) {
                session.close(0).await;
                session.finish_into(&mut out).await;
            } else {
                session.hang_up().await;
            }
        }
    };
    for i in 0..6 {
        round(i).await; // warm up: lazily made runtime threads and buffers exist now
    }
    assert!(eventually(10, || children().is_empty()).await);
    let (fds, threads_before) = (open_fds(), threads());
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    for i in 0..100 {
        round(i).await;
    }
    assert_eq!(skiff_kubelet::stream::live_sessions(), 0);
    let settled = eventually(30, || {
        open_fds() <= fds && threads() <= threads_before && children().is_empty()
    })
    .await;
    assert!(
        settled,
        "fds {fds} -> {}, threads {threads_before} -> {}, children {:?}",
        open_fds(),
        threads(),
        children()
    );
    assert!(
        eventually(10, || tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            <= tasks)
        .await,
        "tasks {tasks} -> {}",
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    );
    assert_eq!(
        others_in_pid_namespace(init).len(),
        1,
        "only the workload runs"
    );
}

/// Node-side throughput, in one run: a 50 MB download through one port-forward session and
/// through a direct TCP connection to the pod's IP from the node's network namespace, and
/// 50 MB through `exec -i cat`. In process (no gRPC, no API server): what the node's end
/// costs. Prints figures; asserts only that the bytes arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints throughput figures: cargo test --test stream -- --ignored --nocapture"]
async fn throughput_of_port_forward_exec_and_direct_tcp() {
    use std::io::{Read, Write};
    if !ready() {
        return;
    }
    const SIZE: usize = 50_000_000;
    let node = StreamNode::new("tput");
    let uid = "00000000-0000-4000-8000-00000000f1a5";
    let pod = node.run_pod(
        uid,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: tput}}\nspec:\n  containers:\n  \
             - name: web\n    image: {IMAGE}\n    command: [sh, -c, 'mkdir -p /www && echo hello-from-pod > /www/index.html && \
             head -c {SIZE} /dev/zero > /www/big && exec httpd -f -p 8080 -h /www']\n  \
             - name: main\n    image: {IMAGE}\n    command: [sleep, '1000']\n"
        ),
    );
    wait_for_httpd(&node, &pod).await;
    let mb = |bytes: usize, t: Duration| bytes as f64 / 1e6 / t.as_secs_f64();
    let request = b"GET /big HTTP/1.0\r\n\r\n";

    for round in 0..3 {
        // Through one forwarded connection.
        let started = Instant::now();
        let mut session = node.open(&pod, port(8080));
        session.data(0, request).await;
        let mut got = 0usize;
        while let Some(frame) = session.next().await {
            match frame {
                skiff_api::node::stream_frame::Frame::Data(d) => got += d.data.len(),
                skiff_api::node::stream_frame::Frame::Exit(_) => break,
                _ => {}
            }
        }
        let forwarded = started.elapsed();
        assert!(got > SIZE);

        // Direct: the pod's IP from the node's network namespace.
        let ip = node.pods.record(uid).unwrap().ip.unwrap();
        let netns = node.cfg.node_netns.clone().unwrap();
        let started = Instant::now();
        let direct_bytes = tokio::task::spawn_blocking(move || {
            let fd = skiff_runtime::ns::PinnedNs::open(&netns).unwrap();
            let mut conn = skiff_runtime::ns::in_netns(std::os::fd::AsFd::as_fd(&fd), || {
                std::net::TcpStream::connect((ip, 8080))
            })
            .unwrap()
            .unwrap();
            conn.write_all(request).unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut n = 0;
            loop {
                match conn.read(&mut buf).unwrap() {
                    0 => return n,
                    k => n += k,
                }
            }
        })
        .await
        .unwrap();
        let direct = started.elapsed();
        assert!(direct_bytes > SIZE);

        // exec -i: SIZE bytes in and back out through `cat`.
        let started = Instant::now();
        let mut session = node.open(&pod, exec("main", &["cat"], true, false));
        let input = session.input();
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 32 * 1024];
            let mut sent = 0;
            while sent < SIZE {
                let n = chunk.len().min(SIZE - sent);
                let frame = skiff_api::node::StreamFrame {
                    frame: Some(skiff_api::node::stream_frame::Frame::Data(
                        skiff_api::node::Data {
                            channel: 0,
                            data: chunk[..n].to_vec(),
                        },
                    )),
                };
                input.send(frame).await.unwrap();
                sent += n;
            }
            let close = skiff_api::node::StreamFrame {
                frame: Some(skiff_api::node::stream_frame::Frame::Close(0)),
            };
            input.send(close).await.unwrap();
        });
        let mut back = 0usize;
        while let Some(frame) = session.next().await {
            match frame {
                skiff_api::node::stream_frame::Frame::Data(d) => back += d.data.len(),
                skiff_api::node::stream_frame::Frame::Exit(_) => break,
                _ => {}
            }
        }
        writer.await.unwrap();
        let exec_time = started.elapsed();
        assert_eq!(back, SIZE);
        println!(
            "round {round}: port-forward {:.0} MB/s, direct TCP to the pod IP {:.0} MB/s, exec -i cat {:.0} MB/s",
            mb(got, forwarded),
            mb(direct_bytes, direct),
            mb(SIZE, exec_time)
        );
    }
}
