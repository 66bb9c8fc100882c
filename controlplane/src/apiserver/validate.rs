//! Object validation: names (RFC 1123 / RFC 1035), label keys and values, and the unknown
//! fields that `fieldValidation=Strict` rejects.

use serde_json::Value;

use super::status::Cause;

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Which rule an object name follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most kinds), at most 253 characters.
    Subdomain,
    /// DNS-1123 label (namespaces), at most 63.
    Label,
    /// DNS-1035 label (services): starts with a letter, at most 63.
    Dns1035,
    /// Any path segment (events): no `/` or `%`, not `.` or `..`.
    PathSegment,
}

/// The name rule of a resource, as kube-apiserver applies it.
pub fn name_rule(plural: &str) -> NameRule {
    match plural {
        "namespaces" => NameRule::Label,
        "services" => NameRule::Dns1035,
        "events" => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

fn is_label(s: &str, first_alpha: bool) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            (if first_alpha {
                first.is_ascii_lowercase()
            } else {
                alnum(first)
            }) && alnum(last)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

fn is_subdomain(s: &str) -> bool {
    s.split('.').all(|part| is_label(part, false))
}

fn invalid(field: &str, value: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        message: format!("Invalid value: \"{value}\": {detail}"),
        field: field.to_owned(),
    }
}

/// The problems with `name` under `rule` (empty when valid).
pub fn validate_name(name: &str, rule: NameRule) -> Vec<Cause> {
    const FIELD: &str = "metadata.name";
    if name.is_empty() {
        return vec![Cause {
            reason: "FieldValueRequired",
            message: "Required value: name or generateName is required".into(),
            field: FIELD.into(),
        }];
    }
    let (ok, max, msg) = match rule {
        NameRule::Subdomain => (is_subdomain(name), 253, SUBDOMAIN_MSG),
        NameRule::Label => (is_label(name, false), 63, LABEL_MSG),
        NameRule::Dns1035 => (is_label(name, true), 63, DNS1035_MSG),
        NameRule::PathSegment => {
            let ok = !name.contains(['/', '%']) && name != "." && name != "..";
            (
                ok,
                usize::MAX,
                "may not contain '/' or '%' and may not be '.' or '..'",
            )
        }
    };
    let mut causes = Vec::new();
    if name.len() > max {
        causes.push(invalid(
            FIELD,
            name,
            &format!("must be no more than {max} characters"),
        ));
    }
    if !ok {
        causes.push(invalid(FIELD, name, msg));
    }
    causes
}

fn is_label_value(v: &str) -> bool {
    let bytes = v.as_bytes();
    let ok_char = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    v.len() <= 63
        && (bytes.is_empty()
            || (bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes.iter().all(ok_char)))
}

fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    !name.is_empty()
        && is_label_value(name)
        && prefix.is_none_or(|p| p.len() <= 253 && is_subdomain(p))
}

/// The problems with `metadata.labels`.
pub fn validate_labels(object: &Value) -> Vec<Cause> {
    let Some(labels) = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let mut causes = Vec::new();
    for (key, value) in labels {
        if !is_label_key(key) {
            causes.push(invalid("metadata.labels", key, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
        let value = value.as_str().unwrap_or_default();
        if !is_label_value(value) {
            causes.push(invalid("metadata.labels", value, LABEL_VALUE_MSG));
        }
    }
    causes
}

/// The dotted paths of fields present in `input` but dropped by the typed round trip
/// (`typed`): what `fieldValidation=Strict` rejects. `null` values are not reported.
pub fn unknown_fields(input: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(input, typed, "", &mut out);
    out
}

fn walk(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (key, value) in i {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match t.get(key) {
                    Some(tv) => walk(value, tv, &child, out),
                    None if value.is_null() => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t).enumerate() {
                walk(iv, tv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_their_rule() {
        assert!(validate_name("web-1.example", NameRule::Subdomain).is_empty());
        let bad = validate_name("Bad_Name", NameRule::Subdomain);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].field, "metadata.name");
        assert!(
            bad[0]
                .message
                .starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain")
        );
        assert!(!validate_name("a.b", NameRule::Label).is_empty());
        assert!(validate_name("1abc", NameRule::Label).is_empty());
        assert!(!validate_name("1abc", NameRule::Dns1035).is_empty());
        assert!(!validate_name("-a", NameRule::Subdomain).is_empty());
        assert!(!validate_name(&"a".repeat(64), NameRule::Label).is_empty());
        assert_eq!(
            validate_name("", NameRule::Subdomain)[0].reason,
            "FieldValueRequired"
        );
        assert!(validate_name("web.17f3a", NameRule::PathSegment).is_empty());
        assert!(!validate_name("a/b", NameRule::PathSegment).is_empty());
        assert_eq!(name_rule("services"), NameRule::Dns1035);
    }

    #[test]
    fn labels_are_checked() {
        let ok = json!({"metadata": {"labels": {"app.kubernetes.io/name": "web", "x": ""}}});
        assert!(validate_labels(&ok).is_empty());
        let bad = json!({"metadata": {"labels": {"bad key": "v", "k": "-v"}}});
        assert_eq!(validate_labels(&bad).len(), 2);
    }

    #[test]
    fn unknown_fields_reports_dotted_paths() {
        let input = json!({"spec": {"replicas": 1, "replica": 2, "template": {"spec":
            {"containers": [{"name": "a", "imagee": "x"}]}}}, "extra": null});
        let typed = json!({"spec": {"replicas": 1, "template": {"spec":
            {"containers": [{"name": "a"}]}}}});
        assert_eq!(
            unknown_fields(&input, &typed),
            vec!["spec.replica", "spec.template.spec.containers[0].imagee"]
        );
    }
}
