//! `/metrics`: request counters by verb, resource and code, durations, open watches.

#[path = "apiserver/kubectl.rs"]
mod harness;

use harness::{Cluster, Streaming, kubectl_binary};

#[test]
fn metrics_count_requests_and_watches() {
    let Some(kubectl) = kubectl_binary(33) else {
        return;
    };
    let c = Cluster::start(kubectl);
    c.ok(&["create", "configmap", "a", "--from-literal=k=v"]);
    c.fails(&["create", "configmap", "a", "--from-literal=k=v"]);
    c.ok(&["get", "cm", "a"]);
    let watch = Streaming::spawn(c.command(&["get", "cm", "-w"]));
    watch.wait_for("the list", |l| l.iter().any(|x| x.starts_with('a')));
    let text = c.ok(&["get", "--raw", "/metrics"]);
    for needle in [
        "apiserver_request_total{code=\"201\",resource=\"configmaps\",verb=\"POST\"} 1",
        "apiserver_request_total{code=\"409\",resource=\"configmaps\",verb=\"POST\"} 1",
        "apiserver_request_total{code=\"200\",resource=\"configmaps\",verb=\"WATCH\"} 1",
        "apiserver_request_duration_seconds_count{resource=\"configmaps\",verb=\"GET\"} 1",
        "apiserver_registered_watchers 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
    drop(watch);
    let minted = c.curl("POST", "/skiff/v1/nodes/n1/token", "application/json", b"");
    let token = minted.json()["token"].as_str().unwrap_or("").to_owned();
    let denied = c.curl_as(&token, "GET", "/metrics", "", b"");
    assert_eq!(denied.code, 403, "{denied:?}");
}
