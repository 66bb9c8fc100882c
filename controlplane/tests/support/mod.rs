//! Test fixtures: a store of each backend (etcd started on 127.0.0.1 by the test itself)
//! and waiting for watch events with a deadline.
// Each test binary uses a part of these fixtures.
#![allow(dead_code)]

pub mod etcd;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use skiff_controlplane::store::{EmbeddedStore, EtcdStore, Store, WatchEvent, WatchStream};
use tempfile::TempDir;

/// How long a test waits for an event before it fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A store under test and what keeps it alive. Fields drop in order: store, then backend.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    _backend: Backend,
}

enum Backend {
    Embedded { _dir: TempDir },
    Etcd(etcd::EtcdServer),
}

impl Fixture {
    /// An embedded store in a fresh temp dir.
    pub async fn embedded() -> Option<Fixture> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open embedded store");
        Some(Fixture {
            store: Arc::new(store),
            _backend: Backend::Embedded { _dir: dir },
        })
    }

    /// A store in a fresh etcd; `None` (skip) if etcd is not installed and `CI` is unset.
    pub async fn etcd() -> Option<Fixture> {
        let server = etcd::EtcdServer::start().await?;
        let store = EtcdStore::connect(&[server.endpoint.as_str()], "/skiff-test")
            .await
            .expect("connect to etcd");
        Some(Fixture {
            store: Arc::new(store),
            _backend: Backend::Etcd(server),
        })
    }

    /// The etcd server behind this fixture, if any.
    pub fn etcd_endpoint(&self) -> Option<String> {
        match &self._backend {
            Backend::Etcd(server) => Some(server.endpoint.clone()),
            Backend::Embedded { .. } => None,
        }
    }
}

/// The next event of `stream`; panics on an error, the end of the stream, or the deadline.
pub async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(DEADLINE, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(error))) => panic!("watch failed: {error}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {DEADLINE:?}"),
    }
}
