//! Owned fds in tokio's reactor: pidfds (readable once a process has ended), inotify, a pty
//! master. Tokio's `AsyncFd::register` is `unsafe` because a bare `AsRawFd` may be closed
//! behind its back; an `OwnedFd` cannot be, so this one place makes it safe for the crates
//! that forbid `unsafe`.

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// Registers `fd` for readiness (readable and writable interest). Needs a tokio runtime.
pub fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `fd` is a valid, open fd that the AsyncFd owns from here on: nothing else can
    // close it or make its number refer to another file while the AsyncFd lives, and
    // OwnedFd::as_raw_fd always returns that same number.
    unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)
}
