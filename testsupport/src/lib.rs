//! What the privileged tests of every crate share: whether one may run here. A test that
//! needs root (or a program) skips with a message when it lacks it — and fails instead under
//! `CI=true`, where every test must run. A dev-dependency only; nothing ships with it.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// True when the test may run: root, and the named programs on `PATH`. Outside CI a
/// missing prerequisite skips the test with a message; under CI it fails the test.
pub fn privileged_with(programs: &[&str]) -> bool {
    let mut missing: Vec<String> = Vec::new();
    if !is_root() {
        missing.push("root".into());
    }
    for program in programs {
        if which(program).is_none() {
            missing.push(format!("the `{program}` program"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run this test, but it lacks {}",
        missing.join(", ")
    );
    eprintln!("skipping: needs {}", missing.join(", "));
    false
}

/// True when the test may run as root (see [`privileged_with`]).
pub fn privileged() -> bool {
    privileged_with(&[])
}

/// The effective uid is 0 (read from /proc: no libc bindings needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Where `program` is on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
