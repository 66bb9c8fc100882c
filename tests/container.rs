//! Containers from raw Linux primitives, end to end: the runtime's API with the real `skiff`
//! binary as the setup process and the busybox test image. Needs root (CI runs it as root).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use skiff_runtime::container::{
    BindMount, ContainerError, Containers, DEFAULT_CAPABILITIES, Propagation, State, logs,
};
use support::runtime::{Node, ready};

#[test]
fn runs_a_command_records_its_exit_code_and_writes_cri_logs() {
    if !ready() {
        return;
    }
    let node = Node::new();
    let spec = node.spec(
        "exit3",
        &["sh", "-c", "echo out; echo err >&2; printf partial; exit 3"],
    );
    let log_dir = spec.log.dir.clone();
    let (code, out, err) = node.run(spec);
    assert_eq!(code, 3);
    assert_eq!(out, ["out", "partial"]);
    assert_eq!(err, ["err"]);
    let raw = std::fs::read_to_string(log_dir.join("0.log")).unwrap();
    let first = raw.lines().next().unwrap();
    let (ts, rest) = first.split_once(' ').unwrap();
    assert_eq!(ts.len(), "2026-01-01T00:00:00.000000000Z".len(), "{first}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{first}");
    assert!(rest == "stdout F out" || rest == "stderr F err", "{first}");
}

#[test]
fn namespaces_are_separate_and_init_is_pid_1() {
    if !ready() {
        return;
    }
    let node = Node::new();
    let script = "echo $$; tr '\\0' ' ' < /proc/1/cmdline; echo; readlink /proc/self/ns/mnt; readlink /proc/self/ns/pid; ls /proc | grep -c '^[0-9]'";
    let (code, out, _) = node.run(node.spec("ns", &["sh", "-c", script]));
    assert_eq!(code, 0);
    assert_eq!(out[0], "2", "the workload is PID 2, under skiff-init");
    assert!(out[1].starts_with("skiff-init "), "{out:?}");
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let host_pid = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_ne!(Path::new(&out[2]), host_mnt);
    assert_ne!(Path::new(&out[3]), host_pid);
    let processes: u32 = out[4].parse().unwrap();
    assert!(
        processes <= 4,
        "only the container's processes are visible: {processes}"
    );
}

#[test]
fn writes_go_to_the_upper_dir_and_read_only_rootfs_refuses_them() {
    if !ready() {
        return;
    }
    let node = Node::new();
    let (code, _, _) = node.run(node.spec("writer", &["sh", "-c", "echo data > /etc/new-file"]));
    assert_eq!(code, 0);
    let upper = node
        .dir
        .path()
        .join("state/containers/writer/upper/etc/new-file");
    assert_eq!(std::fs::read_to_string(upper).unwrap(), "data\n");
    assert!(
        node.layers.iter().all(|l| !l.join("etc/new-file").exists()),
        "image layers untouched"
    );

    let mut ro = node.spec("readonly", &["sh", "-c", "echo data > /etc/new-file"]);
    ro.readonly_rootfs = true;
    let (code, _, err) = node.run(ro);
    assert_ne!(code, 0);
    assert!(
        err.iter().any(|l| l.contains("Read-only file system")),
        "{err:?}"
    );
}

#[test]
fn masked_paths_are_masked_and_sys_is_read_only() {
    if !ready() {
        return;
    }
    let node = Node::new();
    // Masked files read empty (the kernel here has /proc/keys and /proc/timer_list but no kcore).
    let script = "cat /proc/keys /proc/timer_list | wc -c; ls -A /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/domainname || echo ro-proc; touch /sys/x || echo ro-sys";
    let (_, out, err) = node.run(node.spec("masked", &["sh", "-c", script]));
    assert_eq!(out, ["0", "0", "ro-proc", "ro-sys"], "stderr: {err:?}");
}

#[test]
fn a_non_root_user_cannot_read_a_root_only_file_and_capabilities_are_dropped() {
    if !ready() {
        return;
    }
    let node = Node::new();
    let mut user = node.spec("user", &["sh", "-c", "id -u; id -g; cat /root/secret"]);
    user.process.uid = 1000;
    user.process.gid = 1000;
    let (code, out, err) = node.run(user);
    assert_ne!(code, 0);
    assert_eq!(out, ["1000", "1000"]);
    assert!(
        err.iter().any(|l| l.contains("Permission denied")),
        "{err:?}"
    );

    let (_, out, _) = node.run(node.spec(
        "caps",
        &["sh", "-c", "grep -E '^Cap(Eff|Bnd)' /proc/self/status"],
    ));
    let mask: u64 = DEFAULT_CAPABILITIES.iter().map(|(_, n)| 1u64 << n).sum();
    let want = format!("{mask:016x}");
    assert_eq!(
        out,
        [format!("CapEff:\t{want}"), format!("CapBnd:\t{want}")]
    );
}

#[test]
fn stop_sends_the_stop_signal_then_escalates_to_sigkill() {
    if !ready() {
        return;
    }
    let node = Node::new();
    node.containers
        .create(&node.spec("polite", &["sleep", "1000"]))
        .unwrap();
    node.containers.start("polite").unwrap();
    let status = node
        .containers
        .stop("polite", Duration::from_secs(10))
        .unwrap();
    assert!(
        matches!(status.state, State::Exited(e) if e.signal == libc::SIGTERM),
        "{status:?}"
    );

    node.containers
        .create(&node.spec(
            "stubborn",
            &[
                "sh",
                "-c",
                "trap '' TERM; echo trapped; while true; do sleep 1; done",
            ],
        ))
        .unwrap();
    node.containers.start("stubborn").unwrap();
    // Wait (on the log, with a deadline) until the shell ignores SIGTERM.
    let spec = node.containers.spec("stubborn").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !logs::read(&spec.log.dir, &spec.log.name, None)
        .unwrap()
        .iter()
        .any(|l| l.text == "trapped")
    {
        assert!(
            Instant::now() < deadline,
            "the shell never installed its trap"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let status = node
        .containers
        .stop("stubborn", Duration::from_millis(500))
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the grace period was honoured"
    );
    assert!(
        matches!(status.state, State::Exited(e) if e.signal == libc::SIGKILL),
        "{status:?}"
    );
    assert_eq!(status.reason, None, "killed by stop, not by the OOM killer");
    node.containers.remove("stubborn").unwrap();
    assert!(matches!(
        node.containers.status("stubborn"),
        Err(ContainerError::NotFound(_))
    ));
}

#[test]
fn a_missing_command_is_a_clear_start_error() {
    if !ready() {
        return;
    }
    let node = Node::new();
    node.containers
        .create(&node.spec("nocmd", &["no-such-command"]))
        .unwrap();
    let err = node.containers.start("nocmd").unwrap_err().to_string();
    assert!(
        err.contains("no-such-command") && err.contains("not found"),
        "{err}"
    );
    let status = node
        .containers
        .wait("nocmd", Duration::from_secs(10))
        .unwrap();
    assert!(
        matches!(status.state, State::Exited(e) if e.code == 127),
        "{status:?}"
    );
}

#[test]
fn a_failed_create_leaves_nothing_behind() {
    if !ready() {
        return;
    }
    let node = Node::new();
    let mut spec = node.spec("broken", &["true"]);
    spec.mounts.push(BindMount {
        source: "/nonexistent/volume".into(),
        destination: "/data".into(),
        readonly: false,
        propagation: Propagation::Private,
    });
    let err = node.containers.create(&spec).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/volume"), "{err}");
    assert!(!node.dir.path().join("state/containers/broken").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(node.dir.path().to_str().unwrap()),
        "no mount leaked"
    );
    assert!(node.containers.list().unwrap().is_empty());
}

#[test]
fn a_restarted_runtime_re_adopts_running_containers_and_sees_exits() {
    if !ready() {
        return;
    }
    let node = Node::new();
    for i in 0..20 {
        let args: &[&str] = if i < 2 {
            &["sleep", "1"]
        } else {
            &["sleep", "1000"]
        };
        node.containers
            .create(&node.spec(&format!("c{i}"), args))
            .unwrap();
        node.containers.start(&format!("c{i}")).unwrap();
    }
    // The "daemon" goes away: containers are not its children, so nothing happens to them.
    let state = node.dir.path().join("state");
    drop(node.containers.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let again = Containers::open(&state, env!("CARGO_BIN_EXE_skiff")).unwrap();
    let list = again.list().unwrap();
    let running = list.iter().filter(|s| s.state == State::Running).count();
    let exited: Vec<_> = list
        .iter()
        .filter(|s| matches!(s.state, State::Exited(e) if e.code == 0 && e.signal == 0))
        .collect();
    assert_eq!((running, exited.len()), (18, 2), "{list:?}");
    for s in &list {
        again.stop(&s.id, Duration::from_secs(5)).unwrap();
    }
    assert!(
        again
            .list()
            .unwrap()
            .iter()
            .all(|s| matches!(s.state, State::Exited(_)))
    );
}

#[test]
fn the_init_of_a_running_container_stays_under_one_mebibyte() {
    if !ready() {
        return;
    }
    let node = Node::new();
    node.containers
        .create(&node.spec("small", &["sh", "-c", "echo hi; sleep 1000"]))
        .unwrap();
    let status = node.containers.start("small").unwrap();
    std::thread::sleep(Duration::from_millis(300)); // let it log a line
    let pid = status.pid.unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: u64 = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    println!("skiff-init VmRSS: {rss_kb} kB");
    assert!(rss_kb <= 1024, "skiff-init uses {rss_kb} kB");
    node.containers
        .stop("small", Duration::from_secs(5))
        .unwrap();

    // Also while it serves an attached client on a tty: input, a resize, output.
    let mut spec = node.spec("tty", &["sh"]);
    spec.stdio = skiff_runtime::container::StdioSpec {
        stdin: true,
        tty: true,
    };
    node.containers.create(&spec).unwrap();
    let pid = node.containers.start("tty").unwrap().pid.unwrap();
    let fd = node.containers.attach("tty").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use skiff_runtime::container::attach::{AttachConnection, STDIN};
        let conn = AttachConnection::new(fd).unwrap();
        conn.resize(120, 40).await.unwrap();
        conn.send(STDIN, b"stty size; seq 1 2000 | tail -n 1\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("2000\r\n") {
            let msg = tokio::time::timeout(Duration::from_secs(30), conn.recv())
                .await
                .expect("output within 30 s")
                .unwrap()
                .expect("the shell runs");
            seen.extend(msg.data);
        }
        assert!(String::from_utf8_lossy(&seen).contains("40 120"));
    });
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: u64 = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    println!("skiff-init VmRSS serving an attached tty: {rss_kb} kB");
    assert!(rss_kb <= 1024, "skiff-init uses {rss_kb} kB");
    node.containers.stop("tty", Duration::from_secs(5)).unwrap();
}

#[test]
fn exec_runs_in_the_container_and_returns_output_and_exit_code() {
    use skiff_runtime::container::{ContainerError, ExecSpec};
    use std::io::{Read, Write};
    use std::process::Stdio;
    if !ready() {
        return;
    }
    let node = Node::new();
    let mut spec = node.spec("target", &["sleep", "1000"]);
    spec.process.env.push("FROM_IMAGE=yes".into());
    node.containers.create(&spec).unwrap();
    node.containers.start("target").unwrap();

    let exec = ExecSpec {
        args: vec![
            "sh".into(),
            "-c".into(),
            "echo $FROM_IMAGE $EXTRA; cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 3".into(),
        ],
        env: vec!["EXTRA=given".into()],
        tty: false,
    };
    let mut process = node
        .containers
        .exec(
            "target",
            &exec,
            [Stdio::null(), Stdio::piped(), Stdio::piped()],
        )
        .unwrap();
    let mut stdout = String::new();
    process
        .take_stdout()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    process
        .take_stderr()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(process.wait().unwrap(), 3, "{stderr}");
    assert!(stdout.starts_with("yes given\nskiff-init "), "{stdout}");

    // stdin streams through unchanged.
    let cat = ExecSpec {
        args: vec!["cat".into()],
        ..ExecSpec::default()
    };
    let mut process = node
        .containers
        .exec(
            "target",
            &cat,
            [Stdio::piped(), Stdio::piped(), Stdio::null()],
        )
        .unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut stdin = process.take_stdin().unwrap();
    let writer = std::thread::spawn({
        let data = data.clone();
        move || stdin.write_all(&data)
    });
    let mut back = Vec::new();
    process
        .take_stdout()
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(process.wait().unwrap(), 0);
    assert_eq!(back, data);

    // A command that cannot start is an error with the reason, not an exit code.
    let missing = ExecSpec {
        args: vec!["no-such-tool".into()],
        ..ExecSpec::default()
    };
    let err = node
        .containers
        .exec(
            "target",
            &missing,
            [Stdio::null(), Stdio::null(), Stdio::null()],
        )
        .unwrap_err();
    assert!(
        matches!(&err, ContainerError::ExecFailed { message, .. }
            if message == "exec \"no-such-tool\": executable file not found in $PATH"),
        "{err}"
    );
    node.containers
        .stop("target", Duration::from_secs(5))
        .unwrap();
    assert!(
        node.containers
            .exec(
                "target",
                &cat,
                [Stdio::null(), Stdio::null(), Stdio::null()]
            )
            .is_err(),
        "no exec into a stopped container"
    );
}

/// The PIDs (on the host) of the processes in `pid`'s PID namespace other than itself.
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

#[test]
fn exec_with_a_tty_gets_a_controlling_terminal_in_the_container_and_its_resizes() {
    use skiff_runtime::container::{ExecSpec, resize_tty};
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::process::Stdio;
    if !ready() {
        return;
    }
    let node = Node::new();
    node.containers
        .create(&node.spec("tty", &["sleep", "1000"]))
        .unwrap();
    let init = node.containers.start("tty").unwrap().pid.unwrap();
    let spec = ExecSpec {
        args: vec![
            "sh".into(),
            "-c".into(),
            "tty; echo $TERM; read line; stty size; echo err >&2; exit 4".into(),
        ],
        env: vec![],
        tty: true,
    };
    let mut process = node
        .containers
        .exec("tty", &spec, [Stdio::null(), Stdio::null(), Stdio::null()])
        .unwrap();
    let master = std::fs::File::from(process.take_tty().expect("a pty master"));
    resize_tty(master.as_fd(), 91, 27).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&out).contains("xterm") {
        let n = (&master).read(&mut buf).unwrap();
        assert!(n > 0, "the terminal closed early: {out:?}");
        out.extend_from_slice(&buf[..n]);
    }
    (&master).write_all(b"go\n").unwrap();
    // Reading the master after the last slave closed fails with EIO: that is the end.
    while let Ok(n) = (&master).read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(process.wait().unwrap(), 4);
    let text = String::from_utf8_lossy(&out).replace("\r\n", "\n");
    // The terminal echoes the input; stderr is the same terminal.
    assert_eq!(text, "/dev/pts/0\nxterm\ngo\n27 91\nerr\n");

    // Dropping the handle of a running command kills it (and what it started): no process
    // stays in the container but its init.
    let spec = ExecSpec {
        args: vec!["sh".into(), "-c".into(), "sleep 1000 & sleep 1000".into()],
        ..ExecSpec::default()
    };
    let process = node
        .containers
        .exec("tty", &spec, [Stdio::null(), Stdio::null(), Stdio::null()])
        .unwrap();
    let helper = process.pid();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The workload, and the exec: a shell (or the `sleep` it became) and a background sleep.
    while others_in_pid_namespace(init).len() < 3 {
        assert!(std::time::Instant::now() < deadline, "the exec never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(process);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = others_in_pid_namespace(init);
        // The workload (`sleep`) is the only process besides init.
        if left.len() == 1 && !std::path::Path::new(&format!("/proc/{helper}")).exists() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {left:?}, helper alive: {}",
            std::path::Path::new(&format!("/proc/{helper}")).exists()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    node.containers.stop("tty", Duration::from_secs(5)).unwrap();
}

#[test]
fn workloads_and_execs_start_with_no_signal_ignored_or_blocked() {
    use skiff_runtime::container::ExecSpec;
    use std::io::Read;
    use std::process::Stdio;
    if !ready() {
        return;
    }
    let node = Node::new();
    let script =
        "grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -n 1; echo ended; sleep 1000";
    let spec = node.spec("signals", &["sh", "-c", script]);
    node.containers.create(&spec).unwrap();
    node.containers.start("signals").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let lines = logs::read(&spec.log.dir, &spec.log.name, None).unwrap();
        // `yes | head` ends only when `yes` dies of SIGPIPE.
        if lines.iter().any(|l| l.text == "ended") {
            break lines;
        }
        assert!(std::time::Instant::now() < deadline, "stuck: {lines:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout: Vec<&str> = lines
        .iter()
        .filter(|l| l.stream == "stdout")
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(
        stdout,
        [
            "SigBlk:\t0000000000000000",
            "SigIgn:\t0000000000000000",
            "y",
            "ended"
        ]
    );
    let exec = ExecSpec {
        args: vec![
            "grep".into(),
            "-E".into(),
            "^Sig(Ign|Blk)".into(),
            "/proc/self/status".into(),
        ],
        ..ExecSpec::default()
    };
    let mut process = node
        .containers
        .exec(
            "signals",
            &exec,
            [Stdio::null(), Stdio::piped(), Stdio::null()],
        )
        .unwrap();
    let mut out = String::new();
    process
        .take_stdout()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(process.wait().unwrap(), 0);
    assert_eq!(
        out,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
    node.containers
        .stop("signals", Duration::from_secs(5))
        .unwrap();
}

#[test]
fn runtime_default_seccomp_refuses_mount_even_with_cap_sys_admin() {
    use skiff_runtime::container::seccomp::Seccomp;
    if !ready() {
        return;
    }
    let node = Node::new();
    let script = "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo mounted";
    for (id, profile, want_mounted) in [
        ("confined", Seccomp::RuntimeDefault, false),
        ("unconfined", Seccomp::Unconfined, true),
    ] {
        let mut spec = node.spec(id, &["sh", "-c", script]);
        spec.process.capabilities.push(21); // CAP_SYS_ADMIN
        spec.process.seccomp = profile;
        let (code, out, err) = node.run(spec);
        assert_eq!(code == 0, want_mounted, "{id}: {out:?} {err:?}");
        if !want_mounted {
            // busybox words EPERM as "permission denied (are you root?)".
            assert!(
                err.iter().any(|l| l.contains("permission denied")),
                "{err:?}"
            );
        }
    }
}
