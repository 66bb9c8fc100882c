//! The scheduler's decision, apart from any I/O: which nodes a pod fits (Ready,
//! schedulable, resources, nodeSelector and required node affinity, taints and
//! tolerations, host ports), how they score (least allocated, spreading an owner's pods),
//! and the "0/3 nodes are available: …" message when none fits.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use skiff_api::Quantity;

/// What a pod asks of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demand {
    /// CPU in millicores.
    pub cpu_milli: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// `(protocol, hostPort)` pairs.
    pub host_ports: Vec<(String, i32)>,
    /// The uid of the pod's controller, for spreading.
    pub owner: Option<String>,
}

fn quantity(
    q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Option<Quantity> {
    q.and_then(|q| Quantity::parse(&q.0).ok())
}

impl Demand {
    /// The requests of `pod`: the sum over containers, at least the largest init
    /// container's, plus the pod overhead.
    pub fn of(pod: &Pod) -> Demand {
        let mut demand = Demand {
            owner: pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            ..Demand::default()
        };
        let Some(spec) = &pod.spec else {
            return demand;
        };
        let requests = |c: &k8s_openapi::api::core::v1::Container| {
            let r = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            let cpu = quantity(r.and_then(|r| r.get("cpu"))).map_or(0, |q| q.ceil_milli());
            let mem = quantity(r.and_then(|r| r.get("memory"))).map_or(0, |q| q.ceil());
            (cpu, mem)
        };
        for c in &spec.containers {
            let (cpu, mem) = requests(c);
            demand.cpu_milli += cpu;
            demand.memory += mem;
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                    demand.host_ports.push((proto, hp));
                }
            }
        }
        for c in spec.init_containers.iter().flatten() {
            let (cpu, mem) = requests(c);
            demand.cpu_milli = demand.cpu_milli.max(cpu);
            demand.memory = demand.memory.max(mem);
        }
        if let Some(overhead) = &spec.overhead {
            demand.cpu_milli += quantity(overhead.get("cpu")).map_or(0, |q| q.ceil_milli());
            demand.memory += quantity(overhead.get("memory")).map_or(0, |q| q.ceil());
        }
        demand
    }
}

/// What is already placed on a node (bound and assumed pods).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Requested CPU, millicores.
    pub cpu_milli: u64,
    /// Requested memory, bytes.
    pub memory: u64,
    /// Number of pods.
    pub pods: u64,
    /// Host ports in use.
    pub host_ports: HashSet<(String, i32)>,
    /// Pods per controller uid.
    pub owners: HashMap<String, u32>,
}

impl Usage {
    /// Counts `demand` in.
    pub fn add(&mut self, demand: &Demand) {
        self.cpu_milli += demand.cpu_milli;
        self.memory += demand.memory;
        self.pods += 1;
        self.host_ports.extend(demand.host_ports.iter().cloned());
        if let Some(owner) = &demand.owner {
            *self.owners.entry(owner.clone()).or_default() += 1;
        }
    }

    /// Counts `demand` out.
    pub fn remove(&mut self, demand: &Demand) {
        self.cpu_milli = self.cpu_milli.saturating_sub(demand.cpu_milli);
        self.memory = self.memory.saturating_sub(demand.memory);
        self.pods = self.pods.saturating_sub(1);
        for port in &demand.host_ports {
            self.host_ports.remove(port);
        }
        if let Some(owner) = &demand.owner
            && let Some(n) = self.owners.get_mut(owner)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.owners.remove(owner);
            }
        }
    }
}

/// What a node offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocatable {
    /// Millicores.
    pub cpu_milli: u64,
    /// Bytes.
    pub memory: u64,
    /// Pod slots.
    pub pods: u64,
}

impl Allocatable {
    /// `status.allocatable` (or capacity) of a node; 110 pods when unset, as the kubelet.
    pub fn of(node: &Node) -> Allocatable {
        let status = node.status.as_ref();
        let map = status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let get = |k: &str| quantity(map.and_then(|m| m.get(k)));
        Allocatable {
            cpu_milli: get("cpu").map_or(0, |q| q.ceil_milli()),
            memory: get("memory").map_or(0, |q| q.ceil()),
            pods: get("pods").map_or(110, |q| q.ceil()),
        }
    }
}

/// Why a node does not fit (the words of kube-scheduler's messages).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Misfit {
    NotReady,
    Unschedulable,
    Affinity,
    Taint(String),
    Cpu,
    Memory,
    Pods,
    Ports,
}

impl Misfit {
    /// The phrase after the count in "0/N nodes are available: …".
    pub fn phrase(&self) -> String {
        match self {
            Misfit::NotReady => "node(s) were not ready".into(),
            Misfit::Unschedulable => "node(s) were unschedulable".into(),
            Misfit::Affinity => "node(s) didn't match Pod's node affinity/selector".into(),
            Misfit::Taint(t) => format!("node(s) had untolerated taint {t}"),
            Misfit::Cpu => "Insufficient cpu".into(),
            Misfit::Memory => "Insufficient memory".into(),
            Misfit::Pods => "Too many pods".into(),
            Misfit::Ports => "node(s) didn't have free ports for the requested pod ports".into(),
        }
    }
}

fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if op == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    let name = node.metadata.name.as_deref();
    let exprs = term.match_expressions.iter().flatten();
    let fields = term.match_fields.iter().flatten();
    let any = term
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
        || term.match_fields.as_ref().is_some_and(|f| !f.is_empty());
    any && exprs
        .clone()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields
            .clone()
            .all(|r| requirement_matches(r, (r.key == "metadata.name").then_some(name).flatten()))
}

/// nodeSelector and required node affinity.
fn affinity_matches(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else {
        return true;
    };
    let labels: BTreeMap<String, String> = node.metadata.labels.clone().unwrap_or_default();
    if let Some(selector) = &spec.node_selector
        && selector.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(selector) => selector
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
        None => true,
    }
}

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if toleration
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => {
            key == taint.key
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// The first NoSchedule/NoExecute taint of `node` that `pod` does not tolerate.
fn untolerated(pod: &Pod, node: &Node) -> Option<String> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
        .map(|t| format!("{{{}: {}}}", t.key, t.value.as_deref().unwrap_or("")))
}

/// Every reason `pod` (asking `demand`) does not fit `node` with `usage`; empty = fits.
pub fn misfits(
    pod: &Pod,
    demand: &Demand,
    node: &Node,
    alloc: Allocatable,
    usage: &Usage,
) -> Vec<Misfit> {
    let mut out = Vec::new();
    if !ready(node) {
        out.push(Misfit::NotReady);
        return out;
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push(Misfit::Unschedulable);
        return out;
    }
    if !affinity_matches(pod, node) {
        out.push(Misfit::Affinity);
        return out;
    }
    if let Some(taint) = untolerated(pod, node) {
        out.push(Misfit::Taint(taint));
        return out;
    }
    if usage.pods + 1 > alloc.pods {
        out.push(Misfit::Pods);
    }
    if demand.cpu_milli > 0 && usage.cpu_milli + demand.cpu_milli > alloc.cpu_milli {
        out.push(Misfit::Cpu);
    }
    if demand.memory > 0 && usage.memory + demand.memory > alloc.memory {
        out.push(Misfit::Memory);
    }
    if demand
        .host_ports
        .iter()
        .any(|p| usage.host_ports.contains(p))
    {
        out.push(Misfit::Ports);
    }
    out
}

/// Higher is better: free capacity after placing (least allocated, 0–100) minus a
/// penalty for pods of the same owner already there (spreading).
pub fn score(demand: &Demand, alloc: Allocatable, usage: &Usage) -> i64 {
    // The scheduler's non-zero defaults, so that request-less pods still spread by load.
    let cpu = demand.cpu_milli.max(100);
    let mem = demand.memory.max(200 << 20);
    let free = |total: u64, used: u64| -> i64 {
        if total == 0 {
            return 0;
        }
        (total.saturating_sub(used) as u128 * 100 / total as u128) as i64
    };
    let least =
        (free(alloc.cpu_milli, usage.cpu_milli + cpu) + free(alloc.memory, usage.memory + mem)) / 2;
    let same = demand
        .owner
        .as_ref()
        .and_then(|o| usage.owners.get(o))
        .copied()
        .unwrap_or(0) as i64;
    least - same * 10
}

/// "0/3 nodes are available: 2 Insufficient memory, 1 node(s) had untolerated taint {k: v}."
pub fn unschedulable_message(total: usize, reasons: &BTreeMap<Misfit, usize>) -> String {
    let mut parts: Vec<String> = reasons
        .iter()
        .map(|(m, n)| format!("{n} {}", m.phrase()))
        .collect();
    parts.sort();
    if total == 0 {
        return "no nodes available to schedule pods".into();
    }
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, mem: &str, extra: serde_json::Value) -> Node {
        let mut n = json!({"metadata": {"name": name, "labels": {"zone": "a", "kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "3"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        json_patch::merge(&mut n, &extra);
        serde_json::from_value(n).unwrap()
    }

    fn pod(extra: serde_json::Value) -> Pod {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x",
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}});
        json_patch::merge(&mut p, &extra);
        serde_json::from_value(p).unwrap()
    }

    fn check(p: &Pod, n: &Node, usage: &Usage) -> Vec<Misfit> {
        misfits(p, &Demand::of(p), n, Allocatable::of(n), usage)
    }

    #[test]
    fn demand_sums_containers_and_takes_the_largest_init_container() {
        let p = pod(
            json!({"spec": {"initContainers": [{"name": "i", "image": "x",
            "resources": {"requests": {"cpu": "2", "memory": "10Mi"}}}],
            "overhead": {"cpu": "100m"}}}),
        );
        let d = Demand::of(&p);
        assert_eq!(d.cpu_milli, 2100);
        assert_eq!(d.memory, 1 << 30);
    }

    #[test]
    fn resources_pods_and_ports_are_counted() {
        let n = node("n1", "1", "2Gi", json!({}));
        let p = pod(json!({}));
        assert!(check(&p, &n, &Usage::default()).is_empty());
        let mut used = Usage::default();
        used.add(&Demand::of(&p));
        assert!(check(&p, &n, &used).is_empty(), "0.5+0.5 cpu fits in 1");
        used.add(&Demand::of(&p));
        assert_eq!(check(&p, &n, &used), vec![Misfit::Cpu, Misfit::Memory]);
        used.remove(&Demand::of(&p));
        used.add(&Demand::of(&pod(
            json!({"spec": {"containers": [{"name": "c", "image": "x"}]}}),
        )));
        used.pods = 3;
        assert_eq!(check(&p, &n, &used), vec![Misfit::Pods]);
        let hp = pod(json!({"spec": {"containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}));
        let mut ports = Usage::default();
        ports.add(&Demand::of(&hp));
        assert_eq!(check(&hp, &n, &ports), vec![Misfit::Ports]);
    }

    #[test]
    fn readiness_cordon_selector_affinity_and_taints_filter() {
        let p = pod(json!({}));
        let down = node(
            "n",
            "4",
            "8Gi",
            json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        );
        assert_eq!(check(&p, &down, &Usage::default()), vec![Misfit::NotReady]);
        let cordoned = node("n", "4", "8Gi", json!({"spec": {"unschedulable": true}}));
        assert_eq!(
            check(&p, &cordoned, &Usage::default()),
            vec![Misfit::Unschedulable]
        );
        let n = node("n", "4", "8Gi", json!({}));
        let sel = pod(json!({"spec": {"nodeSelector": {"zone": "b"}}}));
        assert_eq!(check(&sel, &n, &Usage::default()), vec![Misfit::Affinity]);
        let aff = |op: &str, vals: serde_json::Value| {
            pod(
                json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": op, "values": vals}]}]}}}}}),
            )
        };
        assert!(check(&aff("In", json!(["a", "c"])), &n, &Usage::default()).is_empty());
        assert_eq!(
            check(&aff("NotIn", json!(["a"])), &n, &Usage::default()),
            vec![Misfit::Affinity]
        );
        assert!(check(&aff("Exists", json!(null)), &n, &Usage::default()).is_empty());
        let tainted = node(
            "n",
            "4",
            "8Gi",
            json!({"spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(
            check(&p, &tainted, &Usage::default()),
            vec![Misfit::Taint("{gpu: yes}".into())]
        );
        let tolerant =
            pod(json!({"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}}));
        assert!(check(&tolerant, &tainted, &Usage::default()).is_empty());
        let wrong_value = pod(json!({"spec": {"tolerations": [{"key": "gpu", "value": "no"}]}}));
        assert!(!check(&wrong_value, &tainted, &Usage::default()).is_empty());
        let soft = node(
            "n",
            "4",
            "8Gi",
            json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
        );
        assert!(check(&p, &soft, &Usage::default()).is_empty());
    }

    #[test]
    fn score_prefers_free_nodes_and_spreads_an_owner() {
        let n = node("n", "4", "8Gi", json!({}));
        let alloc = Allocatable::of(&n);
        let mut d = Demand::of(&pod(json!({})));
        d.owner = Some("rs-uid".into());
        let empty = Usage::default();
        let mut busy = Usage::default();
        busy.add(&Demand {
            cpu_milli: 2000,
            memory: 4 << 30,
            ..Demand::default()
        });
        assert!(score(&d, alloc, &empty) > score(&d, alloc, &busy));
        let mut same_owner = Usage::default();
        same_owner.add(&d);
        let mut other_owner = Usage::default();
        other_owner.add(&Demand {
            owner: Some("other".into()),
            ..d.clone()
        });
        assert!(score(&d, alloc, &other_owner) > score(&d, alloc, &same_owner));
    }

    #[test]
    fn the_message_reads_like_kube_scheduler() {
        let mut reasons = BTreeMap::new();
        reasons.insert(Misfit::Memory, 2);
        reasons.insert(Misfit::Taint("{dedicated: infra}".into()), 1);
        assert_eq!(
            unschedulable_message(3, &reasons),
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: infra}, 2 Insufficient memory."
        );
    }
}
