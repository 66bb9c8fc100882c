//! The daemon's end of a container's attach socket (`STATE_DIR/attach`, served by
//! skiff-init; docs/design/013): a `SOCK_SEQPACKET` connection whose messages are one kind
//! byte and a payload — the workload's output from the moment of connecting (stdout, stderr,
//! or the tty's output as stdout), and input, resizes and the close of stdin going the other
//! way. The connection ends (end of file) when the workload has ended; init also drops a
//! client that cannot take output as fast as the workload writes it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Message kinds (the first byte), as skiff-init numbers them.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 4;
pub const CLOSE_STDIN: u8 = 255;

/// The largest payload of one message.
pub const MAX_PAYLOAD: usize = 8192;

/// Connects to the attach socket in a container's state directory (through
/// `/proc/self/fd/N/`, as it was bound). The socket is non-blocking.
pub(super) fn connect(state_dir: &Path) -> std::io::Result<OwnedFd> {
    let dir = rustix::fs::open(
        state_dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let path = format!(
        "/proc/self/fd/{}/{}",
        dir.as_raw_fd(),
        super::plan::ATTACH_SOCKET
    );
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::connect(&socket, &SocketAddrUnix::new(path.as_str())?)?;
    Ok(socket)
}

/// One attach connection, in tokio's reactor.
#[derive(Debug)]
pub struct AttachConnection {
    fd: AsyncFd<OwnedFd>,
}

/// A message from the container: its kind (`STDOUT`, `STDERR`) and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachOutput {
    pub kind: u8,
    pub data: Vec<u8>,
}

impl AttachConnection {
    /// Takes a connection made by `Containers::attach`. Needs a tokio runtime.
    pub fn new(fd: OwnedFd) -> std::io::Result<AttachConnection> {
        Ok(AttachConnection {
            fd: crate::fdio::register(fd)?,
        })
    }

    /// The next output message; `None` once the workload has ended (or init dropped us).
    pub async fn recv(&self) -> std::io::Result<Option<AttachOutput>> {
        let mut buf = vec![0u8; MAX_PAYLOAD + 1];
        loop {
            let received = self
                .fd
                .async_io(Interest::READABLE, |fd| {
                    Ok(rustix::net::recv(fd, &mut buf, RecvFlags::DONTWAIT)?)
                })
                .await;
            return match received {
                Ok((0, _)) => Ok(None),
                Ok((n, _)) => {
                    buf.truncate(n);
                    let kind = buf.remove(0);
                    Ok(Some(AttachOutput { kind, data: buf }))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(None),
                Err(e) => Err(e),
            };
        }
    }

    /// Sends `data` as messages of `kind` (split at [`MAX_PAYLOAD`]); waits while the
    /// socket is full (init reads no more while the workload does not take its input).
    pub async fn send(&self, kind: u8, data: &[u8]) -> std::io::Result<()> {
        // An empty payload is still one message (CLOSE_STDIN).
        let count = data.len().div_ceil(MAX_PAYLOAD).max(1);
        for i in 0..count {
            let chunk =
                &data[(i * MAX_PAYLOAD).min(data.len())..((i + 1) * MAX_PAYLOAD).min(data.len())];
            let mut msg = Vec::with_capacity(chunk.len() + 1);
            msg.push(kind);
            msg.extend_from_slice(chunk);
            self.fd
                .async_io(Interest::WRITABLE, |fd| {
                    Ok(rustix::net::send(
                        fd,
                        &msg,
                        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
                    )?)
                })
                .await?;
        }
        Ok(())
    }

    /// Sets the container's terminal size.
    pub async fn resize(&self, width: u16, height: u16) -> std::io::Result<()> {
        let w = width.to_le_bytes();
        let h = height.to_le_bytes();
        self.send(RESIZE, &[w[0], w[1], h[0], h[1]]).await
    }
}
