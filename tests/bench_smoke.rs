//! The end-to-end benches run: `skiff bench pod-start --mode e2e` and `skiff bench stream
//! --node pod` each bring up a real cluster in a network namespace of their own, write their
//! figures, and leave nothing behind. Checks the figures are there (counts, pods Running,
//! bytes through), never how fast: timing is for reading, not for passing.
//! Needs root, `ip`, `nsenter`, python3 and kubectl 1.33 (the machine image has it).

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::cluster::KUBECTL;

fn ready() -> bool {
    if !support::privileged_with(&["ip", "nsenter", "python3"]) {
        return false;
    }
    if !Path::new(KUBECTL).exists() {
        eprintln!("skipping: {KUBECTL} not found (kubectl is part of the machine image)");
        return false;
    }
    true
}

/// Runs `skiff bench ARGS… --json DIR/out.json --plot DIR/out.svg` from the repository root
/// (for tests/image/mkimage.py) and returns the JSON; checks the bench cleaned up.
fn bench(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let (json, plot) = (dir.path().join("out.json"), dir.path().join("out.svg"));
    let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .spawn()
        .expect("run skiff bench");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for skiff bench");
    assert!(out.status.success(), "skiff bench {args:?} failed");
    assert!(
        std::fs::metadata(&plot).is_ok_and(|m| m.len() > 0),
        "no plot"
    );
    let name = format!("skiff-bench-{pid}");
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(&name),
        "netns {name} left behind"
    );
    assert_eq!(support::cleanup::processes_in(&name), 0, "pods left behind");
    serde_json::from_slice(&std::fs::read(&json).expect("the JSON")).expect("JSON")
}

#[test]
fn pod_start_e2e_reports_every_pod_running_and_the_kubelets_memory() {
    if !ready() {
        return;
    }
    let r = bench(&["pod-start", "--mode", "e2e", "--count", "3", "--burst", "3"]);
    assert_eq!(
        (r["mode"].as_str(), r["count"].as_u64()),
        (Some("e2e"), Some(3))
    );
    assert_eq!(r["sequential_ms"].as_array().map(Vec::len), Some(3), "{r}");
    assert_eq!(r["burst_each_ms"].as_array().map(Vec::len), Some(3), "{r}");
    assert_eq!(r["sequential_running"], 3, "{r}");
    assert_eq!(r["burst_running"], 3, "{r}");
    assert!(r["burst_total_ms"].as_f64().is_some_and(|t| t > 0.0), "{r}");
    assert!(
        r["kubelet"]["rss_kib"].as_u64().is_some_and(|k| k > 0),
        "{r}"
    );
    assert!(r["sequential"]["p99"].as_f64().is_some(), "{r}");
}

#[test]
fn stream_through_a_real_pod_reports_every_path() {
    if !ready() {
        return;
    }
    let r = bench(&["stream", "--node", "pod", "--mb", "2", "--runs", "1"]);
    assert_eq!(r["node"], "pod", "{r}");
    let paths = r["paths"].as_array().expect("paths");
    assert_eq!(paths.len(), 5, "{r}");
    for path in paths {
        let rate = path["mb_per_second"]["p50"].as_f64().unwrap_or(0.0);
        assert!(rate > 0.0, "{}: no throughput", path["name"]);
    }
}
