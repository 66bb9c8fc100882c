//! Starts a real etcd on 127.0.0.1 for a test (one server, or a cluster of members) and
//! stops it (also on panic) when dropped.
// Each test binary uses a part of these fixtures.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;
use tempfile::TempDir;

const ETCD: &str = "/usr/bin/etcd";
const STARTUP: Duration = Duration::from_secs(20);

/// A running etcd, killed and removed on drop.
pub struct EtcdServer {
    child: Child,
    pub endpoint: String,
    dir: TempDir,
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The etcd binary, or `None` with a skip message; with `CI` set a missing etcd fails.
fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("SKIFF_ETCD").map_or_else(|| PathBuf::from(ETCD), PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} is missing and CI is set: install etcd-server",
            path.display()
        );
    }
    eprintln!(
        "SKIPPED: {} not found (apt-get install etcd-server); etcd tests skip",
        path.display()
    );
    None
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

impl EtcdServer {
    /// Starts etcd in a temp dir; `None` if etcd is not installed (see `etcd_binary`).
    pub async fn start() -> Option<EtcdServer> {
        let binary = etcd_binary()?;
        let mut last_log = String::new();
        // A free port may be taken between probing and binding: try a few times.
        for _ in 0..3 {
            let mut server = Self::spawn(&binary);
            match server.wait_ready().await {
                Ok(()) => return Some(server),
                Err(log) => last_log = log,
            }
        }
        panic!("etcd did not start; its log:\n{last_log}");
    }

    fn spawn(binary: &Path) -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let client = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new(binary)
            .arg("--name=default")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .args(["--logger=zap", "--log-outputs=stderr", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        EtcdServer {
            child,
            endpoint: client,
            dir,
        }
    }

    /// Waits until etcd answers a read; on failure returns its log.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        while started.elapsed() < STARTUP {
            if self.answers().await {
                return Ok(());
            }
            if self.exited() {
                break;
            }
            // etcd has no readiness event we can await from here: retry the connection.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default())
    }

    async fn answers(&self) -> bool {
        let attempt = async {
            let mut client = Client::connect([self.endpoint.as_str()], None).await.ok()?;
            client.get("ready-probe", None).await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), attempt).await,
            Ok(Some(_))
        )
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

/// A cluster of etcd members on 127.0.0.1, killed and removed on drop.
pub struct EtcdCluster {
    members: Vec<Option<Child>>,
    pub endpoints: Vec<String>,
    dir: TempDir,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for child in self.members.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl EtcdCluster {
    /// Starts `n` members; `None` if etcd is not installed (see `etcd_binary`).
    pub async fn start(n: usize) -> Option<EtcdCluster> {
        let binary = etcd_binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let clients: Vec<String> = (0..n)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let peers: Vec<String> = (0..n)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}={p}"))
            .collect();
        let members = (0..n)
            .map(|i| {
                let log =
                    std::fs::File::create(dir.path().join(format!("m{i}.log"))).expect("etcd log");
                Some(
                    Command::new(&binary)
                        .arg(format!("--name=m{i}"))
                        .arg(format!(
                            "--data-dir={}",
                            dir.path().join(format!("m{i}")).display()
                        ))
                        .arg(format!("--listen-client-urls={}", clients[i]))
                        .arg(format!("--advertise-client-urls={}", clients[i]))
                        .arg(format!("--listen-peer-urls={}", peers[i]))
                        .arg(format!("--initial-advertise-peer-urls={}", peers[i]))
                        .arg(format!("--initial-cluster={}", initial.join(",")))
                        .args(["--logger=zap", "--log-outputs=stderr", "--log-level=warn"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(log)
                        .spawn()
                        .expect("spawn etcd"),
                )
            })
            .collect();
        let cluster = EtcdCluster {
            members,
            endpoints: clients,
            dir,
        };
        let started = Instant::now();
        while started.elapsed() < STARTUP {
            let mut ready = true;
            for endpoint in &cluster.endpoints {
                let attempt = async {
                    let mut client = Client::connect([endpoint.as_str()], None).await.ok()?;
                    client.put("ready-probe", "", None).await.ok()
                };
                ready &= matches!(
                    tokio::time::timeout(Duration::from_secs(2), attempt).await,
                    Ok(Some(_))
                );
            }
            if ready {
                return Some(cluster);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let logs: Vec<String> = (0..n)
            .map(|i| {
                std::fs::read_to_string(cluster.dir.path().join(format!("m{i}.log")))
                    .unwrap_or_default()
            })
            .collect();
        panic!("the etcd cluster did not start:\n{}", logs.join("\n"));
    }

    /// A member that is not the raft leader (killing the leader is an election, during
    /// which etcd itself times proposals out; that is a different test).
    pub async fn follower(&self) -> usize {
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let mut client = Client::connect([endpoint.as_str()], None)
                .await
                .expect("connect to a member");
            let status = client.status().await.expect("member status");
            let me = status.header().map(|h| h.member_id());
            if me.is_some() && me != Some(status.leader()) {
                return i;
            }
        }
        panic!("no follower among {:?}", self.endpoints);
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
