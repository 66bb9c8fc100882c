//! Pod addresses from one CIDR, leased in a small JSON file (locked while changed) so that
//! separate `skiff pod` invocations never hand out the same address. The first host address
//! is the bridge's (the pods' gateway); pods get the ones after it.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free address left in {0}")]
    Exhausted(Ipv4Net),
    #[error("pod network {0} is too small (needs room for a gateway and a pod)")]
    TooSmall(Ipv4Net),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("lease file {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

/// The leases of one pod CIDR.
#[derive(Debug, Clone)]
pub struct Ipam {
    cidr: Ipv4Net,
    path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Leases {
    /// address → owner (the pod's name).
    leases: BTreeMap<Ipv4Addr, String>,
}

impl Ipam {
    /// The leases of `cidr`, kept in `dir` (one file per CIDR).
    pub fn new(dir: &Path, cidr: Ipv4Net) -> Result<Ipam, IpamError> {
        let cidr = cidr.trunc();
        if cidr.prefix_len() > 30 {
            return Err(IpamError::TooSmall(cidr));
        }
        let file = format!("ipam-{}-{}.json", cidr.network(), cidr.prefix_len());
        Ok(Ipam {
            cidr,
            path: dir.join(file),
        })
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The bridge's address: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        first_host(self.cidr)
    }

    /// The owner's address, leased now if it has none.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        self.update(|leases| {
            if let Some((ip, _)) = leases.iter().find(|(_, o)| *o == owner) {
                return Ok(*ip);
            }
            let ip = next_free(self.cidr, leases).ok_or(IpamError::Exhausted(self.cidr))?;
            leases.insert(ip, owner.to_string());
            Ok(ip)
        })
    }

    /// Gives the owner's address back; none is fine.
    pub fn release(&self, owner: &str) -> Result<(), IpamError> {
        self.update(|leases| {
            leases.retain(|_, o| o != owner);
            Ok(())
        })
    }

    fn update<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<Ipv4Addr, String>) -> Result<T, IpamError>,
    ) -> Result<T, IpamError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| IpamError::Io { op, path, source }
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        let lock_path = self.path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io("lock", &lock_path)(e.into()))?;
        let mut leases = match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice::<Leases>(&bytes).map_err(|e| IpamError::Corrupt {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Leases::default(),
            Err(e) => return Err(io("read", &self.path)(e)),
        };
        let out = f(&mut leases.leases)?;
        let tmp = self.path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(&leases).unwrap_or_default();
        std::fs::write(&tmp, json).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io("rename", &self.path))?;
        Ok(out)
    }
}

fn first_host(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()) + 1)
}

/// The lowest address after the gateway that is neither leased nor the broadcast address.
pub fn next_free(cidr: Ipv4Net, leases: &BTreeMap<Ipv4Addr, String>) -> Option<Ipv4Addr> {
    let first = u32::from(first_host(cidr)) + 1;
    let last = u32::from(cidr.broadcast()).checked_sub(1)?;
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| !leases.contains_key(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_skip_gateway_and_broadcast_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let cidr: Ipv4Net = "10.9.0.0/30".parse().unwrap();
        let ipam = Ipam::new(dir.path(), cidr).unwrap();
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 9, 0, 2));
        // Idempotent per owner, and the /30 has room for one pod only.
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 9, 0, 2));
        let again = Ipam::new(dir.path(), cidr).unwrap();
        assert!(matches!(again.allocate("b"), Err(IpamError::Exhausted(_))));
        again.release("a").unwrap();
        assert_eq!(again.allocate("b").unwrap(), Ipv4Addr::new(10, 9, 0, 2));
        assert!(Ipam::new(dir.path(), "10.9.0.0/31".parse().unwrap()).is_err());
    }

    #[test]
    fn next_free_fills_holes_first() {
        let cidr: Ipv4Net = "10.88.0.0/16".parse().unwrap();
        let mut leases = BTreeMap::new();
        leases.insert(Ipv4Addr::new(10, 88, 0, 2), "a".to_string());
        leases.insert(Ipv4Addr::new(10, 88, 0, 4), "c".to_string());
        assert_eq!(next_free(cidr, &leases), Some(Ipv4Addr::new(10, 88, 0, 3)));
    }
}
