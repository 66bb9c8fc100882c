//! The data plane's errors: each names the map, program, pin or path, and the call that
//! failed (aya's own errors name the bpf(2) command).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("bpffs at {path}: {call}")]
    Bpffs {
        path: PathBuf,
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the BPF object")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("map {name} is not in the BPF object")]
    MissingMap { name: &'static str },
    #[error("program {name} is not in the BPF object")]
    MissingProgram { name: &'static str },
    #[error("map {name}: {what}")]
    Map {
        name: &'static str,
        what: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {name}: {call}")]
    Batch {
        name: &'static str,
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("program {name}: {what}")]
    Program {
        name: &'static str,
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("pinning at {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("pinned link {path}")]
    Link {
        path: PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("{path}: {call}")]
    Io {
        path: PathBuf,
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("data plane configuration: {0}")]
    Config(String),
}

impl DataplaneError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        call: &'static str,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| DataplaneError::Io { path, call, source }
    }
}
