//! Per-kind columns and cells, matching what kubectl shows against kube-apiserver.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{Column, Printer, age};

const fn col(name: &'static str, kind: &'static str, priority: u8) -> Column {
    Column {
        name,
        kind,
        format: "",
        priority,
    }
}

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    priority: 0,
};
const AGE: Column = col("Age", "string", 0);

fn text<'a>(object: &'a Value, path: &[&str]) -> &'a str {
    walk(object, path).and_then(Value::as_str).unwrap_or("")
}

fn int(object: &Value, path: &[&str]) -> i64 {
    walk(object, path).and_then(Value::as_i64).unwrap_or(0)
}

fn walk<'a>(object: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(object, |v, key| v.get(key))
}

fn items<'a>(object: &'a Value, path: &[&str]) -> &'a [Value] {
    walk(object, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn name(object: &Value) -> Value {
    json!(text(object, &["metadata", "name"]))
}

fn created(object: &Value, now: Timestamp) -> Value {
    json!(age(
        walk(object, &["metadata", "creationTimestamp"]).and_then(Value::as_str),
        now
    ))
}

/// `k=v,k2=v2` of a string map (labels, a Service selector).
fn map_pairs(map: Option<&Value>) -> String {
    map.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A LabelSelector as `kubectl get -o wide` prints it.
fn label_selector(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return "<none>".into();
    };
    let selector = as_label_selector(selector);
    let selector = selector.as_ref();
    let mut parts = vec![map_pairs(selector.get("matchLabels"))];
    for expr in items(selector, &["matchExpressions"]) {
        let key = text(expr, &["key"]);
        let values: Vec<&str> = items(expr, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match text(expr, &["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            _ => format!("!{key}"),
        });
    }
    parts.retain(|p| !p.is_empty());
    or_none(parts.join(","))
}

fn containers_and_images(template_spec: Option<&Value>) -> (String, String) {
    let containers = template_spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let names: Vec<&str> = containers.iter().map(|c| text(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// The STATUS column's reason while init containers run (kubectl's `printPod`): `Init:1/2`,
/// `Init:Error`, `Init:CrashLoopBackOff`, `Init:ExitCode:3`; `None` once they are done.
fn init_status(pod: &Value, restarts: &mut i64) -> Option<String> {
    let total = items(pod, &["spec", "initContainers"]).len();
    for (i, cs) in items(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        *restarts += int(cs, &["restartCount"]);
        let waiting = text(cs, &["state", "waiting", "reason"]);
        match walk(cs, &["state", "terminated"]) {
            Some(t) if int(t, &["exitCode"]) == 0 => continue,
            Some(t) => {
                return Some(match (text(t, &["reason"]), int(t, &["signal"])) {
                    ("", 0) => format!("Init:ExitCode:{}", int(t, &["exitCode"])),
                    ("", signal) => format!("Init:Signal:{signal}"),
                    (r, _) => format!("Init:{r}"),
                });
            }
            None if !waiting.is_empty() && waiting != "PodInitializing" => {
                return Some(format!("Init:{waiting}"));
            }
            None => return Some(format!("Init:{i}/{total}")),
        }
    }
    None
}

/// The STATUS column of a pod (kubectl's `printPod`, without sidecar containers).
fn pod_status(pod: &Value) -> (String, usize, i64) {
    let mut reason = text(pod, &["status", "phase"]).to_owned();
    if let Some(r) = walk(pod, &["status", "reason"]).and_then(Value::as_str) {
        reason = r.to_owned();
    }
    let (mut ready, mut restarts) = (0, 0);
    let initialized = items(pod, &["status", "conditions"])
        .iter()
        .any(|c| text(c, &["type"]) == "Initialized" && text(c, &["status"]) == "True");
    let initializing = match init_status(pod, &mut restarts) {
        Some(init) => {
            reason = init;
            true
        }
        None => false,
    };
    if !initializing || initialized {
        restarts = 0;
    }
    let containers = if initializing && !initialized {
        &[][..]
    } else {
        items(pod, &["status", "containerStatuses"])
    };
    for cs in containers.iter().rev() {
        restarts += int(cs, &["restartCount"]);
        let waiting = text(cs, &["state", "waiting", "reason"]);
        let terminated = walk(cs, &["state", "terminated"]);
        if !waiting.is_empty() {
            reason = waiting.to_owned();
        } else if let Some(t) = terminated {
            reason = match (text(t, &["reason"]), int(t, &["signal"])) {
                ("", 0) => format!("ExitCode:{}", int(t, &["exitCode"])),
                ("", signal) => format!("Signal:{signal}"),
                (r, _) => r.to_owned(),
            };
        } else if cs.get("ready") == Some(&json!(true)) && walk(cs, &["state", "running"]).is_some()
        {
            ready += 1;
        }
    }
    if walk(pod, &["metadata", "deletionTimestamp"]).is_some() {
        reason = if reason == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    (reason, ready, restarts)
}

fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let (status, ready, restarts) = pod_status(pod);
    let total = items(pod, &["spec", "containers"]).len();
    let gates = items(pod, &["spec", "readinessGates"]).len();
    let gates = if gates == 0 {
        "<none>".into()
    } else {
        format!("0/{gates}")
    };
    vec![
        name(pod),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        created(pod, now),
        json!(or_none(text(pod, &["status", "podIP"]).into())),
        json!(or_none(text(pod, &["spec", "nodeName"]).into())),
        json!(or_none(text(pod, &["status", "nominatedNodeName"]).into())),
        json!(gates),
    ]
}

/// Pods: NAME READY STATUS RESTARTS AGE, wide IP NODE NOMINATED NODE READINESS GATES.
pub static PODS: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", 0),
        col("Status", "string", 0),
        col("Restarts", "string", 0),
        AGE,
        col("IP", "string", 1),
        col("Node", "string", 1),
        col("Nominated Node", "string", 1),
        col("Readiness Gates", "string", 1),
    ],
    cells: pod_cells,
};

fn deployment_cells(d: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(walk(d, &["spec", "template", "spec"]));
    let ready = int(d, &["status", "readyReplicas"]);
    vec![
        name(d),
        json!(format!("{ready}/{}", int(d, &["spec", "replicas"]))),
        json!(int(d, &["status", "updatedReplicas"])),
        json!(int(d, &["status", "availableReplicas"])),
        created(d, now),
        json!(containers),
        json!(images),
        json!(label_selector(walk(d, &["spec", "selector"]))),
    ]
}

/// Deployments: NAME READY UP-TO-DATE AVAILABLE AGE, wide CONTAINERS IMAGES SELECTOR.
pub static DEPLOYMENTS: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", 0),
        col("Up-to-date", "integer", 0),
        col("Available", "integer", 0),
        AGE,
        col("Containers", "string", 1),
        col("Images", "string", 1),
        col("Selector", "string", 1),
    ],
    cells: deployment_cells,
};

fn replicaset_cells(rs: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(walk(rs, &["spec", "template", "spec"]));
    vec![
        name(rs),
        json!(int(rs, &["spec", "replicas"])),
        json!(int(rs, &["status", "replicas"])),
        json!(int(rs, &["status", "readyReplicas"])),
        created(rs, now),
        json!(containers),
        json!(images),
        json!(label_selector(walk(rs, &["spec", "selector"]))),
    ]
}

/// A ReplicationController's selector is a plain map; a ReplicaSet's a LabelSelector.
fn as_label_selector(selector: &Value) -> std::borrow::Cow<'_, Value> {
    let structured =
        selector.get("matchLabels").is_some() || selector.get("matchExpressions").is_some();
    if structured || !selector.is_object() {
        std::borrow::Cow::Borrowed(selector)
    } else {
        std::borrow::Cow::Owned(json!({"matchLabels": selector}))
    }
}

/// ReplicaSets: NAME DESIRED CURRENT READY AGE, wide CONTAINERS IMAGES SELECTOR.
pub static REPLICASETS: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", 0),
        col("Current", "integer", 0),
        col("Ready", "integer", 0),
        AGE,
        col("Containers", "string", 1),
        col("Images", "string", 1),
        col("Selector", "string", 1),
    ],
    cells: replicaset_cells,
};

fn statefulset_cells(s: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(walk(s, &["spec", "template", "spec"]));
    let ready = int(s, &["status", "readyReplicas"]);
    vec![
        name(s),
        json!(format!("{ready}/{}", int(s, &["spec", "replicas"]))),
        created(s, now),
        json!(containers),
        json!(images),
    ]
}

/// StatefulSets: NAME READY AGE, wide CONTAINERS IMAGES.
pub static STATEFULSETS: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", 0),
        AGE,
        col("Containers", "string", 1),
        col("Images", "string", 1),
    ],
    cells: statefulset_cells,
};

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = items(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let proto = match text(p, &["protocol"]) {
                "" => "TCP",
                other => other,
            };
            match int(p, &["nodePort"]) {
                0 => format!("{}/{proto}", int(p, &["port"])),
                node => format!("{}:{node}/{proto}", int(p, &["port"])),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    let mut external: Vec<String> = items(svc, &["status", "loadBalancer", "ingress"])
        .iter()
        .map(|i| format!("{}{}", text(i, &["ip"]), text(i, &["hostname"])))
        .collect();
    external.extend(
        items(svc, &["spec", "externalIPs"])
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned)),
    );
    let kind = match text(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        other => other,
    };
    let external = match (external.is_empty(), kind) {
        // As kubectl's printer: an ExternalName Service's external address is the name.
        (_, "ExternalName") => or_none(text(svc, &["spec", "externalName"]).into()),
        (true, "LoadBalancer") => "<pending>".into(),
        _ => or_none(external.join(",")),
    };
    vec![
        name(svc),
        json!(kind),
        json!(or_none(text(svc, &["spec", "clusterIP"]).into())),
        json!(external),
        json!(service_ports(svc)),
        created(svc, now),
        json!(or_none(map_pairs(walk(svc, &["spec", "selector"])))),
    ]
}

/// Services: NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE, wide SELECTOR.
pub static SERVICES: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", 0),
        col("Cluster-IP", "string", 0),
        col("External-IP", "string", 0),
        col("Port(s)", "string", 0),
        AGE,
        col("Selector", "string", 1),
    ],
    cells: service_cells,
};

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let ready = items(node, &["status", "conditions"])
        .iter()
        .find(|c| text(c, &["type"]) == "Ready")
        .map(|c| text(c, &["status"]));
    // As kubectl's printer: any Ready status but True (False or Unknown) is NotReady.
    let mut status = match ready {
        Some("True") => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if walk(node, &["spec", "unschedulable"]) == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<&str> = walk(node, &["metadata", "labels"])
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let address = |kind: &str| {
        let found = items(node, &["status", "addresses"])
            .iter()
            .find(|a| text(a, &["type"]) == kind)
            .map(|a| text(a, &["address"]).to_owned());
        or_none(found.unwrap_or_default())
    };
    let info = |field: &str| text(node, &["status", "nodeInfo", field]).to_owned();
    vec![
        name(node),
        json!(status),
        json!(or_none(roles.join(","))),
        created(node, now),
        json!(info("kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or_none(info("osImage"))),
        json!(or_none(info("kernelVersion"))),
        json!(or_none(info("containerRuntimeVersion"))),
    ]
}

/// Nodes: NAME STATUS ROLES AGE VERSION, wide INTERNAL-IP … CONTAINER-RUNTIME.
pub static NODES: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", 0),
        col("Roles", "string", 0),
        AGE,
        col("Version", "string", 0),
        col("Internal-IP", "string", 1),
        col("External-IP", "string", 1),
        col("OS-Image", "string", 1),
        col("Kernel-Version", "string", 1),
        col("Container-Runtime", "string", 1),
    ],
    cells: node_cells,
};

fn namespace_cells(ns: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(ns),
        json!(text(ns, &["status", "phase"])),
        created(ns, now),
    ]
}

/// Namespaces: NAME STATUS AGE.
pub static NAMESPACES: Printer = Printer {
    columns: &[NAME, col("Status", "string", 0), AGE],
    cells: namespace_cells,
};

fn count(object: &Value, key: &str) -> usize {
    object
        .get(key)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

fn configmap_cells(cm: &Value, now: Timestamp) -> Vec<Value> {
    let data = count(cm, "data") + count(cm, "binaryData");
    vec![name(cm), json!(data), created(cm, now)]
}

/// ConfigMaps: NAME DATA AGE.
pub static CONFIGMAPS: Printer = Printer {
    columns: &[NAME, col("Data", "integer", 0), AGE],
    cells: configmap_cells,
};

fn secret_cells(s: &Value, now: Timestamp) -> Vec<Value> {
    let data = count(s, "data") + count(s, "stringData");
    let kind = match text(s, &["type"]) {
        "" => "Opaque",
        other => other,
    };
    vec![name(s), json!(kind), json!(data), created(s, now)]
}

/// Secrets: NAME TYPE DATA AGE.
pub static SECRETS: Printer = Printer {
    columns: &[
        NAME,
        col("Type", "string", 0),
        col("Data", "integer", 0),
        AGE,
    ],
    cells: secret_cells,
};

fn event_cells(e: &Value, now: Timestamp) -> Vec<Value> {
    let first = text(e, &["firstTimestamp"]);
    let last = [text(e, &["lastTimestamp"]), text(e, &["eventTime"]), first]
        .into_iter()
        .find(|t| !t.is_empty());
    let object = format!(
        "{}/{}",
        text(e, &["involvedObject", "kind"]).to_lowercase(),
        text(e, &["involvedObject", "name"])
    );
    let source = [
        text(e, &["source", "component"]),
        text(e, &["source", "host"]),
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(", ");
    vec![
        json!(age(last, now)),
        json!(text(e, &["type"])),
        json!(text(e, &["reason"])),
        json!(object),
        json!(text(e, &["involvedObject", "fieldPath"])),
        json!(source),
        json!(text(e, &["message"]).trim()),
        json!(age((!first.is_empty()).then_some(first), now)),
        json!(int(e, &["count"])),
        name(e),
    ]
}

/// Events: LAST SEEN TYPE REASON OBJECT MESSAGE, wide SUBOBJECT SOURCE FIRST SEEN COUNT NAME.
pub static EVENTS: Printer = Printer {
    columns: &[
        col("Last Seen", "string", 0),
        col("Type", "string", 0),
        col("Reason", "string", 0),
        col("Object", "string", 0),
        col("Subobject", "string", 1),
        col("Source", "string", 1),
        col("Message", "string", 0),
        col("First Seen", "string", 1),
        col("Count", "integer", 1),
        Column {
            name: "Name",
            kind: "string",
            format: "name",
            priority: 1,
        },
    ],
    cells: event_cells,
};

fn endpoints_cells(ep: &Value, now: Timestamp) -> Vec<Value> {
    let mut out = Vec::new();
    for subset in items(ep, &["subsets"]) {
        for address in items(subset, &["addresses"]) {
            for port in items(subset, &["ports"]) {
                out.push(format!(
                    "{}:{}",
                    text(address, &["ip"]),
                    int(port, &["port"])
                ));
            }
        }
    }
    vec![name(ep), json!(or_none(out.join(","))), created(ep, now)]
}

/// Endpoints: NAME ENDPOINTS AGE.
pub static ENDPOINTS: Printer = Printer {
    columns: &[NAME, col("Endpoints", "string", 0), AGE],
    cells: endpoints_cells,
};

fn serviceaccount_cells(sa: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(sa),
        json!(items(sa, &["secrets"]).len()),
        created(sa, now),
    ]
}

/// ServiceAccounts: NAME SECRETS AGE.
pub static SERVICEACCOUNTS: Printer = Printer {
    columns: &[NAME, col("Secrets", "integer", 0), AGE],
    cells: serviceaccount_cells,
};

fn lease_cells(l: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(l),
        json!(text(l, &["spec", "holderIdentity"])),
        created(l, now),
    ]
}

/// Leases: NAME HOLDER AGE.
pub static LEASES: Printer = Printer {
    columns: &[NAME, col("Holder", "string", 0), AGE],
    cells: lease_cells,
};

fn endpointslice_cells(s: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = items(s, &["ports"])
        .iter()
        .map(|p| int(p, &["port"]).to_string())
        .collect();
    let addresses: Vec<&str> = items(s, &["endpoints"])
        .iter()
        .flat_map(|e| items(e, &["addresses"]))
        .filter_map(Value::as_str)
        .collect();
    let unset = |s: String| if s.is_empty() { "<unset>".into() } else { s };
    vec![
        name(s),
        json!(text(s, &["addressType"])),
        json!(unset(ports.join(","))),
        json!(unset(addresses.join(","))),
        created(s, now),
    ]
}

/// EndpointSlices: NAME ADDRESSTYPE PORTS ENDPOINTS AGE.
pub static ENDPOINTSLICES: Printer = Printer {
    columns: &[
        NAME,
        col("AddressType", "string", 0),
        col("Ports", "string", 0),
        col("Endpoints", "string", 0),
        AGE,
    ],
    cells: endpointslice_cells,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-01-01T01:00:00Z".parse().unwrap()
    }

    #[test]
    fn pod_row_counts_ready_and_restarts() {
        let pod = json!({"metadata": {"name": "web-1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.244.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let cells = pod_cells(&pod, now());
        assert_eq!(
            cells,
            vec![
                json!("web-1"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("3"),
                json!("60m"),
                json!("10.244.0.5"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        assert_eq!(cells.len(), PODS.columns.len());
    }

    #[test]
    fn pod_status_shows_init_containers_as_kubectl_does() {
        let pod = |inits: Value, initialized: &str| {
            json!({"metadata": {"name": "p"},
                "spec": {"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "c"}]},
                "status": {"phase": "Pending",
                    "conditions": [{"type": "Initialized", "status": initialized}],
                    "initContainerStatuses": inits,
                    "containerStatuses": [{"name": "c", "restartCount": 0,
                        "state": {"waiting": {"reason": "PodInitializing"}}}]}})
        };
        let waiting = |r: &str| json!({"waiting": {"reason": r}});
        let done = json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
        let cases = [
            (
                json!([{"state": waiting("PodInitializing")}, {"state": waiting("PodInitializing")}]),
                "Init:0/2",
                0,
            ),
            (
                json!([{"state": done}, {"state": {"running": {}}}]),
                "Init:1/2",
                0,
            ),
            (
                json!([{"state": done}, {"restartCount": 3, "state": waiting("CrashLoopBackOff")}]),
                "Init:CrashLoopBackOff",
                3,
            ),
            (
                json!([{"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}, {"state": waiting("PodInitializing")}]),
                "Init:Error",
                0,
            ),
            (
                json!([{"state": {"terminated": {"exitCode": 3}}}, {}]),
                "Init:ExitCode:3",
                0,
            ),
        ];
        for (inits, want, restarts) in cases {
            let (status, _, r) = pod_status(&pod(inits.clone(), "False"));
            assert_eq!((status.as_str(), r), (want, restarts), "{inits}");
        }
        // Done: the containers' status, and init restarts no longer counted.
        let (status, _, r) = pod_status(&pod(
            json!([{"restartCount": 2, "state": done}, {"state": done}]),
            "True",
        ));
        assert_eq!((status.as_str(), r), ("PodInitializing", 0));
    }

    #[test]
    fn deployment_and_service_rows() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}},
            "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}});
        assert_eq!(
            deployment_cells(&d, now()),
            vec![
                json!("web"),
                json!("1/3"),
                json!(2),
                json!(1),
                json!("<unknown>"),
                json!("nginx"),
                json!("nginx:1.27"),
                json!("app=web")
            ]
        );
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort",
            "clusterIP": "10.96.0.10", "selector": {"app": "web"},
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let cells = service_cells(&svc, now());
        assert_eq!(cells[1], "NodePort");
        assert_eq!(cells[3], "<none>");
        assert_eq!(cells[4], "80:30080/TCP,53/UDP");
        assert_eq!(cells[6], "app=web");
    }

    #[test]
    fn node_row_shows_readiness_and_roles() {
        let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
                       "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
        let cells = node_cells(&node, now());
        assert_eq!(cells[1], "Ready,SchedulingDisabled");
        assert_eq!(cells[2], "control-plane");
        assert_eq!(cells[4], "v1.33.0");
        assert_eq!(cells[5], "10.0.0.2");
        assert_eq!(cells[6], "<none>");
    }

    #[test]
    fn every_printer_fills_every_column() {
        let empty = json!({"metadata": {"name": "x"}});
        for printer in [
            &PODS,
            &DEPLOYMENTS,
            &REPLICASETS,
            &STATEFULSETS,
            &SERVICES,
            &NODES,
            &NAMESPACES,
            &CONFIGMAPS,
            &SECRETS,
            &EVENTS,
            &ENDPOINTS,
            &SERVICEACCOUNTS,
            &LEASES,
            &ENDPOINTSLICES,
        ] {
            assert_eq!((printer.cells)(&empty, now()).len(), printer.columns.len());
        }
    }

    #[test]
    fn label_selector_formats_expressions() {
        let sel = json!({"matchLabels": {"app": "a"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["x", "y"]},
            {"key": "gone", "operator": "DoesNotExist"}]});
        assert_eq!(label_selector(Some(&sel)), "app=a,tier in (x,y),!gone");
    }
}
