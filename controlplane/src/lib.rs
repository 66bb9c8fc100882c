//! skiff's control plane: the revisioned object store the API server is built on.
#![forbid(unsafe_code)]

pub mod store;
