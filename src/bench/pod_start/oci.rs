//! The baselines of `skiff bench pod-start`: `crun run` and `runc run` on an OCI bundle of the
//! same busybox rootfs, timed from the caller's view (spawn to exit, or to `run -d` returning).
//!
//! crun 1.8 refuses a hybrid cgroup host, so on one it runs in a private mount namespace whose
//! `/sys/fs/cgroup` is a tmpfs holding bind mounts of the v1 hierarchies only, each bound from
//! our own cgroup (so crun's cgroups land below ours). A helper shell sets that namespace up
//! once and holds it; each crun process enters it through `nsenter` (this crate forbids the
//! `unsafe` a `pre_exec` setns would need), so the per-container timing carries no mount
//! setup, only nsenter's exec, which is measured and reported. runc runs as installed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::bench::run_quiet as run;
use skiff_runtime::cgroup::{CgroupFs, LayoutKind};

/// One OCI runtime with its bundles and the containers it still has to delete.
pub struct Oci {
    pub name: &'static str,
    root: PathBuf,
    bundle_true: PathBuf,
    bundle_sleep: PathBuf,
    mount_ns: Option<MountNs>,
    prefix: String,
    live: Mutex<Vec<String>>,
}

/// Is `program` on PATH?
pub fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

impl Oci {
    /// Bundles for `name` (`crun` or `runc`) under `work`, the rootfs copied from `layers`.
    pub fn prepare(name: &'static str, work: &Path, layers: &[PathBuf]) -> Result<Oci> {
        let dir = work.join(format!("oci-{name}"));
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs)?;
        for layer in layers {
            run(Command::new("cp")
                .arg("-a")
                .arg(layer.join("."))
                .arg(&rootfs))?;
        }
        let mount_ns = match (name, CgroupFs::detect()?.layout().kind) {
            ("crun", LayoutKind::Hybrid) => Some(MountNs::new(&dir.join("cgroup-view"))?),
            _ => None,
        };
        let oci = Oci {
            name,
            root: dir.join("state"),
            bundle_true: dir.join("bundle-true"),
            bundle_sleep: dir.join("bundle-sleep"),
            mount_ns,
            prefix: format!("skiff-bench-{}-{name}", std::process::id()),
            live: Mutex::new(Vec::new()),
        };
        for (bundle, args) in [
            (&oci.bundle_true, &["/bin/true"][..]),
            (&oci.bundle_sleep, &["/bin/sleep", "1000"][..]),
        ] {
            std::fs::create_dir_all(bundle)?;
            run(Command::new(name).arg("spec").current_dir(bundle))?;
            let path = bundle.join("config.json");
            let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            config["process"]["terminal"] = false.into();
            config["process"]["args"] = args.to_vec().into();
            config["root"]["path"] = rootfs.to_string_lossy().into_owned().into();
            config["hostname"] = "bench".into();
            std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        }
        Ok(oci)
    }

    fn id(&self, what: &str, i: u32) -> String {
        format!("{}-{what}{i}", self.prefix)
    }

    /// `<runtime> --root STATE ARGS…`; for crun on a hybrid host through `nsenter` into the
    /// cgroup-view mount namespace (one extra exec: see [`Oci::nsenter_overhead_ms`]).
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.mount_ns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--mount=/proc/{}/ns/mnt", ns.child.id()))
                    .arg("--")
                    .arg(self.name);
                c
            }
            None => Command::new(self.name),
        };
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    }

    /// What going through `nsenter` adds to each start (p50 of `nsenter … true` minus p50 of
    /// `true`, 30 runs each), or 0 without the mount namespace.
    pub fn nsenter_overhead_ms(&self) -> Result<f64> {
        let Some(ns) = &self.mount_ns else {
            return Ok(0.0);
        };
        let p50 = |cmd: &mut Command| -> Result<f64> {
            let mut samples = Vec::new();
            for _ in 0..30 {
                let start = Instant::now();
                run(cmd)?;
                samples.push(start.elapsed().as_secs_f64() * 1e3);
            }
            Ok(crate::bench::stats::summarize(&samples).p50)
        };
        let mnt = format!("--mount=/proc/{}/ns/mnt", ns.child.id());
        let via = p50(Command::new("nsenter").args([mnt.as_str(), "--", "true"]))?;
        let direct = p50(&mut Command::new("true"))?;
        Ok((via - direct).max(0.0))
    }

    /// `run` of `/bin/true` in the foreground: milliseconds from spawn to exit (the runtime
    /// deletes the container itself).
    pub fn run_true(&self, i: u32) -> Result<f64> {
        let id = self.id("seq", i);
        let bundle = self.bundle_true.to_string_lossy();
        let mut cmd = self.command(&["run", "--bundle", &bundle, &id]);
        let start = Instant::now();
        run(&mut cmd)?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    }

    /// `run -d` of `/bin/true` (or `sleep 1000`): milliseconds until the runtime returns with
    /// the workload started. The container stays until [`Oci::delete_all`].
    pub fn run_detached(&self, what: &str, i: u32, sleep: bool) -> Result<f64> {
        let id = self.id(what, i);
        let bundle = if sleep {
            &self.bundle_sleep
        } else {
            &self.bundle_true
        };
        let bundle = bundle.to_string_lossy();
        // The detached workload inherits stderr: a file, not a pipe we would wait on.
        let err_path = self.root.with_file_name(format!("{id}.stderr"));
        let err = std::fs::File::create(&err_path)?;
        let mut cmd = self.command(&["run", "--detach", "--bundle", &bundle, &id]);
        cmd.stderr(err);
        self.live.lock().expect("live list").push(id);
        let start = Instant::now();
        let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let text = std::fs::read_to_string(&err_path).unwrap_or_default();
        let _ = std::fs::remove_file(&err_path);
        if !status.success() {
            bail!("{cmd:?} failed: {}", text.trim());
        }
        Ok(ms)
    }

    /// Force-deletes every container started detached (kills it first).
    pub fn delete_all(&self) -> Result<()> {
        let ids = std::mem::take(&mut *self.live.lock().expect("live list"));
        let mut first_err = None;
        for id in ids {
            if let Err(e) = run(&mut self.command(&["delete", "--force", &id])) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Oci {
    fn drop(&mut self) {
        let _ = self.delete_all();
    }
}

/// A mount namespace held by a helper shell, with the v1-only cgroup view at /sys/fs/cgroup.
struct MountNs {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl MountNs {
    fn new(stage: &Path) -> Result<MountNs> {
        let layout = CgroupFs::detect()?.layout().clone();
        std::fs::create_dir_all(stage)?;
        let stage = stage.to_string_lossy();
        let mut script = format!("set -e\nmount -t tmpfs skiff-bench-cgroup '{stage}'\n");
        for h in &layout.v1 {
            let Some(name) = h.mount_point.file_name() else {
                continue;
            };
            let (source, target) = (h.own_dir(), format!("{stage}/{}", name.to_string_lossy()));
            script += &format!(
                "mkdir '{target}'\nmount --bind '{}' '{target}'\n",
                source.display()
            );
        }
        script += &format!("mount --move '{stage}' /sys/fs/cgroup\necho ready\nread _ || true\n");
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning the mount-namespace helper (unshare)")?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out).read_line(&mut line)?;
        }
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("could not set up crun's cgroup view (the mount namespace helper failed)");
        }
        Ok(MountNs { child, stdin })
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF: the helper's `read` returns and it exits
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            if !matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}
