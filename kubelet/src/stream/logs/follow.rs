//! Reading one container instance's log files (`NAME.1`, then `NAME`) from a position, and —
//! when following — as they grow: woken by inotify on the log directory (no polling), across
//! skiff-init's rotation (it renames `NAME` to `NAME.1` and opens a new `NAME`): the open file
//! is read to its end and the new one opened when the name points at another inode. Following
//! ends when the container's process ends (`exited`), after a last read.

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;

use super::format::{Formatter, Position};
use crate::stream::frames::{Gone, Outbound, STDOUT};

/// Resolves when the container's process has ended.
pub type Exited = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How much of a file is read at once (and so the most one output batch holds, formatted).
const READ: usize = 64 * 1024;
/// A record longer than this without a newline is taken as it is (a damaged file).
const MAX_RECORD: usize = 1024 * 1024;

/// Why reading stopped early.
#[derive(Debug)]
pub enum CopyError {
    Gone,
    Io(std::io::Error),
}

impl From<Gone> for CopyError {
    fn from(_: Gone) -> Self {
        CopyError::Gone
    }
}

impl From<std::io::Error> for CopyError {
    fn from(e: std::io::Error) -> Self {
        CopyError::Io(e)
    }
}

/// An open log file and the incomplete record at its end.
struct Reader {
    file: std::fs::File,
    inode: u64,
    carry: Vec<u8>,
}

impl Reader {
    fn open(path: &Path, offset: u64) -> std::io::Result<Reader> {
        let mut file = std::fs::File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let inode = file.metadata()?.ino();
        Ok(Reader {
            file,
            inode,
            carry: Vec::new(),
        })
    }

    /// Reads one chunk and formats the complete records in it into `out`; the bytes read.
    fn read_chunk(
        &mut self,
        buf: &mut [u8],
        fmt: &mut Formatter,
        out: &mut Vec<u8>,
    ) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.carry.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(end) = self.carry[start..].iter().position(|&c| c == b'\n') {
            fmt.push(&self.carry[start..start + end + 1], out);
            start += end + 1;
        }
        self.carry.drain(..start);
        if self.carry.len() > MAX_RECORD {
            self.flush(fmt, out);
        }
        Ok(n)
    }

    /// Formats what is left without a newline (the file's last, unterminated record).
    fn flush(&mut self, fmt: &mut Formatter, out: &mut Vec<u8>) {
        if !self.carry.is_empty() {
            fmt.push(&self.carry, out);
            self.carry.clear();
        }
    }

    /// Whether `path` now names another file (rotated away, or gone).
    fn replaced(&self, path: &Path) -> bool {
        std::fs::metadata(path).map_or(true, |m| m.ino() != self.inode)
    }
}

/// Reads everything `reader` has now, sending it as it goes.
async fn drain(reader: &mut Reader, fmt: &mut Formatter, out: &Outbound) -> Result<(), CopyError> {
    let mut buf = vec![0u8; READ];
    let mut batch = Vec::with_capacity(READ);
    loop {
        let n = reader.read_chunk(&mut buf, fmt, &mut batch)?;
        if !batch.is_empty() {
            out.data(STDOUT, &batch).await?;
            batch.clear();
        }
        if n == 0 || fmt.done() {
            return Ok(());
        }
    }
}

/// Sends the log from `start` (see the module docs). `files` are an instance's files, oldest
/// first; `follow` keeps reading until the container ends.
pub async fn copy(
    files: &[PathBuf; 2],
    start: Position,
    follow: Option<Exited>,
    fmt: &mut Formatter,
    out: &Outbound,
) -> Result<(), CopyError> {
    // Watch first, read second: nothing written in between is missed.
    let watch = match (&follow, files[1].parent()) {
        (Some(_), Some(dir)) => Some(Watch::new(dir)?),
        _ => None,
    };
    if start.file == 0
        && let Ok(mut rotated) = Reader::open(&files[0], start.offset)
    {
        drain(&mut rotated, fmt, out).await?;
        finish(&mut rotated, fmt, out).await?;
    }
    let offset = if start.file == 1 { start.offset } else { 0 };
    let mut current = Reader::open(&files[1], offset).ok();
    if let Some(r) = current.as_mut() {
        drain(r, fmt, out).await?;
    }
    let (Some(mut exited), Some(mut watch)) = (follow, watch) else {
        if let Some(r) = current.as_mut() {
            finish(r, fmt, out).await?;
        }
        return Ok(());
    };
    loop {
        if fmt.done() {
            return Ok(());
        }
        let ended = tokio::select! {
            changed = watch.changed() => { changed?; false }
            () = &mut exited => true,
        };
        if let Some(r) = current.as_mut() {
            drain(r, fmt, out).await?;
        }
        if current.as_ref().is_none_or(|r| r.replaced(&files[1])) {
            if let Some(mut old) = current.take() {
                finish(&mut old, fmt, out).await?;
            }
            current = Reader::open(&files[1], 0).ok();
            if let Some(r) = current.as_mut() {
                drain(r, fmt, out).await?;
            }
        }
        if ended {
            if let Some(r) = current.as_mut() {
                finish(r, fmt, out).await?;
            }
            return Ok(());
        }
    }
}

/// Sends a file's unterminated last record, if any.
async fn finish(reader: &mut Reader, fmt: &mut Formatter, out: &Outbound) -> Result<(), CopyError> {
    let mut batch = Vec::new();
    reader.flush(fmt, &mut batch);
    if !batch.is_empty() {
        out.data(STDOUT, &batch).await?;
    }
    Ok(())
}

/// inotify on the log directory: any write, create or rename there wakes the follower.
struct Watch {
    fd: AsyncFd<OwnedFd>,
}

impl Watch {
    fn new(dir: &Path) -> std::io::Result<Watch> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        let events = inotify::WatchFlags::MODIFY
            | inotify::WatchFlags::CREATE
            | inotify::WatchFlags::MOVED_FROM
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::CLOSE_WRITE;
        inotify::add_watch(&fd, dir, events)?;
        Ok(Watch {
            fd: skiff_runtime::fdio::register(fd)?,
        })
    }

    /// Waits for the next events and consumes them all.
    async fn changed(&mut self) -> std::io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 4096];
            let mut got = false;
            loop {
                match rustix::io::read(guard.get_inner(), &mut buf) {
                    Ok(0) => break,
                    Ok(_) => got = true,
                    Err(rustix::io::Errno::AGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if got {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use skiff_api::node::stream_frame::Frame;
    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::stream::logs::format::LogOptions;

    fn record(text: &str) -> String {
        format!("2026-01-01T00:00:00.000000000Z stdout F {text}\n")
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Collects channel 1 until `want` has arrived.
    async fn until(
        rx: &mut mpsc::Receiver<skiff_api::node::StreamFrame>,
        got: &mut String,
        want: &str,
    ) {
        while !got.ends_with(want) {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
                .await
                .expect("output within 10 s")
                .expect("the follower is running");
            if let Some(Frame::Data(d)) = frame.frame {
                got.push_str(&String::from_utf8(d.data).unwrap());
            }
        }
    }

    #[tokio::test]
    async fn following_reads_new_records_across_a_rotation_until_the_process_ends() {
        let dir = tempfile::tempdir().unwrap();
        let files = [dir.path().join("0.log.1"), dir.path().join("0.log")];
        append(&files[1], &record("one"));
        let (tx, mut rx) = mpsc::channel(4);
        let (end_tx, end_rx) = oneshot::channel::<()>();
        let exited: Exited = Box::pin(async move {
            let _ = end_rx.await;
        });
        let follower = tokio::spawn({
            let files = files.clone();
            async move {
                let mut fmt = Formatter::new(LogOptions::default());
                let out = Outbound::new(tx);
                copy(&files, Position::default(), Some(exited), &mut fmt, &out)
                    .await
                    .map_err(|e| format!("{e:?}"))
            }
        });
        let mut got = String::new();
        until(&mut rx, &mut got, "one\n").await;
        // A record written in two pieces arrives whole.
        let two = record("two");
        append(&files[1], &two[..10]);
        append(&files[1], &two[10..]);
        until(&mut rx, &mut got, "two\n").await;
        // skiff-init's rotation: rename, then a new file; the old one gets no more writes.
        std::fs::rename(&files[1], &files[0]).unwrap();
        append(&files[1], &record("three"));
        until(&mut rx, &mut got, "three\n").await;
        append(&files[1], &record("four"));
        end_tx.send(()).unwrap();
        until(&mut rx, &mut got, "four\n").await;
        assert_eq!(got, "one\ntwo\nthree\nfour\n");
        assert_eq!(follower.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn without_follow_both_files_are_read_from_the_start_position() {
        let dir = tempfile::tempdir().unwrap();
        let files = [dir.path().join("0.log.1"), dir.path().join("0.log")];
        append(&files[0], &(record("old") + &record("older")));
        append(
            &files[1],
            &(record("new") + "2026-01-01T00:00:00Z stdout F unterminated"),
        );
        let (tx, mut rx) = mpsc::channel(16);
        let mut fmt = Formatter::new(LogOptions::default());
        let start = Position {
            file: 0,
            offset: record("old").len() as u64,
        };
        copy(&files, start, None, &mut fmt, &Outbound::new(tx))
            .await
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        let mut got = String::new();
        until(&mut rx, &mut got, "unterminated\n").await;
        // The last record had no newline yet (a writer mid-record); it is a line all the same.
        assert_eq!(got, "older\nnew\nunterminated\n");
    }
}
