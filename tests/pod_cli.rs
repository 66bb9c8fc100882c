//! `skiff pod …` end to end: the real binary runs Pod manifests from the busybox test image,
//! and `ls`, `logs`, `stop` and `rm` work across invocations. Needs root. Pods use
//! `hostNetwork: true`, or a node network namespace the test creates (never the host's
//! network); everything is removed again, also when a test fails.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use skiff_runtime::cgroup::{CgroupFs, Parent};
use skiff_runtime::ns::{self, NsKind, PinnedNs};
use support::build_image;
use support::runtime::ready;

const IMAGE: &str = "skiff.test/busybox:latest";

/// A skiff root with the test image imported, its own pod cgroup parent, and maybe a node
/// network namespace.
struct Node {
    dir: tempfile::TempDir,
    root: PathBuf,
    cgroup_parent: String,
    node_netns: Option<PathBuf>,
}

impl Node {
    fn new(test: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let node = Node {
            root,
            cgroup_parent: format!("skiff-test-{}-{test}", std::process::id()),
            node_netns: None,
            dir,
        };
        let layout = build_image(node.dir.path(), "single", &[]);
        node.ok(&[
            "image",
            "import",
            "-q",
            "--name",
            IMAGE,
            layout.to_str().unwrap(),
        ]);
        node
    }

    /// Pods get their network from a namespace made here, not from the host's.
    fn with_node_netns(mut self) -> Node {
        let pins = ns::prepare_state_dir(&self.dir.path().join("node-ns")).unwrap();
        let pin = pins.join("net");
        PinnedNs::create(NsKind::Net, &pin, || Ok(())).unwrap();
        self.node_netns = Some(pin);
        self
    }

    fn skiff(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.arg("--root").arg(&self.root).args(args);
        cmd.env("SKIFF_CGROUP_PARENT", &self.cgroup_parent);
        cmd.env("SKIFF_POD_CIDR", "10.77.0.0/24");
        cmd.env("SKIFF_BRIDGE", "skifftest0");
        match &self.node_netns {
            Some(pin) => cmd.env("SKIFF_NODE_NETNS", pin),
            None => cmd.env_remove("SKIFF_NODE_NETNS"),
        };
        cmd.output().expect("run skiff")
    }

    /// Runs skiff with `input` on its stdin.
    fn skiff_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
        cmd.arg("--root").arg(&self.root).args(args);
        cmd.env("SKIFF_CGROUP_PARENT", &self.cgroup_parent);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("run skiff");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.skiff(args);
        assert!(
            out.status.success(),
            "skiff {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs skiff and insists on failure with a one-line error; returns that line.
    fn err(&self, args: &[&str]) -> String {
        let out = self.skiff(args);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert!(!out.status.success(), "skiff {args:?} should have failed");
        assert_eq!(stderr.lines().count(), 1, "errors are one line: {stderr:?}");
        stderr
    }

    fn manifest(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// The `pod ls` row of one container: [POD, CONTAINER, STATE, EXIT, IP].
    fn row(&self, pod: &str, container: &str) -> Option<Vec<String>> {
        let out = self.ok(&["pod", "ls"]);
        out.lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|cols| cols.len() == 5 && cols[0] == pod && cols[1] == container)
    }

    fn wait_exited(&self, pod: &str, container: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row = self.row(pod, container).expect("the pod is listed");
            if row[2] == "Exited" {
                return row;
            }
            assert!(Instant::now() < deadline, "{pod} never exited: {row:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    /// Removes every pod (containers, sandboxes, cgroups), then the test's mounts and cgroup.
    fn drop(&mut self) {
        let pods = self.root.join("run/pods");
        for entry in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            let _ = self.skiff(&["pod", "rm", entry.file_name().to_str().unwrap_or("")]);
        }
        let _ = ns::release_state_dir(&self.root.join("run/sandboxes"));
        if let Some(pin) = &self.node_netns {
            let _ = PinnedNs::remove(pin);
            let _ = ns::release_state_dir(pin.parent().unwrap());
        }
        if let Ok(parent) =
            CgroupFs::detect().and_then(|fs| fs.open(&Parent::Own, &self.cgroup_parent))
        {
            let _ = parent.remove();
        }
    }
}

fn cgroup_exists(parent: &str, pod: &str) -> bool {
    let below = Parent::Below(format!("{parent}/pod-{pod}").into());
    let fs = CgroupFs::detect().unwrap();
    fs.open(&Parent::Below(parent.into()), &format!("pod-{pod}"))
        .is_ok()
        || fs.open(&below, "main").is_ok()
}

#[test]
fn a_host_network_pod_runs_as_its_user_logs_lists_and_is_removed() {
    if !ready() {
        return;
    }
    let node = Node::new("hello");
    let file = node.manifest(
        "hello",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\nspec:\n  hostNetwork: true\n  \
             securityContext:\n    runAsUser: 1000\n  containers:\n  - name: main\n    image: {IMAGE}\n    \
             command: [sh, -c, 'echo hello; id -u']\n"
        ),
    );
    let out = node.ok(&["pod", "run", "-f", &file]);
    assert!(out.contains("started pod hello"), "{out}");

    let row = node.wait_exited("hello", "main");
    assert_eq!(row, ["hello", "main", "Exited", "0", "host"]);
    let logs = node.ok(&["pod", "logs", "hello"]);
    assert_eq!(logs.lines().collect::<Vec<_>>(), ["hello", "1000"]);
    let tail = node.ok(&["pod", "logs", "hello", "-c", "main", "--tail", "1"]);
    assert_eq!(tail, "1000\n");
    assert!(
        node.err(&["pod", "logs", "hello", "-c", "nope"])
            .contains("pod hello has no container nope")
    );
    assert!(cgroup_exists(&node.cgroup_parent, "hello"));

    // A second pod of the same name is refused, and nothing of the first is touched.
    let again = node.err(&["pod", "run", "-f", &file]);
    assert_eq!(again, "skiff: error: pod hello already exists");

    node.ok(&["pod", "stop", "hello", "--grace", "1"]);
    node.ok(&["pod", "rm", "hello"]);
    assert_eq!(node.row("hello", "main"), None);
    assert!(!node.root.join("run/pods/hello").exists());
    assert!(!node.root.join("run/containers/hello.main").exists());
    assert!(!node.root.join("run/sandboxes/hello").exists());
    assert!(!cgroup_exists(&node.cgroup_parent, "hello"));
    let mounts = ns::mounts_below(&node.root).unwrap();
    assert!(
        mounts.iter().all(|m| m == &node.root.join("run/sandboxes")),
        "leaked mounts: {mounts:?}"
    );
    assert!(
        node.err(&["pod", "rm", "hello"])
            .ends_with("pod hello not found")
    );
}

#[test]
fn bad_manifests_and_unknown_images_fail_with_one_line_naming_them() {
    if !ready() {
        return;
    }
    let node = Node::new("bad");
    let missing_image = node.manifest(
        "noimage",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec:\n  hostNetwork: true\n  containers:\n  - name: main\n",
    );
    assert_eq!(
        node.err(&["pod", "run", "-f", &missing_image]),
        "skiff: error: spec.containers[0].image: required"
    );
    let unknown = node.manifest(
        "unknown",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: unknown}\nspec:\n  hostNetwork: true\n  containers:\n  - name: main\n    image: skiff.test/nope:1\n",
    );
    let err = node.err(&["pod", "run", "-f", &unknown]);
    assert!(
        err.contains("skiff.test/nope:1") && err.contains("skiff image pull"),
        "{err}"
    );
    let not_a_pod = node.manifest(
        "dep",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
    );
    assert!(
        node.err(&["pod", "run", "-f", &not_a_pod])
            .contains("apiVersion")
    );
    let no_dir = node.manifest(
        "nodir",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: nodir}\nspec:\n  volumes:\n  - name: v\n    \
         hostPath: {path: /nonexistent/skiff, type: Directory}\n  containers:\n  - name: main\n    \
         image: skiff.test/busybox:latest\n",
    );
    assert_eq!(
        node.err(&["pod", "run", "-f", &no_dir]),
        "skiff: error: spec.volumes[0].hostPath: type Directory but /nonexistent/skiff is nothing"
    );
    // A refused pod leaves nothing behind, its address included.
    assert!(!node.root.join("run/pods/nodir").exists());
    let leases = node.root.join("run/ipam-10.77.0.0-24.json");
    assert!(
        !std::fs::read_to_string(leases)
            .unwrap_or_default()
            .contains("nodir")
    );
    assert_eq!(
        node.ok(&["pod", "ls"]).lines().count(),
        1,
        "only the header"
    );
    assert!(!node.root.join("run/pods/unknown").exists());
    assert!(!node.root.join("run/sandboxes/unknown").exists());
}

#[test]
fn a_pod_on_the_pod_network_gets_its_address_hostname_and_hosts_file() {
    if !ready() {
        return;
    }
    let node = Node::new("net").with_node_netns();
    let file = node.manifest(
        "net",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  volumes:\n  - {{name: scratch, emptyDir: {{}}}}\n  \
             containers:\n  - name: main\n    image: {IMAGE}\n    volumeMounts:\n    - {{name: scratch, mountPath: /scratch}}\n    \
             command: [sh, -c, 'hostname; ip -4 addr show eth0 | grep -o \"inet [0-9./]*\"; grep web /etc/hosts; \
             echo hi > /scratch/f && cat /scratch/f; sleep 30']\n"
        ),
    );
    node.ok(&["pod", "run", "-f", &file]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let logs = loop {
        let logs = node.ok(&["pod", "logs", "web"]);
        if logs.lines().count() >= 4 || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        logs.lines().collect::<Vec<_>>(),
        ["web", "inet 10.77.0.2/24", "10.77.0.2\tweb", "hi"]
    );
    assert_eq!(
        node.row("web", "main").unwrap(),
        ["web", "main", "Running", "-", "10.77.0.2"]
    );
    // The host's network is untouched: the bridge and the veth live in the test's namespace.
    let host_links = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert!(
        !host_links.contains("skifftest0") && !host_links.contains("skv"),
        "{host_links}"
    );

    node.ok(&["pod", "stop", "web", "--grace", "0"]);
    let row = node.wait_exited("web", "main");
    assert!(
        ["137", "143"].contains(&row[3].as_str()),
        "killed by a signal: {row:?}"
    );
    node.ok(&["pod", "rm", "web"]);
    // The address is free again.
    let leases = std::fs::read_to_string(node.root.join("run/ipam-10.77.0.0-24.json")).unwrap();
    assert!(!leases.contains("10.77.0.2"), "{leases}");
}

#[test]
fn pod_exec_runs_in_the_container_and_returns_its_exit_code() {
    if !ready() {
        return;
    }
    let node = Node::new("exec");
    let file = node.manifest(
        "sleeper",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\nspec:\n  hostNetwork: true\n  \
             securityContext:\n    runAsUser: 1000\n  containers:\n  - name: main\n    image: {IMAGE}\n    \
             command: [sleep, '1000']\n"
        ),
    );
    node.ok(&["pod", "run", "-f", &file]);
    let out = node.skiff(&[
        "pod",
        "exec",
        "sleeper",
        "--",
        "sh",
        "-c",
        "id -u; cat /proc/1/cmdline | tr '\\0' ' '; exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("1000\nskiff-init "), "{stdout}");
    assert_eq!(
        node.ok(&["pod", "exec", "sleeper", "-c", "main", "--", "true"]),
        ""
    );
    // -i passes stdin (without it the command reads end of file at once).
    let piped = node.skiff_with_stdin(&["pod", "exec", "-i", "sleeper", "--", "cat"], b"piped\n");
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "piped\n");
    let unpiped = node.skiff_with_stdin(&["pod", "exec", "sleeper", "--", "cat"], b"piped\n");
    assert_eq!(String::from_utf8_lossy(&unpiped.stdout), "");
    // -t runs it on a terminal in the container (this stdin is no terminal: no raw mode).
    let tty = node.skiff(&[
        "pod",
        "exec",
        "-t",
        "sleeper",
        "--",
        "sh",
        "-c",
        "tty; exit 2",
    ]);
    assert_eq!(tty.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&tty.stdout), "/dev/pts/0\r\n");
    let err = node.err(&["pod", "exec", "sleeper", "--", "no-such-tool"]);
    assert_eq!(
        err,
        "skiff: error: pod sleeper: exec in container sleeper.main: exec \"no-such-tool\": executable file not found in $PATH"
    );
    node.ok(&["pod", "rm", "sleeper"]);
}
