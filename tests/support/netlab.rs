//! Network namespaces as hosts, nodes and pods for the proxy tests, a child cgroup of the
//! test's own for socket load balancing, background processes, and the data plane's pins —
//! all named after this run (the process id and a per-lab tag) and torn down on drop, also
//! when the test fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static LABS: AtomicU32 = AtomicU32::new(0);

pub struct Lab {
    /// Unique to this lab in this run: `<pid>x<n>`.
    pub tag: String,
    pub dir: tempfile::TempDir,
    netns: Vec<String>,
    children: Vec<Child>,
    cgroup: Option<PathBuf>,
}

/// Runs a command, insisting on success; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The helper scripts next to this file's test (tests/proxy/).
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/proxy")
        .join(name)
}

impl Lab {
    pub fn new() -> Lab {
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        Lab {
            tag: format!("{}x{n}", std::process::id()),
            dir: tempfile::tempdir().expect("temp dir"),
            netns: Vec::new(),
            children: Vec::new(),
            cgroup: None,
        }
    }

    /// The full name of this lab's namespace `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("skiff-{}-{name}", self.tag)
    }

    /// Creates a network namespace with `lo` up; returns its full name.
    pub fn add_netns(&mut self, name: &str) -> String {
        let ns = self.ns(name);
        run(Command::new("ip").args(["netns", "add", &ns]));
        self.netns.push(ns.clone());
        self.ip(name, &["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ARGS…` (NS by short name).
    pub fn ip(&self, ns: &str, args: &[&str]) -> String {
        run(Command::new("ip").arg("-n").arg(self.ns(ns)).args(args))
    }

    /// A shell command inside a namespace.
    pub fn sh(&self, ns: &str, script: &str) -> String {
        run(Command::new("ip").args(["netns", "exec", &self.ns(ns), "sh", "-c", script]))
    }

    /// A veth pair from `a` to `b` (made inside `a`, its peer straight inside `b`), both up,
    /// with an address each when given.
    pub fn link(&self, a: (&str, &str, Option<&str>), b: (&str, &str, Option<&str>)) {
        let peer_ns = self.ns(b.0);
        self.ip(
            a.0,
            &[
                "link", "add", a.1, "type", "veth", "peer", "name", b.1, "netns", &peer_ns,
            ],
        );
        for (ns, ifname, addr) in [a, b] {
            if let Some(addr) = addr {
                self.ip(ns, &["addr", "add", addr, "dev", ifname]);
            }
            self.ip(ns, &["link", "set", ifname, "up"]);
        }
    }

    /// A bridge in `ns` with an address when given.
    pub fn bridge(&self, ns: &str, name: &str, addr: Option<&str>) {
        self.ip(ns, &["link", "add", name, "type", "bridge"]);
        if let Some(addr) = addr {
            self.ip(ns, &["addr", "add", addr, "dev", name]);
        }
        self.ip(ns, &["link", "set", name, "up"]);
    }

    pub fn enslave(&self, ns: &str, ifname: &str, bridge: &str) {
        self.ip(ns, &["link", "set", ifname, "master", bridge]);
    }

    /// A command run inside a namespace (not started).
    pub fn cmd(&self, ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(ns)]).args(args);
        cmd
    }

    /// Starts a background process inside a namespace; killed when the lab drops.
    pub fn spawn(&mut self, ns: &str, args: &[&str]) -> &mut Child {
        let child = self
            .cmd(ns, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
        self.children.push(child);
        self.children.last_mut().unwrap()
    }

    /// Keeps a process the test started itself, to be killed when the lab drops.
    pub fn adopt(&mut self, child: Child) -> &mut Child {
        self.children.push(child);
        self.children.last_mut().unwrap()
    }

    /// Waits until something listens on addr:port as seen from inside `ns`.
    pub fn wait_port(&self, ns: &str, addr: &str, port: u16) {
        let probe = format!(
            "import socket,time\nend=time.time()+10\nwhile True:\n  try:\n    socket.create_connection(('{addr}',{port}),timeout=1).close(); break\n  except OSError:\n    if time.time()>end: raise\n    time.sleep(0.02)\n"
        );
        run(&mut self.cmd(ns, &["python3", "-c", &probe]));
    }

    /// A child of this process's own cgroup v2 (never the hierarchy root), for the socket
    /// hooks; processes started with [`Lab::in_cgroup`] run in it.
    pub fn cgroup(&mut self) -> PathBuf {
        if let Some(path) = &self.cgroup {
            return path.clone();
        }
        let path = own_cgroup2().join(format!("skiff-test-{}", self.tag));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        self.cgroup = Some(path.clone());
        path
    }

    /// A command that joins the lab's cgroup, then runs `args` inside namespace `ns`.
    pub fn in_cgroup(&mut self, ns: &str, args: &[&str]) -> Command {
        let procs = self.cgroup().join("cgroup.procs");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > {} && exec ip netns exec {} \"$@\"",
                procs.display(),
                self.ns(ns)
            ))
            .arg("sh")
            .args(args);
        cmd
    }

    /// The network namespace's path, for `nsenter --net=`.
    pub fn netns_path(&self, ns: &str) -> String {
        format!("/run/netns/{}", self.ns(ns))
    }
}

/// Reads lines from a child's stdout until one satisfies `want`, within `timeout`.
pub fn read_until(
    out: &mut BufReader<ChildStdout>,
    timeout: Duration,
    want: impl Fn(&str) -> bool,
) -> String {
    let end = Instant::now() + timeout;
    let mut line = String::new();
    while Instant::now() < end {
        line.clear();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("the process closed its output before printing the line wanted");
        }
        if want(line.trim()) {
            return line.trim().to_string();
        }
    }
    panic!("no line wanted within {timeout:?}");
}

/// The cgroup v2 directory this process runs in, on the unified mount (hybrid hosts mount it
/// at /sys/fs/cgroup/unified).
pub fn own_cgroup2() -> PathBuf {
    let rel = std::fs::read_to_string("/proc/self/cgroup")
        .expect("/proc/self/cgroup")
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .expect("a cgroup v2 entry in /proc/self/cgroup");
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("/proc/self/mountinfo")
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split(' ').nth(4).map(PathBuf::from))
        .expect("a cgroup2 mount");
    mount.join(rel.trim_start_matches('/'))
}

/// Output's stdout as JSON.
pub fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(cgroup) = &self.cgroup {
            let _ = std::fs::write(cgroup.join("cgroup.kill"), "1");
            let end = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(cgroup).is_err() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for ns in self.netns.iter().rev() {
            // Anything still running in a namespace of this lab was started by this lab.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
