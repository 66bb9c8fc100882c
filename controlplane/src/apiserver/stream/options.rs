//! The query parameters of pods/log, exec and attach (PodLogOptions, PodExecOptions,
//! PodAttachOptions as kube-apiserver converts them), and which container a request means.
//! Pure: parsing is apart from streaming, and every rejection is a 400 `Status` in
//! Kubernetes' words.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use super::super::status::ApiError;

/// The annotation naming the container `kubectl` and the API pick by default.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// GET pods/log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    /// Only the last N lines.
    pub tail_lines: Option<i64>,
    /// Only lines newer than this (Unix seconds), from sinceSeconds or sinceTime.
    pub since_unix: Option<i64>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<i64>,
}

/// exec and attach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoOptions {
    pub container: Option<String>,
    /// exec only.
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))
}

/// A boolean parameter as Kubernetes converts it: anything but `0` and `false` is true.
fn boolean(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

fn integer(name: &str, value: &str) -> Result<i64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!("{name}: invalid value {value:?}: not an integer"))
    })
}

fn at_least(name: &str, value: i64, min: i64) -> Result<i64, ApiError> {
    if value >= min {
        Ok(value)
    } else if min == 0 {
        Err(ApiError::bad_request(format!(
            "{name}: Invalid value: {value}: must be greater than or equal to 0"
        )))
    } else {
        Err(ApiError::bad_request(format!(
            "{name}: Invalid value: {value}: must be greater than 0"
        )))
    }
}

/// Parses the query of GET pods/log (`now` turns sinceSeconds into a point in time).
pub fn log_options(query: &str, now: Timestamp) -> Result<LogOptions, ApiError> {
    let mut o = LogOptions::default();
    let mut since_seconds = None;
    let mut since_time = None;
    for (key, value) in pairs(query)? {
        match key.as_str() {
            "container" if !value.is_empty() => o.container = Some(value),
            "follow" => o.follow = boolean(&value),
            "previous" => o.previous = boolean(&value),
            "timestamps" => o.timestamps = boolean(&value),
            "tailLines" => o.tail_lines = Some(at_least(&key, integer(&key, &value)?, 0)?),
            "limitBytes" => o.limit_bytes = Some(at_least(&key, integer(&key, &value)?, 1)?),
            "sinceSeconds" => since_seconds = Some(at_least(&key, integer(&key, &value)?, 1)?),
            "sinceTime" => {
                let t: Timestamp = value.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "sinceTime: invalid value {value:?}: not an RFC 3339 time"
                    ))
                })?;
                since_time = Some(t.as_second());
            }
            _ => {}
        }
    }
    o.since_unix = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "at most one of sinceTime or sinceSeconds may be specified",
            ));
        }
        (Some(s), None) => Some(now.as_second().saturating_sub(s)),
        (None, t) => t,
    };
    Ok(o)
}

fn io_options(query: &str) -> Result<IoOptions, ApiError> {
    let mut o = IoOptions::default();
    for (key, value) in pairs(query)? {
        match key.as_str() {
            "container" if !value.is_empty() => o.container = Some(value),
            "command" => o.command.push(value),
            "stdin" => o.stdin = boolean(&value),
            "stdout" => o.stdout = boolean(&value),
            "stderr" => o.stderr = boolean(&value),
            "tty" => o.tty = boolean(&value),
            _ => {}
        }
    }
    if !(o.stdin || o.stdout || o.stderr) {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    // A terminal merges stderr into stdout (kubectl never asks for both).
    if o.tty {
        o.stderr = false;
    }
    Ok(o)
}

/// Parses the query of pods/exec.
pub fn exec_options(query: &str) -> Result<IoOptions, ApiError> {
    let o = io_options(query)?;
    if o.command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    Ok(o)
}

/// Parses the query of pods/attach.
pub fn attach_options(query: &str) -> Result<IoOptions, ApiError> {
    let mut o = io_options(query)?;
    o.command.clear();
    Ok(o)
}

/// The container a request means, as kube-apiserver picks it: the one named (it must be
/// one of the pod's init, regular or ephemeral containers), else the default-container
/// annotation's, else the only container; several containers and no name is an error
/// listing them.
pub fn resolve_container(pod: &Pod, requested: Option<&str>) -> Result<String, ApiError> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let regular: Vec<&str> = spec
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let mut all: Vec<&str> = spec
        .and_then(|s| s.init_containers.as_ref())
        .map(|cs| cs.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    all.extend(&regular);
    all.extend(
        spec.and_then(|s| s.ephemeral_containers.as_ref())
            .into_iter()
            .flatten()
            .map(|c| c.name.as_str()),
    );
    if let Some(name) = requested.filter(|n| !n.is_empty()) {
        return if all.contains(&name) {
            Ok(name.to_owned())
        } else {
            Err(ApiError::bad_request(format!(
                "container {name} is not valid for pod {pod_name}"
            )))
        };
    }
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CONTAINER))
        .filter(|name| all.contains(&name.as_str()));
    if let Some(name) = annotated {
        return Ok(name.clone());
    }
    match regular.as_slice() {
        [only] => Ok((*only).to_owned()),
        [] => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}"
        ))),
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod_name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("a pod")
    }

    fn two() -> Pod {
        pod(json!({
            "metadata": {"name": "web"},
            "spec": {
                "initContainers": [{"name": "setup"}],
                "containers": [{"name": "app"}, {"name": "sidecar"}]
            }
        }))
    }

    #[test]
    fn containers_resolve_as_kubernetes_does() {
        let one = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(resolve_container(&one, None).unwrap(), "c");
        assert_eq!(resolve_container(&one, Some("")).unwrap(), "c");
        assert_eq!(resolve_container(&one, Some("c")).unwrap(), "c");
        let err = resolve_container(&one, Some("x")).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (400, "container x is not valid for pod p")
        );

        let err = resolve_container(&two(), None).unwrap_err();
        assert_eq!(
            err.message,
            "a container name must be specified for pod web, choose one of: [setup app sidecar]"
        );
        assert_eq!(resolve_container(&two(), Some("setup")).unwrap(), "setup");
        assert_eq!(
            resolve_container(&two(), Some("sidecar")).unwrap(),
            "sidecar"
        );

        let mut annotated = two();
        annotated.metadata.annotations =
            Some([(DEFAULT_CONTAINER.to_owned(), "sidecar".to_owned())].into());
        assert_eq!(resolve_container(&annotated, None).unwrap(), "sidecar");
        // An annotation naming no container is ignored.
        annotated.metadata.annotations =
            Some([(DEFAULT_CONTAINER.to_owned(), "gone".to_owned())].into());
        assert!(resolve_container(&annotated, None).is_err());

        let none = pod(json!({"metadata": {"name": "e"}, "spec": {"containers": []}}));
        assert_eq!(
            resolve_container(&none, None).unwrap_err().message,
            "a container name must be specified for pod e"
        );
    }

    #[test]
    fn log_options_parse_like_pod_log_options() {
        let now: Timestamp = "2026-11-01T12:00:00Z".parse().unwrap();
        let o = log_options(
            "container=app&follow=true&previous=1&timestamps=true&tailLines=10&limitBytes=500&sinceSeconds=60",
            now,
        )
        .unwrap();
        assert_eq!(
            o,
            LogOptions {
                container: Some("app".into()),
                follow: true,
                previous: true,
                timestamps: true,
                tail_lines: Some(10),
                since_unix: Some(now.as_second() - 60),
                limit_bytes: Some(500),
            }
        );
        let o = log_options("sinceTime=2026-11-01T11%3A00%3A00Z&follow=false", now).unwrap();
        assert_eq!(o.since_unix, Some(now.as_second() - 3600));
        assert!(!o.follow);
        assert_eq!(log_options("", now).unwrap(), LogOptions::default());
        for bad in [
            "tailLines=-1",
            "tailLines=x",
            "limitBytes=0",
            "sinceSeconds=0",
            "sinceTime=yesterday",
            "sinceSeconds=5&sinceTime=2026-11-01T11%3A00%3A00Z",
        ] {
            assert_eq!(log_options(bad, now).unwrap_err().code, 400, "{bad}");
        }
        assert_eq!(
            log_options("tailLines=-1", now).unwrap_err().message,
            "tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
    }

    #[test]
    fn exec_and_attach_options() {
        let o = exec_options(
            "command=sh&command=-c&command=exit+3&container=app&stdin=true&stdout=true&stderr=true",
        )
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "exit 3"]);
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
        let tty = exec_options("command=sh&stdin=true&stdout=true&stderr=true&tty=true").unwrap();
        assert!(tty.tty && !tty.stderr, "a terminal has no separate stderr");
        assert_eq!(
            exec_options("stdout=true").unwrap_err().message,
            "you must specify at least one command for the container"
        );
        assert_eq!(
            exec_options("command=ls").unwrap_err().message,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        let a = attach_options("container=app&stdin=true&stdout=true&tty=true").unwrap();
        assert!(a.stdin && a.stdout && a.tty && a.command.is_empty());
        assert_eq!(attach_options("").unwrap_err().code, 400);
    }
}
