//! A node for the stream tests: `LocalPods` over a temp root with the busybox test image, its
//! pods on a bridge inside a network namespace the test made (never the host's network), in a
//! cgroup below the test's own; and stream sessions driven in process through
//! `skiff_kubelet::stream::serve` with a pair of frame channels. Everything is removed on drop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use skiff_api::node::stream_frame::Frame;
use skiff_api::node::{Data, Offer, PodRef, StreamFrame, TerminalSize, offer};
use skiff_kubelet::local::{LocalConfig, LocalPods};
use skiff_kubelet::stream::{PodIndex, StreamContext, serve};
use skiff_runtime::cgroup::{CgroupFs, Parent};
use skiff_runtime::image::{ImageStore, NoProgress, Reference};
use skiff_runtime::ns::{self, NsKind, PinnedNs};
use tokio::sync::mpsc;

use super::build_image;

pub const IMAGE: &str = "skiff.test/busybox:latest";

pub struct StreamNode {
    pub dir: tempfile::TempDir,
    pub pods: Arc<LocalPods>,
    pub ctx: StreamContext,
    pub cfg: LocalConfig,
    cgroup_parent: String,
    netns: std::path::PathBuf,
    made: std::sync::Mutex<Vec<String>>,
}

impl StreamNode {
    pub fn new(test: &str) -> StreamNode {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let store = ImageStore::open(&root).unwrap();
        let layout = build_image(dir.path(), "single", &[]);
        let name = Reference::parse(IMAGE).unwrap();
        // On a thread of its own: the tests themselves run inside a tokio runtime.
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(skiff_runtime::image::import(
                    &store,
                    &layout,
                    Some(&name),
                    Arc::new(NoProgress),
                ))
                .unwrap();
            })
            .join()
            .unwrap();
        });
        let pins = ns::prepare_state_dir(&dir.path().join("node-ns")).unwrap();
        let netns = pins.join("net");
        PinnedNs::create(NsKind::Net, &netns, || Ok(())).unwrap();
        let cgroup_parent = format!("skiff-test-{}-{test}", std::process::id());
        let cfg = LocalConfig {
            state_dir: root.join("run"),
            image_root: root.clone(),
            setup_binary: env!("CARGO_BIN_EXE_skiff-setup").into(),
            cgroup_parent: cgroup_parent.clone().into(),
            node_netns: Some(netns.clone()),
            pod_cidr: "10.79.0.0/24".parse().unwrap(),
            bridge: "skiffst0".into(),
            cluster_dns: None,
            host_ips: vec![],
        };
        let pods = Arc::new(LocalPods::open(cfg.clone()).unwrap());
        let ctx = StreamContext {
            pods: pods.clone(),
            index: Arc::new(PodIndex::default()),
        };
        StreamNode {
            dir,
            pods,
            ctx,
            cfg,
            cgroup_parent,
            netns,
            made: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Runs the pod of `yaml` (uid `uid`), starts its containers and tells the stream
    /// sessions about it, as the agent does.
    pub fn run_pod(&self, uid: &str, yaml: &str) -> Arc<Pod> {
        let mut pod = skiff_kubelet::podspec::parse(yaml).unwrap();
        pod.metadata.uid = Some(uid.into());
        pod.metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        self.made.lock().unwrap().push(uid.into());
        let record = self.pods.create_pod(&pod, uid, None).unwrap();
        for c in &record.containers {
            self.pods.start_container(&record, &c.name).unwrap();
        }
        let pod = Arc::new(pod);
        self.ctx.index.insert(pod.clone());
        pod
    }

    /// The host PID of a running container's init.
    pub fn init_pid(&self, uid: &str, container: &str) -> i32 {
        let record = self.pods.record(uid).unwrap();
        self.pods
            .container_status(&record, container)
            .unwrap()
            .pid
            .expect("the container runs")
    }

    /// Waits (up to 30 s) until the container's log has a line containing `text`.
    pub fn wait_log(&self, uid: &str, container: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lines = self
                .pods
                .logs(uid, Some(container), None)
                .unwrap_or_default();
            if lines.iter().any(|l| l.text.contains(text)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the log: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A fresh `StreamContext` over the same state, as a restarted kubelet has.
    pub fn restarted(&self) -> StreamContext {
        let ctx = StreamContext {
            pods: Arc::new(LocalPods::open(self.cfg.clone()).unwrap()),
            index: Arc::new(PodIndex::default()),
        };
        for uid in self.made.lock().unwrap().iter() {
            if let Some(pod) = self.ctx.index.get(uid) {
                ctx.index.insert(pod);
            }
        }
        ctx
    }

    /// Opens a session for `kind` on pod `pod`.
    pub fn open(&self, pod: &Pod, kind: offer::Kind) -> Session {
        open_with(self.ctx.clone(), offer_for(pod, kind))
    }
}

/// An offer of `kind` for `pod`.
pub fn offer_for(pod: &Pod, kind: offer::Kind) -> Offer {
    Offer {
        id: format!("offer-{}", rand_id()),
        pod: Some(PodRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }),
        kind: Some(kind),
    }
}

/// A session served with `ctx` (the test plays the control plane).
pub fn open_with(ctx: StreamContext, offer: Offer) -> Session {
    let (in_tx, in_rx) = mpsc::channel(16);
    let (out_tx, out_rx) = mpsc::channel(16);
    let frames = futures::stream::unfold(in_rx, |mut rx: mpsc::Receiver<StreamFrame>| async move {
        rx.recv().await.map(|f| (f, rx))
    });
    let task = tokio::spawn(async move {
        serve(&ctx, offer, Box::pin(frames), out_tx).await;
    });
    Session {
        tx: Some(in_tx),
        rx: out_rx,
        task: Some(task),
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Drop for StreamNode {
    /// Removes every pod (containers, sandboxes, cgroups), then the test's mounts and cgroup.
    fn drop(&mut self) {
        for uid in self.made.lock().map(|m| m.clone()).unwrap_or_default() {
            let _ = self.pods.stop(&uid, Some(Duration::from_millis(100)));
            let _ = self.pods.remove(&uid);
        }
        let _ = ns::release_state_dir(&self.dir.path().join("root/run/sandboxes"));
        let _ = PinnedNs::remove(&self.netns);
        let _ = ns::release_state_dir(self.netns.parent().unwrap());
        if let Ok(parent) =
            CgroupFs::detect().and_then(|fs| fs.open(&Parent::Own, &self.cgroup_parent))
        {
            let _ = parent.remove();
        }
    }
}

/// What a session sent back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Output {
    pub channels: BTreeMap<u32, Vec<u8>>,
    /// `(code, error)` of the final frame; `None` if the session ended without one.
    pub exit: Option<(i32, String)>,
}

impl Output {
    pub fn text(&self, channel: u32) -> String {
        String::from_utf8_lossy(self.channels.get(&channel).map_or(&[][..], |v| v)).into_owned()
    }
}

/// The test's end of one session: it plays the control plane.
pub struct Session {
    tx: Option<mpsc::Sender<StreamFrame>>,
    pub rx: mpsc::Receiver<StreamFrame>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Session {
    async fn send(&self, frame: Frame) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(StreamFrame { frame: Some(frame) }).await;
        }
    }

    /// A sender of frames to the node (for a writer running beside a reader).
    pub fn input(&self) -> mpsc::Sender<StreamFrame> {
        self.tx.clone().expect("the session is open")
    }

    pub async fn data(&self, channel: u32, bytes: &[u8]) {
        self.send(Frame::Data(Data {
            channel,
            data: bytes.to_vec(),
        }))
        .await;
    }

    pub async fn close(&self, channel: u32) {
        self.send(Frame::Close(channel)).await;
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.send(Frame::Resize(TerminalSize { width, height }))
            .await;
    }

    /// The next frame from the node, waiting at most 60 s.
    pub async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
            .await
            .expect("the node answers within a minute")
            .and_then(|f| f.frame)
    }

    /// Reads output until channel `channel` holds `text` (panics after 60 s).
    pub async fn read_until(&mut self, out: &mut Output, channel: u32, text: &str) {
        while !out.text(channel).contains(text) {
            match self.next().await {
                Some(Frame::Data(d)) => out.channels.entry(d.channel).or_default().extend(d.data),
                Some(Frame::Exit(e)) => panic!("exited before {text:?}: {e:?}, got {out:?}"),
                other => panic!("before {text:?}: {other:?}"),
            }
        }
    }

    /// Reads everything up to the exit, and waits for the session's task to end.
    pub async fn finish(mut self) -> Output {
        let mut out = Output::default();
        self.finish_into(&mut out).await;
        out
    }

    pub async fn finish_into(&mut self, out: &mut Output) {
        loop {
            let frame = match tokio::time::timeout(Duration::from_secs(60), self.rx.recv()).await {
                Ok(f) => f.and_then(|f| f.frame),
                Err(_) => {
                    let t = out.text(1);
                    let tail = &t[t.floor_char_boundary(t.len().saturating_sub(300))..];
                    panic!(
                        "no frame for a minute after {} bytes on 1: ...{tail:?}",
                        t.len()
                    );
                }
            };
            let Some(frame) = frame else { break };
            match frame {
                Frame::Data(d) => out.channels.entry(d.channel).or_default().extend(d.data),
                Frame::Exit(e) => {
                    out.exit = Some((e.code, e.error));
                    break;
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
        self.join().await;
    }

    /// The user goes away: the control plane ends the call.
    pub async fn hang_up(mut self) {
        self.tx = None;
        self.rx.close();
        self.join().await;
    }

    async fn join(&mut self) {
        self.tx = None;
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("the session ends within a minute")
                .expect("the session task does not panic");
        }
    }
}
