//! `skiff up` (the real binary) in a network namespace of the test's own, driven by the real
//! kubectl: the harness of the end-to-end cluster tests (`tests/cluster.rs`,
//! `tests/cluster_streams.rs`). Each cluster gets its own namespace, cgroup parent and data
//! dir, so tests in one binary run side by side; all of it is removed on drop.

use super::cleanup::{self, wait_for};

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

/// A cluster in its own network namespace, and everything to clean up after it.
pub struct Up {
    pub netns: String,
    pub cgroup_parent: String,
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    /// More arguments for `skiff up`.
    pub extra: Vec<String>,
}

impl Up {
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Moves the calling thread (only it) into the cluster's network namespace: the
    /// processes it starts from then on (kubectl, curl) and the sockets it opens are there.
    /// Call it on a thread of the test's own, not the test harness's.
    pub fn enter_netns(&self) {
        use std::os::fd::AsRawFd;
        let netns = std::fs::File::open(format!("/run/netns/{}", self.netns)).expect("netns");
        // SAFETY: setns(2) with an open namespace file and CLONE_NEWNET changes the network
        // namespace of the calling thread alone, which a multi-threaded process may do.
        let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }

    /// The pid of `skiff up` (the control plane, the kubelet and the proxy in one process).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("skiff up runs")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data().join("kubeconfig")
    }

    pub fn in_netns(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg(program);
        cmd
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("skiff.log"))
            .expect("log file");
        let child = self
            .in_netns(env!("CARGO_BIN_EXE_skiff"))
            .args(["-v", "up", "--data-dir"])
            .arg(self.data())
            .args([
                "--cgroup-parent",
                &self.cgroup_parent,
                "--bridge",
                "skiffe2e0",
            ])
            .args(&self.extra)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start skiff up");
        self.child = Some(child);
        wait_for("the node to be Ready", Duration::from_secs(60), || {
            let out = self.kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            out.0 && out.1.trim() == "True"
        });
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs kubectl against the cluster: (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let out = self
            .in_netns(KUBECTL)
            .arg("--kubeconfig")
            .arg(self.data().join("kubeconfig"))
            .args(args)
            .output()
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.kubectl(args);
        assert!(ok, "kubectl {args:?}: {stdout}{stderr}\n{}", self.log());
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

    /// GET http://ip:port/path from inside the cluster's network namespace.
    pub fn http_get(&self, url: &str) -> Option<String> {
        let script = format!(
            "import urllib.request;print(urllib.request.urlopen('{url}', timeout=3).read().decode(), end='')"
        );
        let out = self
            .in_netns("python3")
            .args(["-c", &script])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("skiff.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- pods ---\n{}",
                self.kubectl(&["get", "pods", "-o", "yaml"]).1
            );
            eprintln!("--- skiff's log (last lines) ---\n{}", self.log());
        }
        // Workloads first, so the node tears its pods down itself…
        if self.child.is_some() {
            let _ = self.kubectl(&[
                "delete",
                "deploy,pods",
                "--all",
                "--wait=true",
                "--timeout=60s",
            ]);
        }
        self.stop();
        // …then whatever is left: processes in our pod cgroups, the cgroups, mounts under
        // the data dir, the namespace (which takes the bridge and veths along).
        cleanup::remove_cgroups(&self.cgroup_parent);
        cleanup::unmount_below(self.dir.path());
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

pub fn ready() -> Option<Up> {
    if !super::privileged_with(&["ip", "nsenter", "python3"]) {
        return None;
    }
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipping: {KUBECTL} not found (kubectl is part of the machine image)");
        return None;
    }
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let id = format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let netns = format!("skiff-e2e-{id}");
    let status = Command::new("ip").args(["netns", "add", &netns]).status();
    assert!(status.is_ok_and(|s| s.success()), "ip netns add {netns}");
    let up = Up {
        netns,
        cgroup_parent: format!("skiff-e2e-{id}"),
        dir: tempfile::tempdir().expect("tempdir"),
        child: None,
        extra: Vec::new(),
    };
    let lo = up.in_netns("ip").args(["link", "set", "lo", "up"]).status();
    assert!(lo.is_ok_and(|s| s.success()), "lo up");
    let layout = super::build_image(up.dir.path(), "single", &[]);
    super::skiff_ok(
        &up.data().join("node"),
        &[
            "image",
            "import",
            layout.to_str().unwrap_or_default(),
            "--name",
            "skiff.test/busybox:latest",
        ],
    );
    Some(up)
}
