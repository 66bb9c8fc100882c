//! A real one-node cluster for the end-to-end benchmarks (`pod-start --mode e2e`, `stream
//! --node pod`): the skiff binary itself, in a network namespace the bench creates, with its
//! own data dir and cgroup parent — as `tests/support/cluster.rs` does for the tests.
//!
//! [`with_cluster`] makes the namespace, imports the busybox test image into the node's
//! store, starts the cluster, waits for the node to be Ready and runs the bench's body on a
//! tokio runtime whose threads are all inside the namespace (so its sockets and the kubectl
//! it spawns are too). Then, also on error, ctrl-c or SIGTERM, it removes everything: the
//! pods (through the API, then by killing their cgroups), the skiff processes (SIGTERM, then
//! SIGKILL), mounts under the data dir, and the namespace with its bridge.

pub mod cleanup;

use std::future::Future;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use serde_json::Value;

use super::https::Endpoint;

/// The image name pods of the benches use.
pub const IMAGE: &str = "skiff.test/busybox:latest";
/// The pods' bridge, inside the bench's namespace.
const BRIDGE: &str = "skiffb0";
/// kubectl 1.33 as the machine image installs it; `kubectl` on PATH otherwise.
const KUBECTL_1_33: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
/// How long the node may take to be Ready.
const READY_WITHIN: Duration = Duration::from_secs(90);

/// The kubectl the benches drive unless told otherwise.
pub fn default_kubectl() -> PathBuf {
    if Path::new(KUBECTL_1_33).exists() {
        KUBECTL_1_33.into()
    } else {
        "kubectl".into()
    }
}

/// How the cluster's processes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One `skiff up` process: control plane and node together.
    Up,
    /// `skiff apiserver` and a `skiff kubelet` joining it (token + CA hash), so that the
    /// node agent's memory is its own.
    Split,
}

/// What the cluster is made of.
#[derive(Debug, Clone)]
pub struct Options {
    pub topology: Topology,
    /// An OCI layout of the busybox test image; else built with `mkimage`.
    pub image_layout: Option<PathBuf>,
    pub mkimage: PathBuf,
    /// Used to delete the pods when the bench did not get to.
    pub kubectl: PathBuf,
}

/// The API server's address, CA and admin token, from DATA/kubeconfig.
#[derive(Debug, Clone)]
pub struct Admin {
    pub server: std::net::SocketAddr,
    pub ca_pem: String,
    pub token: String,
}

impl Admin {
    /// Reads the kubeconfig skiff writes (one cluster, one user with a token).
    pub fn from_kubeconfig(text: &str) -> Result<Admin> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .map(str::trim)
                .with_context(|| format!("kubeconfig has no {key:?}"))
        };
        let server = field("server:")?;
        let addr = server
            .strip_prefix("https://")
            .with_context(|| format!("kubeconfig server {server:?} is not https://"))?;
        let ca = base64::engine::general_purpose::STANDARD
            .decode(field("certificate-authority-data:")?)
            .context("kubeconfig certificate-authority-data")?;
        Ok(Admin {
            server: addr.parse().with_context(|| format!("server {addr:?}"))?,
            ca_pem: String::from_utf8(ca).context("the CA is not PEM")?,
            token: field("token:")?.to_owned(),
        })
    }

    pub fn endpoint(&self) -> Result<Endpoint> {
        Endpoint::new(self.server, &self.ca_pem, &self.token)
    }
}

/// A running cluster and everything to remove after it.
pub struct Cluster {
    pub netns: String,
    pub cgroup_parent: String,
    options: Options,
    dir: tempfile::TempDir,
    /// The control plane (`skiff apiserver`), or `skiff up` as a whole.
    plane: Mutex<Option<Child>>,
    /// `skiff kubelet` (Split only).
    node: Mutex<Option<Child>>,
    cleaned: AtomicBool,
}

impl Cluster {
    /// The namespace (`lo` up) and the temp dir; nothing runs yet.
    fn create(options: Options) -> Result<Cluster> {
        ensure!(
            rustix::process::geteuid().is_root(),
            "the end-to-end benches must run as root (network namespace, cgroups, mounts)"
        );
        let name = format!("skiff-bench-{}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("skiff-bench-e2e-")
            .tempdir()?;
        super::run_quiet(Command::new("ip").args(["netns", "add", &name]))?;
        let cluster = Cluster {
            netns: name.clone(),
            cgroup_parent: name.clone(),
            options,
            dir,
            plane: Mutex::new(None),
            node: Mutex::new(None),
            cleaned: AtomicBool::new(false),
        };
        super::run_quiet(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]))?;
        Ok(cluster)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data().join("kubeconfig")
    }

    pub fn admin(&self) -> Result<Admin> {
        let path = self.kubeconfig();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Admin::from_kubeconfig(&text)
    }

    /// The node agent's pid: `skiff kubelet`, or `skiff up` (which is also the control plane).
    pub fn node_pid(&self) -> Option<u32> {
        let lock = match self.options.topology {
            Topology::Split => &self.node,
            Topology::Up => &self.plane,
        };
        lock.lock().ok()?.as_ref().map(Child::id)
    }

    /// The control plane's pid (`skiff apiserver`, or `skiff up`).
    pub fn plane_pid(&self) -> Option<u32> {
        self.plane.lock().ok()?.as_ref().map(Child::id)
    }

    pub fn topology(&self) -> Topology {
        self.options.topology
    }

    /// Builds (unless given) and imports the test image into the node's store, DATA/node.
    fn import_image(&self) -> Result<()> {
        let layout = match &self.options.image_layout {
            Some(dir) => dir.clone(),
            None => {
                let out = self.dir.path().join("layout");
                super::run_quiet(
                    Command::new("python3")
                        .arg(&self.options.mkimage)
                        .arg(&out)
                        .args(["--variant", "single"]),
                )
                .with_context(|| {
                    format!(
                        "building the test image with {} (needs python3 and busybox-static; \
                         run from the repository root or give --image-layout)",
                        self.options.mkimage.display()
                    )
                })?;
                out
            }
        };
        super::run_quiet(
            Command::new(std::env::current_exe()?)
                .arg("--root")
                .arg(self.data().join("node"))
                .args(["image", "import"])
                .arg(&layout)
                .args(["--name", IMAGE]),
        )
        .context("importing the test image into the node")
    }

    /// `skiff ARGS…` with its output in DIR/NAME.log. Called on a thread inside the
    /// namespace, so the process is in it too; in its own process group, so a ctrl-c at the
    /// terminal reaches only the bench, which then stops it in order.
    fn spawn(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Child> {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        Command::new(std::env::current_exe()?)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting skiff {name}"))
    }

    /// Starts the processes and waits until the node is Ready. Runs inside the namespace.
    async fn launch(&self) -> Result<()> {
        let data = self.data();
        let data_arg = data.to_string_lossy().into_owned();
        let node_root = data.join("node").to_string_lossy().into_owned();
        let node_args = ["--cgroup-parent", &self.cgroup_parent, "--bridge", BRIDGE];
        match self.options.topology {
            Topology::Up => {
                let mut args = vec!["up", "--data-dir", &data_arg, "--no-proxy"];
                args.extend(node_args);
                *lock(&self.plane) = Some(self.spawn("up", &args, &[])?);
            }
            Topology::Split => {
                let args = ["apiserver", "--data-dir", &data_arg];
                *lock(&self.plane) = Some(self.spawn("apiserver", &args, &[])?);
                let files = [
                    "kubeconfig",
                    skiff_controlplane::apiserver::JOIN_TOKEN_FILE,
                    skiff_controlplane::apiserver::CA_HASH_FILE,
                ];
                self.wait("the API server", Duration::from_secs(60), async || {
                    if !files.iter().all(|f| data.join(f).exists()) {
                        return Ok(false);
                    }
                    let admin = self.admin()?;
                    Ok(admin.endpoint()?.connect().await.is_ok())
                })
                .await?;
                let read = |f: &str| -> Result<String> {
                    Ok(std::fs::read_to_string(data.join(f))?.trim().to_owned())
                };
                let token = read(skiff_controlplane::apiserver::JOIN_TOKEN_FILE)?;
                let hash = read(skiff_controlplane::apiserver::CA_HASH_FILE)?;
                let mut args = vec![
                    "--root",
                    &node_root,
                    "kubelet",
                    "--api-server",
                    "https://127.0.0.1:6443",
                    "--server",
                    "https://127.0.0.1:6444",
                    "--ca-cert-hash",
                    &hash,
                    "--no-proxy",
                ];
                args.extend(node_args);
                let env = [("SKIFF_JOIN_TOKEN", token.as_str())];
                *lock(&self.node) = Some(self.spawn("kubelet", &args, &env)?);
            }
        }
        self.wait("the node to be Ready", READY_WITHIN, async || {
            if !self.kubeconfig().exists() {
                return Ok(false);
            }
            let Ok(mut conn) = self.admin()?.endpoint()?.connect().await else {
                return Ok(false);
            };
            let (status, body) = conn
                .call(
                    "GET",
                    "/api/v1/nodes",
                    "application/json",
                    "application/json",
                    Vec::new(),
                )
                .await?;
            Ok(status == 200 && any_node_ready(&serde_json::from_slice(&body)?))
        })
        .await
    }

    /// Polls `ok` until it holds, failing early (with the logs) if a skiff process exits.
    async fn wait(
        &self,
        what: &str,
        within: Duration,
        mut ok: impl AsyncFnMut() -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(exited) = self.exited() {
                bail!("waiting for {what}: {exited}\n{}", self.log_tail());
            }
            if ok().await? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Which skiff process has exited, if one has.
    fn exited(&self) -> Option<String> {
        for (name, child) in [("control plane", &self.plane), ("kubelet", &self.node)] {
            if let Some(child) = lock(child).as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Some(format!("the {name} exited ({status})"));
            }
        }
        None
    }

    /// The last lines of each skiff log.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["up", "apiserver", "kubelet"] {
            let path = self.dir.path().join(format!("{name}.log"));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- skiff {name}, last lines ---\n");
            for line in &lines[lines.len().saturating_sub(20)..] {
                out += line;
                out.push('\n');
            }
        }
        out
    }

    /// Removes everything the cluster made; runs once (later calls do nothing).
    fn cleanup(&self) {
        if self.cleaned.swap(true, Ordering::SeqCst) {
            return;
        }
        // The pods first, through the API, so the node tears each down itself…
        if self.exited().is_none() && self.node_pid().is_some() && self.kubeconfig().exists() {
            let _ = Command::new("nsenter")
                .arg(format!("--net=/run/netns/{}", self.netns))
                .arg(&self.options.kubectl)
                .arg("--kubeconfig")
                .arg(self.kubeconfig())
                .args(["delete", "pods", "--all", "--wait=true", "--timeout=30s"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // …then the skiff processes, what still runs in the namespace (kubectl), the pods'
        // cgroups with anything left in them, mounts (namespace pins, rootfs overlays), and
        // the namespace, which takes the bridge and the veths along.
        for child in [&self.node, &self.plane] {
            if let Some(child) = lock(child).take() {
                cleanup::stop(child, Duration::from_secs(10));
            }
        }
        cleanup::kill_netns_processes(&self.netns);
        cleanup::remove_cgroups(&self.cgroup_parent);
        cleanup::unmount_below(self.dir.path());
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Does a NodeList have a node whose Ready condition is True?
fn any_node_ready(list: &Value) -> bool {
    list["items"].as_array().is_some_and(|items| {
        items.iter().any(|node| {
            node["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
    })
}

/// Resolves on ctrl-c or SIGTERM.
async fn interrupted() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// Runs `body` against a fresh cluster, inside its network namespace, and removes the
/// cluster afterwards — also when the body fails or the bench is interrupted.
pub async fn with_cluster<T, F, Fut>(options: Options, body: F) -> Result<T>
where
    F: FnOnce(Arc<Cluster>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>> + 'static,
    T: Send + 'static,
{
    let cluster = Arc::new(Cluster::create(options)?);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let inside = cluster.clone();
    let thread = std::thread::Builder::new()
        .name("bench-netns".into())
        .spawn(move || {
            let _ = tx.send(run_inside(inside, body));
        })?;
    let outcome = tokio::select! {
        r = rx => r.unwrap_or_else(|_| Err(anyhow!("the bench thread panicked"))),
        r = interrupted() => {
            r?;
            eprintln!("interrupted: removing the cluster");
            Err(anyhow!("interrupted"))
        }
    };
    if outcome.is_err() {
        eprint!("{}", cluster.log_tail());
    }
    let remover = cluster.clone();
    tokio::task::spawn_blocking(move || remover.cleanup()).await?;
    if thread.is_finished() {
        let _ = thread.join();
    }
    outcome
}

/// On the calling thread: enter the namespace, import the image, start the cluster and run
/// `body`, on a runtime whose threads (created from this one) share the namespace.
fn run_inside<T, F, Fut>(cluster: Arc<Cluster>, body: F) -> Result<T>
where
    F: FnOnce(Arc<Cluster>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let path = format!("/run/netns/{}", cluster.netns);
    let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("setns({path})"))?;
    let started = Instant::now();
    cluster.import_image()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        cluster.launch().await?;
        eprintln!(
            "cluster up ({:?}) in {:.1} s: netns {}, data {}",
            cluster.topology(),
            started.elapsed().as_secs_f64(),
            cluster.netns,
            cluster.data().display()
        );
        body(cluster).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_credentials_come_from_the_kubeconfig_skiff_writes() {
        let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let data = base64::engine::general_purpose::STANDARD.encode(ca);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {data}\nusers:\n- name: skiff-admin\n  user:\n    token: abc123\n"
        );
        let admin = Admin::from_kubeconfig(&text).unwrap();
        assert_eq!(admin.server, "127.0.0.1:6443".parse().unwrap());
        assert_eq!(admin.ca_pem, ca);
        assert_eq!(admin.token, "abc123");
        assert!(Admin::from_kubeconfig("server: http://x:1\n").is_err());
    }

    #[test]
    fn a_node_is_ready_when_its_ready_condition_is_true() {
        let list = |status: &str| {
            serde_json::json!({"items": [{"status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": status}]}}]})
        };
        assert!(any_node_ready(&list("True")));
        assert!(!any_node_ready(&list("False")));
        assert!(!any_node_ready(&serde_json::json!({"items": []})));
    }
}
