//! The whole Service path on one node: a Service and EndpointSlice created through the real
//! API server reach the proxy over the node contract's `WatchServices`, the feed hands them
//! to the BPF data plane, and a client process in the attach cgroup connects through the
//! ClusterIP to busybox httpd backends; deleting the Service takes its address away again.
//! Root only; under CI a missing prerequisite fails the test.

mod support;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_controlplane::apiserver::{self, ApiServerConfig, DeleteOptions, ServiceCidr};
use skiff_controlplane::node::{self, NodeService, NodeSettings};
use skiff_controlplane::store::{EmbeddedStore, Store};
use skiff_kubelet::join;
use skiff_proxy::dataplane::{Dataplane, DataplaneConfig};
use skiff_proxy::feed::{Consumer, Pacing};
use skiff_proxy::model::NodeInfo;
use skiff_proxy::run::ProxyConfig;
use skiff_proxy::watch::WatchConfig;
use support::netlab::{Lab, json as output_json, script};

/// Removes the data plane's pins (and its bpffs mount) last.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = Dataplane::remove(&self.0);
    }
}

fn show(pin_dir: &std::path::Path) -> Value {
    output_json(
        &Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["proxy", "show", "-o", "json", "--pin-dir"])
            .arg(pin_dir)
            .output()
            .unwrap(),
    )
}

/// Waits until `skiff proxy show` satisfies `want`.
fn wait_show(pin_dir: &std::path::Path, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = show(pin_dir);
        if want(&shown) {
            return shown;
        }
        assert!(Instant::now() < end, "{what} within 30 s: {shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_from_the_api_server_reach_the_bpf_data_plane_through_the_watch() {
    if !support::privileged_with(&["ip", "python3", "busybox"]) {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The node: a netns with two backends on its loopback and the Service range unreachable.
    let mut lab = Lab::new();
    lab.add_netns("node");
    lab.ip("node", &["route", "add", "unreachable", "10.96.0.0/12"]);
    for (name, addr) in [("b1", "10.244.0.2"), ("b2", "10.244.0.3")] {
        lab.ip("node", &["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        let root = lab.dir.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), format!("{name}\n")).unwrap();
        let root = root.to_string_lossy().into_owned();
        lab.spawn(
            "node",
            &[
                "busybox",
                "httpd",
                "-f",
                "-p",
                &format!("{addr}:8080"),
                "-h",
                &root,
            ],
        );
        lab.wait_port("node", addr, 8080);
    }

    // The control plane and a joined node's credentials.
    let dir = tempfile::tempdir().unwrap();
    let mut config = ApiServerConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&config.data_dir).unwrap());
    let api = apiserver::start_with_store(config, store).await.unwrap();
    let cidr = ServiceCidr::parse("10.96.0.0/12").unwrap();
    let service = NodeService::new(api.client(), NodeSettings::new(cidr));
    let nodes = node::serve(
        "127.0.0.1:0".parse().unwrap(),
        service,
        api.node_tls.tonic_server_tls(),
    )
    .await
    .unwrap();
    let creds = join::join(
        &format!("https://{}", api.addr),
        &api.join_token,
        &api.ca_pem,
        "node-1",
        &dir.path().join("pki"),
    )
    .await
    .unwrap();

    // The proxy with the BPF data plane as its consumer.
    let pins = Pins(lab.dir.path().join("bpf"));
    let mut dp_config = DataplaneConfig::new(NodeInfo {
        name: "node-1".into(),
        addresses: vec![],
    });
    dp_config.pin_dir = pins.0.clone();
    dp_config.cgroup = Some(lab.cgroup());
    let dataplane = Dataplane::open(dp_config).expect("open the data plane");
    let proxy = skiff_proxy::run::start(
        ProxyConfig {
            watch: WatchConfig {
                server: format!("https://{}", nodes.addr),
                tls: creds.tonic_client_tls(None),
                window: Duration::from_millis(20),
            },
            dns: None,
            pacing: Pacing::default(),
        },
        vec![Box::new(dataplane) as Box<dyn Consumer>],
    )
    .await
    .expect("start the proxy");

    let client = api.client();
    let web: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    let web = client.create(&web).await.expect("create the Service");
    let ip: Ipv4Addr = web
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap()
        .parse()
        .unwrap();
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web-1",
            "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.0.2"], "conditions": {"ready": true}},
            {"addresses": ["10.244.0.3"], "conditions": {"ready": true}},
        ],
    }))
    .unwrap();
    client
        .create(&slice)
        .await
        .expect("create the EndpointSlice");

    let frontend = format!("{ip}:80");
    wait_show(&pins.0, "the Service's two backends in the maps", |v| {
        v["frontends"].as_array().unwrap().iter().any(|f| {
            f["frontend"] == frontend.as_str() && f["backends"].as_array().unwrap().len() == 2
        })
    });
    let netclient = script("netclient.py");
    let ip_s = ip.to_string();
    let out = lab
        .in_cgroup(
            "node",
            &[
                "python3",
                netclient.to_str().unwrap(),
                "http",
                "40",
                &ip_s,
                "80",
                "/",
            ],
        )
        .output()
        .unwrap();
    let v = output_json(&out);
    assert_eq!(v["errors"], Value::Array(vec![]), "{v}");
    for backend in ["b1", "b2"] {
        assert!(
            v["bodies"][backend].as_u64().unwrap_or(0) > 0,
            "{backend} got none of 40: {v}"
        );
    }
    assert_eq!(v["peer"], json!([ip_s, 80]));

    client
        .delete::<k8s_openapi::api::core::v1::Service>(
            Some("default"),
            "web",
            DeleteOptions::default(),
        )
        .await
        .expect("delete the Service");
    wait_show(&pins.0, "the Service gone from the maps", |v| {
        !v["frontends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["frontend"] == frontend.as_str())
    });
    let out = lab
        .in_cgroup(
            "node",
            &[
                "python3",
                netclient.to_str().unwrap(),
                "refuse",
                &ip_s,
                "80",
                "1",
            ],
        )
        .output()
        .unwrap();
    let v = output_json(&out);
    assert_eq!(
        v["errno"], 113,
        "untranslated: the node's unreachable route answers: {v}"
    );

    proxy.stop().await;
    drop(pins);
}
