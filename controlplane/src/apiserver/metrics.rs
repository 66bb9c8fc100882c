//! `/metrics` in the Prometheus text format: `apiserver_request_total{verb,resource,code}`,
//! `apiserver_request_duration_seconds{verb,resource}` (a histogram; watches are counted but
//! not timed, as kube-apiserver does) and `apiserver_registered_watchers`. Recorded by a
//! middleware around every route; kept in a few maps behind mutexes, which is cheap next
//! to a store write.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::request::parse_path;

/// Upper bounds of the duration histogram, in seconds (kube-apiserver's, shortened).
const BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    durations: Mutex<BTreeMap<(&'static str, String), Histogram>>,
    watchers: AtomicI64,
}

/// Held by a running watch; the gauge goes down when it is dropped.
pub struct WatchGuard(Arc<Metrics>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// kube-apiserver's verb and resource labels of a request.
pub fn classify(method: &Method, path: &str, query: &str) -> (&'static str, String) {
    let target = parse_path(path).ok().and_then(Result::ok);
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method.as_str(), &target) {
        ("GET", Some(t)) if t.name.is_none() && watch => "WATCH",
        ("GET", Some(t)) if t.name.is_none() => "LIST",
        ("GET", _) => "GET",
        ("POST", _) => "POST",
        ("PUT", _) => "PUT",
        ("PATCH", _) => "PATCH",
        ("DELETE", _) => "DELETE",
        _ => "OTHER",
    };
    let resource = match target {
        Some(t) => match t.subresource {
            Some(sub) => format!("{}/{}", t.resource.plural, sub.as_str()),
            None => t.resource.plural.to_owned(),
        },
        None => String::new(),
    };
    (verb, resource)
}

impl Metrics {
    /// Counts one request and, unless it is a watch, its duration.
    pub fn observe(&self, verb: &'static str, resource: String, code: u16, seconds: f64) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((verb, resource.clone(), code)).or_default() += 1;
        }
        if verb == "WATCH" {
            return;
        }
        if let Ok(mut map) = self.durations.lock() {
            let h = map.entry((verb, resource)).or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// Counts a watch until the guard is dropped.
    pub fn watch_started(self: &Arc<Self>) -> WatchGuard {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        WatchGuard(self.clone())
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out by verb, resource and HTTP response code.\n");
        out.push_str("# TYPE apiserver_request_total counter\n");
        if let Ok(map) = self.requests.lock() {
            for ((verb, resource, code), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "apiserver_request_total{{code=\"{code}\",resource=\"{resource}\",verb=\"{verb}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb and resource.\n");
        out.push_str("# TYPE apiserver_request_duration_seconds histogram\n");
        if let Ok(map) = self.durations.lock() {
            for ((verb, resource), h) in map.iter() {
                let labels = format!("resource=\"{resource}\",verb=\"{verb}\"");
                for (bound, n) in BUCKETS.iter().zip(h.counts) {
                    let _ = writeln!(
                        out,
                        "apiserver_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_sum{{{labels}}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_count{{{labels}}} {}",
                    h.count
                );
            }
        }
        out.push_str("# HELP apiserver_registered_watchers Number of currently open watches.\n");
        out.push_str("# TYPE apiserver_registered_watchers gauge\n");
        let _ = writeln!(
            out,
            "apiserver_registered_watchers {}",
            self.watchers.load(Ordering::Relaxed)
        );
        out
    }
}

/// The middleware: times the request up to its response head.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let (verb, resource) = classify(
        request.method(),
        request.uri().path(),
        request.uri().query().unwrap_or(""),
    );
    let start = Instant::now();
    let response = next.run(request).await;
    let seconds = start.elapsed().as_secs_f64();
    metrics.observe(verb, resource, response.status().as_u16(), seconds);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_exposition() {
        let m = Arc::new(Metrics::default());
        let (verb, resource) = classify(&Method::GET, "/api/v1/namespaces/d/pods", "watch=true");
        assert_eq!((verb, resource.as_str()), ("WATCH", "pods"));
        let (verb, resource) = classify(&Method::GET, "/api/v1/pods", "limit=500");
        assert_eq!((verb, resource.as_str()), ("LIST", "pods"));
        let (verb, resource) = classify(
            &Method::PATCH,
            "/apis/apps/v1/namespaces/d/deployments/w/scale",
            "",
        );
        assert_eq!((verb, resource.as_str()), ("PATCH", "deployments/scale"));
        assert_eq!(classify(&Method::GET, "/version", "").1, "");
        m.observe("POST", "configmaps".into(), 201, 0.003);
        m.observe("POST", "configmaps".into(), 201, 0.3);
        m.observe("WATCH", "pods".into(), 200, 30.0);
        let guard = m.watch_started();
        let text = m.render();
        assert!(text.contains(
            "apiserver_request_total{code=\"201\",resource=\"configmaps\",verb=\"POST\"} 2"
        ));
        assert!(text.contains("apiserver_request_duration_seconds_bucket{resource=\"configmaps\",verb=\"POST\",le=\"0.005\"} 1"));
        assert!(text.contains("apiserver_request_duration_seconds_bucket{resource=\"configmaps\",verb=\"POST\",le=\"+Inf\"} 2"));
        assert!(!text.contains("verb=\"WATCH\",le="));
        assert!(text.contains("apiserver_registered_watchers 1"));
        drop(guard);
        assert!(m.render().contains("apiserver_registered_watchers 0"));
    }
}
