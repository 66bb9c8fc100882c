//! One container of a Pod → a `ContainerSpec` and its cgroup `Resources`: argv and env from
//! the image and the manifest (env resolved in `env.rs`), identity and capabilities from the security contexts, limits
//! from `resources`, bind mounts from `volumeMounts` and the kubelet's /etc files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, PodSpec, SecurityContext};
use skiff_runtime::cgroup::{CpuMax, Limit, Resources, cpu_shares_to_weight};
use skiff_runtime::container::process::{merge_env, resolve_args};
use skiff_runtime::container::seccomp::Seccomp;
use skiff_runtime::container::{BindMount, ContainerSpec, LogSpec, ProcessSpec, Propagation};

use super::env::{self, Vars, expand};
use super::objects::Objects;
use super::volumes::PodVolume;
use super::{
    ContainerPlan, ImageLookupError, ImageSource, PlanContext, PodFile, PodSpecError, check_label,
    etc_mounts,
};
use crate::caps;
use skiff_api::Quantity;

/// Log files rotate at this size.
const LOG_MAX_BYTES: u64 = 10 << 20;
/// The PATH a container gets when its image sets none (containerd's default).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Kubernetes' CFS period, and the smallest quota it sets.
const CPU_PERIOD_US: u64 = 100_000;
const CPU_MIN_QUOTA_US: u64 = 1000;

/// Where a container's image and referenced objects come from.
pub(super) struct Sources<'a> {
    pub images: &'a dyn ImageSource,
    pub objects: Objects<'a>,
}

/// Which container of the pod is planned: its field (`spec.containers[1]`,
/// `spec.initContainers[0]`) and the names of the containers planned before it.
pub(super) struct Slot<'a> {
    pub field: String,
    pub earlier: &'a [&'a str],
}

#[allow(clippy::too_many_arguments)]
pub(super) fn plan(
    slot: Slot,
    c: &Container,
    whole: &Pod,
    hostname: &str,
    ctx: &PlanContext,
    volumes: &BTreeMap<String, PodVolume>,
    files: &[PodFile],
    sources: &Sources,
) -> Result<ContainerPlan, PodSpecError> {
    let pod: &PodSpec = whole
        .spec
        .as_ref()
        .ok_or_else(|| PodSpecError::new("spec", "required"))?;
    let pod_name = whole.metadata.name.as_deref().unwrap_or_default();
    let field = slot.field;
    let f = |rest: &str| format!("{field}.{rest}");
    check_label(&f("name"), &c.name)?;
    if slot.earlier.contains(&c.name.as_str()) {
        return Err(PodSpecError::new(
            f("name"),
            format!("duplicate container name {:?}", c.name),
        ));
    }
    let reference = c.image.as_deref().unwrap_or("").trim();
    if reference.is_empty() {
        return Err(PodSpecError::new(f("image"), "required"));
    }
    let image = sources.images.lookup(reference).map_err(|e| match e {
        ImageLookupError::NotFound(_) => PodSpecError::new(f("image"), e.to_string()),
        ImageLookupError::Other(m) => PodSpecError::new(f("image"), m),
    })?;
    let config = &image.config;
    let vars = env::vars(c, &field, whole, ctx, &sources.objects)?;
    let expanded = |list: &Option<Vec<String>>| {
        list.as_ref().map(|l| {
            l.iter()
                .map(|a| expand(a, |name| vars.get(name)))
                .collect::<Vec<_>>()
        })
    };
    let args = resolve_args(
        config.entrypoint.as_deref().unwrap_or_default(),
        config.cmd.as_deref().unwrap_or_default(),
        expanded(&c.command).as_deref(),
        expanded(&c.args).as_deref(),
    );
    if args.is_empty() {
        return Err(PodSpecError::new(
            f("command"),
            "required: the image has no entrypoint or command",
        ));
    }
    let env = environment(&vars, hostname, config.env.as_deref().unwrap_or_default());
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = pod.security_context.clone().unwrap_or_default();
    let identity = identity(&sc, &psc, &image, &field)?;
    let privileged = sc.privileged.unwrap_or(false);
    let capabilities = if privileged {
        caps::all()
    } else {
        let cs = sc.capabilities.clone().unwrap_or_default();
        let (add, drop) = (cs.add.unwrap_or_default(), cs.drop.unwrap_or_default());
        caps::effective(&add, &drop).map_err(|name| {
            let list = if add.iter().any(|a| a == name) {
                "add"
            } else {
                "drop"
            };
            PodSpecError::new(
                f(&format!("securityContext.capabilities.{list}")),
                format!("unknown capability {name:?}"),
            )
        })?
    };
    if privileged && sc.allow_privilege_escalation == Some(false) {
        return Err(PodSpecError::new(
            f("securityContext.allowPrivilegeEscalation"),
            "cannot be false for a privileged container",
        ));
    }
    let readonly_rootfs = sc.read_only_root_filesystem.unwrap_or(false);
    let mounts = mounts(c, &field, volumes, files, readonly_rootfs, privileged)?;
    let cwd = c
        .working_dir
        .clone()
        .or_else(|| config.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(PodSpecError::new(
            f("workingDir"),
            "must be an absolute path",
        ));
    }
    let stop_signal = match config.stop_signal.as_deref() {
        None | Some("") => libc::SIGTERM,
        Some(s) => parse_signal(s).ok_or_else(|| {
            PodSpecError::new(
                f("image"),
                format!("image {} has an unknown STOPSIGNAL {s:?}", image.reference),
            )
        })?,
    };
    let id = format!("{pod_name}.{}", c.name);
    let spec = ContainerSpec {
        id,
        layers: image.layers.clone(),
        readonly_rootfs,
        process: ProcessSpec {
            args,
            env,
            cwd,
            uid: identity.uid,
            gid: identity.gid,
            additional_gids: identity.groups,
            capabilities,
            no_new_privileges: sc.allow_privilege_escalation == Some(false),
            rlimits: vec![],
            stop_signal,
            seccomp: seccomp(&sc, &psc, privileged, &field)?,
        },
        join: vec![],
        cgroup_procs: vec![],
        mounts,
        privileged,
        log: LogSpec {
            dir: ctx.pod_dir.join("logs").join(&c.name),
            name: "0.log".into(),
            max_bytes: LOG_MAX_BYTES,
        },
    };
    Ok(ContainerPlan {
        name: c.name.clone(),
        image: image.reference.clone(),
        spec,
        resources: resources(c, &field)?,
    })
}

/// The image's environment with HOSTNAME and the manifest's variables set over it.
fn environment(vars: &Vars, hostname: &str, image: &[String]) -> Vec<String> {
    let mut request = vec![("HOSTNAME".to_string(), hostname.to_string())];
    request.extend(vars.pairs());
    let mut env = merge_env(image, &request);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    env
}

struct Identity {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

/// uid/gid from the container's then the pod's security context, else the image's USER;
/// supplementary groups from the pod (`supplementalGroups`, then `fsGroup`).
fn identity(
    sc: &SecurityContext,
    psc: &PodSecurityContext,
    image: &super::ImageInfo,
    field: &str,
) -> Result<Identity, PodSpecError> {
    let id = |value: Option<i64>, what: &str| -> Result<Option<u32>, PodSpecError> {
        value
            .map(|v| {
                u32::try_from(v)
                    .ok()
                    .filter(|v| *v <= i32::MAX as u32)
                    .ok_or_else(|| {
                        PodSpecError::new(
                            what.to_string(),
                            format!("{v} is not between 0 and 2147483647"),
                        )
                    })
            })
            .transpose()
    };
    let user = match (sc.run_as_user, psc.run_as_user) {
        (Some(u), _) => id(Some(u), &format!("{field}.securityContext.runAsUser"))?,
        (None, u) => id(u, "spec.securityContext.runAsUser")?,
    };
    let group = match (sc.run_as_group, psc.run_as_group) {
        (Some(g), _) => id(Some(g), &format!("{field}.securityContext.runAsGroup"))?,
        (None, g) => id(g, "spec.securityContext.runAsGroup")?,
    };
    let (uid, gid) = match user {
        Some(uid) => (uid, group.unwrap_or(0)),
        None => {
            let (uid, image_gid) =
                image_user(image).map_err(|m| PodSpecError::new(format!("{field}.image"), m))?;
            (uid, group.unwrap_or(image_gid))
        }
    };
    let non_root = sc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false);
    if non_root && uid == 0 {
        let at = if sc.run_as_non_root.is_some() {
            format!("{field}.securityContext.runAsNonRoot")
        } else {
            "spec.securityContext.runAsNonRoot".into()
        };
        return Err(PodSpecError::new(at, "the container would run as root"));
    }
    let mut groups = Vec::new();
    for (i, g) in psc.supplemental_groups.iter().flatten().enumerate() {
        groups.extend(id(
            Some(*g),
            &format!("spec.securityContext.supplementalGroups[{i}]"),
        )?);
    }
    groups.extend(id(psc.fs_group, "spec.securityContext.fsGroup")?);
    groups.dedup();
    Ok(Identity { uid, gid, groups })
}

/// The image's `USER` (`uid`, `uid:gid`, `name`, `name:group`), names looked up in the image's
/// own /etc/passwd and /etc/group.
fn image_user(image: &super::ImageInfo) -> Result<(u32, u32), String> {
    let user = image.config.user.as_deref().unwrap_or("").trim();
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let lookup = |file: &Option<String>, name: &str, col: usize| -> Option<(u32, Option<u32>)> {
        file.as_deref()?.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name)).then(|| {
                Some((
                    fields.get(col)?.parse().ok()?,
                    fields.get(col + 1).and_then(|g| g.parse().ok()),
                ))
            })?
        })
    };
    let unknown = |what: &str, name: &str| {
        format!(
            "image {} runs as {what} {name:?}, which its /etc files do not define; set runAsUser",
            image.reference
        )
    };
    let (uid, passwd_gid) = match u.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => lookup(&image.etc_passwd, u, 2).ok_or_else(|| unknown("user", u))?,
    };
    let gid = match g {
        None => passwd_gid.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                lookup(&image.etc_group, g, 2)
                    .ok_or_else(|| unknown("group", g))?
                    .0
            }
        },
    };
    Ok((uid, gid))
}

/// `resources.limits` → memory.max and cpu.max; `requests.cpu` (else `limits.cpu`) → weight.
fn resources(c: &Container, field: &str) -> Result<Resources, PodSpecError> {
    let reqs = c.resources.clone().unwrap_or_default();
    let get = |map: &Option<
        BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               which: &str,
               name: &str| {
        map.as_ref()
            .and_then(|m| m.get(name))
            .map(|q| {
                Quantity::parse(&q.0)
                    .map_err(|m| PodSpecError::new(format!("{field}.resources.{which}.{name}"), m))
            })
            .transpose()
    };
    let mut out = Resources::default();
    if let Some(memory) = get(&reqs.limits, "limits", "memory")? {
        out.memory_max = Some(Limit::Value(memory.ceil()));
    }
    let cpu_limit = get(&reqs.limits, "limits", "cpu")?;
    if let Some(cpu) = cpu_limit {
        let quota = (cpu.ceil_milli().saturating_mul(CPU_PERIOD_US) / 1000).max(CPU_MIN_QUOTA_US);
        out.cpu_max = Some(CpuMax {
            quota: Limit::Value(quota),
            period_us: CPU_PERIOD_US,
        });
    }
    if let Some(cpu) = get(&reqs.requests, "requests", "cpu")?.or(cpu_limit) {
        let shares = (cpu.ceil_milli().saturating_mul(1024) / 1000).max(2);
        out.cpu_weight = Some(cpu_shares_to_weight(shares));
    }
    get(&reqs.requests, "requests", "memory")?; // checked, though nothing enforces it here
    Ok(out)
}

/// `volumeMounts`, then the kubelet's /etc files where the container mounts nothing itself.
fn mounts(
    c: &Container,
    field: &str,
    volumes: &BTreeMap<String, PodVolume>,
    files: &[PodFile],
    readonly_rootfs: bool,
    privileged: bool,
) -> Result<Vec<BindMount>, PodSpecError> {
    let mut out = Vec::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let at = |rest: &str| format!("{field}.volumeMounts[{i}].{rest}");
        let volume = volumes.get(&m.name).ok_or_else(|| {
            PodSpecError::new(
                at("name"),
                format!("no volume {:?} in spec.volumes", m.name),
            )
        })?;
        if m.sub_path.as_deref().is_some_and(|s| !s.is_empty())
            || m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty())
        {
            return Err(PodSpecError::new(at("subPath"), "not supported yet"));
        }
        let destination = PathBuf::from(&m.mount_path);
        if !destination.is_absolute() {
            return Err(PodSpecError::new(
                at("mountPath"),
                "must be an absolute path",
            ));
        }
        if out.iter().any(|b: &BindMount| b.destination == destination) {
            return Err(PodSpecError::new(
                at("mountPath"),
                format!("{} is mounted twice", m.mount_path),
            ));
        }
        let propagation = match m.mount_propagation.as_deref() {
            None | Some("") | Some("None") => Propagation::Private,
            Some("HostToContainer") => Propagation::HostToContainer,
            Some("Bidirectional") if privileged => Propagation::Bidirectional,
            Some("Bidirectional") => {
                return Err(PodSpecError::new(
                    at("mountPropagation"),
                    "Bidirectional needs a privileged container",
                ));
            }
            Some(other) => {
                return Err(PodSpecError::new(
                    at("mountPropagation"),
                    format!("unknown value {other:?}"),
                ));
            }
        };
        out.push(BindMount {
            source: volume.source.clone(),
            destination,
            readonly: m.read_only.unwrap_or(false) || volume.readonly,
            propagation,
        });
    }
    let taken: Vec<PathBuf> = out.iter().map(|b| b.destination.clone()).collect();
    out.extend(etc_mounts(files, &taken, readonly_rootfs));
    Ok(out)
}

/// `seccompProfile` of the container, else the pod's; without one, the runtime's default
/// filter (none for a privileged container).
fn seccomp(
    sc: &SecurityContext,
    psc: &PodSecurityContext,
    privileged: bool,
    field: &str,
) -> Result<Seccomp, PodSpecError> {
    let (profile, at) = match (&sc.seccomp_profile, &psc.seccomp_profile) {
        (Some(p), _) => (
            Some(p),
            format!("{field}.securityContext.seccompProfile.type"),
        ),
        (None, p) => (
            p.as_ref(),
            "spec.securityContext.seccompProfile.type".to_string(),
        ),
    };
    match profile.map(|p| p.type_.as_str()) {
        None if privileged => Ok(Seccomp::Unconfined),
        None | Some("RuntimeDefault") => Ok(Seccomp::RuntimeDefault),
        Some("Unconfined") => Ok(Seccomp::Unconfined),
        Some("Localhost") => Err(PodSpecError::new(
            at,
            "Localhost profiles are not supported yet",
        )),
        Some(other) => Err(PodSpecError::new(at, format!("unknown type {other:?}"))),
    }
}

/// `SIGTERM`, `TERM` or `15`.
fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let table = [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("TERM", libc::SIGTERM),
        ("WINCH", libc::SIGWINCH),
        ("PWR", libc::SIGPWR),
    ];
    table.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
