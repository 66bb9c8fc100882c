//! Shared by the control plane and the node agent: Kubernetes resource quantities and the
//! node contract (`proto/node.proto`: the gRPC services nodes dial; `proto/stream.proto`:
//! the streams that carry logs, exec, attach and port-forward to a pod;
//! `proto/services.proto`: the Services and EndpointSlices a node's proxy follows), and the
//! node's side of dialling it (`dial`: one mutual-TLS channel for every client).
#![forbid(unsafe_code)]

pub mod dial;
pub mod join;
pub mod quantity;

pub use quantity::Quantity;

/// The node contract, generated from `proto/node.proto`, `proto/stream.proto` and
/// `proto/services.proto`.
pub mod node {
    #![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
    tonic::include_proto!("skiff.node.v1");
}
