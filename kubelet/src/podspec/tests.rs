//! The translation as tables: manifests → plans, and bad manifests → one-line errors.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use skiff_runtime::cgroup::{CpuMax, Limit, cpu_shares_to_weight};
use skiff_runtime::container::seccomp::Seccomp;
use skiff_runtime::container::{BindMount, DEFAULT_CAPABILITIES, Propagation};
use skiff_runtime::image::manifest::ProcessConfig;

use super::*;

pub(super) struct Images;

impl ImageSource for Images {
    fn lookup(&self, reference: &str) -> Result<ImageInfo, ImageLookupError> {
        let s = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let (name, config) = match reference {
            "busybox" => (
                "docker.io/library/busybox:latest",
                ProcessConfig {
                    cmd: s(&["sh"]),
                    env: s(&["PATH=/bin", "A=image"]),
                    ..Default::default()
                },
            ),
            "web" => (
                "docker.io/library/web:latest",
                ProcessConfig {
                    entrypoint: s(&["/web"]),
                    cmd: s(&["--port", "80"]),
                    working_dir: Some("/srv".into()),
                    user: Some("www:staff".into()),
                    stop_signal: Some("SIGQUIT".into()),
                    ..Default::default()
                },
            ),
            "numeric" => (
                "docker.io/library/numeric:latest",
                ProcessConfig {
                    cmd: s(&["true"]),
                    user: Some("1234".into()),
                    ..Default::default()
                },
            ),
            "empty" => ("docker.io/library/empty:latest", ProcessConfig::default()),
            other => {
                return Err(ImageLookupError::NotFound(format!(
                    "docker.io/library/{other}:latest"
                )));
            }
        };
        Ok(ImageInfo {
            reference: name.into(),
            layers: vec![PathBuf::from(format!("/layers/{reference}"))],
            config,
            etc_passwd: Some("root:x:0:0::/root:/bin/sh\nwww:x:33:33::/srv:/bin/false\n".into()),
            etc_group: Some("root:x:0:\nstaff:x:50:\n".into()),
        })
    }
}

pub(super) fn ctx(ip: Option<Ipv4Addr>) -> PlanContext {
    PlanContext {
        pod_dir: PathBuf::from("/run/pods/p"),
        ip: ip.map(IpAddr::V4),
        node_hostname: "node1".into(),
        host_hosts: Some("127.0.0.1 localhost\n10.0.0.5 node1".into()),
        host_resolv_conf: Some("nameserver 10.0.0.53\n".into()),
        host_ips: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))],
        allocatable: Allocatable {
            cpu_milli: 4000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 100 << 30,
        },
    }
}

fn plan_of(yaml: &str) -> Result<PodPlan, PodSpecError> {
    plan(
        &parse(yaml)?,
        &ctx(Some(Ipv4Addr::new(10, 88, 0, 2))),
        &Images,
        None,
    )
}

pub(super) fn pod(containers: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n{containers}")
}

#[test]
fn a_minimal_pod_gets_image_defaults_and_the_kubelet_files() {
    let plan = plan_of(&pod("  - name: c\n    image: busybox\n")).unwrap();
    assert_eq!(plan.name, "p");
    assert_eq!(plan.hostname, "p");
    assert!(!plan.host_network);
    assert_eq!(plan.grace, std::time::Duration::from_secs(30));
    let [c] = plan.containers.as_slice() else {
        panic!("{plan:?}")
    };
    assert_eq!(c.image, "docker.io/library/busybox:latest");
    assert_eq!(c.spec.id, "p.c");
    assert_eq!(c.spec.layers, [PathBuf::from("/layers/busybox")]);
    let p = &c.spec.process;
    assert_eq!(p.args, ["sh"]);
    assert_eq!(p.env, ["PATH=/bin", "A=image", "HOSTNAME=p"]);
    assert_eq!((p.cwd.as_str(), p.uid, p.gid), ("/", 0, 0));
    let defaults: Vec<u8> = DEFAULT_CAPABILITIES.iter().map(|(_, n)| *n).collect();
    assert_eq!(p.capabilities, defaults);
    assert!(!p.no_new_privileges && !c.spec.privileged && !c.spec.readonly_rootfs);
    assert_eq!(p.stop_signal, libc::SIGTERM);
    assert_eq!(p.seccomp, Seccomp::RuntimeDefault);
    assert_eq!(c.resources, Resources::default());
    assert_eq!(c.spec.log.dir, Path::new("/run/pods/p/logs/c"));
    let dests: Vec<_> = c
        .spec
        .mounts
        .iter()
        .map(|m| m.destination.display().to_string())
        .collect();
    assert_eq!(dests, ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]);
    let hosts = &plan.files[0];
    assert_eq!(hosts.path, Path::new("/run/pods/p/etc/hosts"));
    assert!(
        hosts
            .contents
            .starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    );
    assert!(
        hosts.contents.ends_with("10.88.0.2\tp\n"),
        "{}",
        hosts.contents
    );
    assert_eq!(plan.files[1].contents, "p\n");
    assert_eq!(plan.files[2].contents, "nameserver 10.0.0.53\n");
}

#[test]
fn command_args_env_and_working_dir_follow_kubernetes() {
    let cases = [
        ("    image: web\n", vec!["/web", "--port", "80"]),
        (
            "    image: web\n    args: [\"--port\", \"8080\"]\n",
            vec!["/web", "--port", "8080"],
        ),
        (
            "    image: web\n    command: [\"/other\"]\n",
            vec!["/other"],
        ),
        (
            "    image: web\n    command: [sh]\n    args: [\"-c\", \"true\"]\n",
            vec!["sh", "-c", "true"],
        ),
    ];
    for (container, want) in cases {
        let plan = plan_of(&pod(&format!("  - name: c\n{container}"))).unwrap();
        assert_eq!(plan.containers[0].spec.process.args, want, "{container}");
    }
    let plan = plan_of(&pod(
        "  - name: c\n    image: busybox\n    workingDir: /work\n    env:\n    - {name: A, value: mine}\n    - {name: B}\n",
    ))
    .unwrap();
    let p = &plan.containers[0].spec.process;
    assert_eq!(p.env, ["PATH=/bin", "A=mine", "HOSTNAME=p", "B="]);
    assert_eq!(p.cwd, "/work");
    let web = plan_of(&pod("  - name: c\n    image: web\n")).unwrap();
    let p = &web.containers[0].spec.process;
    assert_eq!(p.cwd, "/srv");
    assert!(
        p.env[0].starts_with("PATH=/usr/local/sbin"),
        "a default PATH: {:?}",
        p.env
    );
    assert_eq!(
        (p.uid, p.gid),
        (33, 50),
        "USER www:staff from the image's /etc files"
    );
    assert_eq!(p.stop_signal, libc::SIGQUIT);
}

#[test]
fn security_contexts_become_identity_capabilities_and_flags() {
    let plan = plan_of(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext:\n    runAsUser: 1000\n    \
         runAsGroup: 3000\n    supplementalGroups: [4000]\n    fsGroup: 2000\n  containers:\n  - name: a\n    \
         image: busybox\n    securityContext:\n      capabilities: {add: [NET_ADMIN, CAP_SYS_TIME], drop: [KILL]}\n      \
         allowPrivilegeEscalation: false\n      readOnlyRootFilesystem: true\n  - name: b\n    image: numeric\n    \
         securityContext: {runAsUser: 0, privileged: true}\n  - name: c\n    image: numeric\n    \
         securityContext: {capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}\n",
    )
    .unwrap();
    let a = &plan.containers[0].spec;
    assert_eq!((a.process.uid, a.process.gid), (1000, 3000));
    assert_eq!(a.process.additional_gids, [4000, 2000]);
    assert!(a.process.capabilities.contains(&12) && a.process.capabilities.contains(&25));
    assert!(!a.process.capabilities.contains(&5), "KILL dropped");
    assert!(a.process.no_new_privileges && a.readonly_rootfs && !a.privileged);
    assert!(
        a.mounts.iter().all(|m| m.readonly),
        "kubelet files read-only on a read-only rootfs"
    );
    let b = &plan.containers[1].spec;
    assert_eq!(
        (b.process.uid, b.process.gid),
        (0, 3000),
        "container runAsUser over the pod's"
    );
    assert!(b.privileged && !b.process.no_new_privileges);
    assert_eq!(b.process.capabilities, crate::caps::all());
    assert_eq!(
        b.process.seccomp,
        Seccomp::Unconfined,
        "privileged: no filter unless asked"
    );
    let c = &plan.containers[2].spec;
    assert_eq!(c.process.capabilities, [10]);
    assert_eq!(
        (c.process.uid, c.process.gid),
        (1000, 3000),
        "the pod's runAsUser over the image's USER"
    );
}

#[test]
fn resources_become_cgroup_limits() {
    let plan = plan_of(&pod(
        "  - name: c\n    image: busybox\n    resources:\n      limits: {memory: 64Mi, cpu: 500m}\n      \
         requests: {cpu: 250m, memory: 32Mi}\n  - name: d\n    image: busybox\n    resources:\n      \
         limits: {cpu: \"2\"}\n  - name: e\n    image: busybox\n    resources:\n      limits: {cpu: 1m}\n",
    ))
    .unwrap();
    let r = &plan.containers[0].resources;
    assert_eq!(r.memory_max, Some(Limit::Value(64 << 20)));
    assert_eq!(
        r.cpu_max,
        Some(CpuMax {
            quota: Limit::Value(50_000),
            period_us: 100_000
        })
    );
    assert_eq!(r.cpu_weight, Some(cpu_shares_to_weight(256)));
    let d = &plan.containers[1].resources;
    assert_eq!(
        d.cpu_max,
        Some(CpuMax {
            quota: Limit::Value(200_000),
            period_us: 100_000
        })
    );
    assert_eq!(
        d.cpu_weight,
        Some(cpu_shares_to_weight(2048)),
        "requests default to limits"
    );
    assert_eq!(d.memory_max, None);
    let e = &plan.containers[2].resources;
    assert_eq!(
        e.cpu_max.unwrap().quota,
        Limit::Value(1000),
        "quota floor of 1 ms"
    );
    assert_eq!(e.cpu_weight, Some(cpu_shares_to_weight(2)));
}

#[test]
fn volumes_become_bind_mounts() {
    let plan = plan_of(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes:\n  - {name: scratch, emptyDir: {}}\n  \
         - name: logs\n    hostPath: {path: /var/log/app, type: DirectoryOrCreate}\n  - name: hosts\n    \
         hostPath: {path: /tmp/my-hosts}\n  containers:\n  - name: c\n    image: busybox\n    volumeMounts:\n    \
         - {name: scratch, mountPath: /scratch}\n    - {name: logs, mountPath: /logs, readOnly: true, \
         mountPropagation: HostToContainer}\n    - {name: hosts, mountPath: /etc/hosts}\n",
    )
    .unwrap();
    assert_eq!(plan.dirs, [PathBuf::from("/run/pods/p/volumes/scratch")]);
    let kinds: Vec<_> = plan
        .host_paths
        .iter()
        .map(|h| (h.path.display().to_string(), h.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("/tmp/my-hosts".to_string(), HostPathType::Unchecked),
            ("/var/log/app".to_string(), HostPathType::DirectoryOrCreate),
        ]
    );
    let m = |source: &str, destination: &str, readonly, propagation| BindMount {
        source: source.into(),
        destination: destination.into(),
        readonly,
        propagation,
    };
    assert_eq!(
        plan.containers[0].spec.mounts,
        [
            m(
                "/run/pods/p/volumes/scratch",
                "/scratch",
                false,
                Propagation::Private
            ),
            m("/var/log/app", "/logs", true, Propagation::HostToContainer),
            m("/tmp/my-hosts", "/etc/hosts", false, Propagation::Private),
            m(
                "/run/pods/p/etc/hostname",
                "/etc/hostname",
                false,
                Propagation::Private
            ),
            m(
                "/run/pods/p/etc/resolv.conf",
                "/etc/resolv.conf",
                false,
                Propagation::Private
            ),
        ]
    );
}

#[test]
fn host_network_pods_use_the_nodes_name_and_hosts() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  hostAliases:\n  \
                - {ip: 10.1.1.1, hostnames: [db, db.local]}\n  containers:\n  - {name: c, image: busybox}\n";
    let plan = plan(&parse(yaml).unwrap(), &ctx(None), &Images, None).unwrap();
    assert!(plan.host_network);
    assert_eq!(plan.hostname, "node1");
    assert_eq!(
        plan.files[0].contents,
        "127.0.0.1 localhost\n10.0.0.5 node1\n# Entries added by HostAliases.\n10.1.1.1\tdb\tdb.local\n"
    );
}

#[test]
fn host_path_types_are_checked() {
    let check = |kind| HostPathCheck {
        field: "spec.volumes[0].hostPath".into(),
        path: "/x".into(),
        kind,
    };
    use {FoundKind as F, HostPathAction as A, HostPathType as T};
    let ok = [
        (T::Unchecked, F::Missing, A::Nothing),
        (T::DirectoryOrCreate, F::Missing, A::CreateDirectory),
        (T::DirectoryOrCreate, F::Directory, A::Nothing),
        (T::FileOrCreate, F::Missing, A::CreateFile),
        (T::File, F::File, A::Nothing),
        (T::Socket, F::Socket, A::Nothing),
    ];
    for (kind, found, want) in ok {
        assert_eq!(check(kind).action(found), Ok(want), "{kind:?} {found:?}");
    }
    let err = check(T::Directory).action(F::File).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.volumes[0].hostPath: type Directory but /x is a file"
    );
    assert!(check(T::File).action(F::Missing).is_err());
    assert!(check(T::FileOrCreate).action(F::Directory).is_err());
}

#[test]
fn init_containers_are_planned_apart_and_before_the_containers() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers:\n  - {name: first, image: busybox, command: [true]}\n  - {name: second, image: web}\n  containers:\n  - {name: c, image: busybox}\n";
    let plan = plan_of(yaml).unwrap();
    let names = |list: &[ContainerPlan]| list.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&plan.init_containers), ["first", "second"]);
    assert_eq!(names(&plan.containers), ["c"]);
    assert_eq!(plan.init_containers[0].spec.process.args, ["true"]);
    assert_eq!(
        plan.init_containers[1].spec.process.args,
        ["/web", "--port", "80"]
    );
    assert_eq!(
        plan.init_containers[1].spec.log.dir,
        Path::new("/run/pods/p/logs/second")
    );
}

#[test]
fn bad_manifests_get_one_line_errors_naming_the_field() {
    let c = |extra: &str| pod(&format!("  - name: c\n    image: busybox\n{extra}"));
    let cases: Vec<(String, &str)> = vec![
        (pod("  - name: c\n"), "spec.containers[0].image: required"),
        (pod("  - image: busybox\n"), "spec.containers[0].name: required"),
        (pod("  - name: c\n    image: nope\n"), "spec.containers[0].image: image docker.io/library/nope:latest is not in the local store (run `skiff image pull docker.io/library/nope:latest` first)"),
        (pod("  - name: c\n    image: empty\n"), "spec.containers[0].command: required: the image has no entrypoint or command"),
        (pod("  - {name: c, image: busybox}\n  - {name: c, image: busybox}\n"), "spec.containers[1].name: duplicate container name \"c\""),
        (pod("  - {name: C_1, image: busybox}\n"), "spec.containers[0].name: \"C_1\" must be lowercase letters, digits and '-' (at most 63)"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {}\nspec:\n  containers: []\n".into(), "metadata.name: required"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n".into(), "spec: required"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: []\n".into(), "spec.containers: required"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers: [{name: c, image: busybox}]\n  containers: [{name: c, image: busybox}]\n".into(), "spec.containers[0].name: duplicate container name \"c\""),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers: [{name: i, image: nope}]\n  containers: [{name: c, image: busybox}]\n".into(), "spec.initContainers[0].image: image docker.io/library/nope:latest is not in the local store (run `skiff image pull docker.io/library/nope:latest` first)"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers: [{name: i, image: busybox, restartPolicy: Always}]\n  containers: [{name: c, image: busybox}]\n".into(), "spec.initContainers[0].restartPolicy: sidecar containers are not supported yet"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  initContainers: [{name: i, image: busybox, readinessProbe: {exec: {command: [x]}}}]\n  containers: [{name: c, image: busybox}]\n".into(), "spec.initContainers[0].readinessProbe: must not be set for init containers"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostPID: true\n  containers: [{name: c, image: busybox}]\n".into(), "spec.hostPID: not supported yet"),
        (c("    env:\n    - name: X\n      valueFrom: {configMapKeyRef: {name: cm, key: k}}\n"), "spec.containers[0].env[0].valueFrom.configMapKeyRef: not supported without a control plane"),
        (c("    envFrom:\n    - configMapRef: {name: cm}\n"), "spec.containers[0].envFrom[0].configMapRef: not supported without a control plane"),
        (c("    resources:\n      limits: {memory: lots}\n"), "spec.containers[0].resources.limits.memory: \"lots\" is not a quantity"),
        (c("    securityContext:\n      capabilities: {add: [NET_WIZARD]}\n"), "spec.containers[0].securityContext.capabilities.add: unknown capability \"NET_WIZARD\""),
        (c("    securityContext: {runAsUser: -1}\n"), "spec.containers[0].securityContext.runAsUser: -1 is not between 0 and 2147483647"),
        (c("    securityContext: {runAsNonRoot: true}\n"), "spec.containers[0].securityContext.runAsNonRoot: the container would run as root"),
        (c("    securityContext: {privileged: true, allowPrivilegeEscalation: false}\n"), "spec.containers[0].securityContext.allowPrivilegeEscalation: cannot be false for a privileged container"),
        (c("    volumeMounts:\n    - {name: v, mountPath: /v}\n"), "spec.containers[0].volumeMounts[0].name: no volume \"v\" in spec.volumes"),
        (c("    securityContext:\n      seccompProfile: {type: Localhost, localhostProfile: x.json}\n"), "spec.containers[0].securityContext.seccompProfile.type: Localhost profiles are not supported yet"),
        (c("    workingDir: relative\n"), "spec.containers[0].workingDir: must be an absolute path"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes:\n  - {name: v, emptyDir: {}}\n  containers:\n  - name: c\n    image: busybox\n    volumeMounts:\n    - {name: v, mountPath: /v, subPath: x}\n".into(), "spec.containers[0].volumeMounts[0].subPath: not supported yet"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes:\n  - name: v\n    configMap: {name: cm}\n  containers: [{name: c, image: busybox}]\n".into(), "spec.volumes[0].configMap: not supported without a control plane"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes:\n  - name: v\n    hostPath: {path: /x, type: Pipe}\n  containers: [{name: c, image: busybox}]\n".into(), "spec.volumes[0].hostPath.type: unknown type \"Pipe\""),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes:\n  - name: v\n    hostPath: {path: rel}\n  containers: [{name: c, image: busybox}]\n".into(), "spec.volumes[0].hostPath.path: must be an absolute path"),
    ];
    for (yaml, want) in cases {
        let err = plan_of(&yaml).unwrap_err().to_string();
        assert_eq!(err, want, "for:\n{yaml}");
    }
    // Parse errors name the place too, and stay on one line.
    for (yaml, field) in [
        (
            "apiVersion: v1\nkind: Deployment\nmetadata: {name: p}\n",
            "kind",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: 3\n",
            "spec.containers",
        ),
        (
            "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: c\n    ports: [{containerPort: x}]\n",
            "spec.containers[0].ports[0].containerPort",
        ),
        ("kind: Pod\nmetadata: {name: p}\n", "apiVersion"),
        ("[", "manifest"),
    ] {
        let err = parse(yaml).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}
