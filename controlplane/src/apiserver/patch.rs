//! Applying PATCH bodies to a JSON object: JSON merge patch (RFC 7386) and JSON patch
//! (RFC 6902), via `json-patch`. Strategic merge patch lives in `strategic.rs`.

use serde_json::Value;

use super::request::Patch;
use super::status::ApiError;
use super::strategic;

/// `object` with `patch` applied.
pub fn apply(object: &Value, patch: &Patch) -> Result<Value, ApiError> {
    let mut doc = object.clone();
    match patch {
        Patch::Merge(p) => {
            if !p.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut doc, p);
        }
        Patch::Json(p) => {
            let ops: json_patch::Patch = serde_json::from_value(p.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                ApiError::unprocessable(format!("the JSON patch could not be applied: {e}"))
            })?;
        }
        Patch::Strategic(p) => doc = strategic::merge(&doc, p)?,
        Patch::Apply(_) => {
            return Err(ApiError::unsupported_media_type(
                "application/apply-patch+yaml",
            ));
        }
    }
    if !doc.is_object() {
        return Err(ApiError::unprocessable(
            "the patched object is not a JSON object",
        ));
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes() {
        let obj = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 1}});
        let out = apply(
            &obj,
            &Patch::Merge(json!({"metadata": {"labels": {"b": null, "c": "3"}},
            "spec": {"replicas": 4}})),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"a": "1", "c": "3"}}, "spec": {"replicas": 4}})
        );
        assert_eq!(
            apply(&obj, &Patch::Merge(json!([1]))).unwrap_err().code,
            400
        );
    }

    #[test]
    fn json_patch_applies_or_fails_with_422() {
        let obj = json!({"spec": {"replicas": 1}});
        let ok = apply(
            &obj,
            &Patch::Json(json!([{"op": "replace", "path": "/spec/replicas", "value": 2}])),
        )
        .unwrap();
        assert_eq!(ok["spec"]["replicas"], 2);
        let failed = apply(
            &obj,
            &Patch::Json(json!([{"op": "test", "path": "/spec/replicas", "value": 5}])),
        );
        assert_eq!(failed.unwrap_err().code, 422);
        assert_eq!(
            apply(&obj, &Patch::Json(json!({"op": "x"})))
                .unwrap_err()
                .code,
            400
        );
    }
}
