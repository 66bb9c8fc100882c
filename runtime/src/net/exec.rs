//! The executor: runs a plan's steps in order on the host and pod netlink handles,
//! resolving interface names to indices (once per plan), treating a step's tolerated errnos
//! as success, and undoing what it changed if a later step fails.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::NetError;
use super::handle::NetHandle;
use super::msg::{self, LOOPBACK_IFINDEX};
use super::plan::{Op, Side, Step};

/// The pod side of a plan: the pod netns fd (for the veth peer) and a handle opened in it.
#[derive(Debug)]
pub struct PodNs<'a> {
    /// The pod's network namespace (e.g. from `PinnedNs::open`).
    pub fd: BorrowedFd<'a>,
    /// A netlink handle opened inside that namespace.
    pub handle: &'a mut NetHandle,
}

/// Runs `steps`. On failure, the undo operations of the steps that made a change run in
/// reverse order (their own errors are ignored) and the first error is returned.
pub fn execute(
    steps: &[Step],
    host: &mut NetHandle,
    mut pod: Option<PodNs<'_>>,
) -> Result<(), NetError> {
    let mut cache: HashMap<(Side, String), u32> = HashMap::new();
    let mut undo: Vec<(Side, Op)> = Vec::new();
    for step in steps {
        match run(step, host, pod.as_mut(), &mut cache) {
            Ok(changed) => {
                if let (true, Some(u)) = (changed, &step.undo) {
                    undo.push((step.side, u.clone()));
                }
            }
            Err(e) => {
                for (side, op) in undo.into_iter().rev() {
                    let undo_step = Step {
                        side,
                        op,
                        ok_errnos: &[],
                        undo: None,
                    };
                    let _ = run(&undo_step, host, pod.as_mut(), &mut HashMap::new());
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Runs one step; `Ok(true)` when it changed something, `Ok(false)` when a tolerated errno
/// said it was already so.
fn run(
    step: &Step,
    host: &mut NetHandle,
    pod: Option<&mut PodNs<'_>>,
    cache: &mut HashMap<(Side, String), u32>,
) -> Result<bool, NetError> {
    let (handle, pod_fd) = match (step.side, pod) {
        (Side::Host, p) => (host, p.map(|p| p.fd.as_raw_fd())),
        (Side::Pod, Some(p)) => (&mut *p.handle, Some(p.fd.as_raw_fd())),
        (Side::Pod, None) => return Err(NetError::NoPodNs { op: step.op.name() }),
    };
    let (message, flags) = {
        let mut index = |name: &str| -> Result<u32, NetError> {
            if name == "lo" {
                return Ok(LOOPBACK_IFINDEX);
            }
            if let Some(i) = cache.get(&(step.side, name.to_string())) {
                return Ok(*i);
            }
            let i = handle
                .link_index(name)?
                .ok_or_else(|| NetError::NoSuchLink {
                    name: name.to_string(),
                    netns: handle.netns().to_string(),
                })?;
            cache.insert((step.side, name.to_string()), i);
            Ok(i)
        };
        msg::build(&step.op, &mut index, pod_fd)?
    };
    match handle.send(step.op.name(), || step.op.target(), message, flags) {
        Ok(_) => Ok(true),
        Err(e) if step.ok_errnos.iter().any(|n| e.is_errno(*n)) => Ok(false),
        Err(e) => Err(e),
    }
}
