//! The desired contents of the BPF maps for a [`Model`], and the ordered list of map writes
//! that takes the maps from what they hold ([`MapContents`]) to that. Pure: unit-tested
//! without a kernel; `dataplane/` executes the ops in order.
//!
//! Atomic per Service: a backend set is never rewritten in place. A changed set is written
//! whole under a fresh set id, then each frontend is flipped to it with one map update, and
//! only then are the old set's slots deleted. The ops come out in that order: backend puts,
//! frontend puts, frontend deletes, backend deletes.

use std::collections::{BTreeMap, BTreeSet};

use skiff_ebpf::{BackendChunk, BackendKey, BackendValue, CHUNK, FrontendKey, FrontendValue};

use crate::model::{Backend, FrontendKind, Model, ServicePort, ServicePortKey};

/// What the frontend and backend maps hold (read back at start, then kept in step).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapContents {
    pub frontends: BTreeMap<FrontendKey, FrontendValue>,
    /// Backend sets by id: their slots in order, padded with zero slots to whole chunks of
    /// [`CHUNK`] (as the map stores them). Set id 0 is the empty set and is not stored.
    pub sets: BTreeMap<u32, Vec<BackendValue>>,
    /// Chunks found beyond a gap in their set (a sync cut short): deleted by the next plan.
    pub stray: BTreeSet<BackendKey>,
}

impl MapContents {
    /// Groups backend map entries into sets; chunks after a missing one are stray.
    pub fn from_entries(
        frontends: impl IntoIterator<Item = (FrontendKey, FrontendValue)>,
        backends: impl IntoIterator<Item = (BackendKey, BackendChunk)>,
    ) -> MapContents {
        let chunks: BTreeMap<BackendKey, BackendChunk> = backends.into_iter().collect();
        let mut out = MapContents {
            frontends: frontends.into_iter().collect(),
            ..MapContents::default()
        };
        for (key, chunk) in chunks {
            let set = out.sets.entry(key.set_id).or_default();
            if key.chunk as usize * CHUNK == set.len() {
                set.extend_from_slice(&chunk.slot);
            } else {
                out.stray.insert(key);
            }
        }
        out
    }

    /// Backends stored (padding slots not counted).
    pub fn backend_slots(&self) -> usize {
        self.sets
            .values()
            .flatten()
            .filter(|b| **b != BackendValue::default())
            .count()
    }
}

/// A set's slots padded with zero slots to whole chunks.
fn padded(slots: &[BackendValue]) -> Vec<BackendValue> {
    let mut out = slots.to_vec();
    out.resize(slots.len().div_ceil(CHUNK) * CHUNK, BackendValue::default());
    out
}

/// The map entries of a padded set.
fn chunks(
    set_id: u32,
    padded: &[BackendValue],
) -> impl Iterator<Item = (BackendKey, BackendChunk)> + '_ {
    padded.chunks(CHUNK).enumerate().map(move |(i, slots)| {
        let mut chunk = BackendChunk::default();
        chunk.slot.copy_from_slice(slots);
        (
            BackendKey {
                set_id,
                chunk: i as u32,
            },
            chunk,
        )
    })
}

/// One map write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    PutBackend(BackendKey, BackendChunk),
    PutFrontend(FrontendKey, FrontendValue),
    DeleteFrontend(FrontendKey),
    DeleteBackend(BackendKey),
}

/// The writes, and the map contents once they are done.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub next: MapContents,
}

impl Plan {
    /// (frontend puts, frontend deletes, backend puts, backend deletes)
    pub fn counts(&self) -> OpCounts {
        let mut c = OpCounts::default();
        for op in &self.ops {
            match op {
                Op::PutFrontend(..) => c.frontend_puts += 1,
                Op::DeleteFrontend(..) => c.frontend_deletes += 1,
                Op::PutBackend(..) => c.backend_puts += 1,
                Op::DeleteBackend(..) => c.backend_deletes += 1,
            }
        }
        c
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpCounts {
    pub frontend_puts: usize,
    pub frontend_deletes: usize,
    pub backend_puts: usize,
    pub backend_deletes: usize,
}

/// Hands out ids not in use (never 0).
struct Ids {
    used: BTreeSet<u32>,
    next: u32,
}

impl Ids {
    fn new(used: impl IntoIterator<Item = u32>) -> Ids {
        let used: BTreeSet<u32> = used.into_iter().collect();
        let next = used.last().map_or(1, |m| m.wrapping_add(1));
        Ids { used, next }
    }

    fn fresh(&mut self) -> u32 {
        while self.next == 0 || self.used.contains(&self.next) {
            self.next = self.next.wrapping_add(1);
        }
        self.used.insert(self.next);
        self.next
    }

    /// Claims `id` if nobody holds it in this plan yet.
    fn claim(&mut self, id: u32, claimed: &mut BTreeSet<u32>) -> bool {
        id != 0 && claimed.insert(id)
    }
}

/// The map writes that make `current` serve `model`.
pub fn plan(model: &Model, current: &MapContents) -> Plan {
    let mut svc_ids = Ids::new(current.frontends.values().map(|v| v.svc_id));
    let mut set_ids = Ids::new(
        current
            .sets
            .keys()
            .copied()
            .chain(current.stray.iter().map(|k| k.set_id)),
    );
    let mut claimed_svc = BTreeSet::new();
    let mut claimed_sets = BTreeSet::new();
    let mut next = MapContents::default();
    let mut backend_puts = Vec::new();
    for (key, port) in &model.ports {
        let group = Group { key, port, current };
        group.plan(
            &mut svc_ids,
            &mut set_ids,
            &mut claimed_svc,
            &mut claimed_sets,
            &mut next,
            &mut backend_puts,
        );
    }

    let mut ops = backend_puts;
    for (key, value) in &next.frontends {
        if current.frontends.get(key) != Some(value) {
            ops.push(Op::PutFrontend(*key, *value));
        }
    }
    for key in current.frontends.keys() {
        if !next.frontends.contains_key(key) {
            ops.push(Op::DeleteFrontend(*key));
        }
    }
    for (set_id, slots) in &current.sets {
        if !next.sets.contains_key(set_id) {
            ops.extend((0..slots.len().div_ceil(CHUNK) as u32).map(|chunk| {
                Op::DeleteBackend(BackendKey {
                    set_id: *set_id,
                    chunk,
                })
            }));
        }
    }
    ops.extend(current.stray.iter().map(|k| Op::DeleteBackend(*k)));
    Plan { ops, next }
}

/// One Service port's frontends, planned together: they share a svc id and backend sets.
struct Group<'a> {
    key: &'a ServicePortKey,
    port: &'a ServicePort,
    current: &'a MapContents,
}

impl Group<'_> {
    fn plan(
        &self,
        svc_ids: &mut Ids,
        set_ids: &mut Ids,
        claimed_svc: &mut BTreeSet<u32>,
        claimed_sets: &mut BTreeSet<u32>,
        next: &mut MapContents,
        puts: &mut Vec<Op>,
    ) {
        let protocol = self.key.protocol.number();
        let fe_key = |fe: &crate::model::Frontend| FrontendKey {
            addr: skiff_ebpf::be_addr(fe.addr),
            port: skiff_ebpf::be_port(fe.port),
            proto: protocol,
            pad: 0,
        };
        if self.port.frontends.is_empty() {
            return;
        }
        // What this group's frontends point at now, if anything (the first that exists and
        // whose svc id no other group took).
        let existing = self
            .port
            .frontends
            .iter()
            .filter_map(|fe| self.current.frontends.get(&fe_key(fe)))
            .find(|v| !claimed_svc.contains(&v.svc_id));
        let svc_id = match existing {
            Some(v) if svc_ids.claim(v.svc_id, claimed_svc) => v.svc_id,
            _ => {
                let id = svc_ids.fresh();
                claimed_svc.insert(id);
                id
            }
        };
        let cluster = slots(&self.port.backends);
        let local = slots(&self.port.local_backends);
        let reuse = |id: u32| existing.map(|_| id).filter(|id| *id != 0);
        let set_id = self.set_for(
            &cluster,
            existing.and_then(|v| reuse(v.set_id)),
            set_ids,
            claimed_sets,
            next,
            puts,
        );
        let local_set_id = if cluster.starts_with(&local) {
            if local.is_empty() { 0 } else { set_id }
        } else {
            self.set_for(
                &local,
                existing.and_then(|v| reuse(v.local_set_id)),
                set_ids,
                claimed_sets,
                next,
                puts,
            )
        };
        for fe in &self.port.frontends {
            let mut flags = 0;
            if fe.kind.is_external() {
                flags |= skiff_ebpf::FE_EXTERNAL;
                if self.port.external_local {
                    flags |= skiff_ebpf::FE_ETP_LOCAL;
                }
            } else if self.port.internal_local {
                flags |= skiff_ebpf::FE_ITP_LOCAL;
            }
            if fe.kind == FrontendKind::NodePort {
                flags |= skiff_ebpf::FE_NODEPORT;
            }
            if self.port.affinity_timeout.is_some() {
                flags |= skiff_ebpf::FE_AFFINITY;
            }
            let value = FrontendValue {
                svc_id,
                set_id,
                local_set_id,
                count: cluster.len() as u16,
                local_count: local.len() as u16,
                flags,
                pad: 0,
                affinity_timeout: self.port.affinity_timeout.unwrap_or(0),
            };
            next.frontends.insert(fe_key(fe), value);
        }
    }

    /// The id of a set holding exactly `slots`: the current one when it already does, else
    /// a fresh one written in full.
    fn set_for(
        &self,
        slots: &[BackendValue],
        current_id: Option<u32>,
        set_ids: &mut Ids,
        claimed_sets: &mut BTreeSet<u32>,
        next: &mut MapContents,
        puts: &mut Vec<Op>,
    ) -> u32 {
        if slots.is_empty() {
            return 0;
        }
        let padded = padded(slots);
        if let Some(id) = current_id
            && self.current.sets.get(&id) == Some(&padded)
            && set_ids.claim(id, claimed_sets)
        {
            next.sets.insert(id, padded);
            return id;
        }
        let id = set_ids.fresh();
        claimed_sets.insert(id);
        puts.extend(chunks(id, &padded).map(|(k, v)| Op::PutBackend(k, v)));
        next.sets.insert(id, padded);
        id
    }
}

/// A backend list as map slots (at most u16::MAX: the count is 16 bits).
fn slots(backends: &[Backend]) -> Vec<BackendValue> {
    backends
        .iter()
        .take(u16::MAX as usize)
        .map(|b| BackendValue {
            addr: skiff_ebpf::be_addr(b.addr),
            port: skiff_ebpf::be_port(b.port),
            flags: if b.local { skiff_ebpf::BE_LOCAL } else { 0 },
            pad: 0,
        })
        .collect()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
