//! Containers from raw Linux primitives, without a shim: each container is a PID namespace
//! whose PID 1 is skiff-init, set up by a short-lived setup process from a plan the runtime
//! writes. See `setup.rs` for the process tree and `plan.rs` for the rootfs.

pub mod attach;
mod exec;
mod exec_process;
mod join;
pub mod logs;
mod manager;
pub mod plan;
pub mod process;
mod rootfs;
pub mod seccomp;
mod setup;
pub mod spec;
pub mod state;
mod sys;

use std::path::PathBuf;

pub use exec::{EXEC_ARG0, ExecSpec};
pub use exec_process::{ExecProcess, resize_tty};
pub use manager::{ContainerStatus, Containers, State};
pub use setup::{SETUP_ARG0, run_if_setup_process};
pub use spec::{
    BindMount, ContainerSpec, DEFAULT_CAPABILITIES, LogSpec, NsKind, ProcessSpec, Propagation,
    StdioSpec,
};
pub use state::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("invalid container id {0:?}: use lowercase letters, digits, '.', '_' and '-'")]
    InvalidId(String),
    #[error("container {0} already exists")]
    Exists(String),
    #[error("container {0} not found")]
    NotFound(String),
    #[error("container {id} is {state}, not {wanted}")]
    State {
        id: String,
        wanted: &'static str,
        state: String,
    },
    #[error("setting up container {id}: {message}")]
    Setup { id: String, message: String },
    #[error("starting container {id}: {message}")]
    Exec { id: String, message: String },
    #[error("exec in container {id}: {message}")]
    ExecFailed { id: String, message: String },
    #[error("attach to container {id}: {message}")]
    Attach { id: String, message: String },
    #[error("{op} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}
