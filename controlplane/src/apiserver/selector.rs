//! Label selectors (`app=web,tier in (a,b),!legacy`) and field selectors
//! (`metadata.name=x,status.phase!=Running`): parsing and matching against JSON objects.

use serde_json::Value;

use super::status::ApiError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `k=v`, `k==v`, `k in (v1,v2)`.
    In(String, Vec<String>),
    /// `k!=v`, `k notin (v1,v2)` (also true when the label is absent).
    NotIn(String, Vec<String>),
    /// `k`.
    Exists(String),
    /// `!k`.
    DoesNotExist(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

/// Splits on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
}

fn set_values(rest: &str, raw: &str) -> Result<Vec<String>, ApiError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: {raw}")))?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

fn parse_requirement(raw: &str) -> Result<LabelRequirement, ApiError> {
    let part = raw.trim();
    let bad = || ApiError::bad_request(format!("unable to parse requirement: {raw}"));
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelRequirement::DoesNotExist(key.trim().to_owned()));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(LabelRequirement::NotIn(
            key.trim().into(),
            vec![value.trim().into()],
        ));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(LabelRequirement::In(
            key.trim().into(),
            vec![value.trim().into()],
        ));
    }
    if let Some((key, rest)) = part.split_once(" notin ") {
        return Ok(LabelRequirement::NotIn(
            key.trim().into(),
            set_values(rest, raw)?,
        ));
    }
    if let Some((key, rest)) = part.split_once(" in ") {
        return Ok(LabelRequirement::In(
            key.trim().into(),
            set_values(rest, raw)?,
        ));
    }
    if part.is_empty() || part.contains([' ', '(', ')']) {
        return Err(bad());
    }
    Ok(LabelRequirement::Exists(part.to_owned()))
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        if input.trim().is_empty() {
            return Ok(LabelSelector::default());
        }
        split_top_level(input)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<Vec<_>, _>>()
            .map(LabelSelector)
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.get("metadata").and_then(|m| m.get("labels"));
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|req| match req {
            LabelRequirement::In(k, vs) => label(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|v| vs.iter().all(|x| x != v)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::DoesNotExist(k) => label(k).is_none(),
        })
    }
}

/// One `field=value` or `field!=value` term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    /// The dotted field label, e.g. `spec.nodeName`.
    pub field: String,
    /// The value compared with.
    pub value: String,
    /// `!=` instead of `=`.
    pub negated: bool,
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldTerm>);

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter.
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            terms.push(FieldTerm {
                field: field.trim().to_owned(),
                value: value.trim().to_owned(),
                negated,
            });
        }
        Ok(FieldSelector(terms))
    }

    /// The first field not in `supported`, as kube-apiserver's 400 message.
    pub fn check(&self, supported: impl Fn(&str) -> bool) -> Result<(), ApiError> {
        match self.0.iter().find(|t| !supported(&t.field)) {
            Some(t) => Err(ApiError::bad_request(format!(
                "field label not supported: {}",
                t.field
            ))),
            None => Ok(()),
        }
    }

    /// Whether the object's fields satisfy every term (absent fields read as `""`).
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|t| {
            let actual = t
                .field
                .split('.')
                .try_fold(object, |v, k| v.get(k))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            (actual == t.value) != t.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels},
               "spec": {"nodeName": "n1", "replicas": 3}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_parses_every_operator() {
        let sel = LabelSelector::parse("app=web, tier in (a, b),env!=prod,!legacy,team").unwrap();
        assert_eq!(sel.0.len(), 5);
        assert_eq!(
            sel.0[1],
            LabelRequirement::In("tier".into(), vec!["a".into(), "b".into()])
        );
        assert!(sel.matches(&obj(json!({"app": "web", "tier": "b", "team": "x"}))));
        assert!(!sel.matches(&obj(json!({"app": "web", "tier": "c", "team": "x"}))));
        assert!(!sel.matches(&obj(
            json!({"app": "web", "tier": "a", "team": "x", "legacy": "1"})
        )));
        assert!(!sel.matches(&obj(json!({"app": "web", "tier": "a"}))));
        let notin = LabelSelector::parse("env notin (prod,stage)").unwrap();
        assert!(notin.matches(&obj(json!({}))));
        assert!(!notin.matches(&obj(json!({"env": "stage"}))));
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("").unwrap().matches(&obj(json!(null))));
    }

    #[test]
    fn field_selector_matches_and_checks_support() {
        let sel =
            FieldSelector::parse("metadata.name=a,spec.nodeName!=n2,spec.replicas=3").unwrap();
        assert!(sel.matches(&obj(json!({}))));
        let other = FieldSelector::parse("status.phase==Pending").unwrap();
        assert!(!other.matches(&obj(json!({}))));
        let err = sel.check(|f| f.starts_with("metadata.")).unwrap_err();
        assert_eq!(err.message, "field label not supported: spec.nodeName");
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
