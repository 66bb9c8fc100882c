//! The etcd store keeps working when one member of three dies: reads, guarded writes and
//! new watches all succeed (etcd-client's balancer alone kept sending about one request in
//! five to the dead member; `store/etcd/members.rs`).

mod support;

use std::time::{Duration, Instant};

use skiff_controlplane::store::{EtcdStore, Store, WatchEvent};
use support::etcd::EtcdCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_of_three_fails_no_request() {
    let Some(mut cluster) = EtcdCluster::start(3).await else {
        return;
    };
    let store = EtcdStore::connect(&cluster.endpoints, "/member-loss")
        .await
        .expect("connect");
    for i in 0..20 {
        store
            .create(&format!("before/{i}"), b"v".to_vec())
            .await
            .expect("create with every member up");
    }
    let follower = cluster.follower().await;
    cluster.kill(follower);
    let started = Instant::now();
    let mut revision = 0;
    for i in 0..100 {
        let kv = store
            .create(&format!("after/{i}"), b"v".to_vec())
            .await
            .unwrap_or_else(|e| panic!("create {i} after the kill: {e:?}"));
        store
            .update(&kv.key, b"w".to_vec(), Some(kv.mod_revision))
            .await
            .unwrap_or_else(|e| panic!("update {i}: {e:?}"));
        let got = store.get(&format!("before/{}", i % 20)).await;
        assert!(matches!(got, Ok(Some(_))), "get {i}: {got:?}");
        let listed = store
            .list("before/", Default::default())
            .await
            .unwrap_or_else(|e| panic!("list {i}: {e:?}"));
        assert_eq!(listed.items.len(), 20);
        revision = listed.revision;
    }
    let mut watch = store.watch("after/", revision).await.expect("a new watch");
    store
        .create("after/last", b"v".to_vec())
        .await
        .expect("create");
    let event = tokio::time::timeout(
        Duration::from_secs(10),
        futures::StreamExt::next(&mut watch),
    )
    .await
    .expect("an event in time");
    assert!(
        matches!(event, Some(Ok(WatchEvent::Put { ref kv, .. })) if kv.key == "after/last"),
        "{event:?}"
    );
    eprintln!(
        "400 requests without member 0 in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
