//! Measures per-pod network setup: the in-process rtnetlink path of `skiff_runtime::net`
//! against the same steps done with `ip` processes. Runs as root, entirely inside network
//! namespaces it creates (a "host" netns with a bridge, one netns per pod) and removes them.
//!
//! `cargo run --release -p skiff-runtime --example pod_net_bench [-- PODS]`

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ipnet::IpNet;
use skiff_runtime::net::{NetHandle, PodInterface, PodNs, execute, pod_interface_plan};
use skiff_runtime::ns::{self, NsKind, PinnedNs};

const GATEWAY: &str = "10.244.0.1";

/// Pins and the state dir; removed on drop, also when a run fails.
struct Cleanup {
    state: PathBuf,
    pins: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in self.pins.drain(..).rev() {
            let _ = PinnedNs::remove(&p);
        }
        let _ = ns::release_state_dir(&self.state);
    }
}

impl Cleanup {
    fn netns(&mut self, name: &str) -> Result<(PathBuf, OwnedFd)> {
        let path = self.state.join(name);
        let pin = PinnedNs::create(NsKind::Net, &path, || Ok(()))?;
        self.pins.push(path.clone());
        Ok((path, pin.fd()?))
    }
}

fn stats(name: &str, xs: &mut [Duration]) {
    xs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| ms(xs[((xs.len() as f64 - 1.0) * q).round() as usize]);
    println!(
        "{name:<56} n={:<3} p50 {:>7.3} ms  p90 {:>7.3} ms  max {:>7.3} ms",
        xs.len(),
        at(0.5),
        at(0.9),
        ms(*xs.last().expect("samples"))
    );
}

fn spec(i: usize) -> PodInterface {
    PodInterface {
        host_ifname: format!("vethp{i}"),
        bridge: "skiff0".into(),
        pod_ifname: "eth0".into(),
        address: format!("10.244.0.{}/24", 2 + i).parse().expect("address"),
        gateway: GATEWAY.parse().expect("gateway"),
    }
}

/// Runs `ip ARGS` (or `ip -batch -` fed `batch`) inside the netns `fd`.
fn ip_in(fd: BorrowedFd<'_>, args: &[&str], batch: Option<&str>) -> Result<()> {
    let raw = fd.as_raw_fd();
    let mut cmd = Command::new("ip");
    cmd.args(args);
    // SAFETY: the closure runs in the forked child before exec and only calls setns(2),
    // which is async-signal-safe; `raw` stays open in the child (CLOEXEC acts at exec).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = match batch {
        None => cmd.output()?,
        Some(text) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(text.as_bytes())?;
            child.wait_with_output()?
        }
    };
    if !out.status.success() {
        bail!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The same steps as `pod_interface_plan`, as `ip` commands (one process each, or batched).
fn ip_pod(
    host: BorrowedFd<'_>,
    pin: &Path,
    pod: BorrowedFd<'_>,
    s: &PodInterface,
    batch: bool,
) -> Result<()> {
    let pin = pin.to_str().context("pin path")?;
    ip_in(
        host,
        &[
            "link",
            "add",
            &s.host_ifname,
            "up",
            "master",
            &s.bridge,
            "type",
            "veth",
            "peer",
            "name",
            &s.pod_ifname,
            "netns",
            pin,
        ],
        None,
    )?;
    let addr = s.address.to_string();
    let gw = s.gateway.to_string();
    if batch {
        let text = format!(
            "link set lo up\nlink set {0} up\naddr add {addr} dev {0}\nroute add default via {gw} dev {0}\n",
            s.pod_ifname
        );
        return ip_in(pod, &["-batch", "-"], Some(&text));
    }
    ip_in(pod, &["link", "set", "lo", "up"], None)?;
    ip_in(pod, &["link", "set", &s.pod_ifname, "up"], None)?;
    ip_in(pod, &["addr", "add", &addr, "dev", &s.pod_ifname], None)?;
    ip_in(
        pod,
        &["route", "add", "default", "via", &gw, "dev", &s.pod_ifname],
        None,
    )
}

fn main() -> Result<()> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "needs root (creates network namespaces)"
    );
    let pods: usize = std::env::args().nth(1).map_or(Ok(50), |s| s.parse())?;
    ensure!((1..=120).contains(&pods), "PODS must be 1..=120");
    let tmp = tempfile::tempdir()?;
    let mut c = Cleanup {
        state: ns::prepare_state_dir(&tmp.path().join("state"))?,
        pins: Vec::new(),
    };
    let (_, host_fd) = c.netns("host")?;
    let mut host = NetHandle::in_netns(host_fd.as_fd(), "bench-host")?;
    host.ensure_bridge("skiff0", IpNet::new(GATEWAY.parse()?, 24)?)?;

    let (mut t_ns, mut t_handle, mut t_net, mut t_total, mut t_rm) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..pods {
        let t0 = Instant::now();
        let (_, fd) = c.netns(&format!("pod{i}"))?;
        let t1 = Instant::now();
        let mut pod = NetHandle::in_netns(fd.as_fd(), format!("pod{i}"))?;
        let t2 = Instant::now();
        host.add_pod_interface(fd.as_fd(), &mut pod, &spec(i))?;
        let t3 = Instant::now();
        t_ns.push(t1 - t0);
        t_handle.push(t2 - t1);
        t_net.push(t3 - t2);
        t_total.push(t3 - t0);
    }
    for i in 0..pods {
        let t0 = Instant::now();
        host.remove_pod_interface(&spec(i).host_ifname)?;
        t_rm.push(t0.elapsed());
    }

    // The same plan once more, one step at a time, to see where the time goes.
    let mut per_step: Vec<(String, Vec<Duration>)> = Vec::new();
    for i in 0..pods {
        let (_, fd) = c.netns(&format!("step{i}"))?;
        let mut pod = NetHandle::in_netns(fd.as_fd(), format!("step{i}"))?;
        let steps = pod_interface_plan(&spec(i))?;
        for (k, step) in steps.iter().enumerate() {
            let t0 = Instant::now();
            let pod_ns = PodNs {
                fd: fd.as_fd(),
                handle: &mut pod,
            };
            execute(std::slice::from_ref(step), &mut host, Some(pod_ns))?;
            if per_step.len() <= k {
                per_step.push((
                    format!("  step {k}: {} {}", step.op.name(), step.op.target()),
                    vec![],
                ));
            }
            per_step[k].1.push(t0.elapsed());
        }
    }
    for i in 0..pods {
        host.remove_pod_interface(&spec(i).host_ifname)?;
    }

    let mut t_ip = vec![];
    let mut t_batch = vec![];
    for (round, batch) in [(0, false), (1, true)] {
        for i in 0..pods {
            let (pin, fd) = c.netns(&format!("ip{round}-{i}"))?;
            let t0 = Instant::now();
            ip_pod(host_fd.as_fd(), &pin, fd.as_fd(), &spec(i), batch)?;
            let d = t0.elapsed();
            if batch { t_batch.push(d) } else { t_ip.push(d) }
        }
        for i in 0..pods {
            host.remove_pod_interface(&spec(i).host_ifname)?;
        }
    }

    println!("per-pod network setup, {pods} pods, inside test netns (1 bridge):");
    stats("netns create + pin (unshare, bind mount)", &mut t_ns);
    stats("netlink handle in pod netns (thread+setns)", &mut t_handle);
    stats(
        "in-process: veth+peer in netns, addr, route, up",
        &mut t_net,
    );
    stats("in-process: handle + interface", &mut {
        t_handle
            .iter()
            .zip(&t_net)
            .map(|(a, b)| *a + *b)
            .collect::<Vec<_>>()
    });
    stats("in-process: netns + handle + interface", &mut t_total);
    stats("in-process: remove veth", &mut t_rm);
    println!("in-process, one step per execute (each includes its name lookups):");
    for (name, xs) in &mut per_step {
        stats(name, xs);
    }
    stats("ip commands: 5 processes", &mut t_ip);
    stats("ip commands: 2 processes (-batch in pod)", &mut t_batch);
    drop(host);
    let state = c.state.clone();
    drop(c);
    let left = ns::mounts_below(&state)?;
    ensure!(left.is_empty(), "mounts left: {left:?}");
    Ok(())
}
