//! Env from a control plane: ConfigMap and Secret keys, `envFrom`, the downward API and
//! `$(VAR)` expansion, against a table of objects.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::env::expand;
use super::tests::{Images, ctx};
use super::*;

/// ConfigMaps and Secrets by `namespace/name`; `broken` fails every lookup.
#[derive(Default)]
pub(super) struct FakeObjects {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    pub broken: bool,
}

impl FakeObjects {
    pub fn with_config_map(mut self, ns: &str, name: &str, data: &[(&str, &str)]) -> Self {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        };
        self.config_maps.insert(format!("{ns}/{name}"), cm);
        self
    }

    pub fn with_secret(mut self, ns: &str, name: &str, data: &[(&str, &[u8])]) -> Self {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        self.secrets.insert(format!("{ns}/{name}"), secret);
        self
    }
}

impl ObjectSource for FakeObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        if self.broken {
            return Err("connection refused".into());
        }
        Ok(self
            .config_maps
            .get(&format!("{namespace}/{name}"))
            .cloned())
    }

    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        if self.broken {
            return Err("connection refused".into());
        }
        Ok(self.secrets.get(&format!("{namespace}/{name}")).cloned())
    }
}

fn objects() -> FakeObjects {
    FakeObjects::default()
        .with_config_map(
            "team",
            "settings",
            &[
                ("mode", "fast"),
                ("LEVEL", "3"),
                ("1bad", "x"),
                ("has space", "y"),
            ],
        )
        .with_secret(
            "team",
            "creds",
            &[("password", b"s3cret"), ("user", b"admin")],
        )
}

/// A pod in namespace `team` with these containers, planned against [`objects`].
fn plan_in_team(containers: &str) -> Result<PodPlan, PodSpecError> {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: team\n  uid: u-1\n  \
         labels: {{app: web, tier: \"front\"}}\n  annotations: {{note: hi}}\nspec:\n  \
         serviceAccountName: robot\n  nodeName: node7\n  containers:\n{containers}"
    );
    let objects = objects();
    plan(
        &parse(&yaml)?,
        &ctx(Some(Ipv4Addr::new(10, 88, 0, 2))),
        &Images,
        Some(&objects),
    )
}

fn env_of(plan: &PodPlan) -> Vec<String> {
    plan.containers[0].spec.process.env.clone()
}

#[test]
fn config_map_and_secret_keys_become_variables() {
    let plan = plan_in_team(
        "  - name: c\n    image: busybox\n    env:\n    \
         - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}\n    \
         - {name: PW, valueFrom: {secretKeyRef: {name: creds, key: password}}}\n    \
         - {name: GONE, valueFrom: {configMapKeyRef: {name: settings, key: nope, optional: true}}}\n    \
         - {name: GONE2, valueFrom: {secretKeyRef: {name: missing, key: k, optional: true}}}\n",
    )
    .unwrap();
    assert_eq!(
        env_of(&plan),
        [
            "PATH=/bin",
            "A=image",
            "HOSTNAME=p",
            "MODE=fast",
            "PW=s3cret"
        ],
        "optional references that are missing set nothing"
    );
}

#[test]
fn env_from_adds_valid_keys_with_the_prefix() {
    let plan = plan_in_team(
        "  - name: c\n    image: busybox\n    envFrom:\n    - configMapRef: {name: settings}\n    \
         - {prefix: DB_, secretRef: {name: creds}}\n    - configMapRef: {name: nothing, optional: true}\n    \
         env:\n    - {name: LEVEL, value: override}\n",
    )
    .unwrap();
    assert_eq!(
        env_of(&plan),
        [
            "PATH=/bin",
            "A=image",
            "HOSTNAME=p",
            "LEVEL=override",
            "mode=fast",
            "DB_password=s3cret",
            "DB_user=admin",
        ],
        "`1bad` and `has space` are skipped; env overrides envFrom in place"
    );
}

#[test]
fn field_refs_read_the_pod_and_the_node() {
    let fields = [
        ("metadata.name", "p"),
        ("metadata.namespace", "team"),
        ("metadata.uid", "u-1"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['none']", ""),
        ("metadata.annotations['note']", "hi"),
        ("spec.nodeName", "node7"),
        ("spec.serviceAccountName", "robot"),
        ("status.podIP", "10.88.0.2"),
        ("status.podIPs", "10.88.0.2"),
        ("status.hostIP", "10.0.0.5"),
        ("status.hostIPs", "10.0.0.5"),
    ];
    let mut containers = String::from("  - name: c\n    image: busybox\n    env:\n");
    for (i, (path, _)) in fields.iter().enumerate() {
        containers.push_str(&format!(
            "    - {{name: V{i}, valueFrom: {{fieldRef: {{fieldPath: \"{path}\"}}}}}}\n"
        ));
    }
    let env = env_of(&plan_in_team(&containers).unwrap());
    for (i, (path, want)) in fields.iter().enumerate() {
        assert!(env.contains(&format!("V{i}={want}")), "{path}: {env:?}");
    }
}

#[test]
fn resource_field_refs_round_up_and_default_to_allocatable() {
    let plan = plan_in_team(
        "  - name: c\n    image: busybox\n    resources:\n      limits: {cpu: 1250m, memory: 100Mi}\n      \
         requests: {memory: 64Mi}\n    env:\n    \
         - {name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}\n    \
         - {name: CPU_M, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}\n    \
         - {name: MEM_MI, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n    \
         - {name: MEM_G, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1G}}}\n    \
         - {name: REQ_CPU, valueFrom: {resourceFieldRef: {containerName: c, resource: requests.cpu, divisor: 1m}}}\n    \
         - {name: REQ_MEM, valueFrom: {resourceFieldRef: {resource: requests.memory}}}\n    \
         - {name: DISK, valueFrom: {resourceFieldRef: {resource: limits.ephemeral-storage, divisor: 1Gi}}}\n  \
         - name: d\n    image: busybox\n    env:\n    \
         - {name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}\n    \
         - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n    \
         - {name: REQ, valueFrom: {resourceFieldRef: {resource: requests.cpu}}}\n",
    )
    .unwrap();
    let c = &plan.containers[0].spec.process.env;
    let want = [
        "CPU=2",
        "CPU_M=1250",
        "MEM_MI=100",
        "MEM_G=1",
        "REQ_CPU=1250",
        "REQ_MEM=67108864",
        "DISK=100",
    ];
    for w in want {
        assert!(c.contains(&w.to_string()), "{w}: {c:?}");
    }
    let d = &plan.containers[1].spec.process.env;
    for w in ["CPU=4", "MEM=8192", "REQ=0"] {
        assert!(
            d.contains(&w.to_string()),
            "no limits: the node's allocatable ({w}): {d:?}"
        );
    }
}

#[test]
fn variables_expand_in_values_command_and_args() {
    let plan = plan_in_team(
        "  - name: c\n    image: busybox\n    command: [\"/bin/$(MODE)\", \"$(LATER)\"]\n    \
         args: [\"--n=$(NAME)\", \"$$(NAME)\", \"$(UNSET)\", \"cost $5\"]\n    env:\n    \
         - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}\n    \
         - {name: NAME, value: \"$(MODE)-$(LATER)-$$(MODE)\"}\n    - {name: LATER, value: late}\n",
    )
    .unwrap();
    let p = &plan.containers[0].spec.process;
    assert!(
        p.env.contains(&"NAME=fast-$(LATER)-$(MODE)".to_string()),
        "only earlier variables expand; $$ escapes: {:?}",
        p.env
    );
    assert_eq!(
        p.args,
        [
            "/bin/fast",
            "late",
            "--n=fast-$(LATER)-$(MODE)",
            "$(NAME)",
            "$(UNSET)",
            "cost $5"
        ]
    );
}

#[test]
fn expansion_follows_kubernetes_edge_cases() {
    let vars: BTreeMap<&str, &str> = [("A", "x"), ("B", "")].into();
    let get = |n: &str| vars.get(n).copied();
    let cases = [
        ("$(A)", "x"),
        ("$(B)", ""),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$x"),
        ("$(A", "$(A"),
        ("$(", "$("),
        ("$", "$"),
        ("a$b", "a$b"),
        ("$(C)", "$(C)"),
        ("$(A$(A))", "$(A$(A))"),
        ("é$(A)é", "éxé"),
        ("", ""),
    ];
    for (input, want) in cases {
        assert_eq!(expand(input, get), want, "{input:?}");
    }
}

#[test]
fn missing_objects_and_keys_are_config_errors_in_kubernetes_words() {
    let c = |env: &str| format!("  - name: c\n    image: busybox\n    env:\n{env}");
    let cases = [
        (
            c("    - {name: X, valueFrom: {configMapKeyRef: {name: x, key: k}}}\n"),
            "spec.containers[0].env[0].valueFrom.configMapKeyRef",
            "configmap \"x\" not found",
        ),
        (
            c("    - {name: X, valueFrom: {configMapKeyRef: {name: settings, key: k}}}\n"),
            "spec.containers[0].env[0].valueFrom.configMapKeyRef",
            "couldn't find key k in ConfigMap team/settings",
        ),
        (
            c("    - {name: X, valueFrom: {secretKeyRef: {name: creds, key: k}}}\n"),
            "spec.containers[0].env[0].valueFrom.secretKeyRef",
            "couldn't find key k in Secret team/creds",
        ),
        (
            c("    - {name: X, valueFrom: {secretKeyRef: {name: s, key: k}}}\n"),
            "spec.containers[0].env[0].valueFrom.secretKeyRef",
            "secret \"s\" not found",
        ),
        (
            "  - name: c\n    image: busybox\n    envFrom:\n    - secretRef: {name: s}\n".into(),
            "spec.containers[0].envFrom[0].secretRef",
            "secret \"s\" not found",
        ),
    ];
    for (containers, field, message) in cases {
        let err = plan_in_team(&containers).unwrap_err();
        assert_eq!((err.field.as_str(), err.message.as_str()), (field, message));
        assert_eq!(err.kind, SpecErrorKind::Config);
        assert_eq!(err.reason(), "CreateContainerConfigError");
    }
    let broken = FakeObjects {
        broken: true,
        ..Default::default()
    };
    let yaml = super::tests::pod(
        "  - name: c\n    image: busybox\n    envFrom:\n    - configMapRef: {name: x}\n",
    );
    let err = plan(&parse(&yaml).unwrap(), &ctx(None), &Images, Some(&broken)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.containers[0].envFrom[0].configMapRef: couldn't get configmap default/x: connection refused"
    );
    assert_eq!(err.kind, SpecErrorKind::Config);
}

#[test]
fn bad_env_references_name_the_field() {
    let c = |env: &str| format!("  - name: c\n    image: busybox\n    env:\n{env}");
    let cases = [
        (
            c("    - {name: X, valueFrom: {fieldRef: {fieldPath: metadata.labels}}}\n"),
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: unsupported field \"metadata.labels\"",
        ),
        (
            c(
                "    - {name: X, valueFrom: {fieldRef: {fieldPath: metadata.name, apiVersion: v2}}}\n",
            ),
            "spec.containers[0].env[0].valueFrom.fieldRef.apiVersion: unsupported version \"v2\"",
        ),
        (
            c("    - {name: X, valueFrom: {resourceFieldRef: {resource: limits.gpu}}}\n"),
            "spec.containers[0].env[0].valueFrom.resourceFieldRef.resource: unsupported container resource \"limits.gpu\"",
        ),
        (
            c(
                "    - {name: X, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 2}}}\n",
            ),
            "spec.containers[0].env[0].valueFrom.resourceFieldRef.divisor: \"2\" is not 1m or 1",
        ),
        (
            c(
                "    - {name: X, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 3Mi}}}\n",
            ),
            "spec.containers[0].env[0].valueFrom.resourceFieldRef.divisor: \"3Mi\" is not 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi or 1Ei",
        ),
        (
            c(
                "    - {name: X, valueFrom: {resourceFieldRef: {containerName: other, resource: limits.cpu}}}\n",
            ),
            "spec.containers[0].env[0].valueFrom.resourceFieldRef.containerName: must be this container (\"c\") in env",
        ),
        (
            c("    - {name: X, valueFrom: {}}\n"),
            "spec.containers[0].env[0].valueFrom: exactly one of configMapKeyRef, secretKeyRef, fieldRef and resourceFieldRef",
        ),
        (
            "  - name: c\n    image: busybox\n    envFrom:\n    - prefix: X\n".into(),
            "spec.containers[0].envFrom[0]: exactly one of configMapRef and secretRef",
        ),
    ];
    for (containers, want) in cases {
        let err = plan_in_team(&containers).unwrap_err();
        assert_eq!(err.to_string(), want);
        assert_eq!(err.kind, SpecErrorKind::Invalid);
    }
}

#[test]
fn host_network_pods_have_the_nodes_address_and_without_one_say_so() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers:\n  \
                - name: c\n    image: busybox\n    env:\n    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}\n";
    let pod = parse(yaml).unwrap();
    let plan = plan(&pod, &ctx(Some(Ipv4Addr::new(10, 88, 0, 2))), &Images, None).unwrap();
    assert!(env_of(&plan).contains(&"IP=10.0.0.5".to_string()));
    let mut no_address = ctx(None);
    no_address.host_ips.clear();
    let err = super::plan(&pod, &no_address, &Images, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: the node's address is not known here"
    );
}
