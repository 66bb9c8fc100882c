//! `NetError`: every way pod network plumbing can fail, naming the interface or route, the
//! network namespace and the netlink operation involved.

use std::io;

use crate::ns::NsError;

/// An error from the pod network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The kernel refused a netlink request (or the socket failed while sending it).
    #[error("{op} {target} in netns {netns}: {source}{}", kernel_says(.detail))]
    Netlink {
        /// The request, e.g. `RTM_NEWLINK veth` or `RTM_NEWROUTE`.
        op: &'static str,
        /// The interface, address or route the request was about.
        target: String,
        /// The network namespace the socket lives in (a label such as a pin path).
        netns: String,
        /// The errno the kernel answered with.
        #[source]
        source: io::Error,
        /// The kernel's extended ack message, when it sent one.
        detail: Option<String>,
    },
    /// A netlink socket could not be opened.
    #[error("open netlink socket in netns {netns}: {source}")]
    Socket {
        /// The network namespace label.
        netns: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An interface the request refers to does not exist.
    #[error("interface {name} not found in netns {netns}")]
    NoSuchLink {
        /// The interface name.
        name: String,
        /// The network namespace label.
        netns: String,
    },
    /// An argument is malformed (interface name, address family mismatch, …).
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was checked, e.g. `interface name`.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A plan step needed a pod namespace but none was given (a caller bug).
    #[error("plan step {op} needs a pod network namespace")]
    NoPodNs {
        /// The step's operation.
        op: &'static str,
    },
    /// Joining or opening a namespace failed.
    #[error(transparent)]
    Ns(#[from] NsError),
}

fn kernel_says(detail: &Option<String>) -> String {
    match detail {
        Some(d) => format!(" (kernel: {d})"),
        None => String::new(),
    }
}

impl NetError {
    /// True when the kernel answered with `errno` (or the socket failed with it).
    pub fn is_errno(&self, errno: i32) -> bool {
        match self {
            Self::Netlink { source, .. } | Self::Socket { source, .. } => {
                source.raw_os_error() == Some(errno)
            }
            Self::Ns(e) => e.is_errno(errno),
            _ => false,
        }
    }
}
