//! `skiff bench proxy`: the eBPF Service data plane's figures. (a) Time to program 10,000
//! Services × 10 endpoints into empty maps (model + plan + map writes); (b) `connect()`
//! latency p50/p99 through a ClusterIP with 10, 1,000 and 10,000 Services programmed, against
//! a direct connect to a backend; (c) the same Services as kube-proxy's iptables mode would
//! write them (KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-*, `statistic` random probabilities) in a
//! private network namespace, measured in the same run. Prints the figures, writes JSON and
//! an SVG of latency against Service count. Everything it makes (namespaces, a child cgroup
//! of its own, pins, rules) is removed again, also on error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use skiff_proxy::dataplane::{Dataplane, DataplaneConfig};
use skiff_proxy::model::NodeInfo;
use skiff_proxy::{ClusterState, ObjectKey};

use super::plot::{Series, lines};
use super::stats::{Summary, summarize};
use super::{ensure_parent, run_quiet};

#[derive(Debug, clap::Args)]
pub struct ProxyBench {
    /// Service counts to measure connect latency at.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    services: Vec<usize>,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Timed connects per target and Service count.
    #[arg(long, default_value_t = 2000)]
    connects: usize,
    /// Skip the iptables baseline.
    #[arg(long)]
    no_iptables: bool,
    #[arg(long, default_value = "bench-out/proxy.json")]
    json: PathBuf,
    #[arg(long, default_value = "bench-out/proxy.svg")]
    plot: PathBuf,
}

/// The target Service: its ClusterIP and backends (addresses on the netns's loopback).
const TARGET_IP: &str = "10.96.0.10";
const BACKEND_PORT: u16 = 8080;
/// Probe rounds per Service count (each system measured once per round, in turn).
const ROUNDS: usize = 4;

#[derive(Debug, Serialize)]
struct Programming {
    services: usize,
    endpoints_per_service: usize,
    /// Model + plan + map writes, from empty maps (wall clock).
    total_ms: f64,
    /// Of which: the map writes.
    map_writes_ms: f64,
    /// The same, as CPU time of the programming thread (user + system, so the kernel's
    /// work in the bpf(2) calls counts): unlike wall time, not inflated by other load on
    /// the machine.
    total_cpu_ms: f64,
    map_writes_cpu_ms: f64,
    writes: usize,
    /// A second sync of the same state (nothing to write), wall and CPU.
    resync_ms: f64,
    resync_cpu_ms: f64,
}

/// This thread's CPU time so far, in ms.
fn thread_cpu_ms() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

#[derive(Debug, Serialize)]
struct Point {
    services: usize,
    /// A direct connect to a backend, from outside the data plane's cgroup (no hooks).
    direct: Summary,
    /// A direct connect from inside the cgroup (the hooks run and find no Service).
    direct_in_cgroup: Summary,
    /// A connect to the ClusterIP, translated by the eBPF data plane.
    ebpf: Summary,
    /// ebpf p50 − direct p50 (µs): what a Service connect costs over a direct one.
    ebpf_overhead_p50_us: f64,
    /// ebpf p50 − direct_in_cgroup p50 (µs): the translation alone, measured in one process
    /// with the two kinds of connect interleaved (less noisy than the above).
    ebpf_translation_p50_us: f64,
    /// iptables (kube-proxy's chains) in its own netns: a direct connect (which walks
    /// KUBE-SERVICES too: every new connection does) and through the ClusterIP.
    iptables_direct: Option<Summary>,
    iptables: Option<Summary>,
    /// iptables ClusterIP p50 − direct p50 (the clean direct connect above, µs).
    iptables_overhead_p50_us: Option<f64>,
    /// Time to load the iptables rules (iptables-restore).
    iptables_restore_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    programming: Programming,
    latency_us: Vec<Point>,
}

impl ProxyBench {
    pub async fn run(self) -> Result<()> {
        if self.endpoints == 0 || self.endpoints > 200 {
            bail!("--endpoints must be 1..=200");
        }
        let lab = Lab::new()?;
        let report = self.measure(&lab)?;
        drop(lab);
        self.print(&report);
        ensure_parent(&self.json)?;
        std::fs::write(&self.json, serde_json::to_string_pretty(&report)?)?;
        self.draw(&report)?;
        println!("wrote {} and {}", self.json.display(), self.plot.display());
        Ok(())
    }

    fn measure(&self, lab: &Lab) -> Result<Report> {
        let largest = self
            .services
            .iter()
            .copied()
            .max()
            .unwrap_or(10)
            .max(10_000);
        let mut config = DataplaneConfig::new(NodeInfo {
            name: "bench".into(),
            addresses: vec![],
        });
        config.pin_dir = lab.dir.path().join("bpf");
        config.cgroup = Some(lab.cgroup.clone());
        let mut dataplane = Dataplane::open(config).context("opening the data plane")?;

        // (a) programming from empty maps.
        let state = cluster_state(largest, self.endpoints);
        let (start, cpu_start) = (Instant::now(), thread_cpu_ms());
        let model = skiff_proxy::model::Model::build(&state, &dataplane.config().node);
        let plan = dataplane.plan(&model);
        let (planned, cpu_planned) = (start.elapsed(), thread_cpu_ms());
        let writes = plan.ops.len();
        dataplane.execute(plan)?;
        let (total, cpu_total) = (start.elapsed(), thread_cpu_ms());
        let (start, cpu_start2) = (Instant::now(), thread_cpu_ms());
        let resync = dataplane.sync(&state)?;
        let resync_ms = start.elapsed().as_secs_f64() * 1e3;
        let programming = Programming {
            services: largest,
            endpoints_per_service: self.endpoints,
            total_ms: total.as_secs_f64() * 1e3,
            map_writes_ms: (total - planned).as_secs_f64() * 1e3,
            total_cpu_ms: cpu_total - cpu_start,
            map_writes_cpu_ms: cpu_total - cpu_planned,
            writes,
            resync_ms,
            resync_cpu_ms: thread_cpu_ms() - cpu_start2,
        };
        let report = resync;
        println!(
            "programmed {} services x {} endpoints ({} map writes, {} frontends) in {:.1} ms",
            largest, self.endpoints, writes, report.frontends, programming.total_ms
        );

        let mut points = Vec::new();
        for &n in &self.services {
            dataplane.sync(&cluster_state(n, self.endpoints))?;
            points.push(self.point(lab, n)?);
        }
        Ok(Report {
            programming,
            latency_us: points,
        })
    }

    /// Latency at `n` Services: eBPF (already programmed) and iptables. The probes run in
    /// alternating rounds, so that load from elsewhere on the machine spreads over all.
    fn point(&self, lab: &Lab, n: usize) -> Result<Point> {
        let direct_target = format!("direct=10.244.0.2:{BACKEND_PORT}");
        let service_target = format!("service={TARGET_IP}:80");
        let both = [direct_target.as_str(), service_target.as_str()];
        let restore = if self.no_iptables {
            None
        } else {
            Some(lab.iptables(n, self.endpoints)?)
        };
        let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let per_round = self.connects.div_ceil(ROUNDS);
        for _ in 0..ROUNDS {
            let mut take =
                |name: &'static str, mut probe: BTreeMap<String, Vec<f64>>, key: &str| {
                    samples
                        .entry(name)
                        .or_default()
                        .append(probe.entry(key.into()).or_default());
                };
            let inside = lab.probe(&lab.ebpf_ns, true, &both, per_round)?;
            take("direct_in_cgroup", inside.clone(), "direct");
            take("ebpf", inside, "service");
            take(
                "direct",
                lab.probe(&lab.ebpf_ns, false, &both[..1], per_round)?,
                "direct",
            );
            if restore.is_some() {
                let ipt = lab.probe(&lab.ipt_ns, false, &both, per_round)?;
                take("iptables_direct", ipt.clone(), "direct");
                take("iptables", ipt, "service");
            }
        }
        let summary = |name: &str| samples.get(name).map(|s| summarize(s));
        let direct = summary("direct").context("no direct samples")?;
        let ebpf = summary("ebpf").context("no ClusterIP samples")?;
        let iptables = summary("iptables");
        let direct_in_cgroup = summary("direct_in_cgroup").context("no samples")?;
        Ok(Point {
            services: n,
            ebpf_overhead_p50_us: ebpf.p50 - direct.p50,
            ebpf_translation_p50_us: ebpf.p50 - direct_in_cgroup.p50,
            iptables_overhead_p50_us: iptables.as_ref().map(|s| s.p50 - direct.p50),
            direct_in_cgroup,
            direct,
            ebpf,
            iptables_direct: summary("iptables_direct"),
            iptables,
            iptables_restore_ms: restore,
        })
    }

    fn print(&self, report: &Report) {
        let p = &report.programming;
        println!(
            "\n(a) programming {} Services x {} endpoints ({} writes): {:.1} ms wall / {:.1} ms CPU, \
             of which map writes {:.1} / {:.1} ms; unchanged re-sync {:.1} / {:.1} ms",
            p.services,
            p.endpoints_per_service,
            p.writes,
            p.total_ms,
            p.total_cpu_ms,
            p.map_writes_ms,
            p.map_writes_cpu_ms,
            p.resync_ms,
            p.resync_cpu_ms
        );
        println!("\n(b, c) connect() latency, µs   p50 / p99");
        println!(
            "{:>9}  {:>15}  {:>15}  {:>15}  {:>7}  {:>7}  {:>15}  {:>15}  {:>7}",
            "services",
            "direct",
            "direct+hooks",
            "eBPF ClusterIP",
            "+p50",
            "+xlate",
            "ipt direct",
            "ipt ClusterIP",
            "+p50"
        );
        for pt in &report.latency_us {
            let pair = |s: &Summary| format!("{:.1} / {:.1}", s.p50, s.p99);
            let ipt = pt.iptables.as_ref().map_or("-".into(), pair);
            let ipt_direct = pt.iptables_direct.as_ref().map_or("-".into(), pair);
            let ipt_over = pt
                .iptables_overhead_p50_us
                .map_or("-".into(), |o| format!("{o:.1}"));
            println!(
                "{:>9}  {:>15}  {:>15}  {:>15}  {:>7.1}  {:>7.1}  {:>15}  {:>15}  {:>7}",
                pt.services,
                pair(&pt.direct),
                pair(&pt.direct_in_cgroup),
                pair(&pt.ebpf),
                pt.ebpf_overhead_p50_us,
                pt.ebpf_translation_p50_us,
                ipt_direct,
                ipt,
                ipt_over
            );
        }
    }

    fn draw(&self, report: &Report) -> Result<()> {
        let series = |name: &str, f: &dyn Fn(&Point) -> Option<f64>| Series {
            name: name.into(),
            points: report
                .latency_us
                .iter()
                .filter_map(|p| f(p).map(|y| ((p.services as f64).log10(), y)))
                .collect(),
        };
        let mut all = vec![
            series("direct p50", &|p| Some(p.direct.p50)),
            series("eBPF ClusterIP p50", &|p| Some(p.ebpf.p50)),
            series("eBPF ClusterIP p99", &|p| Some(p.ebpf.p99)),
        ];
        if !self.no_iptables {
            all.push(series("iptables ClusterIP p50", &|p| {
                p.iptables.as_ref().map(|s| s.p50)
            }));
        }
        lines(
            &self.plot,
            "connect() latency through a ClusterIP",
            "log10(Services)",
            "µs",
            &all,
        )
    }
}

/// `n` Services with `endpoints` ready endpoints each. Service 0 is the target: its
/// endpoints are the probe's addresses; the others point at addresses nobody dials.
fn cluster_state(n: usize, endpoints: usize) -> ClusterState {
    let mut state = ClusterState::default();
    for i in 0..n {
        let name = format!("svc-{i}");
        let ip = if i == 0 {
            TARGET_IP.parse().unwrap()
        } else {
            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 97, 0, 0)) + i as u32)
        };
        let addrs: Vec<Ipv4Addr> = (0..endpoints)
            .map(|e| {
                if i == 0 {
                    Ipv4Addr::new(10, 244, 0, 2 + e as u8)
                } else {
                    Ipv4Addr::from(
                        u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * endpoints + e) as u32,
                    )
                }
            })
            .collect();
        let (service, slice) = objects(&name, ip, &addrs);
        state
            .services
            .insert(ObjectKey::new("bench", &name), service);
        state
            .slices
            .insert(ObjectKey::new("bench", format!("{name}-1")), slice);
    }
    state
}

fn objects(name: &str, ip: Ipv4Addr, addrs: &[Ipv4Addr]) -> (Service, EndpointSlice) {
    let service = Service {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.to_string()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("{name}-1")),
            labels: Some(
                [(
                    skiff_proxy::state::SERVICE_NAME_LABEL.to_string(),
                    name.to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: addrs
            .iter()
            .map(|a| Endpoint {
                addresses: vec![a.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(i32::from(BACKEND_PORT)),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    };
    (service, slice)
}

/// kube-proxy's iptables-mode rules for `n` Services (as iptables-restore input, nat table).
/// The target Service's rule sits in the middle of KUBE-SERVICES, where an average Service
/// of a real node's (unordered) chain would be.
fn iptables_rules(n: usize, endpoints: usize) -> String {
    let mut chains = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    let mut rules = String::from(
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    let state = cluster_state(n, endpoints);
    let mut services: Vec<&Service> = state.services.values().collect();
    let is_target =
        |s: &Service| s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some(TARGET_IP);
    if let Some(at) = services.iter().position(|s| is_target(s)) {
        let target = services.remove(at);
        services.insert(services.len() / 2, target);
    }
    for (i, service) in services.into_iter().enumerate() {
        let spec = service.spec.as_ref().unwrap();
        let ip = spec.cluster_ip.as_deref().unwrap();
        let target = ip == TARGET_IP;
        let svc = format!("KUBE-SVC-{i:016X}");
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {ip}/32 -p tcp -m tcp --dport 80 -j {svc}"
        );
        for e in 0..endpoints {
            let sep = format!("KUBE-SEP-{i:011X}{e:05X}");
            let _ = writeln!(chains, ":{sep} - [0:0]");
            let left = endpoints - e;
            if left > 1 {
                let _ = writeln!(
                    rules,
                    "-A {svc} -m statistic --mode random --probability {:.11} -j {sep}",
                    1.0 / left as f64
                );
            } else {
                let _ = writeln!(rules, "-A {svc} -j {sep}");
            }
            let addr = if target {
                Ipv4Addr::new(10, 244, 0, 2 + e as u8)
            } else {
                Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * endpoints + e) as u32)
            };
            let _ = writeln!(
                rules,
                "-A {sep} -p tcp -m tcp -j DNAT --to-destination {addr}:{BACKEND_PORT}"
            );
        }
    }
    chains + &rules + "COMMIT\n"
}

/// The bench's namespaces and cgroup; removed on drop.
struct Lab {
    dir: tempfile::TempDir,
    ebpf_ns: String,
    ipt_ns: String,
    cgroup: PathBuf,
}

impl Lab {
    fn new() -> Result<Lab> {
        let pid = std::process::id();
        let cgroup = own_cgroup2()?.join(format!("skiff-bench-proxy-{pid}"));
        let lab = Lab {
            dir: tempfile::tempdir()?,
            ebpf_ns: format!("skiff-bench-{pid}-ebpf"),
            ipt_ns: format!("skiff-bench-{pid}-ipt"),
            cgroup,
        };
        std::fs::create_dir(&lab.cgroup)
            .with_context(|| format!("mkdir {}", lab.cgroup.display()))?;
        // The eBPF netns routes the Service range unreachable, as a skiff node does; the
        // iptables one routes it to a device (a veth), as a kube-proxy node's default route
        // would (routing happens before the nat OUTPUT chain rewrites the destination).
        let service_route = [
            (&lab.ebpf_ns, "ip route add unreachable 10.96.0.0/12"),
            (
                &lab.ipt_ns,
                "ip link add svc0 type veth peer name svc1 && ip link set svc0 up && ip link set svc1 up && ip route add 10.96.0.0/12 dev svc0",
            ),
        ];
        for (ns, route) in service_route {
            run_quiet(Command::new("ip").args(["netns", "add", ns]))?;
            let script = format!(
                "ip link set lo up && {route} && \
                 sysctl -qw net.ipv4.ip_local_port_range='1024 65000' && \
                 for i in $(seq 2 250); do ip addr add 10.244.0.$i/32 dev lo; done"
            );
            run_quiet(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", &script]))?;
        }
        Ok(lab)
    }

    /// Loads kube-proxy's rules for `n` Services into the iptables netns; returns ms.
    fn iptables(&self, n: usize, endpoints: usize) -> Result<f64> {
        let rules = iptables_rules(n, endpoints);
        let start = Instant::now();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ipt_ns, "iptables-restore"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running iptables-restore (Debian package iptables)")?;
        child.stdin.take().unwrap().write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "iptables-restore: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(start.elapsed().as_secs_f64() * 1e3)
    }

    /// Runs the probe in `ns` (and in the data plane's cgroup when `in_cgroup`).
    fn probe(
        &self,
        ns: &str,
        in_cgroup: bool,
        targets: &[&str],
        count: usize,
    ) -> Result<BTreeMap<String, Vec<f64>>> {
        let exe = std::env::current_exe()?;
        let mut args: Vec<String> = vec!["ip".into(), "netns".into(), "exec".into(), ns.into()];
        args.extend([
            exe.to_string_lossy().into_owned(),
            "bench".into(),
            "proxy-probe".into(),
        ]);
        args.extend(["--count".into(), count.to_string()]);
        for t in targets {
            args.extend(["--target".into(), t.to_string()]);
        }
        let procs = if in_cgroup {
            self.cgroup.join("cgroup.procs")
        } else {
            PathBuf::from("/dev/null")
        };
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > {} && exec \"$@\"", procs.display()))
            .arg("sh")
            .args(&args)
            .output()?;
        if !out.status.success() {
            bail!("probe: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Dataplane::remove(&self.dir.path().join("bpf"));
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        let _ = std::fs::remove_dir(&self.cgroup);
        for ns in [&self.ebpf_ns, &self.ipt_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// This process's cgroup v2 directory on the unified mount.
fn own_cgroup2() -> Result<PathBuf> {
    let rel = std::fs::read_to_string("/proc/self/cgroup")?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .context("no cgroup v2 entry in /proc/self/cgroup")?;
    let mount = std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split(' ').nth(4).map(PathBuf::from))
        .context("no cgroup2 mount")?;
    Ok(Path::new(&mount).join(rel.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_rules_are_kube_proxy_shaped() {
        let rules = iptables_rules(2, 3);
        assert!(rules.starts_with("*nat\n:KUBE-SERVICES - [0:0]\n"));
        assert!(rules.ends_with("COMMIT\n"));
        assert_eq!(rules.matches("-A KUBE-SERVICES -d ").count(), 2);
        // 1/3, 1/2, then the last endpoint unconditionally.
        assert_eq!(rules.matches("--probability 0.33333333333").count(), 2);
        assert_eq!(rules.matches("--probability 0.50000000000").count(), 2);
        assert_eq!(rules.matches("-j DNAT --to-destination").count(), 6);
        assert!(rules.contains(&format!("-d {TARGET_IP}/32")));
        let rules = iptables_rules(101, 1);
        let position = rules
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .position(|l| l.contains(&format!("-d {TARGET_IP}/32")));
        assert_eq!(
            position,
            Some(50),
            "the target Service sits in the middle of the chain"
        );
    }

    #[test]
    fn the_target_service_points_at_the_probe() {
        let state = cluster_state(3, 2);
        let key = ObjectKey::new("bench", "svc-0");
        assert_eq!(
            state.services[&key]
                .spec
                .as_ref()
                .unwrap()
                .cluster_ip
                .as_deref(),
            Some(TARGET_IP)
        );
        let model = skiff_proxy::model::Model::build(&state, &NodeInfo::default());
        assert_eq!(model.ports.len(), 3);
        assert!(model.warnings.is_empty());
    }
}
