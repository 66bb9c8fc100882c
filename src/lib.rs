//! The pieces of the `skiff` binary: command-line handling and the benchmark programs.
#![forbid(unsafe_code)]

pub mod bench;
pub mod cli;
