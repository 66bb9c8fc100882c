//! Pod sandboxes end to end: pinned namespaces, a veth on a bridge, a pod cgroup, and real
//! containers joining them. Everything network-related happens inside a "node" network
//! namespace the test creates; needs root.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use skiff_runtime::cgroup::{CgroupFs, Limit, Parent, Resources};
use skiff_runtime::container::{ProcessSpec, State, logs};
use skiff_runtime::net::{NetHandle, PodInterface};
use skiff_runtime::ns::{self, NsKind, PinnedNs};
use skiff_runtime::sandbox::{SandboxSpec, Sandboxes};
use support::runtime::{Node, ready};

/// A node network namespace with a bridge, and sandboxes whose interfaces attach to it.
struct Pods {
    node: Node,
    sandboxes: Sandboxes,
    node_netns: PathBuf,
    cgroup_parent: String,
    ids: Vec<String>,
}

impl Pods {
    fn new(test: &str) -> Pods {
        let node = Node::new();
        let pins = ns::prepare_state_dir(&node.dir.path().join("node-ns")).unwrap();
        let node_netns = pins.join("net");
        PinnedNs::create(NsKind::Net, &node_netns, || Ok(())).unwrap();
        let fd = PinnedNs::open(&node_netns).unwrap();
        let mut handle = NetHandle::in_netns(std::os::fd::AsFd::as_fd(&fd), "node").unwrap();
        handle
            .ensure_bridge("skiff0", "10.244.0.1/24".parse().unwrap())
            .unwrap();
        let cgroups = CgroupFs::detect().unwrap();
        let cgroup_parent = cgroup_parent_for(test);
        let sandboxes = Sandboxes::open(
            node.dir.path(),
            cgroups,
            cgroup_parent.clone(),
            Some(node_netns.clone()),
        )
        .unwrap();
        Pods {
            node,
            sandboxes,
            node_netns,
            cgroup_parent,
            ids: Vec::new(),
        }
    }

    fn pod(&mut self, id: &str, ip: &str, resources: Resources) {
        self.sandboxes
            .create(&sandbox_spec(id, ip, "skiff0", resources))
            .unwrap();
        self.ids.push(id.into());
    }

    /// A container of pod `pod` with the given limits.
    fn container(
        &self,
        pod: &str,
        name: &str,
        args: &[&str],
        resources: &Resources,
    ) -> skiff_runtime::container::ContainerSpec {
        let mut spec = self.node.spec(&format!("{pod}-{name}"), args);
        spec.join = self.sandboxes.join(pod).unwrap();
        let cgroup = self
            .sandboxes
            .container_cgroup(pod, name, resources)
            .unwrap();
        spec.cgroup_procs = cgroup
            .nodes()
            .iter()
            .map(|n| n.dir.join("cgroup.procs"))
            .collect();
        spec
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for status in self.node.containers.list().unwrap_or_default() {
            let _ = self
                .node
                .containers
                .stop(&status.id, Duration::from_secs(2));
        }
        for id in &self.ids {
            let _ = self.sandboxes.remove(id);
        }
        let _ = PinnedNs::remove(&self.node_netns);
        let _ = ns::release_state_dir(self.node_netns.parent().unwrap());
        let _ = ns::release_state_dir(&self.node.dir.path().join("sandboxes"));
        // The parent of the pod cgroups, created for this test below our own cgroup.
        if let Ok(parent) =
            CgroupFs::detect().and_then(|fs| fs.open(&Parent::Own, &self.cgroup_parent))
        {
            let _ = parent.remove();
        }
    }
}

fn sandbox_spec(id: &str, ip: &str, bridge: &str, resources: Resources) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        hostname: id.into(),
        network: Some(PodInterface {
            host_ifname: format!("veth-{id}"),
            bridge: bridge.into(),
            pod_ifname: "eth0".into(),
            address: format!("{ip}/24").parse().unwrap(),
            gateway: "10.244.0.1".parse().unwrap(),
        }),
        resources,
    }
}

/// A parent cgroup per test (tests run in parallel in one process).
fn cgroup_parent_for(test: &str) -> String {
    format!("skiff-test-{}-{test}", std::process::id())
}

#[test]
fn pods_get_their_own_hostname_and_address_and_reach_each_other() {
    if !ready() {
        return;
    }
    let mut pods = Pods::new("net");
    pods.pod("web", "10.244.0.2", Resources::default());
    pods.pod("client", "10.244.0.3", Resources::default());
    let web = pods.container(
        "web",
        "httpd",
        &["httpd", "-f", "-p", "80", "-h", "/var/www"],
        &Resources::default(),
    );
    pods.node.containers.create(&web).unwrap();
    pods.node.containers.start(&web.id).unwrap();

    let script = "hostname; ip -4 addr show eth0 | grep -o 'inet [0-9./]*'; \
                  for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://10.244.0.2/ && break; sleep 0.2; done";
    let client = pods.container(
        "client",
        "curl",
        &["sh", "-c", script],
        &Resources::default(),
    );
    let (code, out, err) = pods.node.run(client);
    assert_eq!(code, 0, "stderr: {err:?}");
    assert_eq!(out, ["client", "inet 10.244.0.3/24", "hello from skiff"]);

    // The host's own hostname and network are untouched.
    assert_ne!(
        rustix::system::uname().nodename().to_str().unwrap(),
        "client"
    );
    assert!(
        !std::fs::read_to_string("/proc/net/dev")
            .unwrap()
            .contains("veth-web")
    );
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed_and_detected() {
    if !ready() {
        return;
    }
    let mut pods = Pods::new("oom");
    pods.pod("hog", "10.244.0.4", Resources::default());
    let limits = Resources {
        memory_max: Some(Limit::Value(32 << 20)),
        ..Default::default()
    };
    // busybox dd allocates its block: 256 MiB cannot fit in 32 MiB.
    let spec = pods.container(
        "hog",
        "dd",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
        &limits,
    );
    let id = spec.id.clone();
    pods.node.containers.create(&spec).unwrap();
    pods.node.containers.start(&id).unwrap();
    let status = pods
        .node
        .containers
        .wait(&id, Duration::from_secs(30))
        .unwrap();
    assert!(
        matches!(status.state, State::Exited(e) if e.signal == libc::SIGKILL),
        "{status:?}"
    );
    assert_eq!(status.reason.as_deref(), Some("OOMKilled"), "{status:?}");
    let cgroup = pods.sandboxes.cgroup("hog").unwrap();
    let below = Parent::Below(format!("{}/pod-hog", pods.cgroup_parent).into());
    let container_cgroup = CgroupFs::detect().unwrap().open(&below, "dd").unwrap();
    assert!(
        container_cgroup.oom_kills().unwrap() >= 1,
        "the kernel's OOM killer did it"
    );
    assert!(cgroup.pids().unwrap().is_empty());
    let log = logs::read(&spec.log.dir, &spec.log.name, None).unwrap();
    assert!(
        log.is_empty() || log.iter().all(|l| !l.text.contains("records out")),
        "dd never finished: {log:?}"
    );

    // A restart reuses the container's cgroup, whose OOM-kill count stays: a later SIGKILL
    // of the new instance (a stop, a liveness kill) is not an OOM kill.
    let mut again = pods.node.containers.spec(&id).unwrap();
    again.process = ProcessSpec::new(
        &["sh", "-c", "trap '' TERM; echo trapped; sleep 60"],
        &["PATH=/bin"],
    );
    pods.node.containers.remove(&id).unwrap();
    pods.node.containers.create(&again).unwrap();
    pods.node.containers.start(&id).unwrap();
    // Stop only once the shell ignores SIGTERM, so that the stop has to end in SIGKILL.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !logs::read(&again.log.dir, &again.log.name, None)
        .unwrap_or_default()
        .iter()
        .any(|l| l.text.contains("trapped"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the shell never set its trap"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = pods
        .node
        .containers
        .stop(&id, Duration::from_millis(300))
        .unwrap();
    assert!(
        matches!(stopped.state, State::Exited(e) if e.signal == libc::SIGKILL),
        "{stopped:?}"
    );
    assert_eq!(stopped.reason, None, "not OOMKilled: {stopped:?}");
}

#[test]
fn a_container_starts_in_its_cgroups_and_its_cgroup_namespace_is_rooted_there() {
    if !ready() {
        return;
    }
    let mut pods = Pods::new("cgjoin");
    pods.pod("cg", "10.244.0.5", Resources::default());
    let args = ["sh", "-c", "cat /proc/self/cgroup; exec sleep 30"];
    let spec = pods.container("cg", "c", &args, &Resources::default());
    let id = spec.id.clone();
    pods.node.containers.create(&spec).unwrap();
    let status = pods.node.containers.start(&id).unwrap();
    // Seen from the host, PID 1 is in the container's cgroup in every hierarchy it joins
    // (v2 through clone3, v1 through `tasks`).
    let host_view =
        std::fs::read_to_string(format!("/proc/{}/cgroup", status.pid.unwrap())).unwrap();
    for line in host_view.lines() {
        let (_, rest) = line.split_once(':').unwrap();
        let (controllers, path) = rest.split_once(':').unwrap();
        let joined = controllers.is_empty()
            || controllers
                .split(',')
                .any(|c| ["cpu", "memory", "pids"].contains(&c));
        if joined {
            assert!(path.ends_with("/pod-cg/c"), "{line} in {host_view}");
        }
    }
    // Inside, the cgroup namespace is rooted at those cgroups.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut log = Vec::new();
    while log.len() < host_view.lines().count() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        log = logs::read(&spec.log.dir, &spec.log.name, None).unwrap_or_default();
    }
    assert_eq!(log.len(), host_view.lines().count(), "{log:?}");
    assert!(log.iter().all(|l| l.text.ends_with(":/")), "{log:?}");
    pods.node
        .containers
        .stop(&id, Duration::from_secs(1))
        .unwrap();
}

#[test]
fn a_sandbox_that_fails_half_way_leaves_nothing_behind() {
    if !ready() {
        return;
    }
    let pods = Pods::new("rollback");
    // The namespaces get pinned, then attaching to a bridge that does not exist fails.
    let spec = sandbox_spec("broken", "10.244.0.9", "no-such-br", Resources::default());
    let err = pods.sandboxes.create(&spec).unwrap_err().to_string();
    assert!(err.contains("no-such-br"), "{err}");
    let sandboxes = pods.node.dir.path().join("sandboxes");
    assert!(!sandboxes.join("broken").exists(), "no state left");
    let mounts = ns::mounts_below(&sandboxes).unwrap();
    assert!(
        mounts.iter().all(|m| m == &sandboxes),
        "no pinned namespace left: {mounts:?}"
    );
    assert!(
        pods.sandboxes.cgroup("broken").is_err(),
        "no pod cgroup left"
    );
    let fd = PinnedNs::open(&pods.node_netns).unwrap();
    let mut node = NetHandle::in_netns(std::os::fd::AsFd::as_fd(&fd), "node").unwrap();
    assert_eq!(
        node.link_index("veth-broken").unwrap(),
        None,
        "no veth left"
    );
    assert!(pods.sandboxes.list().is_empty());
}

#[test]
fn a_removed_sandboxs_veth_is_gone_at_once_so_its_name_can_be_reused() {
    if !ready() {
        return;
    }
    let mut pods = Pods::new("reuse");
    let fd = PinnedNs::open(&pods.node_netns).unwrap();
    let mut node = NetHandle::in_netns(std::os::fd::AsFd::as_fd(&fd), "node").unwrap();
    // The kubelet names the veth after the pod IP, and hands a released IP out again: a pod
    // deleted and the next one created at once meet on the same name.
    for round in 0..5 {
        pods.pod("again", "10.244.0.7", Resources::default());
        assert!(
            node.link_index("veth-again").unwrap().is_some(),
            "round {round}"
        );
        pods.sandboxes.remove("again").unwrap();
        pods.ids.clear();
        assert_eq!(
            node.link_index("veth-again").unwrap(),
            None,
            "round {round}: the veth outlived its sandbox"
        );
    }
}
