//! The node contract's `WatchServices` against the real API server and node service, called
//! with a joined node's certificate (snapshot, changes, resume, compaction → re-snapshot),
//! and the proxy on top of it: cluster DNS answering real UDP and TCP queries on loopback
//! from the Services it follows, with names outside the cluster forwarded to a test
//! upstream resolver on loopback. No root needed.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_api::node::service_event::{Kind, Type};
use skiff_api::node::services_client::ServicesClient;
use skiff_api::node::{ServiceEvent, WatchServicesRequest};
use skiff_controlplane::apiserver::{
    self, ApiServerConfig, Client, DeleteOptions, RunningApiServer, ServiceCidr,
};
use skiff_controlplane::node::{self, NodeServer, NodeService, NodeSettings};
use skiff_controlplane::store::{EmbeddedStore, Store};
use skiff_kubelet::join::{self, NodeCredentials};
use skiff_proxy::feed::Pacing;
use skiff_proxy::run::{DnsSettings, ProxyConfig};
use skiff_proxy::watch::WatchConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tonic::transport::Channel;

const DNS_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

struct Plane {
    _dir: tempfile::TempDir,
    api: RunningApiServer,
    store: Arc<dyn Store>,
    nodes: NodeServer,
    creds: NodeCredentials,
}

impl Plane {
    fn client(&self) -> Client {
        self.api.client()
    }

    fn server(&self) -> String {
        format!("https://{}", self.nodes.addr)
    }

    async fn channel(&self) -> Channel {
        skiff_api::dial::channel(&self.server(), self.creds.tonic_client_tls(None))
            .await
            .expect("dial the node service")
    }
}

async fn start() -> Plane {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ApiServerConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().expect("addr");
    std::fs::create_dir_all(&config.data_dir).expect("data dir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&config.data_dir).expect("store"));
    let api = apiserver::start_with_store(config, store.clone())
        .await
        .expect("start the API server");
    node::dns::ensure_service(&api.client(), DNS_ADDRESS)
        .await
        .expect("the kube-dns Service");
    let cidr = ServiceCidr::parse("10.96.0.0/12").expect("cidr");
    let service = NodeService::new(api.client(), NodeSettings::new(cidr));
    let nodes = node::serve(
        "127.0.0.1:0".parse().expect("addr"),
        service,
        api.node_tls.tonic_server_tls(),
    )
    .await
    .expect("node service");
    let creds = join::join(
        &format!("https://{}", api.addr),
        &api.join_token,
        &api.ca_pem,
        "worker-1",
        &dir.path().join("pki"),
    )
    .await
    .expect("join");
    Plane {
        _dir: dir,
        api,
        store,
        nodes,
        creds,
    }
}

fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .expect("service")
}

fn slice(ns: &str, name: &str, svc: &str, ips: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name,
            "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .expect("slice")
}

type Events = tonic::Streaming<ServiceEvent>;

async fn watch(channel: Channel, from: (u64, u64)) -> Result<Events, tonic::Status> {
    let request = WatchServicesRequest {
        services_revision: from.0,
        slices_revision: from.1,
    };
    Ok(ServicesClient::new(channel)
        .watch_services(request)
        .await?
        .into_inner())
}

async fn next(events: &mut Events) -> Result<ServiceEvent, tonic::Status> {
    match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
        Ok(Some(r)) => r,
        Ok(None) => panic!("the stream ended"),
        Err(_) => panic!("no event within 10 s"),
    }
}

/// The name (`ns/name`) an event is about.
fn about(e: &ServiceEvent) -> String {
    let v: serde_json::Value = serde_json::from_slice(&e.object).expect("object json");
    format!(
        "{}/{}",
        v["metadata"]["namespace"].as_str().unwrap_or_default(),
        v["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Reads a snapshot to its SYNCED: the Services and slices in it, and the position.
async fn snapshot(events: &mut Events) -> (BTreeSet<String>, BTreeSet<String>, (u64, u64)) {
    let (mut services, mut slices) = (BTreeSet::new(), BTreeSet::new());
    loop {
        let e = next(events).await.expect("snapshot event");
        match Type::try_from(e.r#type).expect("type") {
            Type::Snapshot if e.kind == Kind::Service as i32 => {
                services.insert(about(&e));
            }
            Type::Snapshot => {
                slices.insert(about(&e));
            }
            Type::Synced => return (services, slices, (e.services_revision, e.slices_revision)),
            other => panic!("{other:?} inside a snapshot"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_services_snapshots_follows_resumes_and_re_snapshots_after_compaction() {
    let p = start().await;
    let client = p.client();
    client
        .create(&service(
            "default",
            "web",
            json!({"ports": [{"name": "http", "port": 80}]}),
        ))
        .await
        .expect("create web");

    let mut events = watch(p.channel().await, (0, 0)).await.expect("watch");
    let (services, slices, at) = snapshot(&mut events).await;
    for want in ["default/kubernetes", "kube-system/kube-dns", "default/web"] {
        assert!(services.contains(want), "{want} in {services:?}");
    }
    assert!(slices.is_empty(), "{slices:?}");
    assert!(at.0 > 0 && at.1 > 0, "a position to resume from: {at:?}");

    // Changes of each kind move that kind's revision.
    client
        .create(&slice("default", "web-1", "web", &["10.244.0.5"]))
        .await
        .expect("create slice");
    let e = next(&mut events).await.expect("slice event");
    assert_eq!(
        (e.r#type, e.kind, about(&e)),
        (
            Type::AddedOrModified as i32,
            Kind::EndpointSlice as i32,
            "default/web-1".to_string()
        )
    );
    assert!(e.slices_revision > at.1 && e.services_revision == at.0);
    let mut web: Service = client.get(Some("default"), "web").await.expect("get web");
    web.metadata
        .labels
        .get_or_insert_default()
        .insert("tier".into(), "front".into());
    client.replace(&web).await.expect("update web");
    let e = next(&mut events).await.expect("service event");
    assert_eq!(
        (e.kind, about(&e)),
        (Kind::Service as i32, "default/web".into())
    );
    assert!(e.services_revision > at.0);
    let at = (e.services_revision, e.slices_revision);
    drop(events);

    // While the node is away: web goes, db comes. Resuming brings exactly that, no snapshot.
    client
        .delete::<Service>(Some("default"), "web", DeleteOptions::default())
        .await
        .expect("delete web");
    client
        .create(&service("default", "db", json!({"clusterIP": "None"})))
        .await
        .expect("create db");
    let mut events = watch(p.channel().await, at).await.expect("resume");
    let first = next(&mut events).await.expect("first");
    let second = next(&mut events).await.expect("second");
    assert_eq!(
        [
            (first.r#type, about(&first)),
            (second.r#type, about(&second))
        ],
        [
            (Type::Deleted as i32, "default/web".to_string()),
            (Type::AddedOrModified as i32, "default/db".to_string())
        ]
    );
    drop(events);

    // After compaction the old position is gone: OUT_OF_RANGE, then a fresh snapshot.
    let now = p.store.current_revision().await.expect("revision");
    p.store.compact(now).await.expect("compact");
    let refused = match watch(p.channel().await, at).await {
        Err(status) => status,
        Ok(mut events) => next(&mut events).await.expect_err("compacted"),
    };
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    let mut events = watch(p.channel().await, (0, 0)).await.expect("re-snapshot");
    let (services, slices, _) = snapshot(&mut events).await;
    assert!(services.contains("default/db") && !services.contains("default/web"));
    assert!(slices.contains("default/web-1"));
}

// --- DNS through the proxy ---------------------------------------------------------

/// A tiny upstream resolver on loopback (UDP and TCP): `*.example.test` A 192.0.2.80,
/// everything else NXDOMAIN.
async fn upstream() -> SocketAddr {
    fn reply(query: &[u8]) -> Vec<u8> {
        let request = Message::from_vec(query).expect("query");
        let mut m = Message::response(request.metadata.id, request.metadata.op_code);
        m.metadata.recursion_available = true;
        m.add_queries(request.queries.clone());
        let q = &request.queries[0];
        if q.name().to_ascii().ends_with("example.test.") && q.query_type() == RecordType::A {
            m.add_answer(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 80))),
            ));
        } else {
            m.metadata.response_code = ResponseCode::NXDomain;
        }
        m.to_vec().expect("encode")
    }
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let addr = udp.local_addr().expect("addr");
    let tcp = TcpListener::bind(addr).await.expect("tcp on the same port");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&reply(&buf[..n]), peer).await;
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                while s.read_exact(&mut len).await.is_ok() {
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    let r = reply(&q);
                    let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&r);
                    if s.write_all(&framed).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Over {
    Udp,
    Tcp,
}

async fn query(server: SocketAddr, over: Over, name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    let bytes = m.to_vec().expect("encode");
    let answer = match over {
        Over::Udp => {
            let s = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
            s.send_to(&bytes, server).await.expect("send");
            let mut buf = vec![0u8; 65535];
            let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
                .await
                .expect("a UDP answer within 5 s")
                .expect("recv");
            buf.truncate(n);
            buf
        }
        Over::Tcp => {
            let mut s = TcpStream::connect(server).await.expect("tcp");
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            s.write_all(&framed).await.expect("write");
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.expect("length");
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut buf).await.expect("answer");
            buf
        }
    };
    let reply = Message::from_vec(&answer).expect("decode");
    assert_eq!(reply.metadata.id, m.metadata.id);
    reply
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_answers_cluster_dns_over_udp_and_tcp_and_forwards_the_rest() {
    let p = start().await;
    let client = p.client();
    let web = client
        .create(&service(
            "default",
            "web",
            json!({"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
        ))
        .await
        .expect("web");
    let web_ip: Ipv4Addr = web
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .expect("web's cluster IP");
    let shop: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "shop"}})).expect("namespace");
    client.create(&shop).await.expect("namespace shop");
    client
        .create(&service(
            "shop",
            "db",
            json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
        ))
        .await
        .expect("db");
    client
        .create(&slice("shop", "db-1", "db", &["10.244.0.7", "10.244.0.8"]))
        .await
        .expect("db slice");
    client
        .create(&service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "www.example.test"}),
        ))
        .await
        .expect("ext");

    let config = ProxyConfig {
        watch: WatchConfig {
            server: p.server(),
            tls: p.creds.tonic_client_tls(None),
            window: Duration::from_millis(20),
        },
        dns: Some(DnsSettings {
            address: Ipv4Addr::LOCALHOST,
            port: 0,
            domain: "cluster.local".into(),
            upstreams: vec![upstream().await],
            interface: None,
        }),
        pacing: Pacing::default(),
    };
    let proxy = skiff_proxy::run::start(config, Vec::new())
        .await
        .expect("start the proxy");
    let dns = proxy.dns_addr.expect("a DNS address");

    // Records arrive with the first complete snapshot.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = query(
            dns,
            Over::Udp,
            "web.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        if m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no records after 20 s: {m:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for over in [Over::Udp, Over::Tcp] {
        let m = query(dns, over, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(addresses(&m), [web_ip], "{over:?}");
        let m = query(
            dns,
            over,
            "kube-dns.kube-system.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        assert_eq!(addresses(&m), [DNS_ADDRESS], "{over:?}");
        let m = query(dns, over, "db.shop.svc.cluster.local.", RecordType::A).await;
        assert_eq!(
            addresses(&m),
            [Ipv4Addr::new(10, 244, 0, 7), Ipv4Addr::new(10, 244, 0, 8)],
            "headless: the endpoints ({over:?})"
        );
        let m = query(
            dns,
            over,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        let srv: Vec<(u16, String)> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s.port, s.target.to_ascii())),
                _ => None,
            })
            .collect();
        assert_eq!(
            srv,
            [(80, "web.default.svc.cluster.local.".to_string())],
            "{over:?}"
        );
        let m = query(dns, over, "ext.default.svc.cluster.local.", RecordType::A).await;
        assert!(
            matches!(&m.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "www.example.test."),
            "{over:?}: {m:?}"
        );
        assert_eq!(
            addresses(&m),
            [Ipv4Addr::new(192, 0, 2, 80)],
            "the CNAME chased upstream"
        );
        let m = query(dns, over, "nope.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{over:?}");
        let m = query(dns, over, "api.example.test.", RecordType::A).await;
        assert_eq!(
            addresses(&m),
            [Ipv4Addr::new(192, 0, 2, 80)],
            "forwarded ({over:?})"
        );
        let m = query(dns, over, "missing.invalid.", RecordType::A).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "upstream's answer ({over:?})"
        );
    }

    // The records follow the cluster: a deleted Service stops resolving.
    client
        .delete::<Service>(Some("default"), "web", DeleteOptions::default())
        .await
        .expect("delete web");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = query(
            dns,
            Over::Tcp,
            "web.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        if m.metadata.response_code == ResponseCode::NXDomain {
            break;
        }
        assert!(Instant::now() < deadline, "web still resolves: {m:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.stop().await;
}
