//! The LoadBalancer address controller (no cloud): a `type: LoadBalancer` Service gets an
//! address from the configured pool (`--loadbalancer-pool CIDR`) in
//! `status.loadBalancer.ingress`; the address is released when the Service is deleted or
//! stops being a LoadBalancer, and no two Services share one. The nodes' proxies program
//! the address like a ClusterIP (reached from the nodes) and at tc (from outside).
//!
//! Decisions are pure ([`decide`]) over the Services in the informer cache plus the
//! addresses this controller handed out and has not seen in the cache yet; one worker
//! runs them, so two Services are never given one address in a race.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Service};

use super::Reconcile;
use super::events::{Kind, Recorder};
use super::informer::{Event, Informer, key_of};
use super::queue::Queue;
use crate::apiserver::{ApiError, Client};

/// A Service that finds the pool full is looked at again this much later.
const EXHAUSTED_RETRY: Duration = Duration::from_secs(30);

/// The addresses Services may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool(Ipv4Net);

impl Pool {
    pub fn new(net: Ipv4Net) -> Pool {
        Pool(net.trunc())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.contains(&ip)
    }

    /// Usable addresses in order: a /31 or /32 whole, else without the network and
    /// broadcast addresses.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let all = self.0.prefix_len() >= 31;
        let (network, broadcast) = (self.0.network(), self.0.broadcast());
        self.0
            .hosts()
            .chain(all.then_some(network))
            .chain(all.then_some(broadcast))
            .filter(move |ip| all || (*ip != network && *ip != broadcast))
            .collect::<BTreeSet<_>>()
            .into_iter()
    }
}

/// What to do with one Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It has what it should (an address, or none).
    Keep,
    /// Write this address into its status.
    Assign(Ipv4Addr),
    /// Clear the pool address from its status.
    Release,
    /// It needs an address and none is free.
    Exhausted,
}

/// Whether this controller serves `svc`: a LoadBalancer without a `loadBalancerClass`
/// (another implementation's), not being deleted.
pub fn wants_address(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec
            .and_then(|s| s.load_balancer_class.as_deref())
            .is_none()
        && svc.metadata.deletion_timestamp.is_none()
}

/// The pool address in `svc`'s status, if any.
pub fn address_of(svc: &Service, pool: &Pool) -> Option<Ipv4Addr> {
    svc.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok())
        .find(|ip| pool.contains(*ip))
}

/// Who keeps an address two Services claim: the older Service (then the smaller key).
fn precedes(a: &Service, a_key: &str, b: &Service, b_key: &str) -> bool {
    let created = |s: &Service| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (created(a), a_key) < (created(b), b_key)
}

/// The decision for `svc` (at `key`) given every Service (`all`, the cache) and the
/// addresses handed out but maybe not yet in the cache (`claims`, by Service key).
pub fn decide(
    key: &str,
    svc: &Service,
    all: &[Arc<Service>],
    claims: &HashMap<String, Ipv4Addr>,
    pool: &Pool,
) -> Decision {
    let current = address_of(svc, pool).or_else(|| claims.get(key).copied());
    if !wants_address(svc) {
        return match address_of(svc, pool) {
            Some(_) => Decision::Release,
            None => Decision::Keep,
        };
    }
    // Addresses held by the others; ours counts as lost to an earlier holder.
    let mut taken = BTreeSet::new();
    let mut lost = false;
    for other in all {
        let other_key = key_of(other.as_ref());
        if other_key == key || !wants_address(other) {
            continue;
        }
        if let Some(ip) = address_of(other, pool) {
            taken.insert(ip);
            if Some(ip) == current && precedes(other, &other_key, svc, key) {
                lost = true;
            }
        }
    }
    for (other_key, ip) in claims {
        if other_key != key {
            taken.insert(*ip);
            lost |= Some(*ip) == current && address_of(svc, pool) != Some(*ip);
        }
    }
    let requested = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        .filter(|ip| pool.contains(*ip) && !taken.contains(ip));
    match (current, lost) {
        (Some(ip), false) if requested.is_none_or(|r| r == ip) => {
            if address_of(svc, pool) == Some(ip) {
                Decision::Keep
            } else {
                Decision::Assign(ip)
            }
        }
        _ => match requested.or_else(|| pool.addresses().find(|ip| !taken.contains(ip))) {
            Some(ip) => Decision::Assign(ip),
            None => Decision::Exhausted,
        },
    }
}

/// The controller.
pub struct LoadBalancerController {
    client: Client,
    services: Informer<Service>,
    pool: Pool,
    /// Addresses this controller wrote, by Service key, until the Service goes.
    claims: Mutex<HashMap<String, Ipv4Addr>>,
    events: Recorder,
}

impl LoadBalancerController {
    /// Wires the controller to the Service informer; returns it and its queue (run it with
    /// one worker).
    pub fn new(client: Client, services: &Informer<Service>, pool: Pool) -> (Arc<Self>, Queue) {
        let queue = Queue::new();
        let q = queue.clone();
        let cache = services.clone();
        services.on_change(move |event| {
            let (key, freed) = match event {
                Event::Applied { new, old } => (
                    key_of(new.as_ref()),
                    old.as_ref()
                        .is_some_and(|o| wants_address(o) && !wants_address(new)),
                ),
                Event::Deleted(old) => (key_of(old.as_ref()), wants_address(old)),
            };
            q.add(key);
            if freed {
                // An address came free: Services waiting for one may get it now.
                for waiting in cache.list() {
                    if wants_address(&waiting)
                        && waiting
                            .status
                            .as_ref()
                            .and_then(|s| s.load_balancer.as_ref())
                            .and_then(|l| l.ingress.as_ref())
                            .is_none_or(Vec::is_empty)
                    {
                        q.add(key_of(waiting.as_ref()));
                    }
                }
            }
        });
        let events = Recorder::new(client.clone(), "service-lb-controller");
        let controller = Arc::new(LoadBalancerController {
            client,
            services: services.clone(),
            pool,
            claims: Mutex::new(HashMap::new()),
            events,
        });
        (controller, queue)
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ipv4Addr>> {
        match self.claims.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    async fn write(&self, svc: &Service, ip: Option<Ipv4Addr>) -> Result<(), ApiError> {
        let mut next = svc.clone();
        let status = next.status.get_or_insert_default();
        let kept: Vec<LoadBalancerIngress> = status
            .load_balancer
            .as_ref()
            .and_then(|l| l.ingress.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|i| {
                i.ip.as_deref()
                    .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
                    .is_none_or(|ip| !self.pool.contains(ip))
            })
            .collect();
        let mut ingress: Vec<LoadBalancerIngress> = ip
            .map(|ip| LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some("VIP".into()),
                ..LoadBalancerIngress::default()
            })
            .into_iter()
            .collect();
        ingress.extend(kept);
        status.load_balancer = Some(LoadBalancerStatus {
            ingress: (!ingress.is_empty()).then_some(ingress),
        });
        self.client.replace_status(&next).await.map(|_| ())
    }
}

#[async_trait]
impl Reconcile for LoadBalancerController {
    fn name(&self) -> &'static str {
        "loadbalancer"
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>, ApiError> {
        let Some(svc) = self.services.get(key) else {
            self.claims().remove(key);
            return Ok(None);
        };
        let all = self.services.list();
        let decision = {
            let claims = self.claims();
            decide(key, &svc, &all, &claims, &self.pool)
        };
        match decision {
            Decision::Keep => Ok(None),
            Decision::Assign(ip) => {
                self.claims().insert(key.to_owned(), ip);
                if let Err(e) = self.write(&svc, Some(ip)).await {
                    self.claims().remove(key);
                    return Err(e);
                }
                self.events.record(
                    svc.as_ref(),
                    Kind::Normal,
                    "IPAllocated",
                    &format!("Assigned IP [\"{ip}\"]"),
                );
                Ok(None)
            }
            Decision::Release => {
                self.claims().remove(key);
                self.write(&svc, None).await.map(|_| None)
            }
            Decision::Exhausted => {
                self.events.record(
                    svc.as_ref(),
                    Kind::Warning,
                    "AllocationFailed",
                    &format!("no free address in the LoadBalancer pool {}", self.pool.0),
                );
                Ok(Some(EXHAUSTED_RETRY))
            }
        }
    }
}

#[cfg(test)]
mod tests;
