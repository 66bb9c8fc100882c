//! From the watch to the consumers: every new [`ClusterState`] goes to each [`Consumer`]
//! (the BPF data plane, the DNS records), one sync per burst — after a change the loop
//! waits a short window so that the dozens of writes of one rollout become one sync. A
//! consumer that fails is retried with the newest state after a back-off.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::state::{ClusterState, ObjectKey};

/// A consumer's failure, as it describes it.
pub type SyncError = Box<dyn std::error::Error + Send + Sync>;

/// Something that follows the cluster's Services: it is handed each complete state (never a
/// half-received snapshot) and brings itself in line with it.
pub trait Consumer: Send {
    /// For logs.
    fn name(&self) -> &'static str;
    /// Makes this consumer reflect `state`. May block (syscalls): it runs on a blocking
    /// thread.
    fn sync(&mut self, state: &ClusterState) -> Result<(), SyncError>;
}

impl<C: Consumer + ?Sized> Consumer for Box<C> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn sync(&mut self, state: &ClusterState) -> Result<(), SyncError> {
        (**self).sync(state)
    }
}

/// Hands a consumer the state without the Services at `address` — the node-local DNS
/// address, which the proxy answers itself: the data plane must not translate it (the
/// `kube-system/kube-dns` Service there has no endpoints, so it would refuse).
pub struct Without<C> {
    address: Ipv4Addr,
    inner: C,
}

impl<C> Without<C> {
    pub fn new(address: Ipv4Addr, inner: C) -> Without<C> {
        Without { address, inner }
    }
}

/// The Services whose cluster IP is `address`.
pub fn services_at(state: &ClusterState, address: Ipv4Addr) -> Vec<ObjectKey> {
    let text = address.to_string();
    state
        .services
        .iter()
        .filter(|(_, svc)| {
            svc.spec.as_ref().is_some_and(|s| {
                s.cluster_ip.as_deref() == Some(text.as_str())
                    || s.cluster_ips.iter().flatten().any(|ip| *ip == text)
            })
        })
        .map(|(key, _)| key.clone())
        .collect()
}

impl<C: Consumer> Consumer for Without<C> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn sync(&mut self, state: &ClusterState) -> Result<(), SyncError> {
        let hidden = services_at(state, self.address);
        if hidden.is_empty() {
            return self.inner.sync(state);
        }
        let mut filtered = state.clone();
        for key in hidden {
            filtered.services.remove(&key);
        }
        self.inner.sync(&filtered)
    }
}

/// How the sync loop paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// After a change, wait this long for the rest of the burst.
    pub window: Duration,
    /// After a failed sync, try again this much later (unless a newer state comes first).
    pub retry: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            window: Duration::from_millis(50),
            retry: Duration::from_secs(1),
        }
    }
}

/// Syncs `consumers` with every state published on `states` until the sender goes away.
/// `None` (no complete snapshot yet) is never handed on.
pub async fn sync_loop(
    mut states: watch::Receiver<Option<Arc<ClusterState>>>,
    consumers: Vec<Box<dyn Consumer>>,
    pacing: Pacing,
) {
    let consumers = Arc::new(Mutex::new(consumers));
    let mut failed = false;
    loop {
        if failed {
            // A newer state or the retry time, whichever comes first.
            tokio::select! {
                changed = states.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(pacing.retry) => {}
            }
        } else if states.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(pacing.window).await;
        let Some(state) = states.borrow_and_update().clone() else {
            continue;
        };
        let consumers = consumers.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut all = match consumers.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            let mut ok = true;
            for consumer in all.iter_mut() {
                if let Err(e) = consumer.sync(&state) {
                    tracing::warn!(consumer = consumer.name(), error = %e, "sync failed; retrying");
                    ok = false;
                }
            }
            ok
        })
        .await;
        failed = !matches!(outcome, Ok(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Service, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// Records what it was handed.
    struct Recorder {
        seen: Arc<Mutex<Vec<Vec<String>>>>,
        fail_first: bool,
    }

    impl Consumer for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn sync(&mut self, state: &ClusterState) -> Result<(), SyncError> {
            let names = state.services.keys().map(|k| k.to_string()).collect();
            self.seen.lock().unwrap().push(names);
            if std::mem::take(&mut self.fail_first) {
                return Err("not yet".into());
            }
            Ok(())
        }
    }

    fn state(names: &[(&str, &str)]) -> Arc<ClusterState> {
        let mut s = ClusterState::default();
        for (name, ip) in names {
            let svc = Service {
                metadata: ObjectMeta {
                    namespace: Some("default".into()),
                    name: Some((*name).into()),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    cluster_ip: Some((*ip).into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            s.services.insert(ObjectKey::of(&svc.metadata), svc);
        }
        Arc::new(s)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_sync_and_nothing_before_the_first_snapshot() {
        let (tx, rx) = watch::channel(None);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            seen: seen.clone(),
            fail_first: false,
        };
        let task = tokio::spawn(sync_loop(rx, vec![Box::new(recorder)], Pacing::default()));
        tx.send_replace(None);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(seen.lock().unwrap().is_empty(), "no state, no sync");
        for n in 1..=20 {
            let names: Vec<(String, String)> = (0..n)
                .map(|i| (format!("s{i:02}"), format!("10.96.0.{}", 100 + i)))
                .collect();
            let refs: Vec<(&str, &str)> = names
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            tx.send_replace(Some(state(&refs)));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let syncs = seen.lock().unwrap().clone();
        assert_eq!(syncs.len(), 1, "one sync for the burst: {syncs:?}");
        assert_eq!(syncs[0].len(), 20, "with the newest state");
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_sync_is_retried_and_the_dns_address_is_hidden_from_the_data_plane() {
        let (tx, rx) = watch::channel(None);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            seen: seen.clone(),
            fail_first: true,
        };
        let dns: Ipv4Addr = "10.96.0.10".parse().unwrap();
        let consumer = Without::new(dns, recorder);
        let task = tokio::spawn(sync_loop(rx, vec![Box::new(consumer)], Pacing::default()));
        tx.send_replace(Some(state(&[
            ("kube-dns", "10.96.0.10"),
            ("web", "10.96.0.50"),
        ])));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let syncs = seen.lock().unwrap().clone();
        assert_eq!(syncs.len(), 2, "failed once, retried once: {syncs:?}");
        assert!(syncs.iter().all(|s| s == &["default/web".to_string()]));
        drop(tx);
        task.await.unwrap();
    }
}
