//! A container probe as the kubelet runs it: the `Probe` of a container spec, defaulted and
//! validated once into a [`ProbeSpec`] (timings plus one handler), so the prober loop and the
//! executors never look at optional fields again.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Which of a container's three probes this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Failing: the container is restarted.
    Liveness,
    /// Failing: the pod is taken out of Service endpoints.
    Readiness,
    /// Until it succeeds, liveness and readiness wait; failing: the container is restarted.
    Startup,
}

impl ProbeKind {
    /// The field of the container spec this probe comes from (`livenessProbe`, …).
    pub fn field(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "livenessProbe",
            ProbeKind::Readiness => "readinessProbe",
            ProbeKind::Startup => "startupProbe",
        }
    }

    /// Whether this probe waits for the container's startup probe (if any) to succeed.
    pub fn waits_for_startup(self) -> bool {
        self != ProbeKind::Startup
    }
}

/// When a probe runs and how many results flip its verdict, with Kubernetes' defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTiming {
    /// After container start, before the first probe (`initialDelaySeconds`, default 0).
    pub initial_delay: Duration,
    /// Between probes (`periodSeconds`, default 10).
    pub period: Duration,
    /// One probe's time limit (`timeoutSeconds`, default 1).
    pub timeout: Duration,
    /// Consecutive successes that make a failed probe succeed (`successThreshold`, default 1).
    pub success_threshold: u32,
    /// Consecutive failures that make a probe fail (`failureThreshold`, default 3).
    pub failure_threshold: u32,
}

impl Default for ProbeTiming {
    fn default() -> Self {
        ProbeTiming {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

/// The port of an `httpGet`, `tcpSocket` or `grpc` action: a number, or the name of one of the
/// container's `ports[]`, resolved when the probe runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    /// A port number.
    Number(u16),
    /// A container port's `name`.
    Name(String),
}

/// `http` or `https` (the `scheme` of an `httpGet`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP/1.1.
    Http,
    /// HTTP/1.1 over TLS, certificates not verified (as the kubelet does).
    Https,
}

/// An `httpGet` action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpGet {
    /// `host`; `None`: the pod IP.
    pub host: Option<String>,
    /// The port to connect to.
    pub port: PortRef,
    /// The request path, always starting with `/`.
    pub path: String,
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// `httpHeaders` as (name, value), checked to hold no line breaks.
    pub headers: Vec<(String, String)>,
}

/// A `tcpSocket` action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    /// `host`; `None`: the pod IP.
    pub host: Option<String>,
    /// The port to connect to.
    pub port: PortRef,
}

/// A `grpc` action: `grpc.health.v1.Health/Check` on the pod IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grpc {
    /// The port to connect to.
    pub port: u16,
    /// The `service` of the health check request (empty: the whole server).
    pub service: String,
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handler {
    /// `httpGet`.
    HttpGet(HttpGet),
    /// `tcpSocket`.
    TcpSocket(TcpSocket),
    /// `grpc`.
    Grpc(Grpc),
    /// `exec.command`: the argv run in the container.
    Exec(Vec<String>),
}

/// A validated probe: which kind, when, and what to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Liveness, readiness or startup.
    pub kind: ProbeKind,
    /// Delays, period, timeout and thresholds.
    pub timing: ProbeTiming,
    /// The action.
    pub handler: Handler,
}

/// Why a `Probe` cannot be run; `field` is the path inside the container spec.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProbeConfigError {
    /// A number out of range.
    #[error("{field}: {value} is invalid: {reason}")]
    Invalid {
        /// e.g. `livenessProbe.periodSeconds`.
        field: String,
        /// The value given.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// No handler, or more than one.
    #[error("{field}: {reason}")]
    Handler {
        /// e.g. `readinessProbe`.
        field: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl ProbeSpec {
    /// Defaults and validates a container's `Probe` of this kind.
    pub fn new(kind: ProbeKind, probe: &Probe) -> Result<ProbeSpec, ProbeConfigError> {
        Ok(ProbeSpec {
            kind,
            timing: timing(kind, probe)?,
            handler: handler(kind.field(), probe)?,
        })
    }
}

fn timing(kind: ProbeKind, probe: &Probe) -> Result<ProbeTiming, ProbeConfigError> {
    let f = kind.field();
    let d = ProbeTiming::default();
    let initial = seconds(f, "initialDelaySeconds", probe.initial_delay_seconds, 0)?;
    let success = count(
        f,
        "successThreshold",
        probe.success_threshold,
        d.success_threshold,
    )?;
    if kind != ProbeKind::Readiness && success != 1 {
        return Err(ProbeConfigError::Invalid {
            field: format!("{f}.successThreshold"),
            value: success.to_string(),
            reason: "must be 1 for liveness and startup probes",
        });
    }
    Ok(ProbeTiming {
        initial_delay: Duration::from_secs(initial.into()),
        period: Duration::from_secs(seconds(f, "periodSeconds", probe.period_seconds, 10)?.into()),
        timeout: Duration::from_secs(
            seconds(f, "timeoutSeconds", probe.timeout_seconds, 1)?.into(),
        ),
        success_threshold: success,
        failure_threshold: count(f, "failureThreshold", probe.failure_threshold, 3)?,
    })
}

/// A seconds field: absent or 0 means the default (as in the API server's defaulting, where 0
/// is indistinguishable from unset), negative is an error.
fn seconds(
    probe: &str,
    name: &str,
    value: Option<i32>,
    default: u32,
) -> Result<u32, ProbeConfigError> {
    match value {
        None | Some(0) => Ok(default),
        Some(v) => u32::try_from(v).map_err(|_| ProbeConfigError::Invalid {
            field: format!("{probe}.{name}"),
            value: v.to_string(),
            reason: "must be greater than or equal to 0",
        }),
    }
}

/// A threshold: absent or 0 means the default, negative is an error.
fn count(
    probe: &str,
    name: &str,
    value: Option<i32>,
    default: u32,
) -> Result<u32, ProbeConfigError> {
    match value {
        None | Some(0) => Ok(default),
        Some(v) => u32::try_from(v).map_err(|_| ProbeConfigError::Invalid {
            field: format!("{probe}.{name}"),
            value: v.to_string(),
            reason: "must be greater than or equal to 1",
        }),
    }
}

fn handler(f: &str, probe: &Probe) -> Result<Handler, ProbeConfigError> {
    let given = [
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.grpc.is_some(),
    ];
    match given.iter().filter(|g| **g).count() {
        0 => {
            return Err(ProbeConfigError::Handler {
                field: f.into(),
                reason: "must specify a handler type (exec, httpGet, tcpSocket or grpc)",
            });
        }
        1 => {}
        _ => {
            return Err(ProbeConfigError::Handler {
                field: f.into(),
                reason: "may not specify more than one handler type",
            });
        }
    }
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        if argv.is_empty() {
            return Err(ProbeConfigError::Handler {
                field: format!("{f}.exec.command"),
                reason: "must not be empty",
            });
        }
        return Ok(Handler::Exec(argv));
    }
    if let Some(http) = &probe.http_get {
        return http_get(f, http).map(Handler::HttpGet);
    }
    if let Some(tcp) = &probe.tcp_socket {
        return Ok(Handler::TcpSocket(TcpSocket {
            host: non_empty(tcp.host.as_deref()),
            port: port_ref(&format!("{f}.tcpSocket.port"), &tcp.port)?,
        }));
    }
    let grpc = probe
        .grpc
        .as_ref()
        .ok_or_else(|| ProbeConfigError::Handler {
            field: f.into(),
            reason: "must specify a handler type (exec, httpGet, tcpSocket or grpc)",
        })?;
    Ok(Handler::Grpc(Grpc {
        port: port_number(&format!("{f}.grpc.port"), grpc.port)?,
        service: grpc.service.clone().unwrap_or_default(),
    }))
}

fn http_get(
    f: &str,
    http: &k8s_openapi::api::core::v1::HTTPGetAction,
) -> Result<HttpGet, ProbeConfigError> {
    let scheme = match http.scheme.as_deref() {
        None | Some("") => Scheme::Http,
        Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
        Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
        Some(s) => {
            return Err(ProbeConfigError::Invalid {
                field: format!("{f}.httpGet.scheme"),
                value: s.into(),
                reason: "supported values: \"HTTP\", \"HTTPS\"",
            });
        }
    };
    let path = http.path.as_deref().unwrap_or("");
    if !path.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ProbeConfigError::Invalid {
            field: format!("{f}.httpGet.path"),
            value: path.into(),
            reason: "must be printable ASCII without spaces (escape others as %XX)",
        });
    }
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let mut headers = Vec::new();
    for (i, h) in http.http_headers.iter().flatten().enumerate() {
        if h.name.is_empty() || !h.name.bytes().all(is_token_byte) {
            return Err(ProbeConfigError::Invalid {
                field: format!("{f}.httpGet.httpHeaders[{i}].name"),
                value: h.name.clone(),
                reason: "must be a valid HTTP header name",
            });
        }
        if h.value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(ProbeConfigError::Invalid {
                field: format!("{f}.httpGet.httpHeaders[{i}].value"),
                value: h.value.escape_debug().to_string(),
                reason: "must not contain line breaks or NUL",
            });
        }
        headers.push((h.name.clone(), h.value.clone()));
    }
    Ok(HttpGet {
        host: non_empty(http.host.as_deref()),
        port: port_ref(&format!("{f}.httpGet.port"), &http.port)?,
        path,
        scheme,
        headers,
    })
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_string)
}

fn port_ref(field: &str, port: &IntOrString) -> Result<PortRef, ProbeConfigError> {
    match port {
        IntOrString::Int(n) => port_number(field, *n).map(PortRef::Number),
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => port_number(field, n).map(PortRef::Number),
            Err(_) if is_port_name(s) => Ok(PortRef::Name(s.clone())),
            Err(_) => Err(ProbeConfigError::Invalid {
                field: field.into(),
                value: s.clone(),
                reason: "must be a port number or an IANA_SVC_NAME",
            }),
        },
    }
}

fn port_number(field: &str, n: i32) -> Result<u16, ProbeConfigError> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| ProbeConfigError::Invalid {
            field: field.into(),
            value: n.to_string(),
            reason: "must be between 1 and 65535, inclusive",
        })
}

/// An IANA service name: 1–15 lowercase letters, digits and inner single dashes, with a letter.
fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ExecAction, GRPCAction, HTTPGetAction, HTTPHeader, TCPSocketAction,
    };

    use super::*;

    fn http(port: IntOrString) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                port,
                path: Some("healthz".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field_of(err: ProbeConfigError) -> String {
        match err {
            ProbeConfigError::Invalid { field, .. } | ProbeConfigError::Handler { field, .. } => {
                field
            }
        }
    }

    #[test]
    fn defaults() {
        let spec = ProbeSpec::new(ProbeKind::Liveness, &http(IntOrString::Int(8080))).unwrap();
        assert_eq!(spec.timing, ProbeTiming::default());
        assert_eq!(spec.timing.period, Duration::from_secs(10));
        assert_eq!(spec.timing.timeout, Duration::from_secs(1));
        assert_eq!(spec.timing.failure_threshold, 3);
        assert_eq!(
            spec.handler,
            Handler::HttpGet(HttpGet {
                host: None,
                port: PortRef::Number(8080),
                path: "/healthz".into(),
                scheme: Scheme::Http,
                headers: vec![],
            })
        );
    }

    #[test]
    fn zero_means_default_and_values_are_taken() {
        let mut p = http(IntOrString::Int(80));
        p.period_seconds = Some(0);
        p.timeout_seconds = Some(5);
        p.initial_delay_seconds = Some(7);
        p.success_threshold = Some(2);
        p.failure_threshold = Some(6);
        let t = ProbeSpec::new(ProbeKind::Readiness, &p).unwrap().timing;
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(5));
        assert_eq!(t.initial_delay, Duration::from_secs(7));
        assert_eq!((t.success_threshold, t.failure_threshold), (2, 6));
    }

    #[test]
    fn negative_numbers_name_their_field() {
        for (set, name) in [
            (
                (|p: &mut Probe| p.period_seconds = Some(-1)) as fn(&mut Probe),
                "periodSeconds",
            ),
            (|p| p.timeout_seconds = Some(-1), "timeoutSeconds"),
            (
                |p| p.initial_delay_seconds = Some(-3),
                "initialDelaySeconds",
            ),
            (|p| p.failure_threshold = Some(-1), "failureThreshold"),
            (|p| p.success_threshold = Some(-1), "successThreshold"),
        ] {
            let mut p = http(IntOrString::Int(80));
            set(&mut p);
            let err = ProbeSpec::new(ProbeKind::Readiness, &p).unwrap_err();
            assert_eq!(field_of(err), format!("readinessProbe.{name}"));
        }
    }

    #[test]
    fn success_threshold_must_be_one_for_liveness_and_startup() {
        let mut p = http(IntOrString::Int(80));
        p.success_threshold = Some(2);
        for kind in [ProbeKind::Liveness, ProbeKind::Startup] {
            let err = ProbeSpec::new(kind, &p).unwrap_err();
            assert_eq!(
                field_of(err.clone()),
                format!("{}.successThreshold", kind.field())
            );
            assert!(err.to_string().contains("must be 1"), "{err}");
        }
        assert!(ProbeSpec::new(ProbeKind::Readiness, &p).is_ok());
    }

    #[test]
    fn exactly_one_handler() {
        let err = ProbeSpec::new(ProbeKind::Liveness, &Probe::default()).unwrap_err();
        assert_eq!(field_of(err), "livenessProbe");
        let mut p = http(IntOrString::Int(80));
        p.tcp_socket = Some(TCPSocketAction {
            port: IntOrString::Int(80),
            ..Default::default()
        });
        let err = ProbeSpec::new(ProbeKind::Liveness, &p).unwrap_err();
        assert!(err.to_string().contains("more than one"), "{err}");
    }

    #[test]
    fn ports_by_number_name_or_numeric_string() {
        let port = |p: IntOrString| match ProbeSpec::new(ProbeKind::Readiness, &http(p)) {
            Ok(ProbeSpec {
                handler: Handler::HttpGet(h),
                ..
            }) => Ok(h.port),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(field_of(e)),
        };
        assert_eq!(port(IntOrString::Int(443)), Ok(PortRef::Number(443)));
        assert_eq!(
            port(IntOrString::String("8080".into())),
            Ok(PortRef::Number(8080))
        );
        assert_eq!(
            port(IntOrString::String("http-alt".into())),
            Ok(PortRef::Name("http-alt".into()))
        );
        for bad in [
            IntOrString::Int(0),
            IntOrString::Int(65536),
            IntOrString::Int(-1),
        ] {
            assert_eq!(port(bad), Err("readinessProbe.httpGet.port".into()));
        }
        for bad in ["", "Has_Caps", "-x", "a--b", "waytoolongportname"] {
            assert!(port(IntOrString::String(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_scheme_and_headers_are_checked() {
        let mut p = http(IntOrString::Int(80));
        if let Some(h) = p.http_get.as_mut() {
            h.scheme = Some("HTTPS".into());
            h.http_headers = Some(vec![HTTPHeader {
                name: "X-Probe".into(),
                value: "yes".into(),
            }]);
        }
        match ProbeSpec::new(ProbeKind::Readiness, &p).unwrap().handler {
            Handler::HttpGet(h) => {
                assert_eq!(h.scheme, Scheme::Https);
                assert_eq!(h.headers, [("X-Probe".to_string(), "yes".to_string())]);
            }
            other => panic!("{other:?}"),
        }
        if let Some(h) = p.http_get.as_mut() {
            h.http_headers = Some(vec![HTTPHeader {
                name: "X-Evil".into(),
                value: "a\r\nHost: other".into(),
            }]);
        }
        let err = ProbeSpec::new(ProbeKind::Readiness, &p).unwrap_err();
        assert_eq!(field_of(err), "readinessProbe.httpGet.httpHeaders[0].value");
        if let Some(h) = p.http_get.as_mut() {
            h.http_headers = None;
            h.scheme = Some("FTP".into());
        }
        let err = ProbeSpec::new(ProbeKind::Readiness, &p).unwrap_err();
        assert_eq!(field_of(err), "readinessProbe.httpGet.scheme");
        if let Some(h) = p.http_get.as_mut() {
            h.scheme = None;
            h.path = Some("/a b".into());
        }
        let err = ProbeSpec::new(ProbeKind::Readiness, &p).unwrap_err();
        assert_eq!(field_of(err), "readinessProbe.httpGet.path");
    }

    #[test]
    fn exec_and_grpc() {
        let p = Probe {
            exec: Some(ExecAction {
                command: Some(vec![]),
            }),
            ..Default::default()
        };
        let err = ProbeSpec::new(ProbeKind::Startup, &p).unwrap_err();
        assert_eq!(field_of(err), "startupProbe.exec.command");
        let p = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["cat".into(), "/tmp/ready".into()]),
            }),
            ..Default::default()
        };
        let spec = ProbeSpec::new(ProbeKind::Startup, &p).unwrap();
        assert_eq!(
            spec.handler,
            Handler::Exec(vec!["cat".into(), "/tmp/ready".into()])
        );
        let p = Probe {
            grpc: Some(GRPCAction {
                port: 9090,
                service: None,
            }),
            ..Default::default()
        };
        let spec = ProbeSpec::new(ProbeKind::Liveness, &p).unwrap();
        assert_eq!(
            spec.handler,
            Handler::Grpc(Grpc {
                port: 9090,
                service: String::new()
            })
        );
        let p = Probe {
            grpc: Some(GRPCAction {
                port: 0,
                service: None,
            }),
            ..Default::default()
        };
        let err = ProbeSpec::new(ProbeKind::Liveness, &p).unwrap_err();
        assert_eq!(field_of(err), "livenessProbe.grpc.port");
    }
}
