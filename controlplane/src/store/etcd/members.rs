//! Living with a dead etcd member. etcd-client balances requests over every endpoint with
//! tonic's balancer, which keeps picking an endpoint whose member died: measured with one
//! of three members killed, about one request in five failed with "tcp connect error" for
//! as long as it stayed dead. Two remedies, as etcd's Go client has them:
//!
//! - **Retry** (`may_retry`): a request that was never sent (a connect error) may go again
//!   whatever it is; one that may have reached a dying member (a broken connection) only
//!   if it is a read. Writes are guarded transactions, so even a duplicate would fail its
//!   guard rather than apply twice, but the caller would see a false conflict.
//! - **Probe** (`Prober`): every second each endpoint gets a TCP connect; endpoints that do
//!   not answer leave the balancer and come back when they answer again (`membership`) —
//!   but never all of them: with every member unreachable, requests should fail, not wait.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::Client;
use tokio::task::JoinHandle;
use tonic::Code;

/// What a request does to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Read,
    Write,
}

/// Whether a `request` that failed with `error` may be sent again (the balancer then picks
/// a member again).
pub(crate) fn may_retry(error: &etcd_client::Error, request: Request) -> bool {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return request == Request::Read && matches!(error, etcd_client::Error::TransportError(_));
    };
    let never_sent = status.code() == Code::Unavailable && status.message().contains("connect");
    let connection_lost = status.code() == Code::Unavailable
        || (status.code() == Code::Unknown && status.message() == "transport error");
    never_sent || (request == Request::Read && connection_lost)
}

/// How many times a request is sent at most, and the pause before each retry.
pub(crate) const ATTEMPTS: u32 = 6;
pub(crate) fn pause(attempt: u32) -> Duration {
    Duration::from_millis(50 * u64::from(attempt))
}

/// The changes that make the balancer hold the answering endpoints (`answered[i]` for
/// endpoint i), or all of them when none answered: (to add, to remove).
pub(crate) fn membership(current: &BTreeSet<usize>, answered: &[bool]) -> (Vec<usize>, Vec<usize>) {
    let mut wanted: BTreeSet<usize> = (0..answered.len()).filter(|i| answered[*i]).collect();
    if wanted.is_empty() {
        wanted = (0..answered.len()).collect();
    }
    (
        wanted.difference(current).copied().collect(),
        current.difference(&wanted).copied().collect(),
    )
}

/// The probe loop of one client; ends when dropped.
#[derive(Debug)]
pub(crate) struct Prober {
    task: JoinHandle<()>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `host:port` of an endpoint URL (`http://127.0.0.1:2379` → `127.0.0.1:2379`).
fn authority(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

impl Prober {
    /// Starts probing `endpoints` (all in `client`'s balancer now) every `period`.
    pub(crate) fn start(client: Client, endpoints: Vec<String>, period: Duration) -> Prober {
        let task = tokio::spawn(async move {
            let mut current: BTreeSet<usize> = (0..endpoints.len()).collect();
            loop {
                tokio::time::sleep(period).await;
                let mut answered = Vec::with_capacity(endpoints.len());
                for endpoint in &endpoints {
                    let connect = tokio::net::TcpStream::connect(authority(endpoint));
                    let ok = tokio::time::timeout(period, connect)
                        .await
                        .is_ok_and(|r| r.is_ok());
                    answered.push(ok);
                }
                let (add, remove) = membership(&current, &answered);
                for i in remove {
                    tracing::warn!(endpoint = %endpoints[i], "etcd member unreachable: not sending it requests");
                    if client.remove_endpoint(&endpoints[i]).await.is_ok() {
                        current.remove(&i);
                    }
                }
                for i in add {
                    tracing::info!(endpoint = %endpoints[i], "etcd member reachable again");
                    if client.add_endpoint(&endpoints[i]).await.is_ok() {
                        current.insert(i);
                    }
                }
            }
        });
        Prober { task }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    #[test]
    fn requests_never_sent_go_again_and_lost_ones_only_if_they_read() {
        use Request::{Read, Write};
        let refused = status(Code::Unavailable, "tcp connect error");
        assert!(may_retry(&refused, Read) && may_retry(&refused, Write));
        let broken = status(Code::Unknown, "transport error");
        assert!(may_retry(&broken, Read) && !may_retry(&broken, Write));
        let no_leader = status(Code::Unavailable, "etcdserver: no leader");
        assert!(may_retry(&no_leader, Read) && !may_retry(&no_leader, Write));
        for answer in [
            status(
                Code::InvalidArgument,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            status(Code::Unknown, "something else"),
            status(Code::DeadlineExceeded, "etcdserver: request timed out"),
        ] {
            assert!(
                !may_retry(&answer, Read) && !may_retry(&answer, Write),
                "{answer}"
            );
        }
        assert_eq!(pause(1), Duration::from_millis(50));
    }

    #[test]
    fn unanswering_endpoints_leave_the_balancer_but_never_all_of_them() {
        let all: BTreeSet<usize> = [0, 1, 2].into();
        assert_eq!(membership(&all, &[true, true, true]), (vec![], vec![]));
        assert_eq!(membership(&all, &[false, true, true]), (vec![], vec![0]));
        let two: BTreeSet<usize> = [1, 2].into();
        assert_eq!(membership(&two, &[true, true, true]), (vec![0], vec![]));
        assert_eq!(
            membership(&two, &[false, false, false]),
            (vec![0], vec![]),
            "none answers: keep or restore them all"
        );
        assert_eq!(membership(&two, &[false, false, true]), (vec![], vec![1]));
    }

    #[test]
    fn endpoints_are_dialled_by_their_authority() {
        assert_eq!(authority("http://127.0.0.1:2379"), "127.0.0.1:2379");
        assert_eq!(authority("https://etcd-0.lan:2379/"), "etcd-0.lan:2379");
        assert_eq!(authority("127.0.0.1:2379"), "127.0.0.1:2379");
    }
}
