//! A pod's `spec.volumes`: where each one is on the node and how containers mount it
//! ([`PodVolume`]), and, for those the kubelet makes under the pod's directory, what they hold
//! ([`VolumePlan`]): emptyDirs (on disk or tmpfs), and the files of configMap, secret,
//! downwardAPI and projected volumes with their modes, every path checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, PodSpec, Volume, VolumeProjection,
};

use super::downward::{self, Use};
use super::objects::{Kind, ObjectSource, Objects};
use super::{HostPathCheck, HostPathType, PlanContext, PodSpecError, check_label};
use skiff_api::Quantity;

/// Kubernetes' default file mode for configMap, downwardAPI and projected volumes.
pub const DEFAULT_MODE: u32 = 0o644;
/// The default mode of a Secret's files (in secret and projected volumes): owner-read only.
pub const SECRET_DEFAULT_MODE: u32 = 0o400;
/// Longest item path, and longest name in it (Kubernetes' atomic writer).
const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 255;

/// One file of a volume: its bytes and permission bits.
#[derive(Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Only the size: the bytes may be a Secret's.
impl std::fmt::Debug for FileProjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, mode {:o}", self.data.len(), self.mode)
    }
}

/// A volume's files by relative path (`key`, `dir/key`).
pub type Payload = BTreeMap<String, FileProjection>;

/// Where a volume's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// A directory on the node's disk.
    Disk,
    /// A tmpfs mounted on the volume's directory, at most `size_bytes` big when set.
    Memory { size_bytes: Option<u64> },
}

/// A volume the kubelet makes in the pod's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePlan {
    pub name: String,
    /// `POD_DIR/volumes/NAME`: what containers bind-mount.
    pub dir: PathBuf,
    pub medium: Medium,
    /// The files to keep in it (Kubernetes' `..data` layout); `None` for an emptyDir.
    pub contents: Option<Payload>,
    /// `fsGroup`: the files' group (their modes already include group read).
    pub gid: Option<u32>,
}

/// A volume as the containers mount it.
#[derive(Debug, Clone)]
pub(crate) struct PodVolume {
    pub source: PathBuf,
    /// configMap, secret, downwardAPI and projected volumes are read-only in containers.
    pub readonly: bool,
    pub host_path: Option<HostPathCheck>,
}

/// The volumes the kubelet makes for `pod`, with their current contents. The node agent calls
/// this again to refresh them when ConfigMaps, Secrets or the pod's metadata change.
pub fn volume_plans(
    pod: &Pod,
    ctx: &PlanContext,
    objects: Option<&dyn ObjectSource>,
) -> Result<Vec<VolumePlan>, PodSpecError> {
    Ok(all(pod, ctx, objects)?.1)
}

/// Every volume's mount source and the plans of the kubelet-made ones.
pub(super) fn all(
    pod: &Pod,
    ctx: &PlanContext,
    objects: Option<&dyn ObjectSource>,
) -> Result<(BTreeMap<String, PodVolume>, Vec<VolumePlan>), PodSpecError> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| PodSpecError::new("spec", "required"))?;
    let objects = Objects::new(objects, pod);
    let gid = fs_group(spec)?;
    let mut mounts = BTreeMap::new();
    let mut plans = Vec::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let field = format!("spec.volumes[{i}]");
        check_label(&format!("{field}.name"), &v.name)?;
        let dir = ctx.pod_dir.join("volumes").join(&v.name);
        let volume = if let Some(hp) = &v.host_path {
            host_path(&field, &hp.path, hp.type_.as_deref())?
        } else {
            let (medium, contents) = managed(v, &field, pod, ctx, &objects)?;
            let readonly = contents.is_some();
            let contents = contents.map(|p| with_group(p, gid));
            plans.push(VolumePlan {
                name: v.name.clone(),
                dir: dir.clone(),
                medium,
                contents,
                gid: gid.filter(|_| readonly),
            });
            PodVolume {
                source: dir,
                readonly,
                host_path: None,
            }
        };
        if mounts.insert(v.name.clone(), volume).is_some() {
            return Err(PodSpecError::new(
                format!("{field}.name"),
                format!("duplicate volume {:?}", v.name),
            ));
        }
    }
    Ok((mounts, plans))
}

fn fs_group(spec: &PodSpec) -> Result<Option<u32>, PodSpecError> {
    let group = spec.security_context.as_ref().and_then(|s| s.fs_group);
    group
        .map(|g| {
            u32::try_from(g)
                .ok()
                .filter(|g| *g <= i32::MAX as u32)
                .ok_or_else(|| {
                    PodSpecError::new(
                        "spec.securityContext.fsGroup",
                        format!("{g} is not between 0 and 2147483647"),
                    )
                })
        })
        .transpose()
}

/// With `fsGroup`, files are the group's and group-readable, as Kubernetes makes them.
fn with_group(payload: Payload, gid: Option<u32>) -> Payload {
    if gid.is_none() {
        return payload;
    }
    payload
        .into_iter()
        .map(|(k, mut f)| {
            f.mode |= 0o440;
            (k, f)
        })
        .collect()
}

fn host_path(field: &str, path: &str, kind: Option<&str>) -> Result<PodVolume, PodSpecError> {
    let field = format!("{field}.hostPath");
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(PodSpecError::new(
            format!("{field}.path"),
            "must be an absolute path",
        ));
    }
    let kind = match kind.unwrap_or("") {
        "" => HostPathType::Unchecked,
        "DirectoryOrCreate" => HostPathType::DirectoryOrCreate,
        "Directory" => HostPathType::Directory,
        "FileOrCreate" => HostPathType::FileOrCreate,
        "File" => HostPathType::File,
        "Socket" => HostPathType::Socket,
        "CharDevice" => HostPathType::CharDevice,
        "BlockDevice" => HostPathType::BlockDevice,
        other => {
            return Err(PodSpecError::new(
                format!("{field}.type"),
                format!("unknown type {other:?}"),
            ));
        }
    };
    Ok(PodVolume {
        source: path.clone(),
        readonly: false,
        host_path: Some(HostPathCheck { field, path, kind }),
    })
}

/// The medium and files of a volume the kubelet makes.
fn managed(
    v: &Volume,
    field: &str,
    pod: &Pod,
    ctx: &PlanContext,
    objects: &Objects,
) -> Result<(Medium, Option<Payload>), PodSpecError> {
    let mut files = Files::default();
    if let Some(empty) = &v.empty_dir {
        let field = format!("{field}.emptyDir");
        let medium = match empty.medium.as_deref().unwrap_or("") {
            "" => Medium::Disk,
            "Memory" => {
                let size = empty.size_limit.as_ref().map(|q| {
                    Quantity::parse(&q.0)
                        .map(|q| q.ceil())
                        .map_err(|m| PodSpecError::new(format!("{field}.sizeLimit"), m))
                });
                Medium::Memory {
                    size_bytes: size.transpose()?.filter(|s| *s > 0),
                }
            }
            other => {
                return Err(PodSpecError::new(
                    format!("{field}.medium"),
                    format!("unsupported medium {other:?} (only \"\" and Memory)"),
                ));
            }
        };
        return Ok((medium, None));
    }
    let mut secret = false;
    if let Some(cm) = &v.config_map {
        let field = format!("{field}.configMap");
        let mode = mode(cm.default_mode, &format!("{field}.defaultMode"))?;
        let source = Source::object(Kind::ConfigMap, &cm.name, cm.optional, &cm.items);
        files.object(&source, &field, mode.unwrap_or(DEFAULT_MODE), objects)?;
    } else if let Some(s) = &v.secret {
        let field = format!("{field}.secret");
        let mode = mode(s.default_mode, &format!("{field}.defaultMode"))?;
        let name = s.secret_name.as_deref().unwrap_or("");
        let source = Source::object(Kind::Secret, name, s.optional, &s.items);
        files.object(
            &source,
            &field,
            mode.unwrap_or(SECRET_DEFAULT_MODE),
            objects,
        )?;
        secret = true;
    } else if let Some(d) = &v.downward_api {
        let field = format!("{field}.downwardAPI");
        let mode = mode(d.default_mode, &format!("{field}.defaultMode"))?;
        let items = d.items.as_deref().unwrap_or_default();
        files.downward(items, &field, mode.unwrap_or(DEFAULT_MODE), pod, ctx)?;
    } else if let Some(p) = &v.projected {
        let field = format!("{field}.projected");
        let mode = mode(p.default_mode, &format!("{field}.defaultMode"))?;
        for (i, source) in p.sources.iter().flatten().enumerate() {
            let field = format!("{field}.sources[{i}]");
            secret |= files.projection(source, &field, mode, pod, ctx, objects)?;
        }
    } else {
        let kind = volume_kind(v).unwrap_or_else(|| "source".into());
        return Err(PodSpecError::new(
            format!("{field}.{kind}"),
            "not supported (only emptyDir, hostPath, configMap, secret, downwardAPI and projected)",
        ));
    }
    files.check_prefixes(field)?;
    let medium = if secret {
        Medium::Memory { size_bytes: None }
    } else {
        Medium::Disk
    };
    Ok((medium, Some(files.payload)))
}

/// A configMap or secret reference with its items.
struct Source<'a> {
    kind: Kind,
    name: &'a str,
    optional: bool,
    items: &'a [KeyToPath],
}

impl<'a> Source<'a> {
    fn object(
        kind: Kind,
        name: &'a str,
        optional: Option<bool>,
        items: &'a Option<Vec<KeyToPath>>,
    ) -> Source<'a> {
        Source {
            kind,
            name,
            optional: optional.unwrap_or(false),
            items: items.as_deref().unwrap_or_default(),
        }
    }
}

/// A volume's files as they are collected; item paths are checked and unique.
#[derive(Default)]
struct Files {
    payload: Payload,
    /// Where each item path was set (for "used twice").
    item_fields: BTreeMap<String, String>,
}

impl Files {
    /// A file named by an item (`field` is `…items[1]`).
    fn item(&mut self, field: &str, path: &str, file: FileProjection) -> Result<(), PodSpecError> {
        check_file_path(path).map_err(|m| PodSpecError::new(format!("{field}.path"), m))?;
        if let Some(first) = self.item_fields.insert(path.into(), field.into()) {
            return Err(PodSpecError::new(
                format!("{field}.path"),
                format!("{path:?} is also the path of {first}"),
            ));
        }
        self.payload.insert(path.into(), file);
        Ok(())
    }

    /// All of a ConfigMap's or Secret's keys, or its `items`.
    fn object(
        &mut self,
        source: &Source,
        field: &str,
        default_mode: u32,
        objects: &Objects,
    ) -> Result<(), PodSpecError> {
        let entries = objects.get(source.kind, field, source.name, source.optional)?;
        let Some(entries) = entries else {
            return Ok(());
        };
        if source.items.is_empty() {
            for (key, data) in entries.text.iter().chain(&entries.binary) {
                check_file_path(key)
                    .map_err(|m| PodSpecError::config(field, format!("key {key:?}: {m}")))?;
                let file = FileProjection {
                    data: data.clone(),
                    mode: default_mode,
                };
                self.payload.insert(key.clone(), file);
            }
            return Ok(());
        }
        for (i, item) in source.items.iter().enumerate() {
            let at = format!("{field}.items[{i}]");
            let mode = mode(item.mode, &format!("{at}.mode"))?.unwrap_or(default_mode);
            let Some(data) = entries.get(&item.key) else {
                if source.optional {
                    continue;
                }
                let what = match source.kind {
                    Kind::ConfigMap => "configmap references non-existent config key",
                    Kind::Secret => "references non-existent secret key",
                };
                return Err(PodSpecError::config(
                    format!("{at}.key"),
                    format!("{what}: {}", item.key),
                ));
            };
            let file = FileProjection {
                data: data.clone(),
                mode,
            };
            self.item(&at, &item.path, file)?;
        }
        Ok(())
    }

    /// `downwardAPI` items.
    fn downward(
        &mut self,
        items: &[DownwardAPIVolumeFile],
        field: &str,
        default_mode: u32,
        pod: &Pod,
        ctx: &PlanContext,
    ) -> Result<(), PodSpecError> {
        for (i, item) in items.iter().enumerate() {
            let at = format!("{field}.items[{i}]");
            let mode = mode(item.mode, &format!("{at}.mode"))?.unwrap_or(default_mode);
            let value = match (&item.field_ref, &item.resource_field_ref) {
                (Some(sel), None) => {
                    downward::field_ref(pod, ctx, sel, &format!("{at}.fieldRef"), Use::Volume)?
                }
                (None, Some(sel)) => {
                    let field = format!("{at}.resourceFieldRef");
                    let name = sel.container_name.as_deref().unwrap_or("");
                    let containers = pod.spec.iter().flat_map(|s| &s.containers);
                    let c = containers.into_iter().find(|c| c.name == name);
                    let c = c.ok_or_else(|| {
                        let message = if name.is_empty() {
                            "required".to_string()
                        } else {
                            format!("no container {name:?} in this pod")
                        };
                        PodSpecError::new(format!("{field}.containerName"), message)
                    })?;
                    downward::resource_field_ref(c, ctx, sel, &field)?
                }
                _ => {
                    return Err(PodSpecError::new(
                        at,
                        "exactly one of fieldRef and resourceFieldRef",
                    ));
                }
            };
            let file = FileProjection {
                data: value.into_bytes(),
                mode,
            };
            self.item(&at, &item.path, file)?;
        }
        Ok(())
    }

    /// One source of a projected volume; true when it is a Secret.
    fn projection(
        &mut self,
        p: &VolumeProjection,
        field: &str,
        default_mode: Option<u32>,
        pod: &Pod,
        ctx: &PlanContext,
        objects: &Objects,
    ) -> Result<bool, PodSpecError> {
        if let Some(cm) = &p.config_map {
            let source = Source::object(Kind::ConfigMap, &cm.name, cm.optional, &cm.items);
            let mode = default_mode.unwrap_or(DEFAULT_MODE);
            self.object(&source, &format!("{field}.configMap"), mode, objects)?;
            Ok(false)
        } else if let Some(s) = &p.secret {
            let source = Source::object(Kind::Secret, &s.name, s.optional, &s.items);
            let mode = default_mode.unwrap_or(SECRET_DEFAULT_MODE);
            self.object(&source, &format!("{field}.secret"), mode, objects)?;
            Ok(true)
        } else if let Some(d) = &p.downward_api {
            let items = d.items.as_deref().unwrap_or_default();
            let mode = default_mode.unwrap_or(DEFAULT_MODE);
            self.downward(items, &format!("{field}.downwardAPI"), mode, pod, ctx)?;
            Ok(false)
        } else if p.service_account_token.is_some() {
            Err(PodSpecError::new(
                format!("{field}.serviceAccountToken"),
                "not supported yet",
            ))
        } else if p.cluster_trust_bundle.is_some() {
            Err(PodSpecError::new(
                format!("{field}.clusterTrustBundle"),
                "not supported yet",
            ))
        } else {
            Err(PodSpecError::new(field, "no source"))
        }
    }

    /// A file cannot also be a directory (`a` and `a/b`).
    fn check_prefixes(&self, field: &str) -> Result<(), PodSpecError> {
        for path in self.payload.keys() {
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
                let name = dir.to_string_lossy();
                if self.payload.contains_key(name.as_ref()) {
                    return Err(PodSpecError::new(
                        field,
                        format!("{name:?} is both a file and the directory of {path:?}"),
                    ));
                }
                parent = dir.parent();
            }
        }
        Ok(())
    }
}

/// A file mode: 0 to 0777.
fn mode(mode: Option<i32>, field: &str) -> Result<Option<u32>, PodSpecError> {
    mode.map(|m| {
        u32::try_from(m)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                PodSpecError::new(field, format!("{m} is not between 0 and 0777 (octal)"))
            })
    })
    .transpose()
}

/// A path inside a volume, as Kubernetes' atomic writer accepts it: relative, without `..`
/// parts, not starting with `..` (the writer's own names), and made of non-empty names.
pub fn check_file_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("required".into());
    }
    if path.len() > MAX_PATH {
        return Err(format!("must be at most {MAX_PATH} characters"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if path.starts_with('/') || parts.contains(&"..") || parts[0].starts_with("..") {
        return Err("must be a relative path without '..'".into());
    }
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || p.contains('\0'))
    {
        return Err("must be a relative path of file names (no '.' or empty parts)".into());
    }
    if parts.iter().any(|p| p.len() > MAX_NAME) {
        return Err(format!("names in it must be at most {MAX_NAME} characters"));
    }
    Ok(())
}

/// The source field a volume uses (`nfs`, `csi`, …), for the error.
fn volume_kind(v: &Volume) -> Option<String> {
    let value = serde_json::to_value(v).ok()?;
    value.as_object()?.keys().find(|k| *k != "name").cloned()
}
