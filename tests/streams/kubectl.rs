//! What a user relies on from `kubectl logs`, `exec`, `attach` and `port-forward`, written
//! against a kubeconfig and pod names only, so the same checks run against the test
//! double here and against a real cluster with a real kubelet.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The installed kubectl binaries.
pub const KUBECTL_1_33: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
pub const KUBECTL_1_29: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.29";

/// Generous bounds for things that should take a moment: a hang fails, slowness does not.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// One kubectl binary with a kubeconfig and environment.
#[derive(Debug, Clone)]
pub struct Kubectl {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Kubectl {
    pub fn new(binary: &str, kubeconfig: &Path) -> Kubectl {
        Kubectl {
            binary: binary.into(),
            kubeconfig: kubeconfig.to_owned(),
            env: Vec::new(),
        }
    }

    /// The same kubectl with `KEY=VALUE` in its environment.
    pub fn with_env(&self, key: &str, value: &str) -> Kubectl {
        let mut k = self.clone();
        k.env.push((key.into(), value.into()));
        k
    }

    /// Exec and attach over SPDY instead of WebSocket.
    pub fn spdy_exec(&self) -> Kubectl {
        self.with_env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
    }

    /// Port-forward over plain SPDY instead of SPDY-in-WebSocket.
    pub fn spdy_port_forward(&self) -> Kubectl {
        self.with_env("PORT_FORWARD_WEBSOCKETS", "false")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, b"")
    }

    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let output = wait_output(child, PATIENCE, &format!("kubectl {args:?}"));
        let _ = writer.join();
        output
    }

    /// Runs and insists on success; stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}{}",
            self.binary.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Waits for `child` with a bound (killing it past the bound fails the test).
pub fn wait_output(mut child: Child, within: Duration, what: &str) -> Output {
    let deadline = Instant::now() + within;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kubectl exec` runs a command with stdout and stderr apart, and exits with its code.
pub fn exec_exit_codes(k: &Kubectl, pod: &str) {
    let out = k.run(&["exec", pod, "--", "sh", "-c", "echo out; echo err >&2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    let out = k.run(&["exec", pod, "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = k.run(&["exec", pod, "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("command terminated with exit code 3"),
        "{}",
        text(&out.stderr)
    );
}

/// `kubectl exec -it POD -- COMMAND…` under a pseudo-terminal of 80x24 that `ptyrun.py`
/// resizes to 100x30 once the command has shown the first size: the command must print
/// `size COLSxROWS` for each size it sees and end on a typed `q`. Both sizes must show, and
/// kubectl must exit 0.
pub fn exec_tty_with_resize(k: &Kubectl, pod: &str, command: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/streams/ptyrun.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .arg(&k.binary)
        .arg("--kubeconfig")
        .arg(&k.kubeconfig)
        .args(["exec", "-it", pod, "--"])
        .args(command);
    for (key, value) in &k.env {
        cmd.env(key, value);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 ptyrun.py");
    let out = wait_output(child, PATIENCE, "kubectl exec -it under a pty");
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}{}", text(&out.stderr));
    assert!(
        shown.contains("size 80x24") && shown.contains("size 100x30"),
        "{shown}"
    );
}

/// Deterministic bytes that do not compress to nothing.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `kubectl exec -i` pipes `mb` megabytes through `cat` unchanged; the MB/s it took.
pub fn exec_pipes_through_cat(k: &Kubectl, pod: &str, mb: usize) -> f64 {
    let input = noise(mb * 1024 * 1024, 7);
    let start = Instant::now();
    let out = k.run_with_stdin(&["exec", "-i", pod, "--", "cat"], &input);
    let seconds = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), input.len(), "bytes out");
    assert_eq!(
        hex(&Sha256::digest(&out.stdout)),
        hex(&Sha256::digest(&input)),
        "sha256 of what came back"
    );
    mb as f64 / seconds
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `kubectl logs` prints the log; `logs -f` prints lines as they are written, until the
/// user stops it. `write_line` makes the pod write one more line after the first `seen`.
pub fn logs_and_follow(k: &Kubectl, pod: &str, seen: usize, write_line: impl FnOnce()) {
    let all = k.ok(&["logs", pod]);
    assert!(all.lines().count() >= seen, "{all}");
    let mut child = k
        .command(&["logs", "-f", pod])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let lines = lines_of(child.stdout.take().expect("stdout"));
    let first: Vec<String> = (0..seen)
        .map(|_| lines.recv_timeout(PATIENCE).expect("a line"))
        .collect();
    assert_eq!(first.len(), seen);
    write_line();
    let next = lines.recv_timeout(PATIENCE);
    let _ = child.kill();
    let _ = child.wait();
    assert!(next.is_ok(), "no line arrived while following");
}

/// The lines of a reader, as they come.
pub fn lines_of(reader: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// A `kubectl port-forward` running in the background.
pub struct Forward {
    child: Child,
    pub local: u16,
    stderr: mpsc::Receiver<String>,
    /// Kept so its reader keeps draining: kubectl prints a line per connection, and a
    /// closed pipe would kill it (SIGPIPE).
    _stdout: mpsc::Receiver<String>,
}

impl Forward {
    /// Starts `kubectl port-forward pod/POD :PORT` and waits for its local port.
    pub fn start(k: &Kubectl, pod: &str, port: u16) -> Forward {
        let mut child = k
            .command(&["port-forward", &format!("pod/{pod}"), &format!(":{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl port-forward");
        let stdout = lines_of(child.stdout.take().expect("stdout"));
        let stderr = lines_of(child.stderr.take().expect("stderr"));
        let line = stdout.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            let errors: Vec<String> = stderr.try_iter().collect();
            panic!("port-forward printed no port: {errors:?}")
        });
        // "Forwarding from 127.0.0.1:38271 -> 80"
        let local = line
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no local port in {line:?}"));
        Forward {
            child,
            local,
            stderr,
            _stdout: stdout,
        }
    }

    /// Whether kubectl is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// What kubectl printed on stderr so far (waiting up to `within` for a first line).
    pub fn stderr(&self, within: Duration) -> Vec<String> {
        let mut lines: Vec<String> = self.stderr.recv_timeout(within).into_iter().collect();
        lines.extend(self.stderr.try_iter());
        lines
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs `http://127.0.0.1:PORT/PATH` with curl; the body.
pub fn curl(port: u16, path: &str) -> Child {
    Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl")
}

/// `n` concurrent curl requests through one `kubectl port-forward`, each answered with
/// the body `expected(i)` for path `/i`.
pub fn port_forward_concurrently(
    k: &Kubectl,
    pod: &str,
    port: u16,
    n: usize,
    expected: impl Fn(usize) -> Vec<u8>,
) {
    let forward = Forward::start(k, pod, port);
    let children: Vec<Child> = (0..n)
        .map(|i| curl(forward.local, &format!("/{i}")))
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = wait_output(child, PATIENCE, "curl");
        assert!(
            out.status.success(),
            "request {i}: {}; kubectl said {:?}",
            text(&out.stderr),
            forward.stderr(Duration::from_millis(10))
        );
        assert!(
            out.stdout == expected(i),
            "request {i}: wrong body ({} bytes)",
            out.stdout.len()
        );
    }
}

/// A container the pod does not have: kubectl shows the API's Status message.
pub fn missing_container(k: &Kubectl, pod: &str) {
    let out = k.run(&["exec", pod, "-c", "nope", "--", "true"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("container nope is not valid for pod {pod}")),
        "{stderr}"
    );
}
