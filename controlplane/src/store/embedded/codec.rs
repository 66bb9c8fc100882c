//! Byte layout of the embedded store's records: entries of the key table and events of the
//! history table. Little-endian, length-prefixed; decoding never panics on bad input.

use crate::store::{Kv, StoreError, WatchEvent};

const TAG_PUT: u8 = 0;
const TAG_DELETE: u8 = 1;
const NO_PREV: u8 = 0;
const HAS_PREV: u8 = 1;

/// The value stored under a key in the key table: `create | mod | value`.
pub(crate) fn encode_entry(kv: &Kv) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

/// Rebuilds a `Kv` from its key and the key table's value.
pub(crate) fn decode_entry(key: &str, bytes: &[u8]) -> Result<Kv, StoreError> {
    let mut r = Reader::new(bytes, "entry");
    let create_revision = r.u64()?;
    let mod_revision = r.u64()?;
    Ok(Kv {
        key: key.to_owned(),
        value: r.rest().to_vec(),
        create_revision,
        mod_revision,
    })
}

/// An event of the history table.
pub(crate) fn encode_event(event: &WatchEvent) -> Vec<u8> {
    let mut out = Vec::new();
    match event {
        WatchEvent::Put { kv, prev } => {
            out.push(TAG_PUT);
            put_kv(&mut out, kv);
            match prev {
                Some(prev) => {
                    out.push(HAS_PREV);
                    put_kv(&mut out, prev);
                }
                None => out.push(NO_PREV),
            }
        }
        WatchEvent::Delete { prev, revision } => {
            out.push(TAG_DELETE);
            out.extend_from_slice(&revision.to_le_bytes());
            put_kv(&mut out, prev);
        }
    }
    out
}

/// Decodes an event of the history table.
pub(crate) fn decode_event(bytes: &[u8]) -> Result<WatchEvent, StoreError> {
    let mut r = Reader::new(bytes, "history event");
    match r.u8()? {
        TAG_PUT => {
            let kv = r.kv()?;
            let prev = match r.u8()? {
                NO_PREV => None,
                HAS_PREV => Some(r.kv()?),
                other => return Err(r.corrupt(&format!("prev flag {other}"))),
            };
            Ok(WatchEvent::Put { kv, prev })
        }
        TAG_DELETE => {
            let revision = r.u64()?;
            let prev = r.kv()?;
            Ok(WatchEvent::Delete { prev, revision })
        }
        other => Err(r.corrupt(&format!("event tag {other}"))),
    }
}

fn put_kv(out: &mut Vec<u8>, kv: &Kv) {
    put_bytes(out, kv.key.as_bytes());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    put_bytes(out, &kv.value);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are far below 4 GiB (redb's own value limit is 3 GiB).
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A cursor over a record that reports truncation as `StoreError::Corrupt`.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { bytes, what }
    }

    fn corrupt(&self, detail: &str) -> StoreError {
        StoreError::Corrupt {
            what: format!("{}: {detail}", self.what),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(buf))
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let mut buf = [0u8; 4];
        buf.copy_from_slice(self.take(4)?);
        self.take(u32::from_le_bytes(buf) as usize)
    }

    fn kv(&mut self) -> Result<Kv, StoreError> {
        let key = std::str::from_utf8(self.bytes()?)
            .map_err(|_| self.corrupt("key is not utf-8"))?
            .to_owned();
        let create_revision = self.u64()?;
        let mod_revision = self.u64()?;
        let value = self.bytes()?.to_vec();
        Ok(Kv {
            key,
            value,
            create_revision,
            mod_revision,
        })
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: u64) -> Kv {
        Kv {
            key: key.into(),
            value: format!("v{rev}").into_bytes(),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    #[test]
    fn events_round_trip() {
        let events = [
            WatchEvent::Put {
                kv: kv("/a", 2),
                prev: None,
            },
            WatchEvent::Put {
                kv: kv("/a", 3),
                prev: Some(kv("/a", 2)),
            },
            WatchEvent::Delete {
                prev: kv("/a", 3),
                revision: 4,
            },
        ];
        for event in events {
            assert_eq!(decode_event(&encode_event(&event)).unwrap(), event);
        }
    }

    #[test]
    fn entry_round_trip() {
        let entry = kv("/registry/pods/x", 9);
        assert_eq!(
            decode_entry("/registry/pods/x", &encode_entry(&entry)).unwrap(),
            entry
        );
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let bytes = encode_event(&WatchEvent::Put {
            kv: kv("/a", 2),
            prev: Some(kv("/a", 1)),
        });
        for len in 0..bytes.len() {
            assert!(
                decode_event(&bytes[..len]).is_err(),
                "prefix of length {len}"
            );
        }
        assert!(decode_entry("/a", &[1, 2, 3]).is_err());
    }
}
