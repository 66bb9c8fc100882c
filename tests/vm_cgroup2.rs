//! The full cgroup v2 proof (issue 3): this machine's cgroups are hybrid, so the v2 controller
//! paths of the runtime's cgroup layer (`memory.max` + `memory.events` oom_kill, `pids.max`,
//! `cpu.max` throttling, `cgroup.kill`) are proven inside a QEMU guest (TCG, no network) booted
//! by `vagrant/qemu/run.sh`, which runs `runtime/examples/cgroup_proof.rs` as its job.
//!
//! Needs root and qemu-system-x86_64 + busybox (`scripts/deps`); skips without them, fails
//! under `CI`. The first run on a machine downloads the Debian kernel (about 70 MB) into
//! `/var/cache/skiff-vm`. By hand: `cargo test --test vm_cgroup2 -- --nocapture`.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::vm::{Runner, script};

const CHECKS: &[&str] = &["memory", "pids", "cpu", "kill"];
/// The guest's own limit (the runner kills QEMU after it: exit 124).
const GUEST_TIMEOUT_SECS: u32 = 90;
/// Ours, for the whole runner including a first kernel download.
const RUNNER_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn cgroup_v2_controllers_in_a_qemu_guest() {
    if !support::privileged_with(&["qemu-system-x86_64", "busybox"]) {
        return;
    }
    let start = Instant::now();
    let proof = build_example("cgroup_proof");
    let built = start.elapsed();

    let mut cmd = Command::new(script("run.sh"));
    cmd.arg("-t")
        .arg(GUEST_TIMEOUT_SECS.to_string())
        .arg("-b")
        .arg(&proof)
        .args(["--", "cgroup_proof", "--require-v2"]);
    let run_start = Instant::now();
    let (code, stdout, stderr) = Runner::spawn(cmd).finish(RUNNER_TIMEOUT);
    let ran = run_start.elapsed();

    println!("{stdout}");
    eprintln!("{stderr}");
    println!(
        "timing: example build {:.1} s, runner {:.1} s ({}), whole test {:.1} s",
        built.as_secs_f64(),
        ran.as_secs_f64(),
        stderr
            .lines()
            .find_map(|l| l.strip_prefix("run.sh: timing: "))
            .unwrap_or("no timing line"),
        start.elapsed().as_secs_f64()
    );

    assert!(
        stdout.lines().any(|l| l.starts_with("layout Unified ")),
        "the guest is not pure cgroup v2:\n{stdout}"
    );
    for check in CHECKS {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("check {check} ")))
            .unwrap_or_else(|| panic!("no result for check {check}:\n{stdout}\n{stderr}"));
        assert!(
            line.starts_with(&format!("check {check} ok ")),
            "check {check} failed: {line}"
        );
    }
    assert_eq!(
        code,
        Some(0),
        "the guest job did not exit 0 (124: timeout, 125: no result)"
    );
}

/// Builds example `name` of the runtime with the cargo running this test and returns its path.
/// `--workspace` keeps the feature set of `cargo test --workspace`, which has already built the
/// example, so this is a freshness check. The variables cargo sets for this test process are
/// dropped: build scripts watch some (ring: `CARGO_MANIFEST_DIR`), and a different value
/// would rebuild them and everything above, twice per run.
fn build_example(name: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || key == "CARGO_TARGET_TMPDIR"
            || key == "OUT_DIR"
        {
            cmd.env_remove(&*key);
        }
    }
    let out = cmd
        .args(["build", "--workspace", "--example", name])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "cargo build --example {name} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no executable for example {name}"))
}
