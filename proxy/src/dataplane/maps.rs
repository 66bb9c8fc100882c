//! The data plane's maps in user space: the frontend and backend maps the plan writes (one
//! bpf(2) call per op, through [`MapWriter`]), the node settings, and read-back of what they
//! hold (after a restart, and for `skiff proxy show`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use skiff_ebpf::{
    AffinityKey, AffinityValue, BackendChunk, BackendKey, CtKey, CtValue, FrontendKey,
    FrontendValue, LbConfig, SockKey, SockValue, maps,
};

use super::{DataplaneError, sys};
use crate::plan::{MapContents, Op};

/// Applies plan ops to maps; the kernel's maps, or a recording fake in tests.
pub trait MapWriter {
    fn apply(&mut self, op: &Op) -> Result<(), DataplaneError>;

    /// Applies a run of ops of one kind (one phase of a plan: their order within the run
    /// does not matter). Returns how many were applied when it fails.
    fn apply_run(&mut self, run: &[Op]) -> Result<(), (usize, Box<DataplaneError>)> {
        for (done, op) in run.iter().enumerate() {
            self.apply(op).map_err(|e| (done, Box::new(e)))?;
        }
        Ok(())
    }
}

/// Runs `ops` in order, a run of same-kind ops at a time, and stops at the first failure,
/// returning how many were applied.
pub fn execute(
    ops: &[Op],
    writer: &mut impl MapWriter,
) -> Result<usize, (usize, Box<DataplaneError>)> {
    let mut done = 0;
    for run in ops.chunk_by(|a, b| std::mem::discriminant(a) == std::mem::discriminant(b)) {
        writer.apply_run(run).map_err(|(n, e)| (done + n, e))?;
        done += run.len();
    }
    Ok(done)
}

/// Entries the programs keep on their own (connection state), by map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateCounts {
    pub affinity: usize,
    pub sockets: usize,
    pub conntrack: usize,
}

pub struct Maps {
    // Descriptors of the two maps plans write, for batched writes (sys.rs).
    frontends_fd: OwnedFd,
    backends_fd: OwnedFd,
    frontends: HashMap<MapData, FrontendKey, FrontendValue>,
    backends: HashMap<MapData, BackendKey, BackendChunk>,
    config: Array<MapData, LbConfig>,
    affinity: HashMap<MapData, AffinityKey, AffinityValue>,
    sockets: HashMap<MapData, SockKey, SockValue>,
    conntrack: HashMap<MapData, CtKey, CtValue>,
}

fn map_err(name: &'static str, what: &str) -> impl FnOnce(MapError) -> DataplaneError {
    let what = what.to_string();
    move |source| DataplaneError::Map { name, what, source }
}

impl Maps {
    /// Takes the maps out of a loaded object (created, or re-opened from their pins).
    pub fn from_ebpf(ebpf: &mut aya::Ebpf) -> Result<Maps, DataplaneError> {
        Maps::from_source(|name| {
            ebpf.take_map(name)
                .ok_or(DataplaneError::MissingMap { name })
        })
    }

    /// Opens the maps pinned below `pin_dir` without loading any program.
    pub fn from_pins(pin_dir: &Path) -> Result<Maps, DataplaneError> {
        Maps::from_source(|name| {
            let data = MapData::from_pin(pin_dir.join("maps").join(name))
                .map_err(map_err(name, "open pin (BPF_OBJ_GET)"))?;
            Map::from_map_data(data).map_err(map_err(name, "map type"))
        })
    }

    fn from_source(
        mut take: impl FnMut(&'static str) -> Result<Map, DataplaneError>,
    ) -> Result<Maps, DataplaneError> {
        let (frontends, frontends_fd) = with_fd(take(maps::FRONTENDS)?, maps::FRONTENDS)?;
        let (backends, backends_fd) = with_fd(take(maps::BACKENDS)?, maps::BACKENDS)?;
        Ok(Maps {
            frontends_fd,
            backends_fd,
            frontends: HashMap::try_from(frontends).map_err(map_err(maps::FRONTENDS, "layout"))?,
            backends: HashMap::try_from(backends).map_err(map_err(maps::BACKENDS, "layout"))?,
            config: Array::try_from(take(maps::CONFIG)?)
                .map_err(map_err(maps::CONFIG, "layout"))?,
            affinity: HashMap::try_from(take(maps::AFFINITY)?)
                .map_err(map_err(maps::AFFINITY, "layout"))?,
            sockets: HashMap::try_from(take(maps::SOCKETS)?)
                .map_err(map_err(maps::SOCKETS, "layout"))?,
            conntrack: HashMap::try_from(take(maps::CONNTRACK)?)
                .map_err(map_err(maps::CONNTRACK, "layout"))?,
        })
    }

    /// What the frontend and backend maps hold.
    pub fn read_contents(&self) -> Result<MapContents, DataplaneError> {
        let frontends = self
            .frontends
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(maps::FRONTENDS, "iterate"))?;
        let backends = self
            .backends
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(maps::BACKENDS, "iterate"))?;
        Ok(MapContents::from_entries(frontends, backends))
    }

    pub fn config(&self) -> Result<LbConfig, DataplaneError> {
        self.config
            .get(&0, 0)
            .map_err(map_err(maps::CONFIG, "read"))
    }

    pub fn write_config(&mut self, config: LbConfig) -> Result<(), DataplaneError> {
        self.config
            .set(0, config, 0)
            .map_err(map_err(maps::CONFIG, "update (BPF_MAP_UPDATE_ELEM)"))
    }

    pub fn state_counts(&self) -> StateCounts {
        StateCounts {
            affinity: self.affinity.keys().count(),
            sockets: self.sockets.keys().count(),
            conntrack: self.conntrack.keys().count(),
        }
    }
}

/// A hash map and a descriptor of it of our own.
fn with_fd(map: Map, name: &'static str) -> Result<(Map, OwnedFd), DataplaneError> {
    let fd = match &map {
        Map::HashMap(data) => data.fd().as_fd().try_clone_to_owned(),
        _ => {
            return Err(DataplaneError::Config(format!(
                "map {name} is not a hash map"
            )));
        }
    };
    let fd = fd.map_err(|source| DataplaneError::Batch {
        name,
        call: "dup",
        source,
    })?;
    Ok((map, fd))
}

impl MapWriter for Maps {
    fn apply_run(&mut self, run: &[Op]) -> Result<(), (usize, Box<DataplaneError>)> {
        let batch_err = |name: &'static str| {
            move |e: sys::BatchError| {
                (
                    e.done,
                    Box::new(DataplaneError::Batch {
                        name,
                        call: e.call,
                        source: e.error,
                    }),
                )
            }
        };
        match run.first() {
            None => Ok(()),
            Some(Op::PutFrontend(..)) => {
                let (keys, values): (Vec<_>, Vec<_>) = run
                    .iter()
                    .filter_map(|op| match op {
                        Op::PutFrontend(k, v) => Some((*k, *v)),
                        _ => None,
                    })
                    .unzip();
                sys::update_batch(self.frontends_fd.as_fd(), &keys, &values)
                    .map_err(batch_err(maps::FRONTENDS))
            }
            Some(Op::PutBackend(..)) => {
                let (keys, values): (Vec<_>, Vec<_>) = run
                    .iter()
                    .filter_map(|op| match op {
                        Op::PutBackend(k, v) => Some((*k, *v)),
                        _ => None,
                    })
                    .unzip();
                sys::update_batch(self.backends_fd.as_fd(), &keys, &values)
                    .map_err(batch_err(maps::BACKENDS))
            }
            Some(Op::DeleteFrontend(..)) => {
                let keys: Vec<FrontendKey> = run
                    .iter()
                    .filter_map(|op| match op {
                        Op::DeleteFrontend(k) => Some(*k),
                        _ => None,
                    })
                    .collect();
                delete_all(self.frontends_fd.as_fd(), &keys).map_err(batch_err(maps::FRONTENDS))
            }
            Some(Op::DeleteBackend(..)) => {
                let keys: Vec<BackendKey> = run
                    .iter()
                    .filter_map(|op| match op {
                        Op::DeleteBackend(k) => Some(*k),
                        _ => None,
                    })
                    .collect();
                delete_all(self.backends_fd.as_fd(), &keys).map_err(batch_err(maps::BACKENDS))
            }
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), DataplaneError> {
        const UPDATE: &str = "update (BPF_MAP_UPDATE_ELEM)";
        const DELETE: &str = "delete (BPF_MAP_DELETE_ELEM)";
        let absent_ok = |r: Result<(), MapError>| match r {
            Err(MapError::KeyNotFound) => Ok(()),
            other => other,
        };
        match op {
            Op::PutFrontend(k, v) => self
                .frontends
                .insert(k, v, 0)
                .map_err(map_err(maps::FRONTENDS, UPDATE)),
            Op::DeleteFrontend(k) => {
                absent_ok(self.frontends.remove(k)).map_err(map_err(maps::FRONTENDS, DELETE))
            }
            Op::PutBackend(k, v) => self
                .backends
                .insert(k, v, 0)
                .map_err(map_err(maps::BACKENDS, UPDATE)),
            Op::DeleteBackend(k) => {
                absent_ok(self.backends.remove(k)).map_err(map_err(maps::BACKENDS, DELETE))
            }
        }
    }
}

/// Deletes every key; a key already absent is skipped, not an error.
fn delete_all<K: Copy>(fd: BorrowedFd<'_>, keys: &[K]) -> Result<(), sys::BatchError> {
    let mut at = 0;
    while at < keys.len() {
        match sys::delete_batch(fd, &keys[at..]) {
            Ok(()) => return Ok(()),
            Err(e) if e.error.raw_os_error() == Some(libc::ENOENT) => at += e.done + 1,
            Err(mut e) => {
                e.done += at;
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records ops and fails at one of them.
    struct Fake {
        applied: Vec<Op>,
        fail_at: usize,
    }

    impl MapWriter for Fake {
        fn apply(&mut self, op: &Op) -> Result<(), DataplaneError> {
            if self.applied.len() == self.fail_at {
                return Err(DataplaneError::Config("injected".into()));
            }
            self.applied.push(*op);
            Ok(())
        }
    }

    #[test]
    fn execute_stops_at_the_first_failure_and_says_how_far_it_got() {
        let ops: Vec<Op> = (0..4)
            .map(|i| {
                Op::DeleteBackend(BackendKey {
                    set_id: 1,
                    chunk: i,
                })
            })
            .collect();
        let mut fake = Fake {
            applied: vec![],
            fail_at: 2,
        };
        let (done, err) = execute(&ops, &mut fake).unwrap_err();
        assert_eq!(done, 2);
        assert_eq!(fake.applied, ops[..2]);
        assert!(err.to_string().contains("injected"));
        let mut fake = Fake {
            applied: vec![],
            fail_at: usize::MAX,
        };
        assert_eq!(execute(&ops, &mut fake).unwrap(), 4);
    }
}
