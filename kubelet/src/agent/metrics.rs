//! The kubelet's `/metrics` (Prometheus text format 0.0.4) on a loopback port: the pod start
//! SLI histogram (`kubelet_pod_start_sli_duration_seconds`, kubelet's buckets), image pull
//! durations, and the running pods and containers. The numbers are kept here; [`render`] is
//! pure, and [`serve`] answers `GET /metrics` with it over plain HTTP/1.1.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// `kubelet_pod_start_sli_duration_seconds`'s buckets (pkg/kubelet/metrics).
pub const POD_START_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// `kubelet_image_pull_duration_seconds`'s buckets.
pub const IMAGE_PULL_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 240.0, 300.0, 600.0, 900.0, 1200.0,
    1800.0, 2700.0, 3600.0,
];

/// A cumulative histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, seconds: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += seconds;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut total = 0;
        for (i, count) in self.counts.iter().enumerate() {
            total += count;
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {total}");
        }
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {total}", self.sum);
    }
}

/// What the node's agent counts.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    pod_start: Histogram,
    image_pull: Histogram,
    /// Running containers per pod (by uid).
    running: HashMap<String, usize>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            inner: Mutex::new(Inner {
                pod_start: Histogram::new(POD_START_BUCKETS),
                image_pull: Histogram::new(IMAGE_PULL_BUCKETS),
                running: HashMap::new(),
            }),
        }
    }
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// A pod started: from its creation to all its containers running, less image pulls and
    /// init containers (the SLI's definition).
    pub fn pod_started(&self, sli: Duration) {
        self.with(|m| m.pod_start.observe(sli.as_secs_f64()));
    }

    pub fn image_pulled(&self, took: Duration) {
        self.with(|m| m.image_pull.observe(took.as_secs_f64()));
    }

    /// How many containers of pod `uid` run now (0 or a gone pod: none).
    pub fn set_running(&self, uid: &str, containers: usize) {
        self.with(|m| {
            if containers == 0 {
                m.running.remove(uid);
            } else {
                m.running.insert(uid.to_owned(), containers);
            }
        });
    }

    /// The Prometheus text of every metric.
    pub fn render(&self) -> String {
        self.with(|m| render(m))
    }
}

fn render(m: &Inner) -> String {
    let mut out = String::new();
    m.pod_start.write(
        &mut out,
        "kubelet_pod_start_sli_duration_seconds",
        "Duration in seconds to start a pod, excluding time to pull images and run init \
         containers, measured from pod creation timestamp to when all its containers are \
         reported as started",
    );
    m.image_pull.write(
        &mut out,
        "kubelet_image_pull_duration_seconds",
        "Duration in seconds to pull an image",
    );
    let pods = m.running.len();
    let containers: usize = m.running.values().sum();
    let _ = writeln!(
        out,
        "# HELP kubelet_running_pods Number of pods that have a running pod sandbox\n\
         # TYPE kubelet_running_pods gauge\nkubelet_running_pods {pods}\n\
         # HELP kubelet_running_containers Number of containers currently running\n\
         # TYPE kubelet_running_containers gauge\n\
         kubelet_running_containers{{container_state=\"running\"}} {containers}"
    );
    out
}

/// What this process holds right now: open stream sessions (`kubectl logs/exec/attach/
/// port-forward` served by this node) and the tokio tasks alive in its runtime — the numbers
/// a leak shows in (the streams leak test reads them).
fn live_gauges() -> String {
    let sessions = crate::stream::live_sessions();
    let tasks = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0);
    format!(
        "# HELP skiff_kubelet_stream_sessions Stream sessions (logs, exec, attach, port-forward) open on this node\n\
         # TYPE skiff_kubelet_stream_sessions gauge\nskiff_kubelet_stream_sessions {sessions}\n\
         # HELP skiff_tokio_alive_tasks Tasks alive in this process's tokio runtime\n\
         # TYPE skiff_tokio_alive_tasks gauge\nskiff_tokio_alive_tasks {tasks}\n"
    )
}

/// Serves `GET /metrics` on `listen` until the task is dropped.
pub async fn serve(listen: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "kubelet metrics");
    loop {
        let (mut conn, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut head = vec![0u8; 4096];
            let n = match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut head)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let line = String::from_utf8_lossy(&head[..n]);
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if line.starts_with("GET ")
                && (path == "/metrics" || path.starts_with("/metrics?"))
            {
                ("200 OK", metrics.render() + &live_gauges())
            } else {
                ("404 Not Found", "only /metrics is served here\n".to_owned())
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let mut h = Histogram::new(&[1.0, 5.0]);
        for s in [0.2, 1.0, 3.0, 9.0] {
            h.observe(s);
        }
        let mut out = String::new();
        h.write(&mut out, "x_seconds", "help");
        assert_eq!(
            out,
            "# HELP x_seconds help\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"1\"} 2\nx_seconds_bucket{le=\"5\"} 3\n\
             x_seconds_bucket{le=\"+Inf\"} 4\nx_seconds_sum 13.2\nx_seconds_count 4\n"
        );
    }

    #[test]
    fn the_page_has_the_sli_pulls_and_running_counts() {
        let m = Metrics::default();
        m.pod_started(Duration::from_millis(700));
        m.image_pulled(Duration::from_secs(2));
        m.set_running("a", 2);
        m.set_running("b", 1);
        m.set_running("c", 1);
        m.set_running("c", 0);
        let text = m.render();
        for want in [
            "kubelet_pod_start_sli_duration_seconds_bucket{le=\"0.5\"} 0",
            "kubelet_pod_start_sli_duration_seconds_bucket{le=\"1\"} 1",
            "kubelet_pod_start_sli_duration_seconds_count 1",
            "kubelet_image_pull_duration_seconds_bucket{le=\"5\"} 1",
            "kubelet_running_pods 2",
            "kubelet_running_containers{container_state=\"running\"} 3",
        ] {
            assert!(text.lines().any(|l| l == want), "{want} in\n{text}");
        }
    }

    #[tokio::test]
    async fn serves_get_metrics_over_http() {
        let m = Arc::new(Metrics::default());
        m.set_running("a", 1);
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let server = tokio::spawn(serve(addr, m));
        let mut reply = String::new();
        for _ in 0..50 {
            if let Ok(mut c) = tokio::net::TcpStream::connect(addr).await {
                c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .unwrap();
                c.read_to_string(&mut reply).await.unwrap();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.abort();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(reply.contains("\nkubelet_running_pods 1\n"), "{reply}");
    }
}
