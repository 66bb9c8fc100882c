//! `kubectl logs` on the node: a container's CRI log files (`skiff_runtime::container::logs`)
//! served on channel 1 as the kubelet serves them — `tailLines`, `sinceSeconds`/`sinceTime`,
//! `timestamps`, `limitBytes`, `previous` (the instance before the last restart) and
//! `follow` (new lines as they are written, across rotation, until the container ends).

pub mod follow;
pub mod format;

use std::io::BufReader;

use jiff::Timestamp;
use skiff_api::node::LogsOffer;
use skiff_runtime::container::logs;

use super::Target;
use super::frames::{End, Gone, Inbound, Outbound};
use format::{Formatter, LogOptions, Position};

/// Serves one logs request; `Err(Gone)` when the user left first.
pub async fn serve<S>(
    target: &Target,
    offer: &LogsOffer,
    inbound: &mut Inbound<S>,
    out: &Outbound,
) -> Result<End, Gone>
where
    S: futures::Stream<Item = skiff_api::node::StreamFrame> + Unpin,
{
    let c = &target.container;
    let dir = if offer.previous {
        logs::previous_dir(&c.log_dir)
    } else {
        c.log_dir.clone()
    };
    let files = logs::files(&dir, &c.log_name);
    if !files.iter().any(|f| f.exists()) {
        let error = if offer.previous {
            format!(
                "previous terminated container {:?} in pod {:?} not found",
                c.name, target.pod.name
            )
        } else {
            format!(
                "container {:?} in pod {:?} is waiting to start: ContainerCreating",
                c.name, target.pod.name
            )
        };
        return Ok(End::Error(error));
    }
    let start = match usize::try_from(offer.tail_lines) {
        Ok(lines) => {
            let files = files.clone();
            let found = tokio::task::spawn_blocking(move || {
                let mut readers: Vec<Box<dyn std::io::BufRead>> = files
                    .iter()
                    .map(|f| match std::fs::File::open(f) {
                        Ok(file) => Box::new(BufReader::new(file)) as Box<dyn std::io::BufRead>,
                        Err(_) => Box::new(std::io::empty()),
                    })
                    .collect();
                format::tail_start(&mut readers, lines)
            })
            .await;
            match found {
                Ok(Ok(position)) => position,
                Ok(Err(e)) => return Ok(End::Error(format!("reading the log: {e}"))),
                Err(e) => return Ok(End::Error(format!("reading the log: {e}"))),
            }
        }
        Err(_) => Position::default(),
    };
    let follow = if offer.follow && !offer.previous {
        super::running_pid(target).await.map(super::process_exit)
    } else {
        None
    };
    let mut fmt = Formatter::new(LogOptions {
        since: (offer.since_unix > 0)
            .then(|| Timestamp::from_second(offer.since_unix).ok())
            .flatten(),
        timestamps: offer.timestamps,
        limit_bytes: u64::try_from(offer.limit_bytes).ok().filter(|&n| n > 0),
    });
    tokio::select! {
        copied = follow::copy(&files, start, follow, &mut fmt, out) => match copied {
            Ok(()) => Ok(End::Code(0)),
            Err(follow::CopyError::Gone) => Err(Gone),
            Err(follow::CopyError::Io(e)) => Ok(End::Error(format!("reading the log of container {:?}: {e}", c.name))),
        },
        gone = inbound.closed() => Err(gone),
    }
}
