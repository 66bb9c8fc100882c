//! Mapping between store keys and etcd keys under the root prefix, and etcd values to `Kv`.

use etcd_client::KeyValue;

use crate::store::{Kv, StoreError};

/// Store keys live under `root` in etcd, so several users can share one cluster.
#[derive(Debug, Clone)]
pub(crate) struct KeySpace {
    root: String,
}

impl KeySpace {
    pub fn new(root: &str) -> Self {
        KeySpace {
            root: root.trim_end_matches('/').to_owned(),
        }
    }

    /// The etcd key of a store key.
    pub fn full(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.root).into_bytes()
    }

    /// The etcd key range `[start, end)` holding the store keys starting with `prefix`.
    pub fn prefix_range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let start = self.full(prefix);
        let end = prefix_end(&start);
        (start, end)
    }

    /// The store key of an etcd key.
    pub fn strip(&self, full: &[u8]) -> Result<String, StoreError> {
        let bad = |detail: &str| StoreError::EtcdResponse {
            op: "decode key",
            detail: detail.to_owned(),
        };
        let key = std::str::from_utf8(full).map_err(|_| bad("key is not utf-8"))?;
        key.strip_prefix(&self.root)
            .map(str::to_owned)
            .ok_or_else(|| bad("key outside the root prefix"))
    }

    /// A `Kv` from an etcd key-value.
    pub fn kv(&self, kv: &KeyValue) -> Result<Kv, StoreError> {
        Ok(Kv {
            key: self.strip(kv.key())?,
            value: kv.value().to_vec(),
            create_revision: to_u64(kv.create_revision()),
            mod_revision: to_u64(kv.mod_revision()),
        })
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's `range_end`);
/// `[0]` means "to the end of the keyspace".
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// etcd revisions are non-negative i64.
pub(crate) fn to_u64(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}

pub(crate) fn to_i64(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn keys_round_trip_under_the_root() {
        let space = KeySpace::new("/skiff/");
        assert_eq!(space.full("/registry/pods/a"), b"/skiff/registry/pods/a");
        assert_eq!(
            space.strip(b"/skiff/registry/pods/a").unwrap(),
            "/registry/pods/a"
        );
        assert!(space.strip(b"/other/x").is_err());
        let (start, end) = space.prefix_range("/registry/pods/");
        assert_eq!(start, b"/skiff/registry/pods/");
        assert_eq!(end, b"/skiff/registry/pods0");
    }
}
