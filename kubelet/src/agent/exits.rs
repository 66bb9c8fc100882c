//! Container exits as events: one thread waits in epoll on the pidfds of every running
//! container's init and wakes the pod's worker when one becomes readable (the process
//! exited). No polling, and one thread for all containers of the node.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::event::epoll;
use tokio::sync::oneshot;

/// The node's exit watcher; cheap to share.
pub struct ExitWatcher {
    epoll: OwnedFd,
    waiting: Mutex<HashMap<u64, (OwnedFd, oneshot::Sender<()>)>>,
    next: AtomicU64,
}

impl ExitWatcher {
    /// Creates the epoll instance and its thread.
    pub fn start() -> std::io::Result<Arc<ExitWatcher>> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let watcher = Arc::new(ExitWatcher {
            epoll,
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        });
        let w = Arc::downgrade(&watcher);
        std::thread::Builder::new()
            .name("skiff-exits".into())
            .spawn(move || {
                let mut events = Vec::with_capacity(64);
                loop {
                    let Some(watcher) = w.upgrade() else {
                        return;
                    };
                    events.clear();
                    // A timeout lets the thread notice the watcher was dropped.
                    let timeout = rustix::time::Timespec {
                        tv_sec: 1,
                        tv_nsec: 0,
                    };
                    if epoll::wait(
                        &watcher.epoll,
                        rustix::buffer::spare_capacity(&mut events),
                        Some(&timeout),
                    )
                    .is_err()
                    {
                        continue;
                    }
                    for event in &events {
                        watcher.fire(event.data.u64());
                    }
                }
            })?;
        Ok(watcher)
    }

    fn fire(&self, id: u64) {
        let entry = self
            .waiting
            .lock()
            .map(|mut w| w.remove(&id))
            .ok()
            .flatten();
        if let Some((fd, tx)) = entry {
            let _ = epoll::delete(&self.epoll, &fd);
            let _ = tx.send(());
        }
    }

    /// Resolves when process `pid` exits (at once when it is already gone or `None`).
    pub fn watch(&self, pid: Option<i32>) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let fd = pid.and_then(rustix::process::Pid::from_raw).and_then(|p| {
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
        });
        let Some(fd) = fd else {
            let _ = tx.send(());
            return rx;
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let added = epoll::add(
            &self.epoll,
            &fd,
            epoll::EventData::new_u64(id),
            epoll::EventFlags::IN,
        );
        match added {
            Ok(()) => {
                // Level-triggered: if the thread saw the exit before this insert, it sees
                // it again on its next wait.
                if let Ok(mut w) = self.waiting.lock() {
                    w.insert(id, (fd, tx));
                }
            }
            Err(_) => {
                let _ = tx.send(());
            }
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_when_a_process_exits_and_at_once_for_a_gone_one() {
        let watcher = ExitWatcher::start().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let exited = watcher.watch(Some(pid));
        // A zombie still holds its pid; the pidfd is readable once it has exited.
        tokio::time::timeout(Duration::from_secs(5), exited)
            .await
            .unwrap()
            .unwrap();
        child.wait().unwrap();
        tokio::time::timeout(Duration::from_secs(1), watcher.watch(None))
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), watcher.watch(Some(pid)))
            .await
            .unwrap()
            .unwrap();
    }
}
