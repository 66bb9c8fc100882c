//! The executors against real servers on 127.0.0.1: fixed HTTP answers, a TLS server with a
//! self-signed certificate, the standard gRPC health service (tonic-health), closed ports, and
//! a fake `ExecProber`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ContainerPort;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::probe::config::{Grpc, HttpGet, ProbeKind, ProbeTiming, Scheme, TcpSocket};

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
/// Generous: only the timeout tests rely on a probe taking long.
const TIMEOUT: Duration = Duration::from_secs(5);

fn spec(handler: Handler, timeout: Duration) -> ProbeSpec {
    ProbeSpec {
        kind: ProbeKind::Readiness,
        timing: ProbeTiming {
            timeout,
            ..ProbeTiming::default()
        },
        handler,
    }
}

fn target(ports: Vec<ContainerPort>) -> Target {
    Target {
        pod_ip: LOCALHOST,
        ports,
        container_id: "c0ffee".into(),
    }
}

fn http_get(port: u16, path: &str) -> Handler {
    Handler::HttpGet(HttpGet {
        host: None,
        port: PortRef::Number(port),
        path: path.into(),
        scheme: Scheme::Http,
        headers: vec![("X-Probe".into(), "yes".into())],
    })
}

struct NoExec;

impl ExecProber for NoExec {
    fn exec(&self, _: &str, _: &[String], _: Duration) -> Result<ExecOutput, String> {
        Err("no exec in this test".into())
    }
}

async fn probe(spec: &ProbeSpec, target: &Target) -> ProbeResult {
    let exec: Arc<dyn ExecProber> = Arc::new(NoExec);
    run_probe(spec, target, &exec).await
}

fn failure(result: ProbeResult) -> String {
    match result {
        ProbeResult::Failure(msg) => msg,
        ProbeResult::Success => panic!("expected a failure"),
    }
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> u16 {
    let l = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    l.local_addr().unwrap().port()
}

/// Reads a request head from `s`; returns it as text.
async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Serves every connection by answering `response` (after the request head) and then holding
/// the connection open for `hold`; sends each request head to the returned channel.
async fn serve<S, F>(
    wrap: F,
    response: Vec<u8>,
    hold: Duration,
) -> (u16, mpsc::UnboundedReceiver<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(tokio::net::TcpStream) -> std::pin::Pin<Box<dyn Future<Output = Option<S>> + Send>>
        + Send
        + Sync
        + 'static,
{
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    let wrap = Arc::new(wrap);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tx, response, wrap) = (tx.clone(), response.clone(), Arc::clone(&wrap));
            tokio::spawn(async move {
                let Some(mut s) = wrap(tcp).await else { return };
                let _ = tx.send(read_request(&mut s).await);
                let _ = s.write_all(&response).await;
                tokio::time::sleep(hold).await;
            });
        }
    });
    (port, rx)
}

async fn serve_http(response: &str) -> (u16, mpsc::UnboundedReceiver<String>) {
    serve_bytes(response.as_bytes().to_vec(), Duration::ZERO).await
}

async fn serve_bytes(response: Vec<u8>, hold: Duration) -> (u16, mpsc::UnboundedReceiver<String>) {
    serve(|tcp| Box::pin(async move { Some(tcp) }), response, hold).await
}

#[tokio::test]
async fn http_200_is_success_and_sends_the_request_the_kubelet_sends() {
    let (port, mut requests) = serve_http("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let result = probe(&spec(http_get(port, "/healthz"), TIMEOUT), &target(vec![])).await;
    assert_eq!(result, ProbeResult::Success);
    let request = requests.recv().await.unwrap();
    assert!(
        request.starts_with("GET /healthz HTTP/1.1\r\n"),
        "{request}"
    );
    for header in [
        format!("Host: 127.0.0.1:{port}\r\n"),
        "User-Agent: kube-probe/1.33\r\n".into(),
        "X-Probe: yes\r\n".into(),
        "Connection: close\r\n".into(),
    ] {
        assert!(request.contains(&header), "{header:?} in {request}");
    }
}

#[tokio::test]
async fn http_500_fails_with_the_status_code() {
    let (port, _rx) =
        serve_http("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").await;
    let msg = failure(probe(&spec(http_get(port, "/"), TIMEOUT), &target(vec![])).await);
    assert_eq!(msg, "HTTP probe failed with statuscode: 500");
}

#[tokio::test]
async fn http_redirect_is_not_followed_and_counts_as_success() {
    let (port, mut rx) = serve_http("HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\n\r\n").await;
    let result = probe(&spec(http_get(port, "/"), TIMEOUT), &target(vec![])).await;
    assert_eq!(result, ProbeResult::Success);
    rx.recv().await.unwrap();
    assert!(rx.try_recv().is_err(), "the redirect was followed");
}

#[tokio::test]
async fn http_named_port_is_resolved_from_the_container_ports() {
    let (port, _rx) = serve_http("HTTP/1.1 204 No Content\r\n\r\n").await;
    let ports = vec![ContainerPort {
        name: Some("health".into()),
        container_port: i32::from(port),
        ..Default::default()
    }];
    let mut handler = http_get(0, "/");
    if let Handler::HttpGet(h) = &mut handler {
        h.port = PortRef::Name("health".into());
    }
    let result = probe(&spec(handler.clone(), TIMEOUT), &target(ports)).await;
    assert_eq!(result, ProbeResult::Success);
    let msg = failure(probe(&spec(handler, TIMEOUT), &target(vec![])).await);
    assert_eq!(msg, "port health not found");
}

#[tokio::test]
async fn http_connection_refused_is_worded_like_the_kubelet() {
    let port = closed_port().await;
    let msg = failure(probe(&spec(http_get(port, "/healthz"), TIMEOUT), &target(vec![])).await);
    assert_eq!(
        msg,
        format!(
            "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        )
    );
}

#[tokio::test]
async fn http_server_that_never_answers_times_out() {
    let (port, _rx) = serve_bytes(Vec::new(), Duration::from_secs(30)).await;
    let timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let msg = failure(probe(&spec(http_get(port, "/"), timeout), &target(vec![])).await);
    assert!(msg.starts_with("timeout: Get \"http://127.0.0.1:"), "{msg}");
    assert!(started.elapsed() < TIMEOUT, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn http_garbage_answer_fails() {
    let (port, _rx) = serve_http("SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
    let msg = failure(probe(&spec(http_get(port, "/"), TIMEOUT), &target(vec![])).await);
    assert!(
        msg.contains("malformed HTTP response \"SSH-2.0-OpenSSH_9.2\""),
        "{msg}"
    );
    let (port, _rx) = serve_http("").await;
    let msg = failure(probe(&spec(http_get(port, "/"), TIMEOUT), &target(vec![])).await);
    assert!(msg.ends_with(": EOF"), "{msg}");
}

#[tokio::test]
async fn http_reads_at_most_10_kib_of_a_body_that_never_ends() {
    // 1 MiB without a length, and the connection stays open: reading it all would time out.
    let mut response = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    response.extend(std::iter::repeat_n(b'x', 1 << 20));
    let (port, _rx) = serve_bytes(response, Duration::from_secs(30)).await;
    let result = probe(&spec(http_get(port, "/"), TIMEOUT), &target(vec![])).await;
    assert_eq!(result, ProbeResult::Success);
}

#[tokio::test]
async fn https_with_a_self_signed_certificate_is_not_verified() {
    let cert = rcgen::generate_simple_self_signed(vec!["pod.invalid".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let wrap = move |tcp| {
        let acceptor = acceptor.clone();
        Box::pin(async move { acceptor.accept(tcp).await.ok() })
            as std::pin::Pin<Box<dyn Future<Output = _> + Send>>
    };
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
    let (port, mut requests) = serve(wrap, ok, Duration::ZERO).await;
    let mut handler = http_get(port, "/secure");
    if let Handler::HttpGet(h) = &mut handler {
        h.scheme = Scheme::Https;
    }
    let result = probe(&spec(handler, TIMEOUT), &target(vec![])).await;
    assert_eq!(result, ProbeResult::Success);
    let request = requests.recv().await.unwrap();
    assert!(request.starts_with("GET /secure HTTP/1.1\r\n"), "{request}");
}

#[tokio::test]
async fn https_against_a_plain_http_server_fails_in_the_handshake() {
    // Answers plain HTTP to the ClientHello at once.
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let mut handler = http_get(port, "/");
    if let Handler::HttpGet(h) = &mut handler {
        h.scheme = Scheme::Https;
    }
    let msg = failure(probe(&spec(handler, TIMEOUT), &target(vec![])).await);
    assert!(
        msg.starts_with(&format!("Get \"https://127.0.0.1:{port}/\": tls: ")),
        "{msg}"
    );
}

fn tcp_socket(port: u16) -> Handler {
    Handler::TcpSocket(TcpSocket {
        host: None,
        port: PortRef::Number(port),
    })
}

#[tokio::test]
async fn tcp_connect_succeeds_on_a_listening_port_and_fails_on_a_closed_one() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let result = probe(&spec(tcp_socket(port), TIMEOUT), &target(vec![])).await;
    assert_eq!(result, ProbeResult::Success);
    drop(listener);
    let msg = failure(probe(&spec(tcp_socket(port), TIMEOUT), &target(vec![])).await);
    assert_eq!(
        msg,
        format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
    );
}

/// The standard health service on loopback: "" and "app" serving, "sick" not serving.
async fn health_server() -> SocketAddr {
    use tonic_health::ServingStatus;
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("app", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("sick", ServingStatus::NotServing)
        .await;
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
    });
    addr
}

fn grpc(port: u16, service: &str) -> Handler {
    Handler::Grpc(Grpc {
        port,
        service: service.into(),
    })
}

#[tokio::test]
async fn grpc_health_check_against_the_standard_service() {
    let port = health_server().await.port();
    let t = target(vec![]);
    assert_eq!(
        probe(&spec(grpc(port, ""), TIMEOUT), &t).await,
        ProbeResult::Success
    );
    assert_eq!(
        probe(&spec(grpc(port, "app"), TIMEOUT), &t).await,
        ProbeResult::Success
    );
    let msg = failure(probe(&spec(grpc(port, "sick"), TIMEOUT), &t).await);
    assert_eq!(msg, "service unhealthy (responded with \"NOT_SERVING\")");
    let msg = failure(probe(&spec(grpc(port, "nobody"), TIMEOUT), &t).await);
    assert!(msg.contains("code = NotFound"), "{msg}");
}

#[tokio::test]
async fn grpc_against_a_closed_port_fails_to_connect() {
    let port = closed_port().await;
    let msg = failure(probe(&spec(grpc(port, ""), TIMEOUT), &target(vec![])).await);
    assert!(
        msg.starts_with(&format!("failed to connect service \"127.0.0.1:{port}\"")),
        "{msg}"
    );
}

#[tokio::test]
async fn grpc_against_a_server_that_never_answers_times_out() {
    let (port, _rx) = serve_bytes(Vec::new(), Duration::from_secs(30)).await;
    let timeout = Duration::from_millis(300);
    let msg = failure(probe(&spec(grpc(port, ""), timeout), &target(vec![])).await);
    assert!(
        msg.starts_with("timeout: ") || msg.contains("timed out"),
        "{msg}"
    );
}

/// Answers each command from a table; `sleep` sleeps first (on its blocking thread).
struct FakeExec {
    sleep: Duration,
}

impl ExecProber for FakeExec {
    fn exec(&self, container_id: &str, argv: &[String], _: Duration) -> Result<ExecOutput, String> {
        assert_eq!(container_id, "c0ffee");
        std::thread::sleep(self.sleep);
        match argv.first().map(String::as_str) {
            Some("true") => Ok(ExecOutput::default()),
            Some("cat") => Ok(ExecOutput {
                exit_code: 1,
                output: format!("cat: can't open '{}': No such file\n", argv[1]).into_bytes(),
            }),
            Some("big") => Ok(ExecOutput {
                exit_code: 2,
                output: vec![b'y'; 100_000],
            }),
            _ => Err("container c0ffee is not running".into()),
        }
    }
}

async fn exec_probe(argv: &[&str], timeout: Duration, sleep: Duration) -> ProbeResult {
    let handler = Handler::Exec(argv.iter().map(|s| s.to_string()).collect());
    let exec: Arc<dyn ExecProber> = Arc::new(FakeExec { sleep });
    run_probe(&spec(handler, timeout), &target(vec![]), &exec).await
}

#[tokio::test]
async fn exec_exit_code_decides_and_output_is_in_the_message() {
    let z = Duration::ZERO;
    assert_eq!(
        exec_probe(&["true"], TIMEOUT, z).await,
        ProbeResult::Success
    );
    let msg = failure(exec_probe(&["cat", "/tmp/ready"], TIMEOUT, z).await);
    assert_eq!(
        msg,
        "command \"cat /tmp/ready\" exited with 1: cat: can't open '/tmp/ready': No such file"
    );
    let msg = failure(exec_probe(&["big"], TIMEOUT, z).await);
    assert!(msg.len() < 10 * 1024 + 100, "{}", msg.len());
    let msg = failure(exec_probe(&["gone"], TIMEOUT, z).await);
    assert_eq!(
        msg,
        "command \"gone\" could not run: container c0ffee is not running"
    );
}

#[tokio::test]
async fn exec_that_outlives_the_timeout_fails() {
    let msg = failure(
        exec_probe(
            &["true"],
            Duration::from_millis(50),
            Duration::from_millis(500),
        )
        .await,
    );
    assert_eq!(msg, "timeout: command \"true\" did not finish within 50ms");
}
