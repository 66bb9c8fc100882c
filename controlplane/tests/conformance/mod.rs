//! The store contract, written once over `Arc<dyn Store>` and run against every backend.

use std::collections::BTreeSet;
use std::sync::Arc;

use skiff_controlplane::store::{Kv, ListOptions, Store, StoreError, WatchEvent};

use crate::support::next_event;

type Dyn = Arc<dyn Store>;

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn keys(items: &[Kv]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

pub async fn create_get_and_duplicate(store: Dyn) {
    let before = store.current_revision().await.unwrap();
    let kv = store
        .create("/registry/pods/default/web-1", bytes("v1"))
        .await
        .unwrap();
    assert_eq!(kv.key, "/registry/pods/default/web-1");
    assert_eq!(kv.value, b"v1");
    assert!(kv.mod_revision > before, "a write bumps the revision");
    assert_eq!(kv.create_revision, kv.mod_revision);
    assert_eq!(store.current_revision().await.unwrap(), kv.mod_revision);
    assert_eq!(
        store.get("/registry/pods/default/web-1").await.unwrap(),
        Some(kv.clone())
    );
    assert_eq!(
        store.get("/registry/pods/default/web-2").await.unwrap(),
        None
    );

    let duplicate = store
        .create("/registry/pods/default/web-1", bytes("v2"))
        .await;
    assert!(
        matches!(&duplicate, Err(StoreError::AlreadyExists { key }) if key == "/registry/pods/default/web-1"),
        "{duplicate:?}"
    );
    assert_eq!(
        store.get("/registry/pods/default/web-1").await.unwrap(),
        Some(kv.clone())
    );
    assert_eq!(
        store.current_revision().await.unwrap(),
        kv.mod_revision,
        "a failed write"
    );
}

pub async fn update_with_right_and_stale_revision(store: Dyn) {
    let key = "/registry/configmaps/default/c";
    let v1 = store.create(key, bytes("v1")).await.unwrap();
    let v2 = store
        .update(key, bytes("v2"), Some(v1.mod_revision))
        .await
        .unwrap();
    assert!(v2.mod_revision > v1.mod_revision);
    assert_eq!(v2.create_revision, v1.create_revision);
    assert_eq!(v2.value, b"v2");

    let stale = store
        .update(key, bytes("stale"), Some(v1.mod_revision))
        .await;
    match stale {
        Err(StoreError::Conflict {
            key: k,
            expected,
            actual,
        }) => {
            assert_eq!(
                (k.as_str(), expected, actual),
                (key, v1.mod_revision, v2.mod_revision)
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.get(key).await.unwrap(), Some(v2.clone()));

    let v3 = store.update(key, bytes("v3"), None).await.unwrap();
    assert!(v3.mod_revision > v2.mod_revision);
    assert_eq!(v3.create_revision, v1.create_revision);
    assert_eq!(store.get(key).await.unwrap(), Some(v3));

    let missing = store
        .update("/registry/configmaps/default/none", bytes("x"), None)
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    let missing = store
        .update("/registry/configmaps/default/none", bytes("x"), Some(1))
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
}

pub async fn delete_with_preconditions(store: Dyn) {
    let key = "/registry/secrets/default/s";
    let v1 = store.create(key, bytes("v1")).await.unwrap();
    let v2 = store.update(key, bytes("v2"), None).await.unwrap();

    let stale = store.delete(key, Some(v1.mod_revision)).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { expected, actual, .. })
            if expected == v1.mod_revision && actual == v2.mod_revision),
        "{stale:?}"
    );
    assert_eq!(store.get(key).await.unwrap(), Some(v2.clone()));

    let prev = store.delete(key, Some(v2.mod_revision)).await.unwrap();
    assert_eq!(prev, v2, "delete returns the last state");
    assert_eq!(store.get(key).await.unwrap(), None);
    assert!(
        store.current_revision().await.unwrap() > v2.mod_revision,
        "a delete is a write"
    );
    let again = store.delete(key, None).await;
    assert!(
        matches!(again, Err(StoreError::NotFound { .. })),
        "{again:?}"
    );

    let reborn = store.create(key, bytes("v3")).await.unwrap();
    assert!(
        reborn.create_revision > v2.mod_revision,
        "a re-created key starts anew"
    );
    let prev = store.delete(key, None).await.unwrap();
    assert_eq!(prev.value, b"v3");
}

pub async fn list_pages_are_consistent(store: Dyn) {
    let prefix = "/registry/pods/ns/";
    for i in 0..10 {
        store
            .create(&format!("{prefix}p{i:02}"), bytes(&format!("v{i}")))
            .await
            .unwrap();
    }
    // Neighbours that must not show up.
    store.create("/registry/pods/ns", bytes("x")).await.unwrap();
    store
        .create("/registry/pods/nsx/p00", bytes("x"))
        .await
        .unwrap();
    store
        .create("/registry/pods/n/p00", bytes("x"))
        .await
        .unwrap();

    let all = store.list(prefix, ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 10);
    assert_eq!(all.continue_token, None);
    assert_eq!(all.revision, store.current_revision().await.unwrap());

    let page1 = store.list(prefix, page(4, None)).await.unwrap();
    assert_eq!(
        keys(&page1.items),
        [0, 1, 2, 3].map(|i| format!("{prefix}p{i:02}"))
    );
    assert_eq!(page1.remaining, Some(6));
    assert_eq!(page1.revision, all.revision);
    let token = page1.continue_token.clone().expect("a continue token");

    // Writes between the pages must not show in the later pages.
    store
        .create(&format!("{prefix}p03a"), bytes("new"))
        .await
        .unwrap();
    store
        .update(&format!("{prefix}p05"), bytes("changed"), None)
        .await
        .unwrap();
    store.delete(&format!("{prefix}p06"), None).await.unwrap();
    store
        .create(&format!("{prefix}p10"), bytes("new"))
        .await
        .unwrap();

    let page2 = store.list(prefix, page(4, Some(token))).await.unwrap();
    assert_eq!(
        keys(&page2.items),
        [4, 5, 6, 7].map(|i| format!("{prefix}p{i:02}"))
    );
    assert_eq!(
        page2.items[1].value, b"v5",
        "the value as of the list's revision"
    );
    assert_eq!(page2.revision, page1.revision);
    assert_eq!(page2.remaining, Some(2));
    let page3 = store
        .list(prefix, page(4, page2.continue_token))
        .await
        .unwrap();
    assert_eq!(
        keys(&page3.items),
        [8, 9].map(|i| format!("{prefix}p{i:02}"))
    );
    assert_eq!(page3.continue_token, None);
    assert_eq!(page3.remaining, Some(0));

    let old = ListOptions {
        revision: Some(page1.revision),
        ..ListOptions::default()
    };
    assert_eq!(
        store.list(prefix, old).await.unwrap().items,
        all.items,
        "list at a revision"
    );

    let now = store.list(prefix, ListOptions::default()).await.unwrap();
    let expected: Vec<String> = [
        "00", "01", "02", "03", "03a", "04", "05", "07", "08", "09", "10",
    ]
    .iter()
    .map(|s| format!("{prefix}p{s}"))
    .collect();
    assert_eq!(keys(&now.items), expected);
    assert_eq!(now.items[6].value, b"changed");

    let bad = store
        .list("/registry/services/", page(4, page1.continue_token))
        .await;
    assert!(
        matches!(bad, Err(StoreError::InvalidContinue { .. })),
        "{bad:?}"
    );
}

fn page(limit: usize, continue_token: Option<String>) -> ListOptions {
    ListOptions {
        limit: Some(limit),
        continue_token,
        revision: None,
    }
}

pub async fn watch_replays_then_follows(store: Dyn) {
    let prefix = "/registry/deployments/";
    let a1 = store
        .create("/registry/deployments/a", bytes("a1"))
        .await
        .unwrap();
    let b1 = store
        .create("/registry/deployments/b", bytes("b1"))
        .await
        .unwrap();
    let a2 = store
        .update("/registry/deployments/a", bytes("a2"), None)
        .await
        .unwrap();
    let b_gone = store.delete("/registry/deployments/b", None).await.unwrap();
    let deleted_at = store.current_revision().await.unwrap();

    let mut watch = store.watch(prefix, a1.mod_revision).await.unwrap();
    assert_eq!(
        next_event(&mut watch).await,
        WatchEvent::Put {
            kv: b1.clone(),
            prev: None
        }
    );
    assert_eq!(
        next_event(&mut watch).await,
        WatchEvent::Put {
            kv: a2.clone(),
            prev: Some(a1.clone())
        }
    );
    assert_eq!(
        next_event(&mut watch).await,
        WatchEvent::Delete {
            prev: b_gone,
            revision: deleted_at
        }
    );

    let c1 = store
        .create("/registry/deployments/c", bytes("c1"))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut watch).await,
        WatchEvent::Put {
            kv: c1.clone(),
            prev: None
        }
    );

    // From the current revision: live events only.
    let mut live = store.watch(prefix, c1.mod_revision).await.unwrap();
    let a3 = store
        .update("/registry/deployments/a", bytes("a3"), None)
        .await
        .unwrap();
    let event = next_event(&mut live).await;
    assert_eq!(
        event,
        WatchEvent::Put {
            kv: a3.clone(),
            prev: Some(a2)
        }
    );
    assert_eq!(next_event(&mut watch).await, event);
}

pub async fn prefixes_are_isolated(store: Dyn) {
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("/registry/pods/a/", start).await.unwrap();
    store
        .create("/registry/pods/ab/x", bytes("ab"))
        .await
        .unwrap();
    store
        .create("/registry/pods/a", bytes("bare"))
        .await
        .unwrap();
    let inside = store
        .create("/registry/pods/a/x", bytes("a"))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut watch).await,
        WatchEvent::Put {
            kv: inside.clone(),
            prev: None
        }
    );

    let listed = store
        .list("/registry/pods/a/", ListOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.items, vec![inside]);
    let wider = store
        .list("/registry/pods/a", ListOptions::default())
        .await
        .unwrap();
    assert_eq!(
        keys(&wider.items),
        [
            "/registry/pods/a",
            "/registry/pods/a/x",
            "/registry/pods/ab/x"
        ]
    );
    assert_eq!(store.get("/registry/pods/a/").await.unwrap(), None);
}

pub async fn compaction_makes_old_revisions_gone(store: Dyn) {
    let prefix = "/registry/nodes/";
    let first = store
        .create("/registry/nodes/n1", bytes("1"))
        .await
        .unwrap();
    store
        .create("/registry/nodes/n2", bytes("2"))
        .await
        .unwrap();
    let page1 = store.list(prefix, page(1, None)).await.unwrap();
    let token = page1.continue_token.expect("a continue token");
    let latest = store
        .update("/registry/nodes/n1", bytes("1b"), None)
        .await
        .unwrap();
    let compacted = latest.mod_revision;

    store.compact(compacted).await.unwrap();

    let watch = store.watch(prefix, first.mod_revision).await;
    match watch {
        Err(StoreError::Compacted {
            requested,
            compacted: at,
        }) => {
            assert_eq!((requested, at), (first.mod_revision, compacted));
        }
        Err(other) => panic!("expected Compacted, got {other}"),
        Ok(_) => panic!("expected Compacted, got a watch"),
    }
    let list = store.list(prefix, page(1, Some(token))).await;
    assert!(
        matches!(list, Err(StoreError::Compacted { requested, .. }) if requested == page1.revision),
        "{list:?}"
    );
    let at_old = ListOptions {
        revision: Some(first.mod_revision),
        ..ListOptions::default()
    };
    let list = store.list(prefix, at_old).await;
    assert!(
        matches!(list, Err(StoreError::Compacted { .. })),
        "{list:?}"
    );

    // The compacted revision itself is still readable and watchable.
    let at = ListOptions {
        revision: Some(compacted),
        ..ListOptions::default()
    };
    assert_eq!(store.list(prefix, at).await.unwrap().items.len(), 2);
    let mut watch = store.watch(prefix, compacted).await.unwrap();
    let next = store
        .update("/registry/nodes/n2", bytes("2b"), None)
        .await
        .unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), next.mod_revision);
    assert_eq!(store.get("/registry/nodes/n1").await.unwrap(), Some(latest));

    store
        .compact(first.mod_revision)
        .await
        .expect("compacting an older revision is a no-op");
    let future = store.compact(next.mod_revision + 100).await;
    assert!(
        matches!(future, Err(StoreError::FutureRevision { .. })),
        "{future:?}"
    );
}

pub async fn concurrent_creates_are_all_acknowledged(store: Dyn) {
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("/registry/events/", start).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut created = Vec::new();
            for i in 0..10 {
                let key = format!("/registry/events/t{task:02}-{i}");
                created.push(store.create(&key, bytes(&key)).await.unwrap());
            }
            created
        }));
    }
    let mut created = Vec::new();
    for task in tasks {
        created.extend(task.await.unwrap());
    }
    let revisions: BTreeSet<u64> = created.iter().map(|kv| kv.mod_revision).collect();
    assert_eq!(revisions.len(), 200, "every create has its own revision");
    assert!(*revisions.first().unwrap() > start);

    let listed = store
        .list("/registry/events/", ListOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 200);
    for kv in &listed.items {
        assert_eq!(kv.value, kv.key.as_bytes());
    }
    assert!(listed.revision >= *revisions.last().unwrap());

    let mut seen = Vec::new();
    for _ in 0..200 {
        seen.push(next_event(&mut watch).await.revision());
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "watch events in revision order"
    );
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), revisions);
}
