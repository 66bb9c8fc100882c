//! Shared pieces of the end-to-end tests: running the real `skiff` binary, building the test
//! images, and deciding whether a privileged test may run.
#![allow(dead_code)]

pub mod cleanup;
pub mod cluster;
pub mod multinode;
pub mod netlab;
pub mod pods;
pub mod runtime;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use skiff_testsupport::privileged_with;

/// `skiff --root ROOT ARGS…`
pub fn skiff(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run skiff")
}

/// Runs skiff and insists on success; returns stdout.
pub fn skiff_ok(root: &Path, args: &[&str]) -> String {
    let out = skiff(root, args);
    assert!(
        out.status.success(),
        "skiff {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs skiff and insists on failure with a one-line error; returns that line.
pub fn skiff_err(root: &Path, args: &[&str]) -> String {
    let out = skiff(root, args);
    assert!(!out.status.success(), "skiff {args:?} should have failed");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "errors are one line: {stderr:?}");
    assert!(stderr.starts_with("skiff: error: "), "{stderr}");
    stderr
}

/// Builds a test image (tests/image/mkimage.py) as an OCI layout in `dir`.
pub fn build_image(dir: &Path, variant: &str, extra: &[&str]) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/image/mkimage.py");
    let out = dir.join(format!("layout-{variant}"));
    let status = Command::new("python3")
        .arg(script)
        .arg(&out)
        .args(["--variant", variant])
        .args(extra)
        .status()
        .expect("run mkimage.py");
    assert!(status.success(), "mkimage.py {variant} failed");
    out
}

/// A file listing of a directory tree: `path|type|mode|uid|gid|size|links|target` per entry.
pub fn listing(dir: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(".")
        .args(["-printf", "%p|%y|%m|%U|%G|%s|%n|%l\n"])
        .current_dir(dir)
        .output()
        .expect("find");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}
