//! End to end: a node joins the in-process API server with the join token from the data
//! dir (`skiff_kubelet::join`), and its certificate is its identity on the node port — in a
//! raw rustls handshake (`NodeTls::server_config`) and in a tonic server
//! (`NodeTls::tonic_server_tls` + `NodeCredentials::tonic_client_tls`, `peer_certs()`).
//! Wrong, expired or missing tokens, bad bodies and bad names are refused with a Status.
//! A node that knows only the CA's hash discovers the CA (`skiff_kubelet::discovery`), and
//! a provisioner's join token chosen in advance joins like a generated one.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use sha2::Digest;
use skiff_api::join::JoinRequest;
use skiff_controlplane::apiserver::{self, ApiServerConfig, NodeTls, RunningApiServer};
use skiff_controlplane::store::{EmbeddedStore, Store};
use skiff_kubelet::discovery;
use skiff_kubelet::join::{self, JoinError, NodeCredentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x509_parser::prelude::{FromDer, X509Certificate};

struct Server {
    _dir: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    api: RunningApiServer,
    store: Arc<dyn Store>,
    url: String,
}

async fn start() -> Server {
    start_with(None).await
}

async fn start_with(join_token: Option<&str>) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ApiServerConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.join_token = join_token.map(str::to_owned);
    std::fs::create_dir_all(&config.data_dir).expect("data dir");
    let data_dir = config.data_dir.clone();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&data_dir).expect("store"));
    let api = apiserver::start_with_store(config, store.clone())
        .await
        .expect("start the API server");
    let url = format!("https://{}", api.addr);
    Server {
        _dir: dir,
        data_dir,
        api,
        store,
        url,
    }
}

/// One HTTPS POST trusting `ca_pem`; the status code and the JSON answer.
async fn post(
    addr: SocketAddr,
    ca_pem: &str,
    bearer: &str,
    path: &str,
    body: &[u8],
) -> (u16, Value) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("ca pem")).expect("ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("tls");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http");
    tokio::spawn(conn);
    let request = hyper::Request::post(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("send");
    let code = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn parse_cert(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate pem")
}

fn rejected_code(result: Result<impl std::fmt::Debug, JoinError>) -> u16 {
    match result {
        Err(JoinError::Rejected { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_with_the_token_file_and_its_certificate_is_its_identity() {
    let s = start().await;
    let token = std::fs::read_to_string(s.data_dir.join(apiserver::JOIN_TOKEN_FILE))
        .expect("the join token file");
    assert_eq!(token.trim(), s.api.join_token);
    let mode = std::fs::metadata(s.data_dir.join(apiserver::JOIN_TOKEN_FILE)).expect("stat");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let node_dir = tempfile::tempdir().expect("node dir");
    let creds = join::join(
        &s.url,
        token.trim(),
        &s.api.ca_pem,
        "worker-1",
        node_dir.path(),
    )
    .await
    .expect("join");
    assert_eq!(creds.node_name, "worker-1");
    assert_eq!(creds.ca_pem, s.api.ca_pem);

    let der = parse_cert(&creds.cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    let cn: Vec<_> = cert
        .subject()
        .iter_common_name()
        .map(|a| a.as_str().unwrap())
        .collect();
    let o: Vec<_> = cert
        .subject()
        .iter_organization()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        (cn.as_slice(), o.as_slice()),
        (
            ["system:node:worker-1"].as_slice(),
            ["system:nodes"].as_slice()
        )
    );
    let eku = cert
        .extended_key_usage()
        .expect("eku")
        .expect("eku present")
        .value;
    assert!(eku.client_auth && !eku.server_auth);
    let year = SystemTime::now() + Duration::from_secs(364 * 86_400);
    assert!(creds.is_valid_at(year) && !creds.is_valid_at(year + Duration::from_secs(2 * 86_400)));
    assert_eq!(apiserver::node_name(&der).as_deref(), Some("worker-1"));

    // A restart loads the same credentials instead of joining again.
    let loaded = NodeCredentials::load(node_dir.path()).expect("load");
    assert_eq!(loaded.cert_pem, creds.cert_pem);
    let again = join::load_or_join(
        &s.url,
        "bogus0.0000000000000000",
        &s.api.ca_pem,
        "worker-1",
        node_dir.path(),
    )
    .await
    .expect("loaded without joining");
    assert_eq!(again.cert_pem, creds.cert_pem);
    // Joining again with the same name gets a fresh certificate.
    let fresh = join::join(
        &s.url,
        token.trim(),
        &s.api.ca_pem,
        "worker-1",
        node_dir.path(),
    )
    .await
    .expect("join again");
    assert_ne!(fresh.cert_pem, creds.cert_pem);

    // The node port accepts the node's certificate in a real handshake.
    let peer = handshake(&s.api.node_tls, Some(client_identity(&fresh))).await;
    assert_eq!(peer.expect("accepted").as_deref(), Some("worker-1"));

    // The join token is good for the join endpoint only.
    let (code, _) = post(
        s.api.addr,
        &s.api.ca_pem,
        token.trim(),
        "/api/v1/nodes",
        b"",
    )
    .await;
    assert_eq!(code, 401);
    s.api.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_bodies_and_names_are_refused_with_a_status() {
    let s = start().await;
    let (_, csr) = join::key_and_csr("n1").expect("csr");
    let request = |name: &str| JoinRequest {
        node_name: name.to_owned(),
        csr: csr.clone(),
    };
    let ca = s.api.ca_pem.as_str();

    let wrong = "abcdef.0123456789abcdef";
    assert_eq!(
        rejected_code(join::request_certificate(&s.url, wrong, ca, &request("n1")).await),
        401
    );
    let forged = format!("{}x", &s.api.join_token[..s.api.join_token.len() - 1]);
    let forged = if forged == s.api.join_token {
        format!("{}y", &forged[..forged.len() - 1])
    } else {
        forged
    };
    assert_eq!(
        rejected_code(join::request_certificate(&s.url, &forged, ca, &request("n1")).await),
        401
    );
    assert_eq!(
        rejected_code(join::request_certificate(&s.url, &s.api.token, ca, &request("n1")).await),
        401,
        "the admin token is not a join token"
    );
    let an_hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600);
    let expired =
        apiserver::mint_join_token_at(s.store.as_ref(), Some(Duration::from_secs(60)), an_hour_ago)
            .await
            .expect("mint");
    assert_eq!(
        rejected_code(join::request_certificate(&s.url, &expired, ca, &request("n1")).await),
        401
    );
    let (code, status) = post(s.api.addr, ca, "", "/skiff/v1/join", b"{}").await;
    assert_eq!((code, status["kind"].as_str()), (401, Some("Status")));

    let token = apiserver::mint_join_token(s.store.as_ref(), Some(Duration::from_secs(600)))
        .await
        .expect("mint");
    let bad_csr = JoinRequest {
        node_name: "n1".into(),
        csr: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            .into(),
    };
    assert_eq!(
        rejected_code(join::request_certificate(&s.url, &token, ca, &bad_csr).await),
        400
    );
    let (code, status) = post(s.api.addr, ca, &token, "/skiff/v1/join", b"not json").await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));
    let (code, status) = post(
        s.api.addr,
        ca,
        &token,
        "/skiff/v1/join",
        &serde_json::to_vec(&request("Bad_Name")).unwrap(),
    )
    .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{status}"
    );
    assert_eq!(status["details"]["causes"][0]["field"], "nodeName");
    assert_eq!(
        rejected_code(join::request_certificate(&s.url, &token, ca, &request("")).await),
        422
    );

    // Minting is for the admin only.
    let (code, minted) = post(
        s.api.addr,
        ca,
        &s.api.token,
        "/skiff/v1/jointokens",
        br#"{"ttlSeconds": 120}"#,
    )
    .await;
    assert_eq!(code, 201, "{minted}");
    let new_token = minted["token"].as_str().expect("token").to_owned();
    assert!(minted["expires"].is_string());
    join::request_certificate(&s.url, &new_token, ca, &request("n2"))
        .await
        .expect("the minted token joins");
    let node_token = apiserver::mint_node_token_in(s.store.as_ref(), "n2")
        .await
        .expect("node token");
    let (code, _) = post(s.api.addr, ca, &node_token, "/skiff/v1/jointokens", b"").await;
    assert_eq!(code, 403);
    let (code, _) = post(s.api.addr, ca, &new_token, "/skiff/v1/jointokens", b"").await;
    assert_eq!(code, 401);
    s.api.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_file_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    // One store for both starts: the embedded database stays open in this process.
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&data_dir).expect("store"));
    let mut first = None;
    for _ in 0..2 {
        let mut config = ApiServerConfig::new(&data_dir);
        config.listen = "127.0.0.1:0".parse().expect("addr");
        let api = apiserver::start_with_store(config, store.clone())
            .await
            .expect("start");
        let token = api.join_token.clone();
        api.shutdown().await.expect("shutdown");
        match &first {
            None => first = Some(token),
            Some(first) => assert_eq!(first, &token),
        }
    }
}

/// One unauthenticated HTTPS GET trusting `ca_pem`.
async fn get_anonymous(addr: SocketAddr, ca_pem: &str, path: &str) -> (u16, Value) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(parse_cert(ca_pem)).expect("ca");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("tls");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http");
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(request).await.expect("send");
    let code = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_knows_the_ca_hash_discovers_the_ca_and_joins() {
    let s = start().await;
    // The pin is printed and written at start, and is kubeadm's: the SPKI's SHA-256.
    let file =
        std::fs::read_to_string(s.data_dir.join(apiserver::CA_HASH_FILE)).expect("hash file");
    assert_eq!(file.trim(), s.api.ca_cert_hash);
    let der = parse_cert(&s.api.ca_pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    let spki = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    assert_eq!(s.api.ca_cert_hash, format!("sha256:{}", hex::encode(spki)));

    // cluster-info needs no token; the other skiff endpoints still do.
    let (code, info) = get_anonymous(s.api.addr, &s.api.ca_pem, "/skiff/v1/cluster-info").await;
    assert_eq!((code, info["kind"].as_str()), (200, Some("ClusterInfo")));
    assert_eq!(info["caCertificate"].as_str(), Some(s.api.ca_pem.as_str()));
    let (code, _) = get_anonymous(s.api.addr, &s.api.ca_pem, "/api/v1/nodes").await;
    assert_eq!(code, 401);

    let ca = discovery::discover_ca(
        &s.url,
        &s.api
            .ca_cert_hash
            .to_uppercase()
            .replace("SHA256", "sha256"),
    )
    .await
    .expect("discovery with the right pin");
    assert_eq!(ca, s.api.ca_pem);
    let node_dir = tempfile::tempdir().expect("node dir");
    let creds = join::join(&s.url, &s.api.join_token, &ca, "worker-2", node_dir.path())
        .await
        .expect("join with the discovered ca");
    assert_eq!(creds.ca_pem, s.api.ca_pem);

    // Another cluster's pin: refused with a one-line error naming both hashes.
    let other = start().await;
    let err = discovery::discover_ca(&s.url, &other.api.ca_cert_hash)
        .await
        .expect_err("a foreign pin");
    match &err {
        JoinError::CaHashMismatch { want, got, .. } => {
            assert_eq!((want, got), (&other.api.ca_cert_hash, &s.api.ca_cert_hash));
        }
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        !message.contains('\n') && message.contains("not trusting it"),
        "{message}"
    );
    other.api.shutdown().await.expect("shutdown");
    s.api.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_chosen_in_advance_joins() {
    let token = "vagrnt.0123456789abcdef";
    let s = start_with(Some(token)).await;
    assert_eq!(s.api.join_token, token);
    let file = std::fs::read_to_string(s.data_dir.join(apiserver::JOIN_TOKEN_FILE)).expect("file");
    assert_eq!(file.trim(), token);
    let ca = discovery::discover_ca(&s.url, &s.api.ca_cert_hash)
        .await
        .expect("discover");
    let node_dir = tempfile::tempdir().expect("node dir");
    let creds = join::join(&s.url, token, &ca, "worker-3", node_dir.path())
        .await
        .expect("join with the given token");
    assert_eq!(creds.node_name, "worker-3");
    s.api.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_cli_refuses_a_wrong_pin_in_one_line() {
    let s = start().await;
    let root = tempfile::tempdir().expect("root");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let url = s.url.clone();
    let args = [
        "kubelet",
        "--api-server",
        &url,
        "--server",
        &url,
        "--ca-cert-hash",
        &wrong,
        "--join-token",
        &s.api.join_token,
    ]
    .map(str::to_owned);
    let root_path = root.path().to_owned();
    let line = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::skiff_err(&root_path, &args)
    })
    .await
    .expect("skiff kubelet");
    assert!(
        line.contains(&wrong) && line.contains(&s.api.ca_cert_hash),
        "{line}"
    );
    assert!(
        !root.path().join("pki/node.crt").exists(),
        "no join happened"
    );

    let root_path = root.path().to_owned();
    let line = tokio::task::spawn_blocking(move || {
        support::skiff_err(
            &root_path,
            &[
                "kubelet",
                "--api-server",
                "https://127.0.0.1:1",
                "--server",
                "https://127.0.0.1:1",
            ],
        )
    })
    .await
    .expect("skiff kubelet");
    assert!(line.contains("--ca-cert-hash"), "{line}");
    s.api.shutdown().await.expect("shutdown");
}

/// A client identity (chain, key) for a rustls client.
fn client_identity(
    creds: &NodeCredentials,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = vec![parse_cert(&creds.cert_pem)];
    let key = PrivateKeyDer::from_pem_slice(creds.key_pem.as_bytes()).expect("key");
    (chain, key)
}

/// A handshake against the node port's rustls config; the node the server saw, or the
/// server's handshake error.
async fn handshake(
    node_tls: &NodeTls,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Option<String>, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor =
        tokio_rustls::TlsAcceptor::from(node_tls.server_config().expect("server config"));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let peer = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        Ok::<_, String>(peer.and_then(|der| apiserver::node_name(&der)))
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(parse_cert(node_tls.ca_pem())).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::IpAddress(addr.ip().into());
    // With TLS 1.3 the client learns of a refused certificate only when it reads.
    if let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let mut buf = Vec::new();
        let _ = tls.read_to_end(&mut buf).await;
    }
    server.await.expect("server task")
}

/// A clientAuth certificate for `system:node:<name>` from a CA that is not the cluster's.
fn foreign_identity(name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name.push(DnType::CommonName, "skiff-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf.distinguished_name
        .push(DnType::CommonName, format!("system:node:{name}"));
    leaf.distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).expect("sign");
    let key = PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    (vec![cert.der().clone()], key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_port_refuses_foreign_and_missing_certificates() {
    let s = start().await;
    let foreign = handshake(&s.api.node_tls, Some(foreign_identity("worker-1"))).await;
    // The foreign CA is also named skiff-ca: the signature is what tells them apart.
    let foreign = foreign.expect_err("a certificate of another CA");
    assert!(foreign.contains("invalid peer certificate"), "{foreign}");
    let none = handshake(&s.api.node_tls, None).await;
    assert_eq!(none, Err("peer sent no certificates".to_owned()));
    s.api.shutdown().await.expect("shutdown");
}

// --- tonic: a one-method service without protobuf (a bytes codec) that answers the node
// name it read from `Request::peer_certs()`.

#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

#[derive(Debug, Clone, Copy)]
struct WhoAmI;

impl tonic::server::NamedService for WhoAmI {
    const NAME: &'static str = "skiff.test.WhoAmI";
}

impl tonic::server::UnaryService<Vec<u8>> for WhoAmI {
    type Response = Vec<u8>;
    type Future = std::future::Ready<Result<tonic::Response<Vec<u8>>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<Vec<u8>>) -> Self::Future {
        let node = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|der| apiserver::node_name(der)));
        std::future::ready(match node {
            Some(node) => Ok(tonic::Response::new(node.into_bytes())),
            None => Err(tonic::Status::unauthenticated("no node certificate")),
        })
    }
}

// What `tonic::transport::Server::add_service` takes: a tower `Service` over HTTP, as
// tonic's code generator writes it.
impl tonic::codegen::Service<hyper::Request<tonic::body::Body>> for WhoAmI {
    type Response = hyper::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, request: hyper::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            Ok(tonic::server::Grpc::new(RawCodec)
                .unary(WhoAmI, request)
                .await)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_serves_nodes_by_their_certificate() {
    let s = start().await;
    let node_dir = tempfile::tempdir().expect("node dir");
    let creds = join::join(
        &s.url,
        &s.api.join_token,
        &s.api.ca_pem,
        "worker-7",
        node_dir.path(),
    )
    .await
    .expect("join");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .tls_config(s.api.node_tls.tonic_server_tls())
        .expect("tls config")
        .add_service(WhoAmI)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    let server = tokio::spawn(server);

    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(creds.tonic_client_tls(None))
        .expect("client tls");
    let channel = endpoint
        .connect()
        .await
        .expect("connect with the node certificate");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = hyper::http::uri::PathAndQuery::from_static("/skiff.test.WhoAmI/Get");
    let answer = grpc
        .unary(tonic::Request::new(Vec::new()), path, RawCodec)
        .await
        .expect("the call");
    assert_eq!(answer.into_inner(), b"worker-7");

    // Without a client certificate the connection is refused.
    let anonymous = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&s.api.ca_pem));
    let refused = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(anonymous)?
            .connect()
            .await?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await?;
        let path = hyper::http::uri::PathAndQuery::from_static("/skiff.test.WhoAmI/Get");
        grpc.unary(tonic::Request::new(Vec::new()), path, RawCodec)
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    assert!(
        refused.is_err(),
        "a client without a certificate got an answer"
    );

    let _ = stop.send(());
    server.await.expect("server task").expect("serve");
    s.api.shutdown().await.expect("shutdown");
}
