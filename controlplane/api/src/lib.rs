//! Shared by the control plane and the node agent: Kubernetes resource quantities (and,
//! with the kubelet issue, the node contract).
#![forbid(unsafe_code)]

pub mod join;
pub mod quantity;

pub use quantity::Quantity;
