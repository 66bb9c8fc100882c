//! Turns an etcd watch (`prev_kv` on) into the store's `WatchStream`.

use std::collections::VecDeque;

use etcd_client::{EventType, WatchResponse};
use futures::stream;

use super::keys::{KeySpace, to_u64};
use crate::store::{Kv, StoreError, WatchEvent, WatchStream};

type Item = Result<WatchEvent, StoreError>;

/// State of one converted watch.
struct Converter {
    inner: etcd_client::WatchStream,
    keys: KeySpace,
    pending: VecDeque<Item>,
    /// The last revision delivered; a compaction error names the next one.
    last: u64,
    done: bool,
}

/// Converts `inner`, whose creation was already confirmed, starting after `from_revision`.
pub(crate) fn convert(
    inner: etcd_client::WatchStream,
    keys: KeySpace,
    from_revision: u64,
) -> WatchStream {
    let converter = Converter {
        inner,
        keys,
        pending: VecDeque::new(),
        last: from_revision,
        done: false,
    };
    Box::pin(stream::unfold(converter, |mut c| async move {
        loop {
            if let Some(item) = c.pending.pop_front() {
                return Some((item, c));
            }
            if c.done {
                return None;
            }
            c.receive().await;
        }
    }))
}

impl Converter {
    async fn receive(&mut self) {
        match self.inner.message().await {
            Ok(Some(response)) => self.absorb(&response),
            Ok(None) => self.fail(StoreError::EtcdResponse {
                op: "watch",
                detail: "etcd closed the watch stream".into(),
            }),
            Err(error) => self.fail(StoreError::etcd("watch")(error)),
        }
    }

    fn absorb(&mut self, response: &WatchResponse) {
        for event in response.events() {
            let converted = convert_event(&self.keys, event);
            if let Ok(event) = &converted {
                self.last = event.revision();
            }
            self.pending.push_back(converted);
        }
        if response.compact_revision() > 0 {
            self.fail(StoreError::Compacted {
                requested: self.last,
                compacted: to_u64(response.compact_revision()),
            });
        } else if response.canceled() {
            self.fail(StoreError::EtcdResponse {
                op: "watch",
                detail: format!("watch canceled: {}", response.cancel_reason()),
            });
        }
    }

    fn fail(&mut self, error: StoreError) {
        self.pending.push_back(Err(error));
        self.done = true;
    }
}

/// One etcd event as a store event.
pub(crate) fn convert_event(keys: &KeySpace, event: &etcd_client::Event) -> Item {
    let missing = || StoreError::EtcdResponse {
        op: "watch",
        detail: "event without a key-value".into(),
    };
    let kv = keys.kv(event.kv().ok_or_else(missing)?)?;
    let prev = event.prev_kv().map(|p| keys.kv(p)).transpose()?;
    Ok(match event.event_type() {
        EventType::Put => WatchEvent::Put { kv, prev },
        EventType::Delete => WatchEvent::Delete {
            revision: kv.mod_revision,
            // etcd omits prev_kv only if it could not read it; keep the key at least.
            prev: prev.unwrap_or(Kv {
                key: kv.key,
                value: Vec::new(),
                create_revision: 0,
                mod_revision: 0,
            }),
        },
    })
}
