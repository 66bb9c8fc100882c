//! skiff's control plane: the revisioned object store and the Kubernetes API server on it.
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod controllers;
pub mod hollow;
pub mod node;
pub mod store;
