//! Builds `init/skiff-init.rs`, PID 1 of every container, as a small static binary that the
//! runtime embeds (`include_bytes!`) and installs into its state directory. It has no crate
//! dependencies, so plain `rustc` builds it; static linking keeps it independent of the
//! container's root file system and small in memory.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "init/skiff-init.rs";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("skiff-init");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let build = |extra: &[&str]| {
        Command::new(&rustc)
            .args([
                "--edition=2024",
                "--crate-type=bin",
                "-C",
                "opt-level=s",
                "-C",
                "panic=abort",
            ])
            .args(["-C", "debuginfo=0", "-C", "strip=symbols"])
            .args(extra)
            .arg("-o")
            .arg(&out)
            .arg(source)
            .status()
    };
    // Static when glibc's static library is there (libc6-dev); dynamic otherwise.
    // Whole-program LTO with one codegen unit drops the parts of std the init never calls:
    // ~10% smaller, and fewer of its pages are touched, which is what its RSS counts.
    let small = ["-C", "lto=fat", "-C", "codegen-units=1"];
    let ok = matches!(build(&[&small[..], &["-C", "target-feature=+crt-static"]].concat()), Ok(s) if s.success())
        || matches!(build(&[]), Ok(s) if s.success());
    assert!(ok, "building {source} with {rustc:?} failed");
}
