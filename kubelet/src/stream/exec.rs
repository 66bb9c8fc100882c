//! `kubectl exec` on the node: runs the command through `LocalPods::exec` (the runtime's exec
//! helper) and streams it — stdin from channel 0 (with half-close), stdout and stderr to 1
//! and 2, or, with a tty, the pty master both ways (output on 1) and resizes. Every copy waits
//! for the other side (bounded buffers), so `exec -i … cat` of any size runs in constant
//! memory. The exit code ends the session; the control plane ending the call kills the
//! process (the exec handle is dropped) before this returns.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use futures::Stream;
use skiff_api::node::{ExecOffer, StreamFrame};
use skiff_runtime::container::{ContainerError, ExecProcess, ExecSpec, resize_tty};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::Target;
use super::frames::{CHUNK, End, Gone, Inbound, Input, Outbound, STDERR, STDIN, STDOUT};
use crate::local::LocalError;

/// After the command has ended, how long output still held open (by a process it left in
/// the background) is waited for.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Serves one exec; `Err(Gone)` when the user left first (the process is then killed).
pub async fn serve<S>(
    target: &Target,
    offer: &ExecOffer,
    inbound: &mut Inbound<S>,
    out: &Outbound,
) -> Result<End, Gone>
where
    S: Stream<Item = StreamFrame> + Unpin,
{
    let spec = ExecSpec {
        args: offer.command.clone(),
        env: Vec::new(),
        tty: offer.tty,
    };
    if spec.args.is_empty() {
        return Ok(End::Error("exec needs a command".into()));
    }
    let piped = |wanted: bool| {
        if wanted && !offer.tty {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    let stdio = [piped(offer.stdin), piped(offer.stdout), piped(offer.stderr)];
    let (pods, id) = (target.pod.pods.clone(), target.container.id.clone());
    let started = tokio::task::spawn_blocking(move || pods.exec(&id, &spec, stdio)).await;
    let mut process = match started {
        Ok(Ok(process)) => process,
        Ok(Err(e)) => return Ok(End::Error(start_error(target, &e))),
        Err(e) => return Ok(End::Error(format!("exec: {e}"))),
    };
    match Streams::of(&mut process, offer) {
        Ok(streams) => streams.run(&mut process, inbound, out).await,
        Err(e) => Ok(End::Error(format!("exec: {e}"))),
    }
}

/// What the user reads when the command could not run.
fn start_error(target: &Target, e: &LocalError) -> String {
    let c = &target.container.name;
    match e {
        LocalError::Container { source, .. } => match source.as_ref() {
            ContainerError::ExecFailed { message, .. } => {
                format!("failed to exec in container {c:?}: {message}")
            }
            ContainerError::State { .. } | ContainerError::NotFound(_) => format!(
                "container {c:?} in pod {:?} is not running",
                target.pod.name
            ),
            other => format!("exec in container {c:?}: {other}"),
        },
        other => format!("exec in container {c:?}: {other}"),
    }
}

/// The process's streams as async ends.
struct Streams {
    stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    tty: Option<OwnedFd>,
    exited: AsyncFd<OwnedFd>,
}

impl Streams {
    fn of(process: &mut ExecProcess, offer: &ExecOffer) -> std::io::Result<Streams> {
        let exited = skiff_runtime::fdio::register(process.pidfd()?)?;
        if let Some(master) = process.take_tty() {
            rustix::io::ioctl_fionbio(&master, true)?;
            let reader = pipe::Receiver::from_owned_fd_unchecked(master.try_clone()?)?;
            let writer = pipe::Sender::from_owned_fd_unchecked(master.try_clone()?)?;
            return Ok(Streams {
                stdin: offer.stdin.then(|| Box::new(writer) as _),
                stdout: Some(Box::new(reader)),
                stderr: None,
                tty: Some(master),
                exited,
            });
        }
        let reader =
            |fd: Option<OwnedFd>| -> std::io::Result<Option<Box<dyn AsyncRead + Send + Unpin>>> {
                fd.map(|fd| Ok(Box::new(pipe::Receiver::from_owned_fd(fd)?) as _))
                    .transpose()
            };
        Ok(Streams {
            stdin: process
                .take_stdin()
                .map(|fd| pipe::Sender::from_owned_fd(fd.into()))
                .transpose()?
                .map(|s| Box::new(s) as _),
            stdout: reader(process.take_stdout().map(Into::into))?,
            stderr: reader(process.take_stderr().map(Into::into))?,
            tty: None,
            exited,
        })
    }

    async fn run<S>(
        self,
        process: &mut ExecProcess,
        inbound: &mut Inbound<S>,
        out: &Outbound,
    ) -> Result<End, Gone>
    where
        S: Stream<Item = StreamFrame> + Unpin,
    {
        let Streams {
            stdin,
            stdout,
            stderr,
            tty,
            exited,
        } = self;
        let outputs = async {
            let (a, b) = tokio::join!(pump(stdout, STDOUT, out), pump(stderr, STDERR, out));
            a.and(b)
        };
        let input = feed(inbound, stdin, tty.as_ref());
        tokio::pin!(outputs, input);
        let mut code = None;
        let mut drained = false;
        let mut deadline = None;
        while code.is_none() || !drained {
            tokio::select! {
                gone = &mut input => return Err(gone),
                done = &mut outputs, if !drained => {
                    done?;
                    drained = true;
                }
                ready = exited.readable(), if code.is_none() => {
                    if let Ok(mut guard) = ready {
                        guard.clear_ready();
                    }
                    code = process.try_wait().unwrap_or(Some(126));
                    if code.is_some() {
                        deadline = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                    }
                }
                () = sleep_until(deadline), if code.is_some() && !drained => break,
            }
        }
        Ok(End::Code(code.unwrap_or(126)))
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Copies one output of the process to `channel` until its end. A pty reports its end as
/// EIO once the process (the last holder of the slave) is gone.
async fn pump(
    source: Option<Box<dyn AsyncRead + Send + Unpin>>,
    channel: u32,
    out: &Outbound,
) -> Result<(), Gone> {
    let Some(mut source) = source else {
        return Ok(());
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        match source.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => out.data(channel, &buf[..n]).await?,
        }
    }
}

/// Applies the user's input until the call ends (which is the only way this returns).
async fn feed<S>(
    inbound: &mut Inbound<S>,
    mut stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    tty: Option<&OwnedFd>,
) -> Gone
where
    S: Stream<Item = StreamFrame> + Unpin,
{
    loop {
        let input = match inbound.next().await {
            Ok(input) => input,
            Err(gone) => return gone,
        };
        match input {
            Input::Data(STDIN, data) => {
                if let Some(w) = stdin.as_mut()
                    && w.write_all(&data).await.is_err()
                {
                    // The process closed its stdin: later input has nowhere to go.
                    stdin = None;
                }
            }
            Input::Close(STDIN) => match (tty, stdin.as_mut()) {
                // A terminal's end of input is ^D, not a closed fd (the master is shared).
                (Some(_), Some(w)) => {
                    let _ = w.write_all(&[4]).await;
                }
                _ => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                }
            },
            Input::Resize { width, height } => {
                if let Some(master) = tty {
                    let _ = resize_tty(std::os::fd::AsFd::as_fd(master), width, height);
                }
            }
            Input::Data(..) | Input::Close(_) => {}
        }
    }
}
