//! A container's environment as the kubelet makes it: `envFrom` sources (with `prefix`,
//! invalid names skipped), then `env` in order, each `value` expanded with `$(VAR)` from the
//! variables before it and each `valueFrom` resolved (ConfigMap and Secret keys, the downward
//! API). [`expand`] is Kubernetes' expansion, also applied to `command` and `args`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvFromSource, EnvVar, Pod};

use super::downward::{self, Use};
use super::objects::{Kind, Objects};
use super::{PlanContext, PodSpecError};

/// The variables a container's manifest defines, in the order they were first set (a later
/// definition of a name replaces its value in place).
#[derive(Debug, Default)]
pub(crate) struct Vars {
    order: Vec<String>,
    values: BTreeMap<String, String>,
}

impl Vars {
    fn set(&mut self, name: &str, value: String) {
        if self.values.insert(name.to_string(), value).is_none() {
            self.order.push(name.to_string());
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `(name, value)` pairs in order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.order
            .iter()
            .map(|k| (k.clone(), self.values[k].clone()))
            .collect()
    }
}

/// The variables of container `c` (`field` is `spec.containers[N]`).
pub(crate) fn vars(
    c: &Container,
    field: &str,
    pod: &Pod,
    ctx: &PlanContext,
    objects: &Objects,
) -> Result<Vars, PodSpecError> {
    let mut vars = Vars::default();
    for (i, from) in c.env_from.iter().flatten().enumerate() {
        env_from(from, &format!("{field}.envFrom[{i}]"), objects, &mut vars)?;
    }
    for (i, var) in c.env.iter().flatten().enumerate() {
        let at = format!("{field}.env[{i}]");
        if var.name.is_empty() || var.name.contains('=') {
            return Err(PodSpecError::new(
                format!("{at}.name"),
                format!("invalid variable name {:?}", var.name),
            ));
        }
        if let Some(value) = value(var, &at, c, pod, ctx, objects, &vars)? {
            vars.set(&var.name, value);
        }
    }
    Ok(vars)
}

/// One variable's value; `None` when it comes from an optional reference that is missing.
fn value(
    var: &EnvVar,
    at: &str,
    c: &Container,
    pod: &Pod,
    ctx: &PlanContext,
    objects: &Objects,
    vars: &Vars,
) -> Result<Option<String>, PodSpecError> {
    let literal = var.value.as_deref().unwrap_or("");
    let Some(from) = var.value_from.as_ref().filter(|_| literal.is_empty()) else {
        return Ok(Some(expand(literal, |name| vars.get(name))));
    };
    let at = format!("{at}.valueFrom");
    let refs = [
        ("configMapKeyRef", from.config_map_key_ref.is_some()),
        ("secretKeyRef", from.secret_key_ref.is_some()),
        ("fieldRef", from.field_ref.is_some()),
        ("resourceFieldRef", from.resource_field_ref.is_some()),
    ];
    if refs.iter().filter(|(_, set)| *set).count() != 1 {
        return Err(PodSpecError::new(
            at,
            "exactly one of configMapKeyRef, secretKeyRef, fieldRef and resourceFieldRef",
        ));
    }
    if let Some(sel) = &from.field_ref {
        let field = format!("{at}.fieldRef");
        return downward::field_ref(pod, ctx, sel, &field, Use::Env).map(Some);
    }
    if let Some(sel) = &from.resource_field_ref {
        let field = format!("{at}.resourceFieldRef");
        let name = sel.container_name.as_deref().unwrap_or("");
        if !name.is_empty() && name != c.name {
            return Err(PodSpecError::new(
                format!("{field}.containerName"),
                format!("must be this container ({:?}) in env", c.name),
            ));
        }
        return downward::resource_field_ref(c, ctx, sel, &field).map(Some);
    }
    let (kind, field, name, key, optional) = match (&from.config_map_key_ref, &from.secret_key_ref)
    {
        (Some(r), _) => (
            Kind::ConfigMap,
            "configMapKeyRef",
            &r.name,
            &r.key,
            r.optional,
        ),
        (None, Some(r)) => (Kind::Secret, "secretKeyRef", &r.name, &r.key, r.optional),
        (None, None) => return Ok(None),
    };
    let field = format!("{at}.{field}");
    let optional = optional.unwrap_or(false);
    let Some(entries) = objects.get(kind, &field, name, optional)? else {
        return Ok(None);
    };
    // Kubernetes reads only a ConfigMap's `data` here, not its `binaryData`.
    match entries.text.get(key) {
        Some(bytes) => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
        None if optional => Ok(None),
        None => Err(PodSpecError::config(
            field,
            format!(
                "couldn't find key {key} in {} {}/{name}",
                kind.title(),
                objects.namespace()
            ),
        )),
    }
}

/// Every key of a ConfigMap's `data` or a Secret's `data`, with `prefix`; keys that are not
/// valid variable names are skipped, as Kubernetes does (it records an event).
fn env_from(
    from: &EnvFromSource,
    at: &str,
    objects: &Objects,
    vars: &mut Vars,
) -> Result<(), PodSpecError> {
    let (kind, field, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
        (Some(r), None) => (Kind::ConfigMap, "configMapRef", &r.name, r.optional),
        (None, Some(r)) => (Kind::Secret, "secretRef", &r.name, r.optional),
        _ => {
            return Err(PodSpecError::new(
                at,
                "exactly one of configMapRef and secretRef",
            ));
        }
    };
    let field = format!("{at}.{field}");
    let Some(entries) = objects.get(kind, &field, name, optional.unwrap_or(false))? else {
        return Ok(());
    };
    let prefix = from.prefix.as_deref().unwrap_or("");
    for (key, bytes) in &entries.text {
        let name = format!("{prefix}{key}");
        if is_env_var_name(&name) {
            vars.set(&name, String::from_utf8_lossy(bytes).into_owned());
        }
    }
    Ok(())
}

/// Kubernetes' `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
fn is_env_var_name(name: &str) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_') || (!first && c.is_ascii_digit())
    };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

/// Kubernetes' `$(VAR)` expansion: a known `$(NAME)` becomes its value, an unknown one stays
/// as written, `$$` is one `$`, and any other `$` stays.
pub(crate) fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            out.push('$');
            rest = escaped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}
