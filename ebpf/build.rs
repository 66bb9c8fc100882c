//! Builds the BPF object (bpf/skiff_lb.c) with clang, so `cargo build` is all a user runs.
//! The object lands in OUT_DIR and is embedded by src/lib.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = Path::new("bpf/skiff_lb.c");
    println!("cargo:rerun-if-changed=bpf/skiff_lb.c");
    println!("cargo:rerun-if-changed=bpf/skiff_lb.h");
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());

    // <asm/types.h> lives in the multiarch include directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");

    let object = out.join("skiff_lb.o");
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .arg(format!("-I{multiarch}"))
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(&object);
    let status = match cmd.status() {
        Ok(status) => status,
        Err(e) => panic!(
            "skiff-ebpf: cannot run `{clang}` ({e}): the BPF programs are built with clang; \
             install the Debian packages `clang` and `libbpf-dev` (scripts/deps does)"
        ),
    };
    if !status.success() {
        panic!(
            "skiff-ebpf: `{clang}` failed to build bpf/skiff_lb.c ({status}); it needs the \
             Debian packages `clang`, `libbpf-dev` (bpf/bpf_helpers.h) and `linux-libc-dev`"
        );
    }
}
