//! Strategic merge patch (`application/strategic-merge-patch+json`), the subset without
//! lists or `$` directives — where it equals a JSON merge patch (what `kubectl label`,
//! `annotate` and `rollout restart` send). Patches with lists (merge keys such as
//! containers by `name`) or directives (`$patch`, `$setElementOrder`, `$retainKeys`,
//! `$deleteFromPrimitiveList`) are refused with 415 until the full algorithm lands.

use serde_json::Value;

use super::status::ApiError;

/// Whether the patch uses lists or `$` directives anywhere.
fn needs_full_algorithm(patch: &Value) -> bool {
    match patch {
        Value::Array(_) => true,
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.starts_with('$') || needs_full_algorithm(v)),
        _ => false,
    }
}

/// Applies a strategic merge patch of the supported subset.
pub fn merge(object: &Value, patch: &Value) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "a strategic merge patch must be a JSON object",
        ));
    }
    if needs_full_algorithm(patch) {
        let mut err = ApiError::unsupported_media_type("application/strategic-merge-patch+json");
        err.message = "strategic merge patches with lists or $-directives are not supported yet; use --type=merge or --type=json".into();
        return Err(err);
    }
    let mut doc = object.clone();
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_merge_and_null_deletes() {
        let obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": [1, 2]}});
        let out = merge(
            &obj,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}, "spec": {"x": [1, 2]}})
        );
    }

    #[test]
    fn lists_and_directives_are_refused() {
        let obj = json!({"spec": {}});
        let lists = json!({"spec": {"containers": [{"name": "a", "image": "b"}]}});
        assert_eq!(merge(&obj, &lists).unwrap_err().code, 415);
        let directive = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}]}});
        assert_eq!(merge(&obj, &directive).unwrap_err().code, 415);
        let retain = json!({"spec": {"$retainKeys": "x"}});
        assert_eq!(merge(&obj, &retain).unwrap_err().code, 415);
        assert_eq!(merge(&obj, &json!([1])).unwrap_err().code, 400);
    }
}
