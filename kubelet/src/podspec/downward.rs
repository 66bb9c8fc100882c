//! The downward API: facts about the pod and its containers as strings, computed as the
//! kubelet does, for `env[].valueFrom.fieldRef` / `resourceFieldRef` and `downwardAPI` volume
//! items.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};
use skiff_api::Quantity;

use super::{PlanContext, PodSpecError};

/// Where a field reference is read: env allows single labels and status fields, volumes
/// whole label and annotation maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    Env,
    Volume,
}

/// The value of `fieldRef`; `field` is the selector's place (`…valueFrom.fieldRef`).
pub(crate) fn field_ref(
    pod: &Pod,
    ctx: &PlanContext,
    sel: &ObjectFieldSelector,
    field: &str,
    used: Use,
) -> Result<String, PodSpecError> {
    if sel
        .api_version
        .as_deref()
        .is_some_and(|v| !v.is_empty() && v != "v1")
    {
        return Err(PodSpecError::new(
            format!("{field}.apiVersion"),
            format!(
                "unsupported version {:?}",
                sel.api_version.as_deref().unwrap_or("")
            ),
        ));
    }
    let meta = &pod.metadata;
    let spec = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> &Option<String>| {
        pod.spec.as_ref().and_then(|s| f(s).clone())
    };
    let path = sel.field_path.as_str();
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    let value = match (path, used) {
        ("metadata.name", _) => text(&meta.name),
        ("metadata.namespace", _) => meta
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
        ("metadata.uid", _) => text(&meta.uid),
        ("metadata.labels", Use::Volume) => format_map(meta.labels.as_ref()),
        ("metadata.annotations", Use::Volume) => format_map(meta.annotations.as_ref()),
        ("spec.nodeName", Use::Env) => {
            spec(|s| &s.node_name).unwrap_or_else(|| ctx.node_hostname.clone())
        }
        ("spec.serviceAccountName", Use::Env) => {
            spec(|s| &s.service_account_name).unwrap_or_default()
        }
        ("status.hostIP", Use::Env) => host_ips(ctx, field)?[0].to_string(),
        ("status.hostIPs", Use::Env) => join(host_ips(ctx, field)?),
        ("status.podIP", Use::Env) => pod_ips(pod, ctx, field)?[0].to_string(),
        ("status.podIPs", Use::Env) => join(pod_ips(pod, ctx, field)?),
        _ => match subscript(path) {
            Some(("metadata.labels", key)) => meta.labels.as_ref().and_then(|m| m.get(key)),
            Some(("metadata.annotations", key)) => {
                meta.annotations.as_ref().and_then(|m| m.get(key))
            }
            _ => {
                return Err(PodSpecError::new(
                    format!("{field}.fieldPath"),
                    format!("unsupported field {path:?}"),
                ));
            }
        }
        .cloned()
        .unwrap_or_default(),
    };
    Ok(value)
}

/// `metadata.labels['key']` → (`metadata.labels`, `key`).
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (base, rest) = path.split_once("['")?;
    Some((base, rest.strip_suffix("']")?))
}

fn host_ips<'a>(ctx: &'a PlanContext, field: &str) -> Result<&'a [IpAddr], PodSpecError> {
    if ctx.host_ips.is_empty() {
        return Err(PodSpecError::new(
            format!("{field}.fieldPath"),
            "the node's address is not known here",
        ));
    }
    Ok(&ctx.host_ips)
}

/// The pod's address; a host-network pod has the node's.
fn pod_ips<'a>(pod: &Pod, ctx: &'a PlanContext, field: &str) -> Result<&'a [IpAddr], PodSpecError> {
    match &ctx.ip {
        Some(ip) if !super::host_network(pod) => Ok(std::slice::from_ref(ip)),
        _ => host_ips(ctx, field),
    }
}

fn join(ips: &[IpAddr]) -> String {
    let all: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
    all.join(",")
}

/// Kubernetes' `FormatMap`: `key="value"` lines, sorted, values quoted as Go's `%q` does.
pub(crate) fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let lines: Vec<String> = map
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect();
    lines.join("\n")
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of `resourceFieldRef` for container `c`: its limit (else the node's allocatable)
/// or request (else its limit, else 0), divided by `divisor` and rounded up.
pub(crate) fn resource_field_ref(
    c: &Container,
    ctx: &PlanContext,
    sel: &ResourceFieldSelector,
    field: &str,
) -> Result<String, PodSpecError> {
    let Some((which, resource)) = sel.resource.split_once('.') else {
        return Err(unsupported_resource(sel, field));
    };
    let alloc = &ctx.allocatable;
    let (allocatable, cpu) = match resource {
        "cpu" => (alloc.cpu_milli, true),
        "memory" => (alloc.memory_bytes, false),
        "ephemeral-storage" => (alloc.ephemeral_storage_bytes, false),
        _ => return Err(unsupported_resource(sel, field)),
    };
    let reqs = c.resources.clone().unwrap_or_default();
    let get = |map: &Option<BTreeMap<String, _>>| -> Result<Option<u64>, PodSpecError> {
        let q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity> =
            map.as_ref().and_then(|m| m.get(resource));
        q.map(|q| {
            let q = Quantity::parse(&q.0).map_err(|m| {
                PodSpecError::new(format!("{field}.resource"), format!("{resource}: {m}"))
            })?;
            Ok(if cpu { q.ceil_milli() } else { q.ceil() })
        })
        .transpose()
    };
    let limit = get(&reqs.limits)?;
    let value = match which {
        "limits" => limit.unwrap_or(allocatable),
        "requests" => get(&reqs.requests)?.or(limit).unwrap_or(0),
        _ => return Err(unsupported_resource(sel, field)),
    };
    let divisor = divisor(sel, cpu, field)?;
    Ok(value.div_ceil(divisor).to_string())
}

fn unsupported_resource(sel: &ResourceFieldSelector, field: &str) -> PodSpecError {
    PodSpecError::new(
        format!("{field}.resource"),
        format!("unsupported container resource {:?}", sel.resource),
    )
}

/// The divisor in millicores (cpu) or bytes, one of those Kubernetes allows; 1 when unset.
fn divisor(sel: &ResourceFieldSelector, cpu: bool, field: &str) -> Result<u64, PodSpecError> {
    let Some(text) = sel.divisor.as_ref().map(|d| d.0.as_str()) else {
        return Ok(if cpu { 1000 } else { 1 });
    };
    let bad = || {
        let allowed = if cpu {
            "1m or 1"
        } else {
            "1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi or 1Ei"
        };
        PodSpecError::new(
            format!("{field}.divisor"),
            format!("{text:?} is not {allowed}"),
        )
    };
    let q = Quantity::parse(text).map_err(|_| bad())?;
    let milli = q.ceil_milli();
    if milli == 0 {
        return Ok(if cpu { 1000 } else { 1 });
    }
    if cpu {
        return [1, 1000].contains(&milli).then_some(milli).ok_or_else(bad);
    }
    let whole = milli % 1000 == 0;
    let bytes = q.ceil();
    let allowed = (0..7).any(|i| bytes == 1000u64.pow(i)) || (1..7).any(|i| bytes == 1 << (10 * i));
    (whole && allowed).then_some(bytes).ok_or_else(bad)
}
