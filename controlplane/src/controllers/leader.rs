//! Leader election through a Lease (`kube-system/skiff-controller-manager`), as client-go's:
//! several control-plane processes on one etcd, only the holder runs the scheduler and
//! controllers. Expiry is judged by this process's own clock since it last saw the record
//! change — never by comparing another machine's timestamps — so clock skew cannot elect
//! two leaders. A holder that cannot renew within the renew deadline stops its controllers.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use tokio::task::JoinHandle;

use super::{Config, ControllerManager};
use crate::apiserver::{ApiError, Client};

/// The Lease's namespace and name.
pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "skiff-controller-manager";

/// Timings of the election.
#[derive(Debug, Clone)]
pub struct Election {
    /// Who this process is (the Lease's holderIdentity).
    pub identity: String,
    /// How long a silent holder keeps the lease (default 15 s).
    pub lease_duration: Duration,
    /// A holder that has not renewed for this long gives up (default 10 s).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew (default 2 s).
    pub retry_period: Duration,
}

impl Election {
    /// Kubernetes' defaults for `identity`.
    pub fn new(identity: impl Into<String>) -> Election {
        Election {
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate remembers of the record it last saw.
#[derive(Debug, Default)]
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    at: Option<Instant>,
}

fn lease(identity: &str, duration: Duration, transitions: i32, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(duration.as_secs().max(1) as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// One attempt to acquire or renew; `Ok(true)` if we hold the lease afterwards.
async fn try_acquire(client: &Client, e: &Election, seen: &mut Observed) -> Result<bool, ApiError> {
    let now = Timestamp::now();
    let Some(mut current) = client.get_opt::<Lease>(Some(NAMESPACE), NAME).await? else {
        let fresh = Lease {
            metadata: ObjectMeta {
                name: Some(NAME.into()),
                namespace: Some(NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            spec: Some(lease(&e.identity, e.lease_duration, 0, now)),
        };
        return match client.create(&fresh).await {
            Ok(_) => Ok(true),
            Err(err) if err.code == 409 => Ok(false),
            Err(err) => Err(err),
        };
    };
    let spec = current.spec.clone().unwrap_or_default();
    let record = (spec.holder_identity.clone(), spec.renew_time.clone());
    if seen.record.as_ref() != Some(&record) {
        seen.record = Some(record);
        seen.at = Some(Instant::now());
    }
    let ours = spec.holder_identity.as_deref() == Some(e.identity.as_str());
    let expired = seen.at.is_none_or(|at| at.elapsed() > e.lease_duration)
        || spec.holder_identity.as_deref().is_none_or(str::is_empty);
    if !ours && !expired {
        return Ok(false);
    }
    let mut next = if ours {
        let mut s = spec.clone();
        s.renew_time = Some(MicroTime(now));
        s
    } else {
        lease(
            &e.identity,
            e.lease_duration,
            spec.lease_transitions.unwrap_or(0) + 1,
            now,
        )
    };
    next.lease_duration_seconds = Some(e.lease_duration.as_secs().max(1) as i32);
    current.spec = Some(next);
    // The write carries the resourceVersion read: two candidates cannot both win.
    match client.replace(&current).await {
        Ok(_) => Ok(true),
        Err(err) if err.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Runs for ever: campaign, lead (controllers running) while renewals succeed, step down
/// when they stop, campaign again.
pub fn run(client: Client, election: Election, config: Config) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = Observed::default();
        loop {
            match try_acquire(&client, &election, &mut seen).await {
                Ok(true) => {}
                Ok(false) => {
                    tokio::time::sleep(election.retry_period).await;
                    continue;
                }
                Err(err) => {
                    tracing::info!(error = %err, "leader election: cannot reach the lease");
                    tokio::time::sleep(election.retry_period).await;
                    continue;
                }
            }
            tracing::info!(identity = %election.identity, "became the leader; starting controllers");
            let manager = ControllerManager::start(client.clone(), config.clone());
            let mut renewed = Instant::now();
            loop {
                tokio::time::sleep(election.retry_period).await;
                match try_acquire(&client, &election, &mut seen).await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => break,
                    Err(err) => tracing::info!(error = %err, "leader election: renewal failed"),
                }
                if renewed.elapsed() > election.renew_deadline {
                    break;
                }
            }
            tracing::warn!(identity = %election.identity, "lost the lease; stopping controllers");
            drop(manager);
            seen = Observed::default();
        }
    })
}

/// The current holder of the lease, if any.
pub async fn holder(client: &Client) -> Result<Option<String>, ApiError> {
    Ok(client
        .get_opt::<Lease>(Some(NAMESPACE), NAME)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity))
}
