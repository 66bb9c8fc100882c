//! A Pod manifest becomes a plan of runtime calls, as data: the sandbox (hostname, host or pod
//! network), the files the kubelet writes for the pod (`/etc/hosts`, `/etc/hostname`,
//! `/etc/resolv.conf`), its volumes (with the files of configMap, secret, downwardAPI and
//! projected volumes), and one `ContainerSpec` + cgroup `Resources` per container. Pure:
//! images come through [`ImageSource`], ConfigMaps and Secrets through [`ObjectSource`] and
//! everything about the node through [`PlanContext`], so the whole translation is unit-tested
//! (see `tests*.rs`). A manifest this node cannot honour is refused with a [`PodSpecError`]
//! naming the field.

mod container;
mod downward;
mod env;
mod objects;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_env;
#[cfg(test)]
mod tests_volumes;
mod volumes;

pub use objects::ObjectSource;
pub use volumes::{
    DEFAULT_MODE, FileProjection, Medium, Payload, SECRET_DEFAULT_MODE, VolumePlan,
    check_file_path, volume_plans,
};

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use skiff_runtime::cgroup::Resources;
use skiff_runtime::container::{BindMount, ContainerSpec, Propagation};
use skiff_runtime::image::manifest::ProcessConfig;

/// Why a manifest cannot run here: the field (`spec.containers[0].image`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PodSpecError {
    pub field: String,
    /// For a [`SpecErrorKind::Config`] error, Kubernetes' own wording (`configmap "x" not
    /// found`, `couldn't find key k in ConfigMap default/x`): the container status message.
    pub message: String,
    pub kind: SpecErrorKind,
}

/// Whether an error is the manifest's, or about objects it refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecErrorKind {
    /// The manifest asks for something wrong, or something this node does not support.
    Invalid,
    /// A ConfigMap, Secret or key it names is missing, or could not be looked up: may resolve
    /// by itself later (Kubernetes' `CreateContainerConfigError`).
    Config,
}

impl PodSpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> PodSpecError {
        PodSpecError {
            field: field.into(),
            message: message.into(),
            kind: SpecErrorKind::Invalid,
        }
    }

    /// A missing (or unreadable) ConfigMap, Secret or key.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> PodSpecError {
        PodSpecError {
            kind: SpecErrorKind::Config,
            ..PodSpecError::new(field, message)
        }
    }

    /// The container status reason Kubernetes shows for this error.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            SpecErrorKind::Invalid => "InvalidPodSpec",
            SpecErrorKind::Config => "CreateContainerConfigError",
        }
    }
}

/// An image as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// Unpacked layers, lowest first.
    pub layers: Vec<PathBuf>,
    pub config: ProcessConfig,
    /// The image's `/etc/passwd` and `/etc/group`, to resolve a named `USER`.
    pub etc_passwd: Option<String>,
    pub etc_group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageLookupError {
    #[error("image {0} is not in the local store (run `skiff image pull {0}` first)")]
    NotFound(String),
    #[error("{0}")]
    Other(String),
}

/// Where images come from (the node's image store; a table in tests).
pub trait ImageSource {
    fn lookup(&self, reference: &str) -> Result<ImageInfo, ImageLookupError>;
}

/// What the node contributes to a pod's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanContext {
    /// The pod's own directory (files, volumes, logs).
    pub pod_dir: PathBuf,
    /// The pod's address; `None` for a host-network pod.
    pub ip: Option<IpAddr>,
    pub node_hostname: String,
    /// The node's `/etc/hosts` (what a host-network pod sees) and `/etc/resolv.conf`.
    pub host_hosts: Option<String>,
    pub host_resolv_conf: Option<String>,
    /// The node's addresses, primary first (`status.hostIP`, `status.hostIPs`; also the pod's
    /// for a host-network pod).
    pub host_ips: Vec<IpAddr>,
    /// What the node offers pods: a `resourceFieldRef` to a limit the container does not set
    /// reads this, as in Kubernetes.
    pub allocatable: Allocatable,
}

/// A node's allocatable resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
}

/// A file the kubelet writes into the pod's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFile {
    pub path: PathBuf,
    pub contents: String,
}

/// `hostPath.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    Unchecked,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

/// What is at a host path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundKind {
    Missing,
    Directory,
    File,
    Socket,
    CharDevice,
    BlockDevice,
    Other,
}

/// What the executor has to do about a host path before the pod starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathAction {
    Nothing,
    CreateDirectory,
    CreateFile,
}

/// A `hostPath` volume to check (and maybe create) before the containers start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPathCheck {
    /// `spec.volumes[N].hostPath`, for the error.
    pub field: String,
    pub path: PathBuf,
    pub kind: HostPathType,
}

impl HostPathCheck {
    /// Whether what is there satisfies `type`, and what to create if it does not exist.
    pub fn action(&self, found: FoundKind) -> Result<HostPathAction, PodSpecError> {
        use {FoundKind as F, HostPathType as T};
        let ok = match (self.kind, found) {
            (T::Unchecked, _) => return Ok(HostPathAction::Nothing),
            (T::DirectoryOrCreate, F::Missing) => return Ok(HostPathAction::CreateDirectory),
            (T::FileOrCreate, F::Missing) => return Ok(HostPathAction::CreateFile),
            (T::DirectoryOrCreate | T::Directory, F::Directory) => true,
            (T::FileOrCreate | T::File, F::File) => true,
            (T::Socket, F::Socket) | (T::CharDevice, F::CharDevice) => true,
            (T::BlockDevice, F::BlockDevice) => true,
            _ => false,
        };
        if ok {
            return Ok(HostPathAction::Nothing);
        }
        let found = match found {
            F::Missing => "nothing",
            F::Directory => "a directory",
            F::File => "a file",
            F::Socket => "a socket",
            F::CharDevice => "a character device",
            F::BlockDevice => "a block device",
            F::Other => "something else",
        };
        Err(PodSpecError::new(
            &self.field,
            format!(
                "type {:?} but {} is {found}",
                self.kind,
                self.path.display()
            ),
        ))
    }
}

/// One container, ready for the runtime (the sandbox fills in `join` and `cgroup_procs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    pub spec: ContainerSpec,
    pub resources: Resources,
}

/// Everything needed to run one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    pub name: String,
    pub hostname: String,
    pub host_network: bool,
    /// `terminationGracePeriodSeconds` (default 30 s).
    pub grace: Duration,
    pub files: Vec<PodFile>,
    /// `emptyDir` volumes to create on disk (also in `volumes`).
    pub dirs: Vec<PathBuf>,
    /// Every volume under the pod's directory: emptyDirs (on disk or tmpfs) and the files of
    /// configMap, secret, downwardAPI and projected volumes (`crate::volume` applies them).
    pub volumes: Vec<VolumePlan>,
    pub host_paths: Vec<HostPathCheck>,
    /// `spec.initContainers`, run one after another to completion before `containers`.
    pub init_containers: Vec<ContainerPlan>,
    pub containers: Vec<ContainerPlan>,
}

/// Parses a Pod from YAML (or JSON); errors name the field (`spec.containers[0]: missing
/// field `name``) and are one line.
pub fn parse(text: &str) -> Result<Pod, PodSpecError> {
    // k8s-openapi checks these itself, but without saying which field was wrong.
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct TypeMeta {
        api_version: Option<String>,
        kind: Option<String>,
    }
    if let Ok(meta) = serde_norway::from_str::<TypeMeta>(text) {
        for (field, value, want) in [
            ("apiVersion", meta.api_version, "v1"),
            ("kind", meta.kind, "Pod"),
        ] {
            match value.as_deref() {
                Some(v) if v == want => {}
                None | Some("") => return Err(PodSpecError::new(field, "required")),
                Some(other) => {
                    return Err(PodSpecError::new(
                        field,
                        format!("{other:?} is not {want:?}"),
                    ));
                }
            }
        }
    }
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, Pod>(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "manifest".to_string()
        } else {
            path
        };
        let message = e.inner().to_string().replace('\n', " ");
        PodSpecError::new(field, message)
    })
}

/// The pod's name, checked: it names directories, cgroups and containers.
pub fn pod_name(pod: &Pod) -> Result<String, PodSpecError> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    if name.is_empty() {
        return Err(PodSpecError::new("metadata.name", "required"));
    }
    check_label("metadata.name", name)?;
    Ok(name.to_string())
}

/// Whether the pod shares the node's network namespace.
pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// Translates a parsed Pod into its plan. Without `objects` (pods run from a manifest), env
/// and volumes that name ConfigMaps or Secrets are refused.
pub fn plan(
    pod: &Pod,
    ctx: &PlanContext,
    images: &dyn ImageSource,
    objects: Option<&dyn ObjectSource>,
) -> Result<PodPlan, PodSpecError> {
    let name = pod_name(pod)?;
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| PodSpecError::new("spec", "required"))?;
    refuse_unsupported(spec)?;
    let host_network = spec.host_network.unwrap_or(false);
    let hostname = match (host_network, &spec.hostname) {
        (true, _) => ctx.node_hostname.clone(),
        (false, Some(h)) => {
            check_label("spec.hostname", h)?;
            h.clone()
        }
        (false, None) => name.clone(),
    };
    let etc = ctx.pod_dir.join("etc");
    let mut files = vec![
        PodFile {
            path: etc.join("hosts"),
            contents: hosts_file(spec, ctx, &hostname),
        },
        PodFile {
            path: etc.join("hostname"),
            contents: format!("{hostname}\n"),
        },
    ];
    if let Some(resolv) = &ctx.host_resolv_conf {
        files.push(PodFile {
            path: etc.join("resolv.conf"),
            contents: resolv.clone(),
        });
    }
    let (volumes, managed) = volumes::all(pod, ctx, objects)?;
    let sources = container::Sources {
        images,
        objects: objects::Objects::new(objects, pod),
    };
    // Init containers first: names are unique across both lists.
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let all: Vec<(String, &k8s_openapi::api::core::v1::Container)> = inits
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("spec.initContainers[{i}]"), c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("spec.containers[{i}]"), c)),
        )
        .collect();
    let names: Vec<&str> = all.iter().map(|(_, c)| c.name.as_str()).collect();
    let mut planned = all
        .iter()
        .enumerate()
        .map(|(n, (field, c))| {
            let slot = container::Slot {
                field: field.clone(),
                earlier: &names[..n],
            };
            container::plan(slot, c, pod, &hostname, ctx, &volumes, &files, &sources)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let containers = planned.split_off(inits.len());
    let init_containers = planned;
    let grace = match spec.termination_grace_period_seconds {
        None => 30,
        Some(s) if s >= 0 => s as u64,
        Some(_) => {
            return Err(PodSpecError::new(
                "spec.terminationGracePeriodSeconds",
                "must not be negative",
            ));
        }
    };
    Ok(PodPlan {
        name,
        hostname,
        host_network,
        grace: Duration::from_secs(grace),
        files,
        dirs: managed
            .iter()
            .filter(|v| v.medium == Medium::Disk && v.contents.is_none())
            .map(|v| v.dir.clone())
            .collect(),
        volumes: managed,
        host_paths: volumes.into_values().filter_map(|v| v.host_path).collect(),
        init_containers,
        containers,
    })
}

fn refuse_unsupported(spec: &PodSpec) -> Result<(), PodSpecError> {
    if spec.containers.is_empty() {
        return Err(PodSpecError::new("spec.containers", "required"));
    }
    let flags = [
        ("spec.hostPID", spec.host_pid),
        ("spec.hostIPC", spec.host_ipc),
        ("spec.shareProcessNamespace", spec.share_process_namespace),
    ];
    if let Some((field, _)) = flags.iter().find(|(_, v)| *v == Some(true)) {
        return Err(PodSpecError::new(*field, "not supported yet"));
    }
    // Sidecars (init containers with restartPolicy Always) are not run yet.
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        if c.restart_policy.is_some() {
            return Err(PodSpecError::new(
                format!("spec.initContainers[{i}].restartPolicy"),
                "sidecar containers are not supported yet",
            ));
        }
        for (probe, set) in [
            ("livenessProbe", c.liveness_probe.is_some()),
            ("readinessProbe", c.readiness_probe.is_some()),
            ("startupProbe", c.startup_probe.is_some()),
            ("lifecycle", c.lifecycle.is_some()),
        ] {
            if set {
                return Err(PodSpecError::new(
                    format!("spec.initContainers[{i}].{probe}"),
                    "must not be set for init containers",
                ));
            }
        }
    }
    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|c| !c.is_empty())
    {
        return Err(PodSpecError::new(
            "spec.ephemeralContainers",
            "not supported yet",
        ));
    }
    Ok(())
}

/// Kubernetes' managed hosts file: localhost entries and the pod's own name, or the node's
/// file for a host-network pod; then `hostAliases`.
fn hosts_file(spec: &PodSpec, ctx: &PlanContext, hostname: &str) -> String {
    let mut out = match (&ctx.ip, &ctx.host_hosts) {
        (None, Some(host)) => host.clone(),
        (ip, _) => {
            let mut s = String::from(
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n\
                 ::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
                 fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
            );
            if let Some(ip) = ip {
                s.push_str(&format!("{ip}\t{hostname}\n"));
            }
            s
        }
    };
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for alias in spec.host_aliases.iter().flatten() {
        let names = alias.hostnames.clone().unwrap_or_default().join("\t");
        if !names.is_empty() {
            out.push_str(&format!(
                "# Entries added by HostAliases.\n{}\t{names}\n",
                alias.ip
            ));
        }
    }
    out
}

/// A DNS-1123 label: what names pods, containers and volumes.
pub(crate) fn check_label(field: &str, name: &str) -> Result<(), PodSpecError> {
    if name.is_empty() {
        return Err(PodSpecError::new(field, "required"));
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(PodSpecError::new(
            field,
            format!("{name:?} must be lowercase letters, digits and '-' (at most 63)"),
        ))
    }
}

/// The kubelet-written files a container gets, unless it mounts something there itself.
pub(crate) fn etc_mounts(files: &[PodFile], taken: &[PathBuf], readonly: bool) -> Vec<BindMount> {
    files
        .iter()
        .filter_map(|f| {
            let destination = Path::new("/etc").join(f.path.file_name()?);
            (!taken.contains(&destination)).then(|| BindMount {
                source: f.path.clone(),
                destination,
                readonly,
                propagation: Propagation::Private,
            })
        })
        .collect()
}
