//! Parsing, apart from effects: an HTTP request (method, path, query, headers, body) becomes
//! a `Route` — a discovery document or a `Command` on one resource — or an `ApiError`.

use axum::http::{HeaderMap, Method, header};
use serde_json::Value;

use super::protobuf;
use super::registry::{self, ResourceType, Subresource};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;

/// What a request is about: one resource, maybe one namespace, name and subresource.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource type.
    pub resource: &'static ResourceType,
    /// The namespace from the path (`None` for cluster-scoped, or all namespaces).
    pub namespace: Option<String>,
    /// The object name, for single-object requests.
    pub name: Option<String>,
    /// The subresource, if any.
    pub subresource: Option<Subresource>,
}

/// List and watch parameters.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Page size.
    pub limit: Option<usize>,
    /// Continue token of the previous page.
    pub continue_token: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `resourceVersion` (a watch replays events newer than it).
    pub resource_version: Option<u64>,
    /// `timeoutSeconds` of a watch.
    pub timeout_seconds: Option<u64>,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
}

/// How to treat fields the type does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them (the default, as `Warn` without the warning header).
    #[default]
    Ignore,
    /// Reject the request with 400.
    Strict,
}

/// Parameters of create, update, patch and delete.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: do everything but store.
    pub dry_run: bool,
    /// `fieldValidation`.
    pub validation: FieldValidation,
    /// `fieldManager`, or the User-Agent's program name (as Kubernetes derives it).
    pub field_manager: Option<String>,
    /// `force=true` of a server-side apply.
    pub force: bool,
}

/// A patch body by its content type.
#[derive(Debug, Clone, PartialEq)]
pub enum Patch {
    /// `application/merge-patch+json` (RFC 7386).
    Merge(Value),
    /// `application/json-patch+json` (RFC 6902).
    Json(Value),
    /// `application/strategic-merge-patch+json`.
    Strategic(Value),
    /// `application/apply-patch+yaml`: server-side apply of this configuration.
    Apply(Value),
}

/// Preconditions and options of a delete.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeleteOptions {
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<u64>,
    /// `propagationPolicy` (or the legacy `orphanDependents`).
    pub propagation: Option<Propagation>,
    /// `gracePeriodSeconds` (body or query).
    pub grace_period_seconds: Option<i64>,
}

/// What happens to an object's dependents when it is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the owner now; the garbage collector deletes the dependents afterwards.
    Background,
    /// Keep the owner (with `deletionTimestamp`) until its blocking dependents are gone.
    Foreground,
    /// Remove the owner's references from the dependents, then delete the owner.
    Orphan,
}

impl Propagation {
    fn parse(value: &str) -> Result<Propagation, ApiError> {
        match value {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(ApiError::bad_request(format!(
                "invalid propagationPolicy {other:?}: must be Background, Foreground or Orphan"
            ))),
        }
    }
}

/// One operation on a resource.
#[derive(Debug, Clone)]
pub enum Command {
    /// GET of one object (or its subresource).
    Get(Target),
    /// GET of a collection.
    List(Target, ListQuery),
    /// GET of a collection with `watch=true`.
    Watch(Target, ListQuery),
    /// POST to a collection.
    Create(Target, Value, WriteOptions),
    /// PUT of one object (or its subresource).
    Update(Target, Value, WriteOptions),
    /// PATCH of one object (or its subresource).
    Patch(Target, Patch, WriteOptions),
    /// DELETE of one object.
    Delete(Target, DeleteOptions, WriteOptions),
}

/// A parsed request.
#[derive(Debug, Clone)]
pub enum Route {
    /// `GET /api`.
    CoreVersions,
    /// `GET /apis`.
    Groups,
    /// `GET /apis/{group}`.
    Group(String),
    /// `GET /api/v1` or `/apis/{group}/{version}`: the legacy resource list.
    Resources(String, String),
    /// A command, and whether the reply is a Table.
    Command(Command, bool),
}

/// The query parameters of a request, decoded.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ApiError> {
    value
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid {name}: {value:?}")))
}

/// The parameters after the path (`limit`, `watch`, `dryRun`, …).
#[derive(Debug, Default)]
struct Params {
    list: ListQuery,
    watch: bool,
    write: WriteOptions,
    delete: DeleteOptions,
}

fn parse_params(query: &str) -> Result<Params, ApiError> {
    let mut p = Params::default();
    for (key, value) in query_pairs(query)? {
        match key.as_str() {
            "limit" => p.list.limit = Some(number(&key, &value)?).filter(|l| *l > 0),
            "continue" if !value.is_empty() => p.list.continue_token = Some(value),
            "labelSelector" => p.list.labels = LabelSelector::parse(&value)?,
            "fieldSelector" => p.list.fields = FieldSelector::parse(&value)?,
            "resourceVersion" if !value.is_empty() => {
                p.list.resource_version = Some(number(&key, &value)?)
            }
            "timeoutSeconds" => p.list.timeout_seconds = Some(number(&key, &value)?),
            "allowWatchBookmarks" => p.list.bookmarks = value == "true" || value == "1",
            "watch" => p.watch = value == "true" || value == "1",
            "dryRun" if value == "All" => p.write.dry_run = true,
            "dryRun" => return Err(ApiError::bad_request(format!("invalid dryRun {value:?}"))),
            "fieldValidation" if value.eq_ignore_ascii_case("strict") => {
                p.write.validation = FieldValidation::Strict
            }
            "propagationPolicy" => p.delete.propagation = Some(Propagation::parse(&value)?),
            "gracePeriodSeconds" => p.delete.grace_period_seconds = Some(number(&key, &value)?),
            "fieldManager" if !value.is_empty() => {
                if value.len() > 128 {
                    return Err(ApiError::bad_request(
                        "fieldManager: Too long: may not be more than 128 bytes",
                    ));
                }
                p.write.field_manager = Some(value)
            }
            "force" => p.write.force = value == "true" || value == "1",
            _ => {}
        }
    }
    Ok(p)
}

/// Splits `/api/v1/...` or `/apis/g/v/...` into a route or a target.
pub fn parse_path(path: &str) -> Result<Result<Target, Route>, ApiError> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => return Ok(Err(Route::CoreVersions)),
        ["apis"] => return Ok(Err(Route::Groups)),
        ["apis", group] => return Ok(Err(Route::Group((*group).to_owned()))),
        ["api", version] => return Ok(Err(Route::Resources(String::new(), (*version).into()))),
        ["apis", g, v] => return Ok(Err(Route::Resources((*g).into(), (*v).into()))),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() && !is_namespace_sub(tail[0]) => {
            (Some((*ns).to_owned()), tail)
        }
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(ApiError::no_route(path)),
    };
    let resource =
        registry::find(group, version, plural).ok_or_else(|| ApiError::no_route(path))?;
    let subresource = match sub {
        None => None,
        Some(s) => Some(
            resource
                .subresources
                .iter()
                .copied()
                .find(|r| r.as_str() == s)
                .ok_or_else(|| ApiError::no_route(path))?,
        ),
    };
    if namespace.is_some() && !resource.namespaced {
        return Err(ApiError::no_route(path));
    }
    if resource.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::no_route(path));
    }
    Ok(Ok(Target {
        resource,
        namespace,
        name: name.map(str::to_owned),
        subresource,
    }))
}

fn is_namespace_sub(segment: &str) -> bool {
    segment == "status" || segment == "finalize"
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Whether the client asked for a `meta.k8s.io` Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    header_str(headers, header::ACCEPT)
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

/// The media type of the body, without parameters, lower-cased.
fn media_type(headers: &HeaderMap) -> String {
    let raw = header_str(headers, header::CONTENT_TYPE);
    raw.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a JSON or YAML body into a JSON value.
pub fn decode_body(media: &str, body: &[u8]) -> Result<Value, ApiError> {
    match media {
        ""
        | "application/json"
        | "application/merge-patch+json"
        | "application/json-patch+json"
        | "application/strategic-merge-patch+json" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON body: {e}"))),
        "application/yaml" | "application/apply-patch+yaml" => serde_norway::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}"))),
        protobuf::MEDIA_TYPE => protobuf::decode(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding protobuf body: {e}"))),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn object_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let value = decode_body(&media_type(headers), body)?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

fn patch_body(headers: &HeaderMap, body: &[u8]) -> Result<Patch, ApiError> {
    let media = media_type(headers);
    let value = decode_body(&media, body)?;
    match media.as_str() {
        "application/merge-patch+json" => Ok(Patch::Merge(value)),
        "application/json-patch+json" => Ok(Patch::Json(value)),
        "application/strategic-merge-patch+json" => Ok(Patch::Strategic(value)),
        "application/apply-patch+yaml" if value.is_object() => Ok(Patch::Apply(value)),
        "application/apply-patch+yaml" => Err(ApiError::bad_request(
            "the applied configuration must be an object",
        )),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// The DeleteOptions of a body, over those of the query string.
fn delete_options(body: &[u8], query: DeleteOptions) -> Result<DeleteOptions, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(query);
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?;
    let pre = value.get("preconditions");
    let rv = pre
        .and_then(|p| p.get("resourceVersion"))
        .and_then(Value::as_str);
    Ok(DeleteOptions {
        uid: pre
            .and_then(|p| p.get("uid"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        resource_version: rv.map(|v| number("resourceVersion", v)).transpose()?,
        propagation: match value.get("propagationPolicy").and_then(Value::as_str) {
            Some(p) => Some(Propagation::parse(p)?),
            None => match value.get("orphanDependents").and_then(Value::as_bool) {
                Some(true) => Some(Propagation::Orphan),
                Some(false) => Some(Propagation::Background),
                None => query.propagation,
            },
        },
        grace_period_seconds: value
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or(query.grace_period_seconds),
    })
}

/// Parses a whole request.
pub fn parse(
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Route, ApiError> {
    let target = match parse_path(path)? {
        Ok(target) => target,
        Err(route) if *method == Method::GET => return Ok(route),
        Err(_) => return Err(ApiError::method_not_allowed(method.as_str(), path)),
    };
    let mut params = parse_params(query)?;
    if params.write.field_manager.is_none() {
        // Kubernetes names the manager after the client program: `kubectl/v1.33 …` → kubectl.
        let agent = header_str(headers, header::USER_AGENT);
        let program = agent.split('/').next().unwrap_or("").trim();
        if !program.is_empty() {
            params.write.field_manager = Some(program.chars().take(128).collect());
        }
    }
    let table = wants_table(headers);
    let one = target.name.is_some();
    let command = match (method.clone(), one) {
        (Method::GET, true) => Command::Get(target),
        (Method::GET, false) if params.watch => Command::Watch(target, params.list),
        (Method::GET, false) => Command::List(target, params.list),
        (Method::POST, false) => Command::Create(target, object_body(headers, body)?, params.write),
        (Method::POST, true)
            if matches!(
                target.subresource,
                Some(Subresource::Binding | Subresource::Eviction)
            ) =>
        {
            Command::Create(target, object_body(headers, body)?, params.write)
        }
        (Method::PUT, true) => Command::Update(target, object_body(headers, body)?, params.write),
        (Method::PATCH, true) => Command::Patch(target, patch_body(headers, body)?, params.write),
        (Method::DELETE, true) => {
            Command::Delete(target, delete_options(body, params.delete)?, params.write)
        }
        _ => return Err(ApiError::method_not_allowed(method.as_str(), path)),
    };
    Ok(Route::Command(command, table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn target(path: &str) -> Target {
        parse_path(path).unwrap().unwrap()
    }

    #[test]
    fn paths_map_to_targets() {
        let t = target("/api/v1/namespaces/default/pods/web-1/status");
        assert_eq!(t.resource.plural, "pods");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web-1"));
        assert_eq!(t.subresource, Some(Subresource::Status));
        let all = target("/api/v1/pods");
        assert!(all.namespace.is_none() && all.name.is_none());
        let ns = target("/api/v1/namespaces/kube-system");
        assert_eq!(
            (ns.resource.plural, ns.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let ns_status = target("/api/v1/namespaces/a/status");
        assert_eq!(ns_status.subresource, Some(Subresource::Status));
        let scale = target("/apis/apps/v1/namespaces/x/deployments/web/scale");
        assert_eq!(scale.subresource, Some(Subresource::Scale));
    }

    #[test]
    fn unknown_paths_are_404_and_discovery_is_routed() {
        for bad in [
            "/api/v1/widgets",
            "/apis/apps/v1/namespaces/x/deployments/a/exec",
            "/api/v1/namespaces/a/nodes/n",
            "/api/v1/pods/p",
            "/apis/apps/v2/deployments",
            "/x",
        ] {
            let err = parse_path(bad).unwrap_err();
            assert_eq!(err.code, 404, "{bad}");
        }
        assert!(matches!(
            parse_path("/api").unwrap(),
            Err(Route::CoreVersions)
        ));
        assert!(
            matches!(parse_path("/apis/apps/v1").unwrap(), Err(Route::Resources(g, v)) if g == "apps" && v == "v1")
        );
    }

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn methods_and_queries_become_commands() {
        let h = headers(&[(
            header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )]);
        let route = parse(
            &Method::GET,
            "/api/v1/namespaces/d/pods",
            "resourceVersion=12&watch=true&allowWatchBookmarks=true&labelSelector=app%3Dweb",
            &h,
            b"",
        )
        .unwrap();
        let Route::Command(Command::Watch(_, q), true) = route else {
            panic!("{route:?}")
        };
        assert_eq!(q.resource_version, Some(12));
        assert!(q.bookmarks);
        assert_eq!(q.labels.0.len(), 1);
        let json = headers(&[(header::CONTENT_TYPE, "application/json")]);
        let route = parse(
            &Method::POST,
            "/api/v1/namespaces/d/configmaps",
            "fieldManager=kubectl&fieldValidation=Strict&dryRun=All",
            &json,
            br#"{"kind":"ConfigMap"}"#,
        )
        .unwrap();
        let Route::Command(Command::Create(_, body, opts), false) = route else {
            panic!()
        };
        assert_eq!(body["kind"], "ConfigMap");
        assert!(opts.dry_run);
        assert_eq!(opts.validation, FieldValidation::Strict);
    }

    #[test]
    fn bad_bodies_are_400_or_415() {
        let json = headers(&[(header::CONTENT_TYPE, "application/json")]);
        let err = parse(
            &Method::POST,
            "/api/v1/namespaces/d/configmaps",
            "",
            &json,
            b"{nope",
        )
        .unwrap_err();
        assert_eq!(err.code, 400);
        let yaml = headers(&[(header::CONTENT_TYPE, "application/yaml")]);
        let ok = parse(
            &Method::POST,
            "/api/v1/namespaces",
            "",
            &yaml,
            b"kind: Namespace\nmetadata: {name: a}\n",
        );
        assert!(ok.is_ok());
        let err = parse(&Method::POST, "/api/v1/namespaces", "", &yaml, b"kind: [\n").unwrap_err();
        assert_eq!(err.code, 400);
        let pb = headers(&[(header::CONTENT_TYPE, "application/vnd.kubernetes.protobuf")]);
        let err = parse(&Method::POST, "/api/v1/namespaces", "", &pb, b"k8s\0\x0a").unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.starts_with("error decoding protobuf body"),
            "{}",
            err.message
        );
        let cbor = headers(&[(header::CONTENT_TYPE, "application/cbor")]);
        let err = parse(&Method::POST, "/api/v1/namespaces", "", &cbor, b"\xa0").unwrap_err();
        assert_eq!(err.code, 415);
        let merge = headers(&[(header::CONTENT_TYPE, "application/merge-patch+json")]);
        let route = parse(
            &Method::PATCH,
            "/apis/apps/v1/namespaces/d/deployments/w/scale",
            "",
            &merge,
            br#"{"spec":{"replicas":3}}"#,
        )
        .unwrap();
        assert!(matches!(
            route,
            Route::Command(Command::Patch(_, Patch::Merge(_), _), _)
        ));
        let err = parse(&Method::GET, "/api/v1/pods", "limit=x", &json, b"").unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            parse(
                &Method::POST,
                "/api/v1/namespaces/d/pods/p",
                "",
                &json,
                b"{}"
            )
            .unwrap_err()
            .code,
            405
        );
    }

    #[test]
    fn delete_options_carry_preconditions() {
        let none = DeleteOptions::default;
        let opts = delete_options(br#"{"propagationPolicy":"Foreground","gracePeriodSeconds":0,"preconditions":{"resourceVersion":"7","uid":"u"}}"#, none()).unwrap();
        assert_eq!(
            opts,
            DeleteOptions {
                uid: Some("u".into()),
                resource_version: Some(7),
                propagation: Some(Propagation::Foreground),
                grace_period_seconds: Some(0),
            }
        );
        let orphan = delete_options(br#"{"orphanDependents":true}"#, none()).unwrap();
        assert_eq!(orphan.propagation, Some(Propagation::Orphan));
        assert_eq!(
            delete_options(b"", none()).unwrap(),
            DeleteOptions::default()
        );
        assert_eq!(delete_options(b"[", none()).unwrap_err().code, 400);
        assert_eq!(
            delete_options(br#"{"propagationPolicy":"Sideways"}"#, none())
                .unwrap_err()
                .code,
            400
        );
    }
}
