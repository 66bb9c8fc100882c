//! End to end: two nodes, each a `skiff kubelet` process in a network namespace of its own,
//! joined by a bridge in a third namespace (the test's "LAN", where `skiff apiserver` runs).
//! Each node learns the other's PodCIDR and address over `WatchNodes` and routes
//! `PODCIDR via NODEIP`, so a pod on one node fetches a page from a pod on the other; when a
//! node goes away, the other removes its route. Needs root, `ip`, `nsenter`, python3 and
//! kubectl 1.33.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use support::cleanup::{self, wait_for};

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const LAN: &str = "10.250.0";

/// The namespaces, processes and directories of the test, torn down on drop.
struct Lan {
    id: u32,
    dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
}

impl Lan {
    fn netns(&self, who: &str) -> String {
        format!("skiff-hgw-{}-{who}", self.id)
    }

    fn cgroup_parent(&self, node: &str) -> String {
        format!("skiff-hgw-{}-{node}", self.id)
    }

    fn in_netns(&self, who: &str, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns(who)))
            .arg(program);
        cmd
    }

    fn ip(&self, who: &str, args: &[&str]) {
        let status = self.in_netns(who, "ip").args(args).status();
        assert!(status.is_ok_and(|s| s.success()), "ip {args:?} in {who}");
    }

    /// The LAN: a bridge in the control plane's namespace (.1), a veth to each node (.2, .3).
    fn wire(&self) {
        for who in ["cp", "a", "b"] {
            let ns = self.netns(who);
            let added = Command::new("ip").args(["netns", "add", &ns]).status();
            assert!(added.is_ok_and(|s| s.success()), "ip netns add {ns}");
            self.ip(who, &["link", "set", "lo", "up"]);
        }
        self.ip("cp", &["link", "add", "lan", "type", "bridge"]);
        self.ip("cp", &["addr", "add", &format!("{LAN}.1/24"), "dev", "lan"]);
        self.ip("cp", &["link", "set", "lan", "up"]);
        for (who, host) in [("a", 2), ("b", 3)] {
            let peer = format!("to-{who}");
            let node_ns = self.netns(who);
            self.ip(
                "cp",
                &[
                    "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", &node_ns,
                ],
            );
            self.ip("cp", &["link", "set", &peer, "master", "lan", "up"]);
            self.ip(
                who,
                &["addr", "add", &format!("{LAN}.{host}/24"), "dev", "eth0"],
            );
            self.ip(who, &["link", "set", "eth0", "up"]);
        }
    }

    fn log(&self, who: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{who}.log")))
            .expect("log file")
    }

    fn spawn(&mut self, who: &str, args: &[&str]) {
        let log = self.log(who);
        let child = self
            .in_netns(who, env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start skiff");
        self.children.push((who.to_owned(), child));
    }

    fn cp_data(&self) -> PathBuf {
        self.dir.path().join("cp")
    }

    fn node_root(&self, node: &str) -> PathBuf {
        self.dir.path().join(node)
    }

    fn start_kubelet(&mut self, node: &str, host: u8) {
        let token = std::fs::read_to_string(self.cp_data().join("join-token")).expect("token");
        let root = self.node_root(node);
        let ca = self.cp_data().join("pki/ca.crt");
        let (cgroup, ip) = (self.cgroup_parent(node), format!("{LAN}.{host}"));
        self.spawn(
            node,
            &[
                "-v",
                "--root",
                root.to_str().unwrap_or_default(),
                "kubelet",
                "--api-server",
                &format!("https://{LAN}.1:6443"),
                "--server",
                &format!("https://{LAN}.1:6444"),
                "--ca-file",
                ca.to_str().unwrap_or_default(),
                "--join-token",
                token.trim(),
                "--node-name",
                node,
                "--node-ip",
                &ip,
                "--cgroup-parent",
                &cgroup,
                "--bridge",
                "skiffhgw0",
            ],
        );
    }

    fn stop(&mut self, who: &str) {
        if let Some(i) = self.children.iter().position(|(w, _)| w == who) {
            let (_, mut child) = self.children.remove(i);
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            for _ in 0..100 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = self
            .in_netns("cp", KUBECTL)
            .arg("--kubeconfig")
            .arg(self.cp_data().join("kubeconfig"))
            .args(args)
            .output()
            .expect("run kubectl");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn routes(&self, who: &str) -> String {
        let out = self
            .in_netns(who, "ip")
            .args(["-4", "route", "show", "root", "10.244.0.0/16"])
            .output()
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// GET `url` from inside `who`'s namespace.
    fn http_get(&self, who: &str, url: &str) -> Option<String> {
        let script = format!(
            "import urllib.request;print(urllib.request.urlopen('{url}', timeout=3).read().decode(), end='')"
        );
        let out = self
            .in_netns(who, "python3")
            .args(["-c", &script])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn logs(&self) -> String {
        ["cp", "a", "b"]
            .iter()
            .map(|who| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{who}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {who} ---\n{}",
                    lines[lines.len().saturating_sub(25)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.kubectl(&["get", "pods", "-o", "wide"]).1);
            eprintln!("{}", self.logs());
        }
        // Pods first, while the kubelets run, so each node removes its own…
        if self.children.len() == 3 {
            let _ = self.kubectl(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"]);
        }
        for who in ["a", "b", "cp"] {
            self.stop(who);
        }
        // …then whatever is left.
        for node in ["a", "b"] {
            cleanup::remove_cgroups(&self.cgroup_parent(node));
        }
        cleanup::unmount_below(self.dir.path());
        for who in ["a", "b", "cp"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.netns(who)])
                .status();
        }
    }
}

fn ready() -> Option<Lan> {
    if !support::privileged_with(&["ip", "nsenter", "python3"]) {
        return None;
    }
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipping: {KUBECTL} not found (kubectl is part of the machine image)");
        return None;
    }
    Some(Lan {
        id: std::process::id(),
        dir: tempfile::tempdir().expect("tempdir"),
        children: Vec::new(),
    })
}

/// A pod pinned to `node`: `httpd` serving /www, whose index names the pod; `fetch` (a URL)
/// is fetched in a loop into /www/fetched.
fn pod(name: &str, node: &str, fetch: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: skiff.test/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www; echo {name} > /www/index.html; (while true; do [ -n '{fetch}' ] && wget -q -O /www/fetched.tmp '{fetch}' && mv /www/fetched.tmp /www/fetched; sleep 0.5; done) & exec httpd -f -p 8080 -h /www"]
"#
    )
}

#[test]
fn pods_on_two_nodes_reach_each_other_through_host_gw_routes() {
    let Some(mut lan) = ready() else {
        return;
    };
    lan.wire();
    let layout = support::build_image(lan.dir.path(), "single", &[]);
    for node in ["a", "b"] {
        support::skiff_ok(
            &lan.node_root(node),
            &[
                "image",
                "import",
                layout.to_str().unwrap_or_default(),
                "--name",
                "skiff.test/busybox:latest",
            ],
        );
    }
    let data = lan.cp_data();
    lan.spawn(
        "cp",
        &[
            "-v",
            "apiserver",
            "--data-dir",
            data.to_str().unwrap_or_default(),
            "--listen",
            &format!("{LAN}.1:6443"),
            "--node-listen",
            &format!("{LAN}.1:6444"),
            "--tls-san",
            &format!("{LAN}.1"),
        ],
    );
    wait_for("the control plane", Duration::from_secs(60), || {
        lan.cp_data().join("kubeconfig").exists() && lan.kubectl(&["get", "ns"]).0
    });
    lan.start_kubelet("a", 2);
    lan.start_kubelet("b", 3);
    wait_for("two Ready nodes", Duration::from_secs(60), || {
        let (ok, out) = lan.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        ok && out.trim() == "True True"
    });
    let cidr = |node: &str| {
        lan.kubectl(&["get", "node", node, "-o", "jsonpath={.spec.podCIDR}"])
            .1
    };
    let (cidr_a, cidr_b) = (cidr("a"), cidr("b"));
    assert_ne!(cidr_a, cidr_b, "each node has its own PodCIDR");
    wait_for(
        "each node's route to the other",
        Duration::from_secs(30),
        || {
            lan.routes("a")
                .contains(&format!("{cidr_b} via {LAN}.3 dev eth0"))
                && lan
                    .routes("b")
                    .contains(&format!("{cidr_a} via {LAN}.2 dev eth0"))
        },
    );

    // A pod on each node; the one on b fetches the one on a's page across the LAN.
    let manifest = lan.dir.path().join("a.yaml");
    std::fs::write(&manifest, pod("web-a", "a", "")).expect("manifest");
    let (ok, out) = lan.kubectl(&["apply", "-f", manifest.to_str().unwrap_or_default()]);
    assert!(ok, "{out}");
    let mut ip_a = String::new();
    wait_for("the pod on a", Duration::from_secs(60), || {
        ip_a = lan
            .kubectl(&["get", "pod", "web-a", "-o", "jsonpath={.status.podIP}"])
            .1;
        !ip_a.is_empty()
            && lan
                .http_get("a", &format!("http://{ip_a}:8080/index.html"))
                .is_some()
    });
    let manifest = lan.dir.path().join("b.yaml");
    let fetch = format!("http://{ip_a}:8080/index.html");
    std::fs::write(&manifest, pod("web-b", "b", &fetch)).expect("manifest");
    let (ok, out) = lan.kubectl(&["apply", "-f", manifest.to_str().unwrap_or_default()]);
    assert!(ok, "{out}");
    let mut ip_b = String::new();
    wait_for(
        "the pod on b to fetch from a",
        Duration::from_secs(60),
        || {
            ip_b = lan
                .kubectl(&["get", "pod", "web-b", "-o", "jsonpath={.status.podIP}"])
                .1;
            !ip_b.is_empty()
                && lan
                    .http_get("b", &format!("http://{ip_b}:8080/fetched"))
                    .as_deref()
                    == Some("web-a\n")
        },
    );
    assert!(
        ip_a.starts_with(cidr_a.trim_end_matches("0/24")),
        "{ip_a} in {cidr_a}"
    );
    assert!(
        ip_b.starts_with(cidr_b.trim_end_matches("0/24")),
        "{ip_b} in {cidr_b}"
    );
    // And from node a's side to the pod on b.
    assert_eq!(
        lan.http_get("a", &format!("http://{ip_b}:8080/index.html"))
            .as_deref(),
        Some("web-b\n")
    );

    // Node b leaves (its Node deleted): a removes the route to b's pods.
    let (ok, out) = lan.kubectl(&["delete", "pod", "web-b", "--wait=true", "--timeout=60s"]);
    assert!(ok, "{out}");
    lan.stop("b");
    let (ok, out) = lan.kubectl(&["delete", "node", "b"]);
    assert!(ok, "{out}");
    wait_for("a's route to b to go", Duration::from_secs(30), || {
        !lan.routes("a").contains(&cidr_b)
    });
}
