//! The `skiff` binary: a thin clap front over the crates.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: the control plane allocates and frees JSON trees from many threads at once,
/// where glibc's malloc spent a quarter of the scheduler benchmark (docs/design/008).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A container's setup process is this binary re-executed; it never returns from here.
    skiff_runtime::container::run_if_setup_process();
    // One TLS crypto provider for the whole process (tonic's server TLS, registry pulls and
    // the join client all use the process default).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = skiff::cli::Cli::parse();
    skiff::cli::init_tracing(cli.verbose);
    match skiff::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            let causes: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("skiff: error: {}", dedup_causes(&causes).join(": "));
            ExitCode::FAILURE
        }
    }
}

/// Drops a cause whose text its parent already contains (thiserror messages often embed it).
fn dedup_causes(causes: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for cause in causes {
        if !out.last().is_some_and(|prev| prev.contains(cause.as_str())) {
            out.push(cause.clone());
        }
    }
    out
}
