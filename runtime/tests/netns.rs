//! Privileged tests of pinned namespaces and pod network plumbing. Everything happens inside
//! network namespaces the test creates — a "host" netns standing in for the node, and pod
//! netns — never in the machine's root netns. Skips without root (fails when `CI` is set).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ipnet::IpNet;
use skiff_runtime::net::{NetHandle, PodInterface};
use skiff_runtime::ns::{self, NsError, NsKind, PinnedNs};

/// True when the test may run; prints why not otherwise.
fn have_root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but the netns tests are not running as root"
    );
    eprintln!("skipping: needs root");
    false
}

/// A private state dir with pins below it. Drop removes every pin (which also destroys the
/// test's bridge and veths with their netns) and the state dir's self-mount.
struct Fixture {
    state: PathBuf,
    pins: Vec<PathBuf>,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let state = ns::prepare_state_dir(&tmp.path().join("state"))?;
        Ok(Self {
            state,
            pins: Vec::new(),
            _tmp: tmp,
        })
    }

    /// Pins a new namespace at `<state>/<name>`, running `setup` inside.
    fn pin(
        &mut self,
        kind: NsKind,
        name: &str,
        setup: impl FnOnce() -> io::Result<()> + Send,
    ) -> Result<(PinnedNs, OwnedFd)> {
        let path = self.state.join(name);
        let pinned = PinnedNs::create(kind, &path, setup)?;
        self.pins.push(path);
        let fd = pinned.fd()?;
        Ok((pinned, fd))
    }

    fn netns(&mut self, name: &str) -> Result<(OwnedFd, NetHandle)> {
        let (_, fd) = self.pin(NsKind::Net, name, || Ok(()))?;
        let handle = NetHandle::in_netns(fd.as_fd(), name)?;
        Ok((fd, handle))
    }

    /// Removes all pins and checks nothing is mounted under the state dir any more.
    fn teardown(&mut self) -> Result<()> {
        for p in self.pins.drain(..).rev() {
            PinnedNs::remove(&p)?;
            PinnedNs::remove(&p)?; // idempotent
            ensure!(!p.exists(), "{} still exists", p.display());
        }
        let left: Vec<_> = ns::mounts_below(&self.state)?
            .into_iter()
            .filter(|m| m != &self.state)
            .collect();
        ensure!(left.is_empty(), "mounts left under the state dir: {left:?}");
        ns::release_state_dir(&self.state)?;
        let left = ns::mounts_below(&self.state)?;
        ensure!(left.is_empty(), "state dir still mounted: {left:?}");
        Ok(())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for p in self.pins.drain(..).rev() {
            let _ = PinnedNs::remove(&p);
        }
        let _ = ns::release_state_dir(&self.state);
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn pod_spec(veth: &str, addr: &str) -> PodInterface {
    PodInterface {
        host_ifname: veth.into(),
        bridge: "skiff0".into(),
        pod_ifname: "eth0".into(),
        address: net(addr),
        gateway: "10.244.0.1".parse().unwrap(),
    }
}

/// Connects from inside `netns` to `to` and sends `msg`.
fn connect_from(netns: &OwnedFd, to: SocketAddr, msg: &'static [u8]) -> Result<()> {
    ns::in_netns(netns.as_fd(), move || -> io::Result<()> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.write_all(msg)
    })?
    .with_context(|| format!("connect to {to}"))
}

/// A listener bound inside `netns`.
fn listen_in(netns: &OwnedFd, at: &str) -> Result<TcpListener> {
    let at: SocketAddr = at.parse()?;
    Ok(ns::in_netns(netns.as_fd(), move || TcpListener::bind(at))??)
}

fn accept_one(l: &TcpListener) -> Result<Vec<u8>> {
    let (mut s, _) = l.accept()?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    Ok(got)
}

fn hostname_in(fd: &OwnedFd) -> Result<String> {
    Ok(ns::in_ns(fd.as_fd(), NsKind::Uts, || {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    })?)
}

#[test]
fn pods_on_a_bridge_talk_and_everything_is_removed() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let mut fx = Fixture::new()?;
    let (host_fd, mut host) = fx.netns("host-net")?;
    host.ensure_bridge("skiff0", net("10.244.0.1/24"))?;
    host.ensure_bridge("skiff0", net("10.244.0.1/24"))?; // idempotent

    let mut pods = Vec::new();
    for (name, veth, addr) in [
        ("a", "vethpoda", "10.244.0.2/24"),
        ("b", "vethpodb", "10.244.0.3/24"),
    ] {
        let (net_fd, mut nl) = fx.netns(&format!("pod-{name}-net"))?;
        let hostname = format!("pod-{name}");
        let (_, uts_fd) = fx.pin(NsKind::Uts, &format!("pod-{name}-uts"), || {
            rustix::system::sethostname(hostname.as_bytes()).map_err(io::Error::from)
        })?;
        let (_, ipc_fd) = fx.pin(NsKind::Ipc, &format!("pod-{name}-ipc"), || Ok(()))?;
        host.add_pod_interface(net_fd.as_fd(), &mut nl, &pod_spec(veth, addr))?;
        pods.push((net_fd, nl, uts_fd, ipc_fd, veth));
    }
    let (a, b) = (&pods[0], &pods[1]);

    // Pod A → pod B over the bridge.
    let lb = listen_in(&b.0, "10.244.0.3:8080")?;
    connect_from(&a.0, "10.244.0.3:8080".parse()?, b"hello b")?;
    ensure!(accept_one(&lb)? == b"hello b");
    // Pod A → the gateway (the bridge address in the host netns), and pod B → pod A.
    let lg = listen_in(&host_fd, "10.244.0.1:8081")?;
    connect_from(&a.0, "10.244.0.1:8081".parse()?, b"hello gw")?;
    ensure!(accept_one(&lg)? == b"hello gw");
    let la = listen_in(&a.0, "10.244.0.2:8082")?;
    connect_from(&b.0, "10.244.0.2:8082".parse()?, b"hello a")?;
    ensure!(accept_one(&la)? == b"hello a");

    // UTS: each pod sees its own hostname; ours is untouched.
    let ours = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    ensure!(hostname_in(&a.2)? == "pod-a");
    ensure!(hostname_in(&b.2)? == "pod-b");
    ensure!(ours != "pod-a" && ours != "pod-b");
    // IPC: distinct from ours and from each other.
    let ino = |fd: &OwnedFd| rustix::fs::fstat(fd).map(|s| s.st_ino);
    let our_ipc = rustix::fs::stat("/proc/self/ns/ipc")?.st_ino;
    ensure!(ino(&a.3)? != our_ipc && ino(&b.3)? != our_ipc && ino(&a.3)? != ino(&b.3)?);

    // Remove the interfaces (twice: idempotent); the peers die with them.
    drop((lb, lg, la));
    for (_, nl, _, _, veth) in &mut pods {
        host.remove_pod_interface(veth)?;
        host.remove_pod_interface(veth)?;
        ensure!(
            host.link_index(veth)?.is_none(),
            "{veth} left in the host netns"
        );
        ensure!(nl.link_index("eth0")?.is_none(), "eth0 left in a pod netns");
    }
    // Nothing of ours ever appeared in the machine's root netns.
    let mut root = NetHandle::current("root")?;
    for n in ["skiff0", "vethpoda", "vethpodb"] {
        ensure!(
            root.link_index(n)?.is_none(),
            "{n} exists in the root netns"
        );
    }
    drop((pods, host, root, host_fd));
    fx.teardown()
}

#[test]
fn a_failed_pod_interface_is_rolled_back() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let mut fx = Fixture::new()?;
    let (_host_fd, mut host) = fx.netns("host-net")?;
    host.ensure_bridge("skiff0", net("10.244.0.1/24"))?;
    let (pod_fd, mut pod) = fx.netns("pod-net")?;
    // A gateway outside the pod's subnet: the default route is refused after the veth,
    // address and lo are in place, so the executor must delete the veth again.
    let mut spec = pod_spec("vethbad", "10.244.0.9/24");
    spec.gateway = "10.99.0.1".parse()?;
    let err = host
        .add_pod_interface(pod_fd.as_fd(), &mut pod, &spec)
        .unwrap_err();
    let msg = err.to_string();
    ensure!(
        msg.starts_with("RTM_NEWROUTE 0.0.0.0/0 via 10.99.0.1 dev eth0 in netns pod-net"),
        "{msg}"
    );
    ensure!(
        host.link_index("vethbad")?.is_none(),
        "veth left after rollback"
    );
    ensure!(
        pod.link_index("eth0")?.is_none(),
        "peer left after rollback"
    );
    // A missing bridge fails before anything is created.
    let err = host
        .add_pod_interface(
            pod_fd.as_fd(),
            &mut pod,
            &PodInterface {
                bridge: "nobridge".into(),
                ..pod_spec("vethbad", "10.244.0.9/24")
            },
        )
        .unwrap_err();
    ensure!(
        err.to_string() == "interface nobridge not found in netns host-net",
        "{err}"
    );
    // The same pod works once the spec is right.
    host.add_pod_interface_at(
        &fx.state.join("pod-net"),
        &pod_spec("vethbad", "10.244.0.9/24"),
    )?;
    ensure!(pod.link_index("eth0")?.is_some());
    drop((host, pod, pod_fd, _host_fd));
    fx.teardown()
}

#[test]
fn host_routes_inside_a_test_netns() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let mut fx = Fixture::new()?;
    let (host_fd, mut host) = fx.netns("host-net")?;
    host.ensure_bridge("skiff0", net("10.244.0.1/24"))?;
    // A UDP connect() only looks the route up; nothing is sent.
    let route_to = |dst: &str| -> Result<io::Result<IpAddr>> {
        let dst: SocketAddr = dst.parse()?;
        Ok(ns::in_netns(host_fd.as_fd(), move || {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(dst)?;
            Ok(s.local_addr()?.ip())
        })?)
    };
    let errno = |r: io::Result<IpAddr>| r.err().and_then(|e| e.raw_os_error());

    // Service CIDR: without a route, "network unreachable"; with ours, "host unreachable".
    ensure!(errno(route_to("10.96.0.10:53")?) == Some(libc::ENETUNREACH));
    host.add_unreachable_route(net("10.96.0.0/12"))?;
    host.add_unreachable_route(net("10.96.0.0/12"))?; // replace: idempotent
    ensure!(errno(route_to("10.96.0.10:53")?) == Some(libc::EHOSTUNREACH));

    // host-gw: another node's PodCIDR via a neighbour on the bridge's subnet.
    ensure!(errno(route_to("10.244.1.5:80")?) == Some(libc::ENETUNREACH));
    host.add_route(net("10.244.1.0/24"), "10.244.0.254".parse()?)?;
    host.add_route(net("10.244.1.0/24"), "10.244.0.254".parse()?)?;
    let src = route_to("10.244.1.5:80")?.context("route to 10.244.1.0/24")?;
    ensure!(src == "10.244.0.1".parse::<IpAddr>()?, "source {src}");

    for dst in ["10.96.0.0/12", "10.244.1.0/24"] {
        host.del_route(net(dst))?;
        host.del_route(net(dst))?; // gone is fine
    }
    ensure!(errno(route_to("10.96.0.10:53")?) == Some(libc::ENETUNREACH));
    ensure!(errno(route_to("10.244.1.5:80")?) == Some(libc::ENETUNREACH));
    drop((host, host_fd));
    fx.teardown()
}

#[test]
fn failed_pins_leave_nothing_behind() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let mut fx = Fixture::new()?;
    let state = fx.state.clone();
    // Setup fails inside the new namespace: no file, no mount.
    let p = state.join("uts");
    let err = PinnedNs::create(NsKind::Uts, &p, || Err(io::Error::other("no"))).unwrap_err();
    ensure!(matches!(err, NsError::Setup { .. }), "{err}");
    ensure!(!p.exists());
    // The parent dir is missing: nothing mounted anywhere.
    let p = state.join("missing/net");
    ensure!(PinnedNs::create(NsKind::Net, &p, || Ok(())).is_err());
    // A pin where one already is: refused, the first stays usable.
    let (_, fd) = fx.pin(NsKind::Net, "net", || Ok(()))?;
    let err = PinnedNs::create(NsKind::Net, state.join("net"), || Ok(())).unwrap_err();
    ensure!(matches!(err, NsError::Exists { .. }), "{err}");
    ensure!(PinnedNs::open(state.join("net")).is_ok());
    // An unmounted file is not a namespace.
    std::fs::write(state.join("plain"), b"")?;
    ensure!(matches!(
        PinnedNs::open(state.join("plain")),
        Err(NsError::NotPinned { .. })
    ));
    std::fs::remove_file(state.join("plain"))?;
    // The pin survives closing every fd: only the mount holds it.
    let ino = rustix::fs::fstat(&fd)?.st_ino;
    drop(fd);
    ensure!(rustix::fs::fstat(PinnedNs::open(state.join("net"))?)?.st_ino == ino);
    ensure!(ns::mounts_below(Path::new(&state))?.len() == 2); // state dir + the pin
    fx.teardown()
}
