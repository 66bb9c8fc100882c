//! Runs the store conformance suite against the embedded backend and a real etcd, plus
//! the checks that only make sense for one backend.

mod conformance;
mod support;

/// One `#[tokio::test]` per conformance case, for the backend `$fixture` builds.
macro_rules! conformance_suite {
    ($backend:ident, $fixture:path, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(fixture) = $fixture().await else { return };
                    crate::conformance::$case(fixture.store.clone()).await;
                }
            )*
        }
    };
}

macro_rules! all_cases {
    ($backend:ident, $fixture:path) => {
        conformance_suite!(
            $backend,
            $fixture,
            [
                create_get_and_duplicate,
                update_with_right_and_stale_revision,
                delete_with_preconditions,
                list_pages_are_consistent,
                watch_replays_then_follows,
                prefixes_are_isolated,
                compaction_makes_old_revisions_gone,
                concurrent_creates_are_all_acknowledged,
            ]
        );
    };
}

all_cases!(embedded, crate::support::Fixture::embedded);
all_cases!(etcd, crate::support::Fixture::etcd);

mod embedded_only {
    use skiff_controlplane::store::{EmbeddedOptions, EmbeddedStore, Store, WatchEvent};

    use crate::support::next_event;

    /// A watcher far behind the in-memory broadcast catches up from history, losing nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lagging_watcher_replays_from_history() {
        let dir = tempfile::tempdir().unwrap();
        let tiny = EmbeddedOptions {
            event_buffer: 2,
            watch_buffer: 2,
        };
        let store = EmbeddedStore::open_with(dir.path(), tiny).unwrap();
        let mut watch = store.watch("/k/", 0).await.unwrap();
        let mut written = Vec::new();
        for i in 0..60 {
            written.push(store.create(&format!("/k/{i:03}"), vec![i]).await.unwrap());
        }
        for kv in written {
            assert_eq!(
                next_event(&mut watch).await,
                WatchEvent::Put { kv, prev: None }
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopened_store_keeps_data_and_revision() {
        let dir = tempfile::tempdir().unwrap();
        let written = {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            store.create("/a", b"1".to_vec()).await.unwrap()
        };
        // The writer thread closes the database once the store is dropped; retry briefly.
        let deadline = std::time::Instant::now() + crate::support::DEADLINE;
        let store = loop {
            match EmbeddedStore::open(dir.path()) {
                Ok(store) => break store,
                Err(error) if std::time::Instant::now() > deadline => panic!("reopen: {error}"),
                Err(_) => tokio::task::yield_now().await,
            }
        };
        assert_eq!(store.get("/a").await.unwrap(), Some(written.clone()));
        assert_eq!(
            store.current_revision().await.unwrap(),
            written.mod_revision
        );
        let next = store.create("/b", b"2".to_vec()).await.unwrap();
        assert_eq!(next.mod_revision, written.mod_revision + 1);
    }
}

mod etcd_only {
    use skiff_controlplane::store::{EtcdStore, Store, StoreError, WatchEvent};

    use crate::support::{Fixture, next_event};

    /// Two API servers over one etcd see each other's writes, conflicts and events.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_share_one_etcd() {
        let Some(fixture) = Fixture::etcd().await else {
            return;
        };
        let endpoint = fixture.etcd_endpoint().unwrap();
        let a = fixture.store.clone();
        let b = EtcdStore::connect(&[endpoint.as_str()], "/skiff-test")
            .await
            .unwrap();
        let elsewhere = EtcdStore::connect(&[endpoint], "/other-root")
            .await
            .unwrap();

        let start = b.current_revision().await.unwrap();
        let mut watch = b.watch("/registry/", start).await.unwrap();
        let v1 = a.create("/registry/pods/x", b"1".to_vec()).await.unwrap();
        assert_eq!(b.get("/registry/pods/x").await.unwrap(), Some(v1.clone()));
        assert_eq!(
            next_event(&mut watch).await,
            WatchEvent::Put {
                kv: v1.clone(),
                prev: None
            }
        );

        b.update("/registry/pods/x", b"2".to_vec(), Some(v1.mod_revision))
            .await
            .unwrap();
        let lost = a
            .update("/registry/pods/x", b"3".to_vec(), Some(v1.mod_revision))
            .await;
        assert!(matches!(lost, Err(StoreError::Conflict { .. })), "{lost:?}");

        assert_eq!(
            elsewhere.get("/registry/pods/x").await.unwrap(),
            None,
            "roots are apart"
        );
        elsewhere
            .create("/registry/pods/x", b"other".to_vec())
            .await
            .unwrap();
        let mine = a.get("/registry/pods/x").await.unwrap().unwrap();
        assert_eq!(mine.value, b"2");
    }
}
