//! The scheduler and controllers with the real API server, real kubectl, and a test node
//! agent standing in for kubelets (it marks bound pods Running/Ready through the status API).

#[path = "apiserver/kubectl.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harness::{Cluster, kubectl_binary};
use skiff_controlplane::apiserver::Client;
use skiff_controlplane::controllers::{Config, ControllerManager};
use skiff_controlplane::hollow::{HollowNodes as Agent, images, pod_counts};

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 5
  minReadySeconds: 5
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: nginx:1.26
        ports: [{name: http, containerPort: 8080}]
        resources:
          requests: {cpu: 100m, memory: 64Mi}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#;

struct Env {
    cluster: Cluster,
    client: Client,
    agent: Agent,
}

fn start(minor: u32, config: Config) -> Option<Env> {
    let mut cluster = Cluster::start(kubectl_binary(minor)?);
    let client = cluster.server.as_ref().expect("server").client();
    // This test's controller settings (fast node lifecycle) replace the default ones.
    drop(cluster.controllers.take());
    cluster.controllers = Some({
        let _guard = cluster.runtime.enter();
        ControllerManager::start(client.clone(), config)
    });
    let agent = cluster.runtime.block_on(Agent::start(
        client.clone(),
        &["node-a", "node-b", "node-c"],
        "4",
        "8Gi",
        Duration::from_millis(200),
    ));
    Some(Env {
        cluster,
        client,
        agent,
    })
}

impl Env {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.cluster.runtime.block_on(f)
    }

    /// Waits up to `secs` for `pred`.
    fn wait(&self, what: &str, secs: u64, mut pred: impl FnMut(&Env) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !pred(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Samples the Deployment's pods every 20 ms until stopped: (max active, min ready).
struct Sampler {
    stop: Arc<AtomicBool>,
    max_active: Arc<AtomicUsize>,
    min_ready: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(env: &Env) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max_active = Arc::new(AtomicUsize::new(0));
        let min_ready = Arc::new(AtomicUsize::new(usize::MAX));
        let client = env.client.clone();
        let (s, hi, lo) = (stop.clone(), max_active.clone(), min_ready.clone());
        let task = env.cluster.runtime.spawn(async move {
            while !s.load(Ordering::SeqCst) {
                let (active, ready) = pod_counts(&client, "default", "app=web").await;
                hi.fetch_max(active, Ordering::SeqCst);
                lo.fetch_min(ready, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Sampler {
            stop,
            max_active,
            min_ready,
            task,
        }
    }

    fn finish(self, env: &Env) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = env.block_on(self.task);
        (
            self.max_active.load(Ordering::SeqCst),
            self.min_ready.load(Ordering::SeqCst),
        )
    }
}

fn deployment_workflow(minor: u32) {
    let Some(env) = start(minor, Config::default()) else {
        return;
    };
    let c = &env.cluster;
    let manifest = c.manifest("web.yaml", WEB);
    c.ok(&["apply", "-f", &manifest]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let (active, ready) = env.block_on(pod_counts(&env.client, "default", "app=web"));
    assert_eq!((active, ready), (5, 5));
    let table = c.ok(&["get", "deployment", "web"]);
    assert!(table.contains("5/5"), "{table}");
    // Pods spread over the three nodes.
    let wide = c.ok(&["get", "pods", "-o", "wide"]);
    for node in ["node-a", "node-b", "node-c"] {
        assert!(wide.contains(node), "no pod on {node}: {wide}");
    }
    // The Service's endpoints: five ready pods on the named target port.
    env.wait("5 endpoints", 20, |e| {
        let ep = e.cluster.ok(&[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ]);
        ep.split_whitespace().count() == 5
    });
    let ports = c.ok(&[
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[0].ports[0].port}",
    ]);
    assert_eq!(ports, "8080");
    let slice = c.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={.items[0].endpoints[*].conditions.ready}",
    ]);
    assert_eq!(
        slice.split_whitespace().filter(|r| *r == "true").count(),
        5,
        "{slice}"
    );

    // A new image rolls out without dropping below 5 ready or going above 6 pods.
    let sampler = Sampler::start(&env);
    c.ok(&["set", "image", "deployment/web", "c=nginx:1.27"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let (max_active, min_ready) = sampler.finish(&env);
    assert!(max_active <= 6, "{max_active} pods at once (maxSurge 1)");
    assert!(
        min_ready >= 5,
        "only {min_ready} ready pods during the rollout (maxUnavailable 0)"
    );
    let now = env.block_on(images(&env.client, "default"));
    assert_eq!(now.get("nginx:1.27"), Some(&5), "{now:?}");
    let rs = c.ok(&["get", "replicasets"]);
    assert_eq!(rs.lines().count(), 3, "header + old + new: {rs}");

    // Undo goes back to the first template (and reuses its ReplicaSet).
    c.ok(&["rollout", "undo", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let now = env.block_on(images(&env.client, "default"));
    assert_eq!(now.get("nginx:1.26"), Some(&5), "{now:?}");
    let rs = c.ok(&["get", "replicasets"]);
    assert_eq!(
        rs.lines().count(),
        3,
        "undo reuses the old ReplicaSet: {rs}"
    );
    let history = c.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('2') && history.contains('3'), "{history}");

    // A deleted pod is replaced.
    let pods = c.ok(&["get", "pods", "-o", "name"]);
    let victim = pods
        .lines()
        .next()
        .expect("a pod")
        .trim_start_matches("pod/")
        .to_owned();
    c.ok(&["delete", "pod", &victim, "--wait=false"]);
    env.wait("the deleted pod to be replaced", 30, |e| {
        let (active, ready) = e.block_on(pod_counts(&e.client, "default", "app=web"));
        let names = e.cluster.ok(&["get", "pods", "-o", "name"]);
        active == 5 && ready == 5 && !names.contains(&victim)
    });

    // Scaling down deletes three.
    c.ok(&["scale", "deployment/web", "--replicas=2"]);
    env.wait("scale down to 2", 30, |e| {
        e.block_on(pod_counts(&e.client, "default", "app=web")) == (2, 2)
    });
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);

    // Restart makes a new ReplicaSet with the restartedAt annotation.
    c.ok(&["rollout", "restart", "deployment/web"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let describe = c.ok(&["describe", "deployment", "web"]);
    assert!(describe.contains("ScalingReplicaSet"), "{describe}");

    // A pod that fits nowhere says why.
    let big = c.manifest(
        "big.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: big}\nspec:\n  containers:\n  - name: c\n    image: x\n    resources: {requests: {cpu: \"64\"}}\n",
    );
    c.ok(&["apply", "-f", &big]);
    env.wait("FailedScheduling", 20, |e| {
        e.cluster
            .ok(&["describe", "pod", "big"])
            .contains("0/3 nodes are available: 3 Insufficient cpu.")
    });
    let _ = &env.agent;
}

#[test]
fn kubectl_1_33_drives_deployments() {
    deployment_workflow(33);
}

const SHOP: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {k: v}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: cart}}
  template:
    metadata: {labels: {app: cart}}
    spec:
      containers: [{name: c, image: cart:1}]
"#;

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: c, image: img:1}}]\n"
    )
}

fn garbage_collection(minor: u32) {
    let Some(env) = start(minor, Config::default()) else {
        return;
    };
    let c = &env.cluster;
    let count = |e: &Env, ns: &str, labels: &str| e.block_on(pod_counts(&e.client, ns, labels));

    // A ReplicationController keeps its replicas like a ReplicaSet.
    let rc = "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: legacy}\nspec:\n  replicas: 2\n  template:\n    metadata: {labels: {app: legacy}}\n    spec:\n      containers: [{name: c, image: old:1}]\n";
    c.ok(&["apply", "-f", &c.manifest("rc.yaml", rc)]);
    env.wait("2 legacy pods", 30, |e| {
        count(e, "default", "app=legacy") == (2, 2)
    });
    c.ok(&["scale", "rc", "legacy", "--replicas=1"]);
    env.wait("1 legacy pod", 30, |e| {
        count(e, "default", "app=legacy") == (1, 1)
    });
    let t = c.ok(&["get", "rc", "legacy", "-o", "wide"]);
    assert!(t.contains("app=legacy"), "selector column: {t}");
    c.ok(&["delete", "rc", "legacy"]);
    env.wait("legacy pods collected", 30, |e| {
        count(e, "default", "app=legacy").0 == 0
    });

    // Background (kubectl's default): the ReplicaSet and pods follow the Deployment.
    c.ok(&["apply", "-f", &c.manifest("bg.yaml", &deployment("bg", 3))]);
    env.wait("3 bg pods", 30, |e| count(e, "default", "app=bg") == (3, 3));
    c.ok(&["delete", "deployment", "bg"]);
    env.wait("bg pods collected", 30, |e| {
        count(e, "default", "app=bg").0 == 0
    });
    env.wait("bg replicaset collected", 30, |e| {
        !e.cluster.ok(&["get", "rs", "-o", "name"]).contains("bg-")
    });

    // Orphan: the ReplicaSet and pods stay, without the owner reference.
    c.ok(&["apply", "-f", &c.manifest("or.yaml", &deployment("or", 2))]);
    env.wait("2 or pods", 30, |e| count(e, "default", "app=or") == (2, 2));
    c.ok(&["delete", "deployment", "or", "--cascade=orphan"]);
    let rs = c.ok(&[
        "get",
        "rs",
        "-l",
        "app=or",
        "-o",
        "jsonpath={.items[*].metadata.ownerReferences}",
    ]);
    assert!(
        !rs.contains("Deployment"),
        "orphaned ReplicaSet keeps no owner: {rs}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&env, "default", "app=or").0, 2, "orphaned pods stay");

    // Foreground: kubectl waits; the Deployment goes only after its pods.
    c.ok(&["apply", "-f", &c.manifest("fg.yaml", &deployment("fg", 2))]);
    env.wait("2 fg pods", 30, |e| count(e, "default", "app=fg") == (2, 2));
    c.ok(&["delete", "deployment", "fg", "--cascade=foreground"]);
    assert_eq!(
        count(&env, "default", "app=fg").0,
        0,
        "dependents gone before the owner"
    );
    c.fails(&["get", "deployment", "fg"]);

    // Deleting a namespace deletes everything in it, then the namespace.
    c.ok(&["apply", "-f", &c.manifest("shop.yaml", SHOP)]);
    env.wait("2 cart pods", 30, |e| {
        count(e, "shop", "app=cart") == (2, 2)
    });
    let out = c.ok(&["delete", "namespace", "shop", "--timeout=60s"]);
    assert!(out.contains("deleted"), "{out}");
    let err = c.fails(&["get", "namespace", "shop"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
    assert_eq!(count(&env, "shop", "").0, 0);
    // Creating in a terminating namespace is refused, as in Kubernetes.
    c.ok(&["apply", "-f", &c.manifest("shop2.yaml", SHOP)]);
    c.ok(&["delete", "namespace", "shop", "--wait=false"]);
    let refused = c.fails(&[
        "create",
        "configmap",
        "late",
        "-n",
        "shop",
        "--from-literal=a=b",
    ]);
    assert!(
        refused.contains("being terminated") || refused.contains("not found"),
        "{refused}"
    );
}

#[test]
fn kubectl_1_29_garbage_collection_and_namespaces() {
    garbage_collection(29);
}

fn lost_node(minor: u32) {
    let config = Config {
        node_monitor_grace: Duration::from_secs(3),
        default_toleration: Duration::from_secs(1),
        ..Config::default()
    };
    let Some(env) = start(minor, config) else {
        return;
    };
    let c = &env.cluster;
    c.ok(&[
        "apply",
        "-f",
        &c.manifest("lost.yaml", &deployment("spread", 6)),
    ]);
    env.wait("6 pods", 30, |e| {
        e.block_on(pod_counts(&e.client, "default", "app=spread")) == (6, 6)
    });
    let on = |e: &Env, node: &str| {
        e.cluster
            .ok(&[
                "get",
                "pods",
                "-l",
                "app=spread",
                "--field-selector",
                &format!("spec.nodeName={node}"),
                "-o",
                "name",
            ])
            .lines()
            .count()
    };
    assert!(
        on(&env, "node-a") > 0,
        "the scheduler spreads pods onto node-a too"
    );
    env.agent.silence("node-a");
    env.wait("node-a NotReady", 20, |e| {
        let nodes = e.cluster.ok(&["get", "nodes"]);
        nodes
            .lines()
            .any(|l| l.starts_with("node-a") && l.contains("NotReady"))
    });
    let taints = c.ok(&[
        "get",
        "node",
        "node-a",
        "-o",
        "jsonpath={.spec.taints[*].key}",
    ]);
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    // Its pods are evicted after the toleration and replaced on the other nodes.
    env.wait("replacements on live nodes", 30, |e| {
        let live = on(e, "node-b") + on(e, "node-c");
        let (active, ready) = e.block_on(pod_counts(&e.client, "default", "app=spread"));
        live == 6 && active == 6 && ready == 6
    });
}

#[test]
fn kubectl_1_33_silent_node_pods_are_rescheduled() {
    lost_node(33);
}

const DB: &str = r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: default}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: c, image: "db:1"}]
"#;

/// The names of the active `app=db` pods, sorted.
fn db_pods(e: &Env) -> Vec<String> {
    let out = e.cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=db",
        "-o",
        "jsonpath={.items[?(@.metadata.deletionTimestamp)].metadata.name}",
    ]);
    let deleting: Vec<&str> = out.split_whitespace().collect();
    let all = e.cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=db",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let mut names: Vec<String> = all
        .split_whitespace()
        .filter(|n| !deleting.contains(n))
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

fn statefulset(minor: u32) {
    let Some(env) = start(minor, Config::default()) else {
        return;
    };
    let c = &env.cluster;
    let prefix = |names: &[String]| {
        names
            .iter()
            .enumerate()
            .all(|(i, n)| *n == format!("db-{i}"))
    };
    c.ok(&["apply", "-f", &c.manifest("db.yaml", DB)]);
    // Ordered creation: every state seen is db-0 … db-k, never a gap.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let names = db_pods(&env);
        assert!(prefix(&names), "created out of order: {names:?}");
        if names.len() == 3 && env.block_on(pod_counts(&env.client, "default", "app=db")).1 == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "statefulset not ready: {names:?}"
        );
    }
    c.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    // A new image: pods are replaced from the highest ordinal down.
    c.ok(&[
        "patch",
        "statefulset/db",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"db:2"}]"#,
    ]);
    c.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"]);
    let now = env.block_on(images(&env.client, "default"));
    assert_eq!(now.get("db:2"), Some(&3), "{now:?}");
    // Scale down removes the highest ordinals, leaving db-0.
    c.ok(&["scale", "statefulset/db", "--replicas=1"]);
    env.wait("db scaled to 1", 30, |e| db_pods(e) == ["db-0"]);
    let t = c.ok(&["get", "statefulset", "db"]);
    assert!(t.contains("1/1"), "{t}");
}

#[test]
fn kubectl_1_33_statefulset_order() {
    statefulset(33);
}
