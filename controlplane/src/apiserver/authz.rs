//! Who may do what. The admin token may do everything; a node (`system:node:<name>`, a
//! token from `nodetoken.rs`) may only read and write its own Node and its Lease in
//! `kube-node-lease`, list and watch pods bound to it (`spec.nodeName=<name>`), read them,
//! write their status and delete them. Anything else is a 403 in Kubernetes' words.
//! The decision is pure; a pod's binding is checked by the handler (`Decision::PodOf`).
//! The stream subresources (`pods/log`, `exec`, `attach`, `portforward`) are the admin's
//! only (`stream`): a node may not open them, not even for its own pods.

use serde_json::Value;

use super::request::{Command, ListQuery, Target};
use super::status::ApiError;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The admin token.
    Admin,
    /// A node token: the node's name.
    Node(String),
}

impl Identity {
    /// The Kubernetes user name.
    pub fn user(&self) -> String {
        match self {
            Identity::Admin => "admin".into(),
            Identity::Node(name) => format!("system:node:{name}"),
        }
    }
}

/// What the authorizer decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow,
    Deny(ApiError),
    /// Allowed if the pod `namespace/name` is bound to the node; otherwise this error.
    PodOf(ApiError),
}

fn verb(command: &Command) -> &'static str {
    match command {
        Command::Get(_) => "get",
        Command::List(..) => "list",
        Command::Watch(..) => "watch",
        Command::Create(..) => "create",
        Command::Update(..) => "update",
        Command::Patch(..) => "patch",
        Command::Delete(..) => "delete",
    }
}

fn target(command: &Command) -> &Target {
    match command {
        Command::Get(t)
        | Command::List(t, _)
        | Command::Watch(t, _)
        | Command::Create(t, ..)
        | Command::Update(t, ..)
        | Command::Patch(t, ..)
        | Command::Delete(t, ..) => t,
    }
}

/// The 403 Kubernetes' node authorizer gives.
pub fn forbidden(node: &str, command: &Command) -> ApiError {
    let t = target(command);
    let r = t.resource;
    let resource = match t.subresource {
        Some(sub) => format!("{}/{}", r.plural, sub.as_str()),
        None => r.plural.to_owned(),
    };
    let scope = match &t.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    let name = t.name.clone().or_else(|| match command {
        Command::Create(_, body, _) => body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    });
    ApiError::forbidden(
        r.group,
        r.plural,
        name.as_deref(),
        &format!(
            "User \"system:node:{node}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}: no relationship found between node '{node}' and this object",
            verb = verb(command),
            group = r.group,
        ),
    )
}

/// Whether a list or watch selects exactly `field=value`.
fn selects(query: &ListQuery, field: &str, value: &str) -> bool {
    query
        .fields
        .0
        .iter()
        .any(|t| t.field == field && t.value == value && !t.negated)
}

/// The name of the object a command is about (the body's for a create).
fn object_name(command: &Command) -> Option<&str> {
    match command {
        Command::Create(_, body, _) => body.pointer("/metadata/name").and_then(Value::as_str),
        _ => target(command).name.as_deref(),
    }
}

/// Decides whether `node` may run `command`.
pub fn decide(node: &str, command: &Command) -> Decision {
    let t = target(command);
    let (group, plural) = (t.resource.group, t.resource.plural);
    let own = object_name(command) == Some(node);
    let allowed = match (group, plural, command) {
        ("", "nodes", Command::List(_, q) | Command::Watch(_, q)) => {
            selects(q, "metadata.name", node)
        }
        ("", "nodes", Command::Delete(..)) => false,
        ("", "nodes", _) => own,
        ("coordination.k8s.io", "leases", cmd) => {
            let in_ns = t.namespace.as_deref() == Some("kube-node-lease");
            match cmd {
                Command::List(_, q) | Command::Watch(_, q) => {
                    in_ns && selects(q, "metadata.name", node)
                }
                Command::Delete(..) => false,
                _ => in_ns && own,
            }
        }
        ("", "pods", Command::List(_, q) | Command::Watch(_, q)) => {
            selects(q, "spec.nodeName", node)
        }
        ("", "pods", Command::Get(_) | Command::Delete(..)) if t.subresource.is_none() => {
            return Decision::PodOf(forbidden(node, command));
        }
        ("", "pods", Command::Update(..) | Command::Patch(..))
            if t.subresource.is_some_and(|s| s.as_str() == "status") =>
        {
            return Decision::PodOf(forbidden(node, command));
        }
        _ => false,
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::Deny(forbidden(node, command))
    }
}

/// Whether `identity` may open the stream subresource `subresource` (log, exec, attach,
/// portforward) of pod `namespace/pod` with `verb` (`get` for logs, `create` for the others,
/// whatever the HTTP method, as kube-apiserver authorizes them).
pub fn stream(
    identity: &Identity,
    subresource: &str,
    verb: &str,
    namespace: &str,
    pod: &str,
) -> Result<(), ApiError> {
    match identity {
        Identity::Admin => Ok(()),
        Identity::Node(node) => Err(ApiError::forbidden(
            "",
            "pods",
            Some(pod),
            &format!(
                "User \"system:node:{node}\" cannot {verb} resource \"pods/{subresource}\" in API group \"\" in the namespace \"{namespace}\""
            ),
        )),
    }
}

/// Whether a stored pod is bound to `node`.
pub fn bound_to(pod: &Value, node: &str) -> bool {
    pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::request::Route;
    use crate::apiserver::request::parse;
    use axum::http::{HeaderMap, HeaderValue, Method, header};

    fn command(method: Method, path: &str, query: &str, body: &str) -> Command {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/merge-patch+json"),
        );
        if method == Method::POST || method == Method::PUT {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        match parse(&method, path, query, &h, body.as_bytes()).unwrap() {
            Route::Command(c, _) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_the_admin_opens_streams() {
        for sub in ["log", "exec", "attach", "portforward"] {
            assert_eq!(stream(&Identity::Admin, sub, "create", "d", "p"), Ok(()));
        }
        let err = stream(&Identity::Node("n1".into()), "exec", "create", "d", "p").unwrap_err();
        assert_eq!((err.code, err.reason), (403, "Forbidden"));
        assert_eq!(
            err.message,
            "pods \"p\" is forbidden: User \"system:node:n1\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"d\""
        );
        let err = stream(&Identity::Node("n1".into()), "log", "get", "d", "p").unwrap_err();
        assert!(
            err.message.contains("cannot get resource \"pods/log\""),
            "{}",
            err.message
        );
    }

    fn allowed(c: &Command) -> bool {
        decide("n1", c) == Decision::Allow
    }

    #[test]
    fn a_node_reaches_its_node_lease_and_pods_only() {
        assert!(allowed(&command(Method::GET, "/api/v1/nodes/n1", "", "")));
        assert!(!allowed(&command(Method::GET, "/api/v1/nodes/n2", "", "")));
        assert!(allowed(&command(
            Method::PATCH,
            "/api/v1/nodes/n1/status",
            "",
            "{}"
        )));
        assert!(allowed(&command(
            Method::POST,
            "/api/v1/nodes",
            "",
            r#"{"metadata":{"name":"n1"}}"#
        )));
        assert!(!allowed(&command(
            Method::POST,
            "/api/v1/nodes",
            "",
            r#"{"metadata":{"name":"n2"}}"#
        )));
        assert!(!allowed(&command(
            Method::DELETE,
            "/api/v1/nodes/n1",
            "",
            ""
        )));
        assert!(!allowed(&command(Method::GET, "/api/v1/nodes", "", "")));
        assert!(allowed(&command(
            Method::GET,
            "/api/v1/nodes",
            "fieldSelector=metadata.name%3Dn1&watch=true",
            ""
        )));
        let lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
        assert!(allowed(&command(
            Method::PUT,
            &format!("{lease}/n1"),
            "",
            "{}"
        )));
        assert!(!allowed(&command(
            Method::PUT,
            &format!("{lease}/n2"),
            "",
            "{}"
        )));
        assert!(!allowed(&command(
            Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/n1",
            "",
            ""
        )));
        assert!(allowed(&command(
            Method::GET,
            "/api/v1/pods",
            "fieldSelector=spec.nodeName%3Dn1",
            ""
        )));
        assert!(!allowed(&command(
            Method::GET,
            "/api/v1/pods",
            "fieldSelector=spec.nodeName%3Dn2",
            ""
        )));
        assert!(!allowed(&command(
            Method::GET,
            "/api/v1/pods",
            "fieldSelector=spec.nodeName!%3Dn1",
            ""
        )));
        assert!(matches!(
            decide(
                "n1",
                &command(Method::GET, "/api/v1/namespaces/d/pods/p", "", "")
            ),
            Decision::PodOf(_)
        ));
        assert!(matches!(
            decide(
                "n1",
                &command(
                    Method::PATCH,
                    "/api/v1/namespaces/d/pods/p/status",
                    "",
                    "{}"
                )
            ),
            Decision::PodOf(_)
        ));
        assert!(!allowed(&command(
            Method::PATCH,
            "/api/v1/namespaces/d/pods/p",
            "",
            "{}"
        )));
        assert!(!allowed(&command(
            Method::GET,
            "/api/v1/namespaces/d/secrets",
            "",
            ""
        )));
        let Decision::Deny(err) = decide(
            "n1",
            &command(Method::GET, "/api/v1/namespaces/d/configmaps/c", "", ""),
        ) else {
            panic!()
        };
        assert_eq!((err.code, err.reason), (403, "Forbidden"));
        assert_eq!(
            err.message,
            "configmaps \"c\" is forbidden: User \"system:node:n1\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"d\": no relationship found between node 'n1' and this object"
        );
        let Decision::Deny(err) = decide("n1", &command(Method::GET, "/api/v1/pods", "", ""))
        else {
            panic!()
        };
        assert!(err.message.starts_with("pods is forbidden: User \"system:node:n1\" cannot list resource \"pods\" in API group \"\" at the cluster scope"), "{}", err.message);
    }
}
