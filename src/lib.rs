//! The pieces of the `skiff` binary: command-line handling and the benchmark programs.
#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;

/// The binary the runtime runs as a container's setup process: `skiff-setup` next to this
/// executable when it is installed (it is much smaller, so each container start execs less),
/// else this executable itself, which does the same work under that name.
pub fn setup_binary() -> std::io::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let small = exe.with_file_name("skiff-setup");
    Ok(if small.is_file() { small } else { exe })
}
