//! A test double of a node's stream side: it joins the cluster with the join token (a real
//! node certificate), registers, keeps `Streams.Offers` open and answers every offer with
//! `Streams.Open` — exec runs the command on this host with `std::process`-style pipes,
//! attach echoes stdin, logs writes numbered lines, port-forward connects to a loopback
//! server the test started. It records what it was asked, so tests can check what kubectl's
//! options became. It lives here, not in the product: the real node side is the kubelet's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use skiff_api::node::node_client::NodeClient;
use skiff_api::node::streams_client::StreamsClient;
use skiff_api::node::{
    AttachOffer, Data, ExecOffer, Exit, LogsOffer, Offer, OffersRequest, PodStatusRequest,
    PortForwardOffer, RegisterRequest, StreamFrame, offer, stream_frame::Frame,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Streaming};

/// What the double saw.
#[derive(Default)]
pub struct Seen {
    pub offers: Mutex<Vec<Offer>>,
    /// Terminal sizes (width, height) that arrived as `resize` frames.
    pub resizes: Mutex<Vec<(u32, u32)>>,
    /// Sessions opened and not yet over.
    pub live: AtomicUsize,
    /// Sessions the control plane ended before the work did (the user went away).
    pub cancelled: AtomicUsize,
    /// Lets a following log write its next line.
    pub next_log_line: Notify,
    /// Pod port → the loopback port it forwards to.
    pub ports: Mutex<HashMap<u32, u16>>,
    /// Offers for these pods are recorded but not answered until released.
    pub hold: Mutex<Vec<String>>,
    pub held: Mutex<Vec<Offer>>,
}

pub struct FakeNode {
    pub name: String,
    pub seen: Arc<Seen>,
    channel: Channel,
    rt: tokio::runtime::Runtime,
}

/// Where and how a node joins.
pub struct Join<'a> {
    pub api_url: &'a str,
    pub node_url: &'a str,
    pub ca_pem: &'a str,
    pub join_token: &'a str,
}

type Out = mpsc::Sender<StreamFrame>;

fn frame(f: Frame) -> StreamFrame {
    StreamFrame { frame: Some(f) }
}

fn data(channel: u32, bytes: &[u8]) -> StreamFrame {
    frame(Frame::Data(Data {
        channel,
        data: bytes.to_vec(),
    }))
}

fn exit(code: i32, error: &str) -> StreamFrame {
    frame(Frame::Exit(Exit {
        code,
        error: error.to_owned(),
    }))
}

impl FakeNode {
    /// Joins as `name`, registers and starts answering offers (on a runtime of its own, so
    /// the test may block on kubectl).
    pub fn start(join: &Join<'_>, name: &str) -> FakeNode {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("node dir");
        let seen = Arc::new(Seen::default());
        let channel = rt.block_on(async {
            let creds = skiff_kubelet::join::join(
                join.api_url,
                join.join_token,
                join.ca_pem,
                name,
                dir.path(),
            )
            .await
            .expect("join");
            let channel = Endpoint::from_shared(join.node_url.to_owned())
                .expect("endpoint")
                .tls_config(creds.tonic_client_tls(Some("127.0.0.1")))
                .expect("tls")
                .connect()
                .await
                .expect("connect to the node service");
            let node = json!({"metadata": {"name": name}});
            NodeClient::new(channel.clone())
                .register(RegisterRequest {
                    node: serde_json::to_vec(&node).expect("json"),
                })
                .await
                .expect("register");
            channel
        });
        let node = FakeNode {
            name: name.to_owned(),
            seen,
            channel,
            rt,
        };
        node.answer_offers();
        node
    }

    fn answer_offers(&self) {
        let channel = self.channel.clone();
        let seen = self.seen.clone();
        let name = self.name.clone();
        let connected = Arc::new(Notify::new());
        let ready = connected.clone();
        self.rt.spawn(async move {
            let mut offers = StreamsClient::new(channel.clone())
                .offers(OffersRequest { node_name: name })
                .await
                .expect("offers")
                .into_inner();
            ready.notify_one();
            while let Ok(Some(offer)) = offers.message().await {
                seen.offers.lock().unwrap().push(offer.clone());
                let pod = offer
                    .pod
                    .as_ref()
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                if seen.hold.lock().unwrap().contains(&pod) {
                    seen.held.lock().unwrap().push(offer);
                    continue;
                }
                tokio::spawn(answer(channel.clone(), offer, seen.clone()));
            }
        });
        // The Offers call is up once the server answered it.
        self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), connected.notified())
                .await
                .expect("the Offers call started")
        });
    }

    /// Reports the pod Running (kubectl port-forward insists on it).
    pub fn set_running(&self, namespace: &str, pod: &str, uid: &str) {
        let status = json!({"phase": "Running"});
        self.rt.block_on(async {
            NodeClient::new(self.channel.clone())
                .update_pod_status(PodStatusRequest {
                    namespace: namespace.into(),
                    name: pod.into(),
                    uid: uid.into(),
                    status: serde_json::to_vec(&status).expect("json"),
                })
                .await
                .expect("status")
        });
    }

    /// Connections to `pod_port` in the pod go to 127.0.0.1:`local`.
    pub fn map_port(&self, pod_port: u32, local: u16) {
        self.seen.ports.lock().unwrap().insert(pod_port, local);
    }

    pub fn offers(&self) -> Vec<Offer> {
        self.seen.offers.lock().unwrap().clone()
    }

    /// Waits until no session is open; false if some still are after `within`.
    pub fn wait_idle(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.seen.live.load(Ordering::SeqCst) == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Holds offers for `pod` instead of answering them.
    pub fn hold(&self, pod: &str) {
        self.seen.hold.lock().unwrap().push(pod.to_owned());
    }

    /// Waits for a held offer and takes it.
    pub fn take_held(&self, within: Duration) -> Option<Offer> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(offer) = self.seen.held.lock().unwrap().pop() {
                return Some(offer);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Answers a held offer now.
    pub fn answer(&self, offer: Offer) {
        self.rt
            .spawn(answer(self.channel.clone(), offer, self.seen.clone()));
    }

    /// Dials `Open` for offer `id` and reports how the control plane answered.
    pub fn try_open(&self, id: &str) -> Code {
        self.rt.block_on(async {
            let (tx, rx) = mpsc::channel(1);
            tx.send(frame(Frame::Open(id.to_owned()))).await.ok();
            let result = StreamsClient::new(self.channel.clone())
                .open(ReceiverStream::new(rx))
                .await;
            match result {
                Ok(response) => {
                    // Errors of a streaming call may come with the first message.
                    match response.into_inner().message().await {
                        Err(status) => status.code(),
                        Ok(_) => Code::Ok,
                    }
                }
                Err(status) => status.code(),
            }
        })
    }
}

/// Decrements the live count when a session ends, however it ends.
struct Live(Arc<Seen>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(channel: Channel, offer: Offer, seen: Arc<Seen>) {
    seen.live.fetch_add(1, Ordering::SeqCst);
    let _live = Live(seen.clone());
    let (out, rx) = mpsc::channel(16);
    let _ = out.send(frame(Frame::Open(offer.id.clone()))).await;
    let mut inbound = match StreamsClient::new(channel)
        .open(ReceiverStream::new(rx))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            eprintln!("fake node: Open failed: {status}");
            return;
        }
    };
    let pod = offer.pod.clone().unwrap_or_default().name;
    let inbound = &mut inbound;
    let cancelled = match offer.kind {
        Some(offer::Kind::Logs(l)) => logs(&out, inbound, l, &pod, &seen).await,
        Some(offer::Kind::Exec(e)) => exec(&out, inbound, e, &seen).await,
        Some(offer::Kind::Attach(a)) => attach(&out, inbound, a).await,
        Some(offer::Kind::PortForward(p)) => port_forward(&out, inbound, p, &pod, &seen).await,
        None => false,
    };
    if cancelled {
        seen.cancelled.fetch_add(1, Ordering::SeqCst);
    } else {
        // After `exit` the call stays open until the control plane ends it: dropping it
        // here would reset the HTTP/2 stream and could discard frames not yet read.
        let _ = tokio::time::timeout(Duration::from_secs(60), ended(inbound)).await;
    }
}

/// Whether the control plane ended the call (the user went away).
async fn ended(inbound: &mut Streaming<StreamFrame>) -> bool {
    loop {
        match inbound.message().await {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return true,
        }
    }
}

async fn logs(
    out: &Out,
    inbound: &mut Streaming<StreamFrame>,
    l: LogsOffer,
    pod: &str,
    seen: &Seen,
) -> bool {
    if l.previous {
        let why = format!(
            "previous terminated container \"{}\" in pod \"{pod}\" not found",
            l.container
        );
        let _ = out.send(exit(0, &why)).await;
        return false;
    }
    for n in 1..=3 {
        let _ = out.send(data(1, format!("line {n}\n").as_bytes())).await;
    }
    if !l.follow {
        let _ = out.send(exit(0, "")).await;
        return false;
    }
    tokio::select! {
        () = seen.next_log_line.notified() => {
            let _ = out.send(data(1, b"line 4\n")).await;
        }
        _ = ended(inbound) => return true,
    }
    ended(inbound).await
}

async fn copy_out<R: AsyncRead + Unpin>(mut from: R, out: Out, channel: u32) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(data(channel, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `tty-sizes`: a pretend terminal program that prints every size it is given and ends
/// on `q`.
async fn tty_sizes(out: &Out, inbound: &mut Streaming<StreamFrame>, seen: &Seen) -> bool {
    loop {
        match inbound.message().await {
            Ok(Some(StreamFrame { frame: Some(f) })) => match f {
                Frame::Resize(size) => {
                    seen.resizes.lock().unwrap().push((size.width, size.height));
                    let line = format!("size {}x{}\r\n", size.width, size.height);
                    let _ = out.send(data(1, line.as_bytes())).await;
                }
                Frame::Data(d) if d.data.contains(&b'q') => break,
                Frame::Close(0) => break,
                _ => {}
            },
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return true,
        }
    }
    let _ = out.send(exit(0, "")).await;
    false
}

async fn exec(out: &Out, inbound: &mut Streaming<StreamFrame>, e: ExecOffer, seen: &Seen) -> bool {
    if e.command == ["tty-sizes"] {
        return tty_sizes(out, inbound, seen).await;
    }
    let mut command = tokio::process::Command::new(&e.command[0]);
    command
        .args(&e.command[1..])
        .stdin(if e.stdin {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let why = format!("exec: {:?}: {err}", e.command[0]);
            let _ = out.send(exit(0, &why)).await;
            return false;
        }
    };
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let err_channel = if e.tty { 1 } else { 2 };
    let input = async move {
        let mut stdin = stdin;
        loop {
            match inbound.message().await {
                Ok(Some(StreamFrame { frame: Some(f) })) => match f {
                    Frame::Data(d) => {
                        if let Some(s) = stdin.as_mut()
                            && s.write_all(&d.data).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    Frame::Close(0) => stdin = None,
                    Frame::Resize(size) => {
                        seen.resizes.lock().unwrap().push((size.width, size.height))
                    }
                    _ => {}
                },
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    };
    let outputs = async {
        tokio::join!(
            copy_out(stdout, out.clone(), 1),
            copy_out(stderr, out.clone(), err_channel)
        );
        child.wait().await
    };
    tokio::pin!(input);
    tokio::select! {
        status = outputs => {
            let code = status.ok().and_then(|s| s.code()).unwrap_or(-1);
            let _ = out.send(exit(code, "")).await;
            false
        }
        () = &mut input => true, // cancelled: dropping the child kills it
    }
}

async fn attach(out: &Out, inbound: &mut Streaming<StreamFrame>, a: AttachOffer) -> bool {
    let hello = format!("attached to {}\n", a.container);
    let _ = out.send(data(1, hello.as_bytes())).await;
    if a.stdin {
        loop {
            match inbound.message().await {
                Ok(Some(StreamFrame {
                    frame: Some(Frame::Data(d)),
                })) => {
                    let _ = out.send(data(1, &d.data)).await;
                }
                Ok(Some(StreamFrame {
                    frame: Some(Frame::Close(0)),
                })) => break,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return true,
            }
        }
    }
    let _ = out.send(exit(0, "")).await;
    false
}

async fn port_forward(
    out: &Out,
    inbound: &mut Streaming<StreamFrame>,
    p: PortForwardOffer,
    pod: &str,
    seen: &Seen,
) -> bool {
    let local = seen.ports.lock().unwrap().get(&p.port).copied();
    let connected = match local {
        Some(local) => tokio::net::TcpStream::connect(("127.0.0.1", local))
            .await
            .ok(),
        None => None,
    };
    let Some(socket) = connected else {
        let why = format!(
            "error forwarding port {} to pod {pod}: dial tcp 127.0.0.1:{}: connect: connection refused",
            p.port, p.port
        );
        let _ = out.send(exit(0, &why)).await;
        return false;
    };
    let (rd, mut wr) = socket.into_split();
    let input = async move {
        loop {
            match inbound.message().await {
                Ok(Some(StreamFrame {
                    frame: Some(Frame::Data(d)),
                })) => {
                    if wr.write_all(&d.data).await.is_err() {
                        // The pod's side is gone; the output copy reports the end.
                        std::future::pending::<()>().await;
                    }
                }
                Ok(Some(StreamFrame {
                    frame: Some(Frame::Close(0)),
                })) => {
                    let _ = wr.shutdown().await;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    };
    tokio::pin!(input);
    tokio::select! {
        () = copy_out(rd, out.clone(), 1) => {
            let _ = out.send(exit(0, "")).await;
            false
        }
        () = &mut input => true,
    }
}
