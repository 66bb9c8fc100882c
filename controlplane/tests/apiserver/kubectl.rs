//! Test harness: an in-process API server on 127.0.0.1:0 with a temp data dir, and the real
//! kubectl binaries (a fixed version, not the dispatcher) pointed at its kubeconfig.
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_controlplane::apiserver::{self, ApiServerConfig, RunningApiServer};
use skiff_controlplane::controllers::{self, ControllerManager};
use skiff_controlplane::store::{EmbeddedStore, Store};

/// Where the versioned kubectl binaries behind the `/usr/bin/kubectl` dispatcher live.
const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// The path of kubectl `1.<minor>`, or `None` (the test then skips, saying so).
pub fn kubectl_binary(minor: u32) -> Option<PathBuf> {
    let path = Path::new(KUBECTL_DIR).join(format!("kubectl.1.{minor}"));
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIP: {} not found (kubectl is part of the machine image)",
            path.display()
        );
        None
    }
}

/// A running server plus what kubectl needs to reach it.
pub struct Cluster {
    pub runtime: tokio::runtime::Runtime,
    /// The scheduler and controllers, as `skiff apiserver` runs them.
    pub controllers: Option<ControllerManager>,
    pub server: Option<RunningApiServer>,
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
    pub kubectl: PathBuf,
}

/// What a kubectl run printed.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Cluster {
    /// Starts a server with the embedded store; `kubectl` is the binary to drive it with.
    pub fn start(kubectl: PathBuf) -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ApiServerConfig::new(dir.path().join("data"));
        config.listen = "127.0.0.1:0".parse().expect("addr");
        config.bookmark_interval = Duration::from_millis(500);
        std::fs::create_dir_all(&config.data_dir).expect("data dir");
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&config.data_dir).expect("store"));
        let server = runtime
            .block_on(apiserver::start_with_store(config, store.clone()))
            .expect("start server");
        let controllers = {
            let _guard = runtime.enter();
            ControllerManager::start(server.client(), controllers::Config::default())
        };
        Cluster {
            runtime,
            controllers: Some(controllers),
            server: Some(server),
            store,
            dir,
            kubectl,
        }
    }

    fn server(&self) -> &RunningApiServer {
        self.server.as_ref().expect("server running")
    }

    /// A kubectl command with the generated kubeconfig and a private cache and HOME.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.kubectl);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .env("KUBECONFIG", &self.server().kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args);
        cmd
    }

    /// Runs kubectl to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("run kubectl");
        let output = Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        eprintln!(
            "$ kubectl {}\n{}{}",
            args.join(" "),
            output.stdout,
            output.stderr
        );
        output
    }

    /// Runs kubectl and requires success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.ok, "kubectl {args:?} failed: {}", out.stderr);
        out.stdout
    }

    /// Runs kubectl and requires failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.ok,
            "kubectl {args:?} should have failed: {}",
            out.stdout
        );
        out.stderr
    }

    /// Writes a manifest into the temp dir and returns its path.
    pub fn manifest(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write manifest");
        path.display().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        drop(self.controllers.take());
        if let Some(server) = self.server.take() {
            let _ = self.runtime.block_on(server.shutdown());
        }
    }
}

/// A long-running kubectl (e.g. `get -w`) whose output lines are collected.
pub struct Streaming {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    notify: mpsc::Receiver<()>,
}

impl Streaming {
    pub fn spawn(mut cmd: Command) -> Streaming {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn kubectl");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, notify) = mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
                let _ = tx.send(());
            }
        });
        Streaming {
            child,
            lines,
            notify,
        }
    }

    /// Waits (up to 30 s) until `pred` holds for the lines so far.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lines = self.lines.lock().expect("lines").clone();
            if pred(&lines) {
                return lines;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; got {lines:?}"
            );
            let _ = self.notify.recv_timeout(left);
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of a `kubectl get` table, split on whitespace.
pub fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The row whose first cell (or second, with -A) is `name`.
pub fn row<'a>(rows: &'a [Vec<String>], name: &str) -> &'a [String] {
    rows.iter()
        .find(|r| {
            r.first().map(String::as_str) == Some(name)
                || r.get(1).map(String::as_str) == Some(name)
        })
        .unwrap_or_else(|| panic!("no row {name} in {rows:?}"))
}

/// What `curl` got back: the HTTP code and the body.
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Cluster {
    /// The API server's `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.server().addr)
    }

    /// The admin bearer token.
    pub fn token(&self) -> &str {
        &self.server().token
    }

    /// One HTTPS request with `curl` (trusting the cluster CA) and a bearer token.
    pub fn curl_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Reply {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ca = self.dir.path().join(format!("ca-{seq}.pem"));
        std::fs::write(&ca, &self.server().ca_pem).expect("write CA");
        let body_file = self.dir.path().join(format!("curl-body-{seq}"));
        std::fs::write(&body_file, body).expect("write body");
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--cacert"])
            .arg(&ca)
            .args(["-X", method, "-w", "\n%{http_code}"])
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"));
        if !body.is_empty() || method != "GET" {
            cmd.arg("-H")
                .arg(format!("Content-Type: {content_type}"))
                .arg("--data-binary")
                .arg(format!("@{}", body_file.display()));
        }
        let out = cmd
            .arg(format!("{}{path}", self.url()))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Reply {
            code: code.trim().parse().unwrap_or(0),
            body: body.to_owned(),
        }
    }

    /// `curl_as` with the admin token.
    pub fn curl(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> Reply {
        let token = self.token().to_owned();
        self.curl_as(&token, method, path, content_type, body)
    }
}
