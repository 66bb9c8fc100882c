//! Two control-plane processes (API server + elected controllers) on one real etcd: one
//! leads; when it dies without a word, the other takes over within the lease time and the
//! cluster keeps reconciling.

#[path = "support/etcd.rs"]
mod etcd;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use skiff_controlplane::apiserver::{self, ApiServerConfig, Client, RunningApiServer};
use skiff_controlplane::controllers::{Config, leader};
use tokio::task::JoinHandle;

struct ControlPlane {
    identity: String,
    server: RunningApiServer,
    election: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn control_plane(identity: &str, endpoint: &str) -> ControlPlane {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ApiServerConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.etcd = vec![endpoint.to_owned()];
    let server = apiserver::start(config).await.expect("start API server");
    let election = leader::Election {
        identity: identity.to_owned(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
    };
    let task = leader::run(server.client(), election, Config::default());
    ControlPlane {
        identity: identity.to_owned(),
        server,
        election: task,
        _dir: dir,
    }
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "img:1"}]}}}}))
    .expect("deployment")
}

async fn wait_ready(client: &Client, app: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if skiff_controlplane::hollow::pod_counts(client, "default", &format!("app={app}")).await
            == (2, 2)
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{app} pods not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_holder(client: &Client, not: Option<&str>) -> String {
    let start = Instant::now();
    loop {
        if let Ok(Some(h)) = leader::holder(client).await
            && Some(h.as_str()) != not
        {
            return h;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no new leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn leader_failover_on_etcd() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(etcd) = runtime.block_on(etcd::EtcdServer::start()) else {
        return;
    };
    let (a, b) = runtime.block_on(async {
        (
            control_plane("cp-a", &etcd.endpoint).await,
            control_plane("cp-b", &etcd.endpoint).await,
        )
    });
    let first = runtime.block_on(wait_holder(&a.server.client(), None));
    let (leader, follower) = if first == a.identity { (a, b) } else { (b, a) };
    // The test kubelet talks to the follower's API server, which survives.
    let client = follower.server.client();
    let _agent = runtime.block_on(skiff_controlplane::hollow::HollowNodes::start(
        client.clone(),
        &["node-1", "node-2"],
        "4",
        "8Gi",
        Duration::from_millis(100),
    ));
    runtime.block_on(async {
        client.create(&deployment("before")).await.expect("create");
        wait_ready(&client, "before", Duration::from_secs(30)).await;
        assert_eq!(
            leader::holder(&client).await.unwrap().as_deref(),
            Some(leader.identity.as_str())
        );

        // The leader dies without releasing the lease.
        leader.election.abort();
        let _ = leader.server.shutdown().await;
        let killed = Instant::now();
        let new = wait_holder(&client, Some(&leader.identity)).await;
        assert_eq!(new, follower.identity);
        let took = killed.elapsed();
        eprintln!(
            "leader {} killed; {} took over in {took:?} (lease 2 s)",
            leader.identity, new
        );
        assert!(
            took < Duration::from_secs(10),
            "takeover took {took:?} with a 2 s lease"
        );

        // The new leader reconciles: a new Deployment gets its pods.
        client.create(&deployment("after")).await.expect("create");
        wait_ready(&client, "after", Duration::from_secs(30)).await;
        follower.election.abort();
        let _ = follower.server.shutdown().await;
    });
}
