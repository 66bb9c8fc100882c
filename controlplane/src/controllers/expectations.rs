//! Expectations, as kube-controller-manager keeps them: after a controller asks for N pod
//! creations or deletions it does not act on that owner again until its informer has seen
//! them (or a timeout passes), so a lagging cache never makes it create or delete twice.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long unobserved expectations hold before the controller acts anyway.
const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Expected {
    adds: i64,
    deletes: HashSet<String>,
    since: Instant,
}

/// Per owner key: creations and deletions not yet observed.
#[derive(Debug, Default)]
pub struct Expectations {
    map: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Expected>) -> R) -> R {
        f(&mut self.map.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether the owner may act: nothing pending, or pending for too long.
    pub fn satisfied(&self, owner: &str) -> bool {
        self.with(|m| match m.get(owner) {
            None => true,
            Some(e) => (e.adds <= 0 && e.deletes.is_empty()) || e.since.elapsed() > TIMEOUT,
        })
    }

    /// Records that `adds` creations and the deletion of `deletes` (pod keys) were asked.
    pub fn expect(&self, owner: &str, adds: usize, deletes: impl IntoIterator<Item = String>) {
        self.with(|m| {
            m.insert(
                owner.to_owned(),
                Expected {
                    adds: adds as i64,
                    deletes: deletes.into_iter().collect(),
                    since: Instant::now(),
                },
            );
        });
    }

    /// A creation was observed (or failed and will not be).
    pub fn created(&self, owner: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(owner) {
                e.adds -= 1;
            }
        });
    }

    /// The deletion of `pod` was observed (or failed and will not be).
    pub fn deleted(&self, owner: &str, pod: &str) {
        self.with(|m| {
            if let Some(e) = m.get_mut(owner) {
                e.deletes.remove(pod);
            }
        });
    }

    /// Forgets an owner (it was deleted).
    pub fn forget(&self, owner: &str) {
        self.with(|m| {
            m.remove(owner);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_waits_until_its_creations_and_deletions_are_seen() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect("ns/rs", 2, ["ns/p1".to_owned()]);
        assert!(!e.satisfied("ns/rs"));
        e.created("ns/rs");
        e.created("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.deleted("ns/rs", "ns/p1");
        assert!(e.satisfied("ns/rs"));
        e.expect("ns/rs", 1, []);
        e.forget("ns/rs");
        assert!(e.satisfied("ns/rs"));
    }
}
