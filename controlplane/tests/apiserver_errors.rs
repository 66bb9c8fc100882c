//! End to end with the real kubectl: JSON `kubectl create` (1.29), duplicate and stale
//! writes, oversized bodies, compacted watches (410), bookmarks, and the `/usr/bin/kubectl`
//! dispatcher choosing 1.33 from `/version`.

#[path = "apiserver/kubectl.rs"]
mod harness;

use std::process::Command;

use harness::{Cluster, kubectl_binary, row, rows};

#[test]
fn kubectl_create_and_write_errors_1_29() {
    let Some(kubectl) = kubectl_binary(29) else {
        return;
    };
    let c = Cluster::start(kubectl);
    assert!(
        c.ok(&["create", "namespace", "team"])
            .contains("namespace/team created")
    );
    let err = c.fails(&["create", "namespace", "team"]);
    assert!(
        err.contains("Error from server (AlreadyExists): namespaces \"team\" already exists"),
        "{err}"
    );
    assert!(
        c.ok(&[
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=1",
            "-n",
            "team"
        ])
        .contains("configmap/cfg created")
    );
    assert!(
        c.ok(&[
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=user=admin",
            "-n",
            "team"
        ])
        .contains("secret/db created")
    );
    assert!(
        c.ok(&[
            "create",
            "deployment",
            "hello",
            "--image=nginx:1.27",
            "-n",
            "team"
        ])
        .contains("deployment.apps/hello created")
    );
    let t = rows(&c.ok(&["get", "secret", "-n", "team"]));
    assert_eq!(&row(&t, "db")[..3], ["db", "Opaque", "1"]);
    let err = c.fails(&["create", "configmap", "x", "-n", "missing"]);
    assert!(err.contains("namespaces \"missing\" not found"), "{err}");

    // A replace carrying a stale resourceVersion is a 409 Conflict.
    let stale = c.ok(&["get", "cm", "cfg", "-n", "team", "-o", "json"]);
    let labeled = c.ok(&[
        "patch",
        "cm",
        "cfg",
        "-n",
        "team",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"fresh":"yes"}}}"#,
    ]);
    assert!(labeled.contains("configmap/cfg patched"), "{labeled}");
    let path = c.manifest("stale.json", &stale.replace("\"a\": \"1\"", "\"a\": \"2\""));
    let err = c.fails(&["replace", "-f", &path]);
    assert!(
        err.contains(
            "Operation cannot be fulfilled on configmaps \"cfg\": the object has been modified"
        ),
        "{err}"
    );

    // Bodies over 3 MiB are refused with 413 and nothing is stored.
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big","namespace":"team"}},"data":{{"k":"{}"}}}}"#,
        "x".repeat(4 << 20)
    );
    let path = c.manifest("big.json", &big);
    let err = c.fails(&["create", "-f", &path]);
    assert!(
        err.contains("RequestEntityTooLarge") || err.contains("request entity too large"),
        "{err}"
    );
    assert!(
        c.fails(&["get", "cm", "big", "-n", "team"])
            .contains("NotFound")
    );
}

#[test]
fn watch_replays_bookmarks_and_reports_compaction() {
    let Some(kubectl) = kubectl_binary(29) else {
        return;
    };
    let c = Cluster::start(kubectl);
    c.ok(&["create", "configmap", "one", "--from-literal=a=1"]);
    let rv: u64 = c
        .ok(&[
            "get",
            "cm",
            "one",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .trim()
        .parse()
        .expect("rv");
    c.ok(&["create", "configmap", "two", "--from-literal=a=1"]);
    c.ok(&["delete", "configmap", "one"]);

    // Replay of everything after rv, then bookmarks, until timeoutSeconds ends the stream.
    let url = format!(
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=2"
    );
    let events: Vec<serde_json::Value> = c
        .ok(&["get", "--raw", &url])
        .lines()
        .map(|l| serde_json::from_str(l).expect("event json"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(&kinds[..2], ["ADDED", "DELETED"], "{events:?}");
    assert_eq!(events[0]["object"]["metadata"]["name"], "two");
    assert_eq!(events[1]["object"]["metadata"]["name"], "one");
    assert!(kinds[2..].contains(&"BOOKMARK"), "{kinds:?}");

    // After compaction an older resourceVersion gets a 410 Expired ERROR event.
    let current = c
        .runtime
        .block_on(c.store.current_revision())
        .expect("revision");
    c.runtime
        .block_on(c.store.compact(current))
        .expect("compact");
    let url = format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}");
    let out = c.ok(&["get", "--raw", &url]);
    let event: serde_json::Value = serde_json::from_str(out.trim()).expect("error event");
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
}

#[test]
fn dispatcher_picks_the_version_from_the_server() {
    let dispatcher = std::path::Path::new("/usr/bin/kubectl");
    let Some(kubectl) = kubectl_binary(33) else {
        return;
    };
    if !dispatcher.exists() {
        eprintln!("SKIP: /usr/bin/kubectl not found");
        return;
    }
    let c = Cluster::start(kubectl);
    let cmd = c.command(&["version"]);
    let out = Command::new(dispatcher)
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .output()
        .expect("dispatcher");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Client Version: v1.33"), "{stdout}");
    assert!(stdout.contains("Server Version: v1.33.0-skiff"), "{stdout}");
}
