//! Services and EndpointSlices from a file (YAML documents, JSON, or a `List`) into a
//! [`ClusterState`]: the input of `skiff proxy apply -f`, for node debugging and tests.

use serde_json::Value;

use crate::state::{ClusterState, ObjectKey};

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("document {index}: {message}")]
    Document { index: usize, message: String },
}

/// Parses every document of `text`: Services and EndpointSlices (v1), or Lists of them.
/// Objects without a namespace go to `default`.
pub fn parse(text: &str) -> Result<ClusterState, ObjectsError> {
    let mut state = ClusterState::default();
    for (index, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let bad = |message: String| ObjectsError::Document { index, message };
        let value: Value = serde::Deserialize::deserialize(doc).map_err(|e| bad(e.to_string()))?;
        if value.is_null() {
            continue; // an empty document (a trailing `---`)
        }
        add(&mut state, value).map_err(bad)?;
    }
    Ok(state)
}

fn add(state: &mut ClusterState, value: Value) -> Result<(), String> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match kind.as_str() {
        "List" | "ServiceList" | "EndpointSliceList" => {
            let items = value
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            items.into_iter().try_for_each(|item| add(state, item))
        }
        "Service" => {
            let mut svc: k8s_openapi::api::core::v1::Service =
                serde_json::from_value(value).map_err(|e| format!("Service: {e}"))?;
            svc.metadata
                .namespace
                .get_or_insert_with(|| "default".into());
            let key = key_of(&svc.metadata, "Service")?;
            state.services.insert(key, svc);
            Ok(())
        }
        "EndpointSlice" => {
            let mut slice: k8s_openapi::api::discovery::v1::EndpointSlice =
                serde_json::from_value(value).map_err(|e| format!("EndpointSlice: {e}"))?;
            slice
                .metadata
                .namespace
                .get_or_insert_with(|| "default".into());
            let key = key_of(&slice.metadata, "EndpointSlice")?;
            state.slices.insert(key, slice);
            Ok(())
        }
        "" => Err("no kind".into()),
        other => Err(format!("kind {other} is not a Service or EndpointSlice")),
    }
}

fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &str,
) -> Result<ObjectKey, String> {
    match meta.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(ObjectKey::of(meta)),
        _ => Err(format!("{kind} without metadata.name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_and_lists() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
  addressType: IPv4
  endpoints: [{addresses: [10.244.0.2]}]
---
"#;
        let state = parse(text).unwrap();
        assert!(
            state
                .services
                .contains_key(&ObjectKey::new("default", "web"))
        );
        assert_eq!(
            state.slices_of(&ObjectKey::new("default", "web")).count(),
            1
        );
    }

    #[test]
    fn errors_name_the_document() {
        let err = parse("kind: Service\nmetadata: {name: a}\n---\nkind: Pod\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 1: kind Pod is not a Service or EndpointSlice"
        );
        let err = parse("kind: Service\nspec: {ports: 3}\n").unwrap_err();
        assert!(err.to_string().starts_with("document 0: Service:"), "{err}");
        assert!(
            parse("kind: Service\n")
                .unwrap_err()
                .to_string()
                .contains("without metadata.name")
        );
        assert!(parse(": : :").is_err());
    }
}
