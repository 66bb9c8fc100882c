//! The cluster DNS Service, `kube-system/kube-dns`, at the address pods' resolv.conf names
//! (`NodeSettings::cluster_dns`). Every node's proxy answers on that address itself
//! (docs/design/011-node-local-dns.md), so the Service has no selector and no endpoints:
//! it makes the address visible (`kubectl get svc -n kube-system`), keeps the allocator
//! from handing it to another Service, and tells the proxies which Service the data plane
//! must leave alone.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::apiserver::{ApiError, Client};

/// The Service's namespace and name.
pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "kube-dns";

/// The Service as the control plane creates it.
pub fn service(address: Ipv4Addr) -> Service {
    let port = |name: &str, protocol: &str| ServicePort {
        name: Some(name.into()),
        port: 53,
        protocol: Some(protocol.into()),
        ..ServicePort::default()
    };
    Service {
        metadata: ObjectMeta {
            namespace: Some(NAMESPACE.into()),
            name: Some(NAME.into()),
            labels: Some(
                [
                    ("k8s-app".to_string(), "kube-dns".to_string()),
                    ("kubernetes.io/name".to_string(), "CoreDNS".to_string()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(address.to_string()),
            ports: Some(vec![port("dns", "UDP"), port("dns-tcp", "TCP")]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Creates `kube-system/kube-dns` at `address` unless it exists (a user's own is kept).
pub async fn ensure_service(client: &Client, address: Ipv4Addr) -> Result<(), ApiError> {
    if client
        .get_opt::<Service>(Some(NAMESPACE), NAME)
        .await?
        .is_some()
    {
        return Ok(());
    }
    match client.create(&service(address)).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()), // another control-plane process made it
        Err(e) => Err(e),
    }
}
