//! A real OCI registry (Debian's `docker-registry`, distribution 2.8) on 127.0.0.1 with its own
//! storage directory, started for a benchmark or a test and stopped on drop.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub const REGISTRY_BINARY: &str = "docker-registry";

pub struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
}

impl Registry {
    /// Starts a registry storing under `dir` (which it owns) and waits until it accepts
    /// connections.
    pub fn start(dir: &Path) -> Result<Registry> {
        Self::start_with(dir, None)
    }

    /// The same, requiring HTTP basic authentication as `user:password`.
    pub fn start_with_auth(dir: &Path, user: &str, password: &str) -> Result<Registry> {
        Self::start_with(dir, Some((user, password)))
    }

    fn start_with(dir: &Path, auth: Option<(&str, &str)>) -> Result<Registry> {
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)?;
        let port = free_port()?;
        let config = dir.join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some((user, password)) = auth {
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{}\n", bcrypt(password)?))?;
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, yaml)?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("starting {REGISTRY_BINARY} (apt-get install docker-registry)")
            })?;
        let mut registry = Registry {
            child,
            port,
            storage,
        };
        registry.wait_ready(Duration::from_secs(20))?;
        Ok(registry)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("{REGISTRY_BINARY} exited at start: {status}");
            }
            if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(100)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{REGISTRY_BINARY} did not listen on {addr} within {timeout:?}")
    }

    /// `127.0.0.1:PORT`, the registry part of references into it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry keeps blobs (tests corrupt them here).
    pub fn blob_data(&self, digest_hex: &str) -> PathBuf {
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&digest_hex[..2])
            .join(digest_hex)
            .join("data")
    }

    /// Pushes an OCI layout's image to `repo:tag` here with skopeo.
    pub fn push_layout(&self, layout: &Path, tag: &str, repo_tag: &str) -> Result<()> {
        self.push_layout_as(layout, tag, repo_tag, None)
    }

    /// The same with credentials (`user:password`).
    pub fn push_layout_as(
        &self,
        layout: &Path,
        tag: &str,
        repo_tag: &str,
        creds: Option<&str>,
    ) -> Result<()> {
        let mut command = Command::new("skopeo");
        command.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(creds) = creds {
            command.arg(format!("--dest-creds={creds}"));
        }
        let status = command
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .status()
            .context("running skopeo (apt-get install skopeo)")?;
        if !status.success() {
            bail!("skopeo copy to {} failed: {status}", self.host());
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bcrypt hash for the registry's htpasswd file (Python's crypt, backed by libcrypt).
fn bcrypt(password: &str) -> Result<String> {
    let out = Command::new("python3")
        .args(["-W", "ignore", "-c", "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))"])
        .arg(password)
        .output()
        .context("running python3 for a bcrypt hash")?;
    let hash = String::from_utf8(out.stdout)?.trim().to_string();
    if !out.status.success() || !hash.starts_with("$2") {
        bail!(
            "could not make a bcrypt hash: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(hash)
}

/// A port the kernel just handed out on loopback.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
