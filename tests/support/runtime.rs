//! A node's runtime for the end-to-end tests: an image store with the busybox test image and
//! a `Containers` whose setup process is the real `skiff` binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use skiff_runtime::container::{ContainerSpec, Containers, LogSpec, ProcessSpec, State, logs};
use skiff_runtime::image::{ImageStore, NoProgress, Reference};

use super::{build_image, privileged_with};

/// Whether a runtime test may run here: root, and the test image's inputs installed.
pub fn ready() -> bool {
    privileged_with(&["python3", "busybox"])
}

pub struct Node {
    pub dir: tempfile::TempDir,
    pub containers: Containers,
    pub layers: Vec<PathBuf>,
}

impl Node {
    pub fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        let layout = build_image(dir.path(), "single", &[]);
        let name = Reference::parse("skiff.test/busybox:latest").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = rt
            .block_on(skiff_runtime::image::import(
                &store,
                &layout,
                Some(&name),
                Arc::new(NoProgress),
            ))
            .unwrap();
        let layers = store.layer_dirs(&report.record);
        let containers =
            Containers::open(dir.path().join("state"), env!("CARGO_BIN_EXE_skiff-setup")).unwrap();
        Node {
            dir,
            containers,
            layers,
        }
    }

    pub fn spec(&self, id: &str, args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            id: id.into(),
            layers: self.layers.clone(),
            readonly_rootfs: false,
            process: ProcessSpec::new(args, &["PATH=/bin", "HOME=/root"]),
            join: vec![],
            cgroup_procs: vec![],
            mounts: vec![],
            privileged: false,
            log: LogSpec {
                dir: self.dir.path().join("logs").join(id),
                name: "0.log".into(),
                max_bytes: 1 << 20,
            },
            stdio: Default::default(),
        }
    }

    /// Creates, starts and waits for a container; returns (exit code, stdout lines, stderr lines).
    pub fn run(&self, spec: ContainerSpec) -> (i32, Vec<String>, Vec<String>) {
        let id = spec.id.clone();
        self.containers.create(&spec).unwrap();
        if let Err(e) = self.containers.start(&id) {
            let log = logs::read(&spec.log.dir, &spec.log.name, None);
            let status = self.containers.status(&id);
            let setup = std::fs::read_to_string(
                self.dir
                    .path()
                    .join("state/containers")
                    .join(&id)
                    .join("setup-error"),
            );
            panic!("start {id}: {e}\nstatus: {status:?}\nlog: {log:?}\nsetup: {setup:?}");
        }
        let status = self.containers.wait(&id, Duration::from_secs(30)).unwrap();
        let State::Exited(exit) = status.state else {
            panic!("{id} did not exit: {status:?}")
        };
        let lines = logs::read(&spec.log.dir, &spec.log.name, None).unwrap();
        let pick = |stream: &str| {
            lines
                .iter()
                .filter(|l| l.stream == stream)
                .map(|l| l.text.clone())
                .collect()
        };
        (exit.shell_code(), pick("stdout"), pick("stderr"))
    }
}

impl Drop for Node {
    /// Whatever a test left running (also when it failed) is stopped.
    fn drop(&mut self) {
        for status in self.containers.list().unwrap_or_default() {
            let _ = self.containers.stop(&status.id, Duration::from_millis(200));
        }
    }
}
