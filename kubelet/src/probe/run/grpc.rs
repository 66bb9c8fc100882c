//! `grpc` probes: the standard `grpc.health.v1.Health/Check` over plaintext HTTP/2, with the
//! request and response messages written out by hand (no protoc). `SERVING` is a success.

use http::uri::PathAndQuery;
use tonic::transport::Endpoint;

use super::chain;
use crate::probe::state::ProbeResult;

const CHECK: &str = "/grpc.health.v1.Health/Check";

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HealthCheckRequest {
    /// The service asked about; empty: the server as a whole.
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`; `status` is a `ServingStatus` (an enum on the wire is
/// a varint like an int32).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct HealthCheckResponse {
    /// 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `ServingStatus`'s name, as the kubelet's message shows it.
fn status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// Asks the health service at `addr` (`host:port`) about `service`. The caller bounds the time
/// (tonic's own timeouts would word it differently).
pub(super) async fn check(addr: &str, service: &str) -> ProbeResult {
    let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e,
        Err(e) => return ProbeResult::Failure(format!("grpc address {addr}: {}", chain(&e))),
    };
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => {
            return ProbeResult::Failure(format!(
                "failed to connect service {addr:?}: {}",
                chain(&e)
            ));
        }
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        return ProbeResult::Failure(format!("failed to connect service {addr:?}: {}", chain(&e)));
    }
    let request = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    match grpc
        .unary(request, PathAndQuery::from_static(CHECK), codec)
        .await
    {
        Ok(response) if response.get_ref().status == 1 => ProbeResult::Success,
        Ok(response) => ProbeResult::Failure(format!(
            "service unhealthy (responded with {:?})",
            status_name(response.get_ref().status)
        )),
        Err(status) => ProbeResult::Failure(format!(
            "health rpc probe failed: rpc error: code = {:?} desc = {}",
            status.code(),
            status.message()
        )),
    }
}
