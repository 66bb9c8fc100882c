//! Attaching the programs, restart-safe: every attachment is a BPF link pinned under
//! `PIN_DIR/links/`, next to the program it runs (`PIN_DIR/progs/`). On start, a pinned link
//! that already runs this build's program (same tag) is kept as it is; otherwise the new
//! program takes its place without a gap (tc: the TCX link is updated in place; cgroup: the
//! new link is attached next to the old one and its pin renamed over the old pin, which
//! detaches the old one). Pins of attachments no longer configured are removed.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::programs::links::{CgroupAttachMode, FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLink;
use aya::programs::{CgroupSockAddr, ProgramInfo, SchedClassifier, TcAttachType};
use skiff_ebpf::programs;

use super::DataplaneError;

/// Where a program is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A cgroup v2 directory: the socket hooks for every process below it.
    Cgroup(PathBuf),
    /// An interface's tc ingress or egress (TCX).
    Tc { interface: String, ingress: bool },
}

/// One program at one attach point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub program: &'static str,
    pub target: Target,
}

impl Attachment {
    /// The pin name under `links/`: the program and where it is attached.
    fn pin_name(&self) -> Result<String, DataplaneError> {
        Ok(match &self.target {
            Target::Cgroup(path) => {
                let ino = std::fs::metadata(path)
                    .map_err(DataplaneError::io(path, "stat"))?
                    .ino();
                format!("{}@cgroup-{ino}", self.program)
            }
            Target::Tc { interface, .. } => format!("{}@tc-{interface}", self.program),
        })
    }
}

/// The attachments a configuration asks for.
pub fn wanted(cgroup: Option<&Path>, uplink: Option<&str>) -> Vec<Attachment> {
    let mut out = Vec::new();
    if let Some(cgroup) = cgroup {
        for program in [
            programs::CONNECT4,
            programs::SENDMSG4,
            programs::RECVMSG4,
            programs::GETPEERNAME4,
        ] {
            out.push(Attachment {
                program,
                target: Target::Cgroup(cgroup.to_path_buf()),
            });
        }
    }
    if let Some(interface) = uplink {
        for (program, ingress) in [(programs::TC_INGRESS, true), (programs::TC_EGRESS, false)] {
            out.push(Attachment {
                program,
                target: Target::Tc {
                    interface: interface.to_string(),
                    ingress,
                },
            });
        }
    }
    out
}

/// What happened to each attachment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AttachReport {
    /// Pinned links that already ran this build's program.
    pub kept: Vec<String>,
    /// Attached now (first start, or a different build).
    pub attached: Vec<String>,
    /// Pins of attachments no longer configured, removed.
    pub removed: Vec<String>,
}

/// Loads and attaches each wanted program unless its pinned link already runs it.
pub fn attach_all(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    wanted: &[Attachment],
) -> Result<AttachReport, DataplaneError> {
    let mut report = AttachReport::default();
    let mut names = BTreeSet::new();
    for attachment in wanted {
        let name = attachment.pin_name()?;
        if attach_one(ebpf, pin_dir, attachment, &name)? {
            report.attached.push(name.clone());
        } else {
            report.kept.push(name.clone());
        }
        names.insert(name);
    }
    let links = pin_dir.join("links");
    for entry in std::fs::read_dir(&links)
        .map_err(DataplaneError::io(&links, "readdir"))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !names.contains(&name) {
            std::fs::remove_file(entry.path())
                .map_err(DataplaneError::io(entry.path(), "unlink"))?;
            report.removed.push(name);
        }
    }
    Ok(report)
}

/// Returns true when it attached, false when the pinned link was kept.
fn attach_one(
    ebpf: &mut Ebpf,
    pin_dir: &Path,
    attachment: &Attachment,
    name: &str,
) -> Result<bool, DataplaneError> {
    let program = attachment.program;
    let link_pin = pin_dir.join("links").join(name);
    let prog_pin = pin_dir.join("progs").join(program);
    let prog = ebpf
        .program_mut(program)
        .ok_or(DataplaneError::MissingProgram { name: program })?;
    let prog_err = |what: &str| {
        let what = what.to_string();
        move |source| DataplaneError::Program {
            name: program,
            what,
            source,
        }
    };
    match &attachment.target {
        Target::Cgroup(path) => {
            let prog: &mut CgroupSockAddr = prog.try_into().map_err(prog_err("type"))?;
            if prog.fd().is_err() {
                prog.load().map_err(prog_err("load (BPF_PROG_LOAD)"))?;
            }
            let tag = prog.info().map_err(prog_err("info"))?.tag();
            if runs(&link_pin, &prog_pin, tag) {
                return Ok(false);
            }
            let cgroup = std::fs::File::open(path).map_err(DataplaneError::io(path, "open"))?;
            // A bpf_link attachment: always "multi" (next to other programs), and the kernel
            // wants no flags for it.
            let id = prog
                .attach(cgroup.as_fd(), CgroupAttachMode::Single)
                .map_err(prog_err(&format!("attach to cgroup {}", path.display())))?;
            let link: FdLink = prog
                .take_link(id)
                .map_err(prog_err("take link"))?
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| DataplaneError::Link {
                    path: link_pin.clone(),
                    source: e,
                })?;
            pin_replacing(link, &link_pin)?;
            pin_program(&prog_pin, |p| prog.pin(p))?;
        }
        Target::Tc { interface, ingress } => {
            let prog: &mut SchedClassifier = prog.try_into().map_err(prog_err("type"))?;
            if prog.fd().is_err() {
                prog.load().map_err(prog_err("load (BPF_PROG_LOAD)"))?;
            }
            let tag = prog.info().map_err(prog_err("info"))?.tag();
            if runs(&link_pin, &prog_pin, tag) {
                return Ok(false);
            }
            let kind = if *ingress {
                TcAttachType::Ingress
            } else {
                TcAttachType::Egress
            };
            let id = match PinnedLink::from_pin(&link_pin) {
                Ok(old) => {
                    // The same TCX link, now running this program: no gap.
                    let link =
                        SchedClassifierLink::try_from(FdLink::from(old)).map_err(|source| {
                            DataplaneError::Link {
                                path: link_pin.clone(),
                                source,
                            }
                        })?;
                    prog.attach_to_link(link).map_err(prog_err(&format!(
                        "replace on {interface} (BPF_LINK_UPDATE)"
                    )))?
                }
                Err(_) => prog
                    .attach(interface, kind)
                    .map_err(prog_err(&format!("attach to tc {kind:?} of {interface}")))?,
            };
            let link: FdLink = prog
                .take_link(id)
                .map_err(prog_err("take link"))?
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| DataplaneError::Link {
                    path: link_pin.clone(),
                    source: e,
                })?;
            if !link_pin.exists() {
                link.pin(&link_pin).map_err(|source| DataplaneError::Pin {
                    path: link_pin.clone(),
                    source,
                })?;
            }
            pin_program(&prog_pin, |p| prog.pin(p))?;
        }
    }
    Ok(true)
}

/// True when the link pinned at `link_pin` runs the program pinned at `prog_pin` and that
/// program has `tag`.
fn runs(link_pin: &Path, prog_pin: &Path, tag: u64) -> bool {
    let (Ok(link), Ok(pinned)) = (
        PinnedLink::from_pin(link_pin),
        ProgramInfo::from_pin(prog_pin),
    ) else {
        return false;
    };
    let link = FdLink::from(link);
    link.info()
        .is_ok_and(|info| info.program_id() == pinned.id() && pinned.tag() == tag)
}

/// Pins `link` at `path`, atomically replacing (and so detaching) a link pinned there.
fn pin_replacing(link: FdLink, path: &Path) -> Result<(), DataplaneError> {
    let tmp = tmp_pin(path);
    let _ = std::fs::remove_file(&tmp);
    link.pin(&tmp).map_err(|source| DataplaneError::Pin {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(DataplaneError::io(path, "rename"))
}

/// Pins the program a link now runs, replacing the previous build's pin.
fn pin_program(
    path: &Path,
    pin: impl FnOnce(&Path) -> Result<(), aya::pin::PinError>,
) -> Result<(), DataplaneError> {
    let tmp = tmp_pin(path);
    let _ = std::fs::remove_file(&tmp);
    pin(&tmp).map_err(|source| DataplaneError::Pin {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(DataplaneError::io(path, "rename"))
}

/// A sibling name to pin at before renaming over `path` (bpffs names may not contain '.').
fn tmp_pin(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push("_new");
    path.with_file_name(name)
}
