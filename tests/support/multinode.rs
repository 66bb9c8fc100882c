//! A cluster of N nodes on this one machine for the end-to-end tests (`tests/multinode.rs`,
//! `tests/host_gw.rs`): each node is a `skiff kubelet` (with its Service proxy and BPF data
//! plane) in a network namespace of its own, with its own root, cgroup and BPF pins; the
//! control plane (`skiff apiserver`, one or two, on the embedded store or on etcd members on
//! the LAN namespace's loopback) runs in a "LAN" namespace whose bridge joins the nodes and
//! any outside "hosts". The test drives it with the real kubectl from the LAN namespace.
//!
//! Addresses exist only inside these namespaces: the LAN is 10.250.0.0/24 (control planes
//! .1 and .2, nodes from .11, outside hosts from .100). Everything — processes, cgroups,
//! mounts, pins, namespaces — is removed on drop, also when the test fails.

use super::cleanup::{self, wait_for};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
pub const ETCD: &str = "/usr/bin/etcd";
/// The LAN's first three octets.
pub const LAN: &str = "10.250.0";
pub const IMAGE: &str = "skiff.test/busybox:latest";

/// A control-plane process: its name (`cp`, `cp2`) and LAN address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cp {
    pub name: &'static str,
    pub host: u8,
}

pub const CP1: Cp = Cp {
    name: "cp",
    host: 1,
};
pub const CP2: Cp = Cp {
    name: "cp2",
    host: 2,
};

/// The cluster and everything to remove after it.
pub struct Cluster {
    /// Unique to this cluster in this run: `<pid>x<n>`.
    pub tag: String,
    pub dir: tempfile::TempDir,
    /// Node names, in the order of their addresses (.11, .12, …).
    pub nodes: Vec<String>,
    /// Outside hosts on the LAN (.100, .101, …).
    hosts: Vec<String>,
    /// Running processes by name: control planes, nodes, `etcdN`, background jobs.
    procs: BTreeMap<String, Child>,
    /// The control plane each node dials.
    dials: BTreeMap<String, Cp>,
    /// The control plane kubectl talks to.
    pub kubectl_cp: Cp,
    /// etcd client URLs (on the LAN namespace's loopback), when the store is etcd.
    pub etcd: Vec<String>,
    /// More arguments for every `skiff apiserver`.
    pub apiserver_args: Vec<String>,
    netns: Vec<String>,
}

/// Runs a command and returns its output (never panics on a non-zero exit).
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The cgroup2 directory this test process runs in (the unified mount on a hybrid host).
fn own_unified_cgroup() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mount = mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(' ').nth(4).map(PathBuf::from))
                .flatten()
        })
        .expect("a cgroup2 mount");
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    let own = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup2 line");
    mount.join(own.trim_start_matches('/'))
}

/// The cluster's namespaces and wiring, or `None` (skip) without root, the programs it
/// needs or kubectl; under `CI=true` those fail instead.
pub fn ready(nodes: &[&str]) -> Option<Cluster> {
    if !super::privileged_with(&["ip", "nsenter", "python3", "busybox"]) {
        return None;
    }
    if !Path::new(KUBECTL).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test, but {KUBECTL} is missing"
        );
        eprintln!("skipping: {KUBECTL} not found (kubectl is part of the machine image)");
        return None;
    }
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let tag = format!(
        "{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let mut cluster = Cluster {
        tag,
        dir: tempfile::tempdir().expect("tempdir"),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        hosts: Vec::new(),
        procs: BTreeMap::new(),
        dials: BTreeMap::new(),
        kubectl_cp: CP1,
        etcd: Vec::new(),
        apiserver_args: Vec::new(),
        netns: Vec::new(),
    };
    cluster.wire();
    let layout = super::build_image(cluster.dir.path(), "single", &[]);
    for node in nodes {
        super::skiff_ok(
            &cluster.node_root(node),
            &[
                "image",
                "import",
                layout.to_str().unwrap_or_default(),
                "--name",
                IMAGE,
            ],
        );
    }
    Some(cluster)
}

impl Cluster {
    /// The full name of `who`'s network namespace (`lan`, a node, a host).
    pub fn netns(&self, who: &str) -> String {
        format!("skiff-mn-{}-{who}", self.tag)
    }

    /// A command run inside `who`'s network namespace (not started).
    pub fn in_netns(&self, who: &str, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns(who)))
            .arg(program);
        cmd
    }

    fn ip(&self, who: &str, args: &[&str]) {
        let out = output(Command::new("ip").arg("-n").arg(self.netns(who)).args(args));
        assert!(out.status.success(), "ip {args:?} in {who}: {}", text(&out));
    }

    fn add_netns(&mut self, who: &str) {
        let ns = self.netns(who);
        let out = output(Command::new("ip").args(["netns", "add", &ns]));
        assert!(out.status.success(), "ip netns add {ns}: {}", text(&out));
        self.netns.push(ns);
        self.ip(who, &["link", "set", "lo", "up"]);
    }

    /// A namespace for `who` with `eth0` on the LAN bridge at `LAN.host`.
    fn plug(&mut self, who: &str, host: u8) {
        self.add_netns(who);
        let peer = format!("to-{who}");
        let ns = self.netns(who);
        self.ip(
            "lan",
            &[
                "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        self.ip("lan", &["link", "set", &peer, "master", "lan", "up"]);
        self.ip(
            who,
            &["addr", "add", &format!("{LAN}.{host}/24"), "dev", "eth0"],
        );
        self.ip(who, &["link", "set", "eth0", "up"]);
    }

    /// The LAN: a bridge in the control plane's namespace carrying .1 and .2, a veth to
    /// each node.
    fn wire(&mut self) {
        self.add_netns("lan");
        self.ip("lan", &["link", "add", "lan", "type", "bridge"]);
        for cp in [CP1, CP2] {
            self.ip(
                "lan",
                &[
                    "addr",
                    "add",
                    &format!("{LAN}.{}/24", cp.host),
                    "dev",
                    "lan",
                ],
            );
        }
        self.ip("lan", &["link", "set", "lan", "up"]);
        for (i, node) in self.nodes.clone().iter().enumerate() {
            self.plug(node, 11 + i as u8);
        }
    }

    /// An outside host on the LAN (no skiff on it); returns its address.
    pub fn add_host(&mut self, name: &str) -> String {
        let host = 100 + self.hosts.len() as u8;
        self.plug(name, host);
        self.hosts.push(name.to_owned());
        format!("{LAN}.{host}")
    }

    /// A node's LAN address.
    pub fn node_ip(&self, node: &str) -> String {
        let i = self
            .nodes
            .iter()
            .position(|n| n == node)
            .unwrap_or_else(|| panic!("no node {node}"));
        format!("{LAN}.{}", 11 + i)
    }

    pub fn node_root(&self, node: &str) -> PathBuf {
        self.dir.path().join("nodes").join(node)
    }

    pub fn cp_data(&self, cp: Cp) -> PathBuf {
        self.dir.path().join(cp.name)
    }

    /// The cgroup name that holds all of a node: its pods (`…/pods`), the attach point of
    /// its socket hooks, and the test's clients on it (`…/clients`).
    pub fn cgroup_name(&self, node: &str) -> String {
        format!("skiff-mn-{}-{node}", self.tag)
    }

    /// The node's BPF attach cgroup (cgroup2), below the test's own cgroup.
    pub fn attach_cgroup(&self, node: &str) -> PathBuf {
        own_unified_cgroup().join(self.cgroup_name(node))
    }

    fn log(&self, who: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{who}.log")))
            .expect("log file")
    }

    /// Starts `program ARGS` in `who`'s namespace as process `name`, output to `name.log`.
    fn spawn(&mut self, name: &str, who: &str, program: &str, args: &[String]) {
        let log = self.log(name);
        let child = self
            .in_netns(who, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        self.procs.insert(name.to_owned(), child);
    }

    /// A 3-member (or `n`) etcd cluster on the LAN namespace's loopback (Debian's etcd),
    /// members `etcd0`… with client ports 2379, 2389, …; `None` when etcd is not installed
    /// (a skip; under `CI=true` a failure).
    pub fn start_etcd(&mut self, n: usize) -> Option<()> {
        if !Path::new(ETCD).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run this test, but {ETCD} is missing (apt-get install etcd-server)"
            );
            eprintln!("skipping: {ETCD} not found (apt-get install etcd-server)");
            return None;
        }
        let peer = |i: usize| format!("http://127.0.0.1:{}", 2380 + 10 * i);
        let client = |i: usize| format!("http://127.0.0.1:{}", 2379 + 10 * i);
        let initial: Vec<String> = (0..n).map(|i| format!("etcd{i}={}", peer(i))).collect();
        for i in 0..n {
            let data = self.dir.path().join(format!("etcd{i}"));
            let args = vec![
                format!("--name=etcd{i}"),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={}", client(i)),
                format!("--advertise-client-urls={}", client(i)),
                format!("--listen-peer-urls={}", peer(i)),
                format!("--initial-advertise-peer-urls={}", peer(i)),
                format!("--initial-cluster={}", initial.join(",")),
                "--initial-cluster-state=new".into(),
                "--initial-cluster-token=skiff-multinode".into(),
                "--logger=zap".into(),
                "--log-outputs=stderr".into(),
                "--log-level=warn".into(),
            ];
            self.spawn(&format!("etcd{i}"), "lan", ETCD, &args);
        }
        self.etcd = (0..n).map(client).collect();
        let health = self.etcd.clone();
        wait_for("a healthy etcd cluster", Duration::from_secs(30), || {
            health.iter().all(|url| {
                let out = self
                    .in_netns("lan", "python3")
                    .args([
                        "-c",
                        &format!(
                            "import urllib.request;print(urllib.request.urlopen('{url}/health', timeout=2).read().decode())"
                        ),
                    ])
                    .output();
                out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("true"))
            })
        });
        Some(())
    }

    /// Starts control plane `cp` (its store: the etcd members when there are any, else
    /// embedded in its data dir) and waits until kubectl gets an answer from it. A second
    /// control plane is given the first one's CA and admin token first, as an operator
    /// copies `pki/` to a second control-plane machine.
    pub fn start_control_plane(&mut self, cp: Cp) {
        let data = self.cp_data(cp);
        if cp != CP1 && !data.join("pki/ca.crt").exists() {
            let (from, to) = (self.cp_data(CP1).join("pki"), data.join("pki"));
            std::fs::create_dir_all(&to).expect("pki dir");
            for file in ["ca.crt", "ca.key", "admin.token"] {
                std::fs::copy(from.join(file), to.join(file)).expect("copy the first cp's pki");
            }
        }
        let addr = format!("{LAN}.{}", cp.host);
        let mut args = vec![
            "-v".to_owned(),
            "apiserver".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen".into(),
            format!("{addr}:6443"),
            "--node-listen".into(),
            format!("{addr}:6444"),
            "--tls-san".into(),
            addr,
        ];
        for url in &self.etcd {
            args.extend(["--etcd".to_owned(), url.clone()]);
        }
        args.extend(self.apiserver_args.iter().cloned());
        self.spawn(cp.name, "lan", env!("CARGO_BIN_EXE_skiff"), &args);
        wait_for(
            &format!("control plane {}", cp.name),
            Duration::from_secs(60),
            || {
                data.join("kubeconfig").exists()
                    && self.kubectl_on(cp, &["get", "--raw", "/readyz"]).0
            },
        );
    }

    /// Starts node `node`'s kubelet (with its proxy), dialling control plane `cp`.
    pub fn start_node(&mut self, node: &str, cp: Cp) {
        let token = std::fs::read_to_string(self.cp_data(CP1).join("join-token")).expect("token");
        let ca = self.cp_data(CP1).join("pki/ca.crt");
        let cp_addr = format!("{LAN}.{}", cp.host);
        let attach = self.attach_cgroup(node);
        std::fs::create_dir_all(attach.join("clients")).expect("client cgroup");
        let args = vec![
            "-v".to_owned(),
            "--root".into(),
            self.node_root(node).display().to_string(),
            "kubelet".into(),
            "--api-server".into(),
            format!("https://{cp_addr}:6443"),
            "--server".into(),
            format!("https://{cp_addr}:6444"),
            "--ca-file".into(),
            ca.display().to_string(),
            "--join-token".into(),
            token.trim().to_owned(),
            "--node-name".into(),
            node.into(),
            "--node-ip".into(),
            self.node_ip(node),
            "--cgroup-parent".into(),
            format!("{}/pods", self.cgroup_name(node)),
            "--bpf-cgroup".into(),
            attach.display().to_string(),
            "--bridge".into(),
            "skiffmn0".into(),
        ];
        self.dials.insert(node.to_owned(), cp);
        self.spawn(node, node, env!("CARGO_BIN_EXE_skiff"), &args);
    }

    /// Starts a stopped or killed node again, dialling the control plane it dialled before
    /// (it keeps its certificate, pods and pins: a restart adopts them).
    pub fn restart_node(&mut self, node: &str) {
        let cp = *self.dials.get(node).expect("a node started before");
        self.start_node(node, cp);
    }

    /// Waits until every node named is Ready.
    pub fn wait_ready(&self, nodes: &[&str], timeout: Duration) {
        wait_for(&format!("nodes {nodes:?} Ready"), timeout, || {
            nodes.iter().all(|n| self.node_ready(n) == "True")
        });
    }

    /// The status of node's Ready condition (`True`, `False`, `Unknown`, or empty).
    pub fn node_ready(&self, node: &str) -> String {
        self.jsonpath(
            &["node", node],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        )
    }

    /// Whether process `name` runs (as far as the harness knows).
    pub fn running(&self, name: &str) -> bool {
        self.procs.contains_key(name)
    }

    /// The pid of process `name`.
    pub fn pid(&self, name: &str) -> u32 {
        self.procs.get(name).map(Child::id).expect("running")
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self, name: &str) {
        if let Some(mut child) = self.procs.remove(name) {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self, name: &str) {
        if let Some(mut child) = self.procs.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Cuts `who` off the LAN (its uplink down), or plugs it back.
    pub fn set_link(&self, who: &str, up: bool) {
        self.ip(
            who,
            &["link", "set", "eth0", if up { "up" } else { "down" }],
        );
    }

    /// kubectl against `cp`: (success, stdout, stderr).
    pub fn kubectl_on(&self, cp: Cp, args: &[&str]) -> (bool, String, String) {
        let out = output(
            self.in_netns("lan", KUBECTL)
                .arg("--kubeconfig")
                .arg(self.cp_data(cp).join("kubeconfig"))
                .arg("--request-timeout=10s")
                .args(args),
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        self.kubectl_on(self.kubectl_cp, args)
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.kubectl(args);
        assert!(ok, "kubectl {args:?}: {stdout}{stderr}");
        stdout
    }

    pub fn apply(&self, yaml: &str) {
        let path = self.dir.path().join("manifest.yaml");
        std::fs::write(&path, yaml).expect("write manifest");
        self.kubectl_ok(&["apply", "-f", path.to_str().unwrap_or_default()]);
    }

    pub fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let expr = format!("jsonpath={path}");
        args.extend_from_slice(&["-o", &expr]);
        self.kubectl(&args).1
    }

    /// `sh -c SCRIPT` in `who`'s namespace; on a node, in the node's client cgroup (below
    /// its BPF attach point), so its connections to Service addresses are translated as a
    /// pod's are.
    pub fn sh(&self, who: &str, script: &str) -> Output {
        output(
            self.in_netns(who, "sh")
                .args(["-c", &self.in_cgroup(who, script)]),
        )
    }

    fn in_cgroup(&self, who: &str, script: &str) -> String {
        if self.nodes.iter().any(|n| n == who) {
            let procs = self.attach_cgroup(who).join("clients/cgroup.procs");
            format!("echo $$ > {}; {script}", procs.display())
        } else {
            script.to_owned()
        }
    }

    /// Starts `sh -c SCRIPT` in `who`'s namespace (and client cgroup) as a background job
    /// `name`, killed on drop if still running; its output goes to `name.log`.
    pub fn background(&mut self, name: &str, who: &str, script: &str) {
        let script = self.in_cgroup(who, script);
        self.spawn(name, who, "sh", &["-c".to_owned(), script]);
    }

    /// Waits for background job `name` to end (up to `timeout`); returns its log.
    pub fn finish(&mut self, name: &str, timeout: Duration) -> String {
        if let Some(mut child) = self.procs.remove(name) {
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// GET `url` from `who`'s namespace (a node's client cgroup on a node).
    pub fn http_get(&self, who: &str, url: &str) -> Option<String> {
        let out = self.sh(
            who,
            &format!(
                "exec python3 -c \"import urllib.request;print(urllib.request.urlopen('{url}', timeout=3).read().decode(), end='')\""
            ),
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last lines of every log.
    pub fn logs(&self, lines: usize) -> String {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .strip_suffix(".log")
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                format!(
                    "--- {name} ---\n{}",
                    all[all.len().saturating_sub(lines)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A working control plane to clean up through, if any.
    fn live_cp(&self) -> Option<Cp> {
        [self.kubectl_cp, CP1, CP2]
            .into_iter()
            .find(|cp| self.running(cp.name))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.kubectl(&["get", "nodes,pods", "-o", "wide"]).1);
            eprintln!("{}", self.logs(30));
        }
        // Workloads first, while the kubelets run, so each node tears its own pods down
        // (pods of a node that is gone are removed from the API at once)…
        if let Some(cp) = self.live_cp() {
            let _ = self.kubectl_on(cp, &["delete", "deploy", "--all", "--wait=false"]);
            for node in self.nodes.clone() {
                if !self.running(&node) {
                    let _ = self.kubectl_on(
                        cp,
                        &[
                            "delete",
                            "pods",
                            "--field-selector",
                            &format!("spec.nodeName={node}"),
                            "--force",
                            "--grace-period=0",
                        ],
                    );
                }
            }
            let _ = self.kubectl_on(
                cp,
                &["delete", "pods", "--all", "--wait=true", "--timeout=30s"],
            );
        }
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for name in names.iter().filter(|n| !n.starts_with("cp")) {
            self.stop(name);
        }
        for name in names.iter().filter(|n| n.starts_with("cp")) {
            self.stop(name);
        }
        // …then whatever is left: processes in the nodes' cgroups, the cgroups, the BPF
        // pins (detaching the programs), mounts, namespaces (taking veths and bridges).
        for node in self.nodes.clone() {
            cleanup::remove_cgroups(&self.cgroup_name(&node));
            let _ = Command::new(env!("CARGO_BIN_EXE_skiff"))
                .args(["proxy", "reset", "--pin-dir"])
                .arg(self.node_root(&node).join("bpf"))
                .output();
        }
        cleanup::unmount_below(self.dir.path());
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
