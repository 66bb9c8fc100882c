//! The etcd backend: the store in a real etcd cluster, shared by several API servers.
//!
//! Writes are etcd transactions guarded on the key's revisions (create: `create_revision
//! == 0`; update and delete: `mod_revision == expected`, or "exists"); lists are ranges at
//! one revision; watches start at `from + 1` with `prev_kv`. etcd's revision is the store's.
//! A dead member is retried around and taken out of the client's balancer (`members.rs`).

mod keys;
mod members;
mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions,
    PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};

use super::token::ContinueToken;
use super::{Kv, ListOptions, ListResult, Store, StoreError, WatchStream};
use keys::{KeySpace, to_i64, to_u64};
use members::{Prober, Request};

const COMPACTED_MESSAGE: &str = "required revision has been compacted";
const FUTURE_MESSAGE: &str = "required revision is a future revision";

/// A store kept in etcd under a root prefix.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    keys: KeySpace,
    /// Takes unreachable members out of the balancer while any clone of the store lives.
    _prober: Option<Arc<Prober>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to `endpoints` (e.g. `http://127.0.0.1:2379`); keys go under `root`.
    pub async fn connect<E: AsRef<str>>(endpoints: &[E], root: &str) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(StoreError::etcd("connect"))?;
        let mut store = Self::with_client(client.clone(), root);
        if endpoints.len() > 1 {
            let endpoints = endpoints.iter().map(|e| e.as_ref().to_owned()).collect();
            store._prober = Some(Arc::new(Prober::start(
                client,
                endpoints,
                Duration::from_secs(1),
            )));
        }
        Ok(store)
    }

    /// Uses an existing client; keys go under `root`.
    pub fn with_client(client: Client, root: &str) -> Self {
        EtcdStore {
            client,
            keys: KeySpace::new(root),
            _prober: None,
        }
    }

    /// Sends `call` until it succeeds, fails in a way that sending again cannot help, or
    /// `members::ATTEMPTS` are spent (see `members::may_retry`).
    async fn retrying<T, F, Fut>(
        &self,
        request: Request,
        mut call: F,
    ) -> Result<T, etcd_client::Error>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 1;
        loop {
            match call(self.client.clone()).await {
                Err(e) if attempt < members::ATTEMPTS && members::may_retry(&e, request) => {
                    tracing::debug!(error = %e, attempt, "etcd request failed; sending it again");
                    tokio::time::sleep(members::pause(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn txn(&self, op: &'static str, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.retrying(Request::Write, |c| {
            let txn = txn.clone();
            async move { c.kv_client().txn(txn).await }
        })
        .await
        .map_err(StoreError::etcd(op))
    }

    /// Maps etcd's revision errors of a read at `requested` to the store's.
    async fn revision_error(
        &self,
        op: &'static str,
        requested: u64,
        error: etcd_client::Error,
    ) -> StoreError {
        match grpc_message(&error) {
            Some(m) if m.contains(COMPACTED_MESSAGE) => StoreError::Compacted {
                requested,
                compacted: self.compacted_revision().await.unwrap_or(0),
            },
            Some(m) if m.contains(FUTURE_MESSAGE) => StoreError::FutureRevision {
                requested,
                current: self.current_revision().await.unwrap_or(0),
            },
            _ => StoreError::etcd(op)(error),
        }
    }

    /// etcd tells the compacted revision only to a watch that starts before it.
    async fn compacted_revision(&self) -> Result<u64, StoreError> {
        let key = self.keys.full("\0compaction-probe");
        let mut stream = self
            .retrying(Request::Read, |c| {
                let (key, probe) = (key.clone(), WatchOptions::new().with_start_revision(1));
                async move { c.watch_client().watch(key, Some(probe)).await }
            })
            .await
            .map_err(StoreError::etcd("watch"))?;
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(response) = stream.message().await? {
                if response.compact_revision() > 0 || response.canceled() {
                    return Ok(to_u64(response.compact_revision()));
                }
            }
            Ok(0)
        });
        match answer.await {
            Ok(result) => result.map_err(StoreError::etcd("watch")),
            Err(_) => Ok(0),
        }
    }

    /// Fails with `Compacted` if the state at `revision` is gone (etcd allows a watch to
    /// start one revision earlier than a read, so watches check with a read first).
    async fn check_readable(&self, revision: u64) -> Result<(), StoreError> {
        let key = self.keys.full("");
        let read = self.retrying(Request::Read, |c| {
            let key = key.clone();
            let options = GetOptions::new()
                .with_revision(to_i64(revision))
                .with_count_only();
            async move { c.kv_client().get(key, Some(options)).await }
        });
        match read.await {
            Ok(_) => Ok(()),
            Err(error) => match self.revision_error("watch", revision, error).await {
                StoreError::FutureRevision { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

/// The message of a gRPC error from etcd.
fn grpc_message(error: &etcd_client::Error) -> Option<&str> {
    match error {
        etcd_client::Error::GRpcStatus(status) => Some(status.message()),
        _ => None,
    }
}

/// The guard of an update or delete: the expected `mod_revision`, or just "exists".
fn precondition(key: &[u8], expected: Option<u64>) -> Compare {
    match expected {
        Some(revision) => Compare::mod_revision(key, CompareOp::Equal, to_i64(revision)),
        None => Compare::create_revision(key, CompareOp::Greater, 0),
    }
}

/// The revision of the transaction (the new revision for a successful write).
fn header_revision(response: &TxnResponse) -> u64 {
    response.header().map_or(0, |h| to_u64(h.revision()))
}

impl EtcdStore {
    /// Why a guarded update or delete did not happen, from its `else` branch's get.
    fn precondition_failed(
        &self,
        key: &str,
        expected: Option<u64>,
        response: &TxnResponse,
    ) -> StoreError {
        let current = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| to_u64(kv.mod_revision())),
            _ => None,
        });
        match (current, expected) {
            (Some(actual), Some(expected)) => StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual,
            },
            _ => StoreError::NotFound {
                key: key.to_owned(),
            },
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Kv>, StoreError> {
        let full = self.keys.full(key);
        let response = self
            .retrying(Request::Read, |c| {
                let full = full.clone();
                async move { c.kv_client().get(full, None).await }
            })
            .await
            .map_err(StoreError::etcd("get"))?;
        response
            .kvs()
            .first()
            .map(|kv| self.keys.kv(kv))
            .transpose()
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
        let token = options
            .continue_token
            .as_deref()
            .map(|token| ContinueToken::decode(token, prefix))
            .transpose()?;
        let requested = match &token {
            Some(token) => token.revision,
            None => options.revision.unwrap_or(0),
        };
        let (start, end) = self.keys.prefix_range(prefix);
        let start = token.map_or(start, |t| self.keys.full(&t.start_key()));
        let limit = options.limit.unwrap_or(0);
        let get = GetOptions::new()
            .with_range(end)
            .with_limit(i64::try_from(limit).unwrap_or(0))
            .with_revision(to_i64(requested));
        let read = self.retrying(Request::Read, |c| {
            let (start, get) = (start.clone(), get.clone());
            async move { c.kv_client().get(start, Some(get)).await }
        });
        let response = match read.await {
            Ok(response) => response,
            Err(error) => return Err(self.revision_error("list", requested, error).await),
        };
        let items = response
            .kvs()
            .iter()
            .map(|kv| self.keys.kv(kv))
            .collect::<Result<Vec<_>, _>>()?;
        let revision = match requested {
            0 => response.header().map_or(0, |h| to_u64(h.revision())),
            requested => requested,
        };
        let remaining = to_u64(response.count()).saturating_sub(items.len() as u64);
        Ok(ListResult::page(
            items,
            revision,
            response.more(),
            remaining,
        ))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Kv, StoreError> {
        let full = self.keys.full(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value.clone(), None)]);
        let response = self.txn("create", txn).await?;
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let revision = header_revision(&response);
        Ok(Kv {
            key: key.to_owned(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> Result<Kv, StoreError> {
        let full = self.keys.full(key);
        let txn = Txn::new()
            .when([precondition(&full, expected)])
            .and_then([TxnOp::put(
                full.clone(),
                value.clone(),
                Some(PutOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let response = self.txn("update", txn).await?;
        if !response.succeeded() {
            return Err(self.precondition_failed(key, expected, &response));
        }
        let revision = header_revision(&response);
        let created = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Put(put) => put.prev_key().map(|kv| to_u64(kv.create_revision())),
            _ => None,
        });
        Ok(Kv {
            key: key.to_owned(),
            value,
            create_revision: created.unwrap_or(revision),
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: &str, expected: Option<u64>) -> Result<Kv, StoreError> {
        let full = self.keys.full(key);
        let txn = Txn::new()
            .when([precondition(&full, expected)])
            .and_then([TxnOp::delete(
                full.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(full, None)]);
        let response = self.txn("delete", txn).await?;
        if !response.succeeded() {
            return Err(self.precondition_failed(key, expected, &response));
        }
        let prev = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(delete) => delete.prev_kvs().first().cloned(),
            _ => None,
        });
        match prev {
            Some(prev) => self.keys.kv(&prev),
            None => Err(StoreError::NotFound {
                key: key.to_owned(),
            }),
        }
    }

    async fn watch(&self, prefix: &str, from_revision: u64) -> Result<WatchStream, StoreError> {
        if from_revision > 0 {
            self.check_readable(from_revision).await?;
        }
        let (start, end) = self.keys.prefix_range(prefix);
        let options = WatchOptions::new()
            .with_range(end)
            .with_prev_key()
            .with_start_revision(to_i64(from_revision.saturating_add(1)));
        let mut inner = self
            .retrying(Request::Read, |c| {
                let (start, options) = (start.clone(), options.clone());
                async move { c.watch_client().watch(start, Some(options)).await }
            })
            .await
            .map_err(StoreError::etcd("watch"))?;
        let first = inner.message().await.map_err(StoreError::etcd("watch"))?;
        match first {
            Some(response) if response.compact_revision() > 0 => Err(StoreError::Compacted {
                requested: from_revision,
                compacted: to_u64(response.compact_revision()),
            }),
            Some(response) if response.created() && !response.canceled() => {
                Ok(watch::convert(inner, self.keys.clone(), from_revision))
            }
            other => Err(StoreError::EtcdResponse {
                op: "watch",
                detail: format!("watch not created: {other:?}"),
            }),
        }
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        // Compacting again to the same revision is harmless: a read for retrying.
        let compaction = self.retrying(Request::Read, |c| async move {
            let options = CompactionOptions::new().with_physical();
            c.kv_client().compact(to_i64(revision), Some(options)).await
        });
        match compaction.await {
            Ok(_) => Ok(()),
            // Already compacted at or past `revision`: nothing to do.
            Err(error) if grpc_message(&error).is_some_and(|m| m.contains(COMPACTED_MESSAGE)) => {
                Ok(())
            }
            Err(error) => Err(self.revision_error("compact", revision, error).await),
        }
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        let key = self.keys.full("");
        let response = self
            .retrying(Request::Read, |c| {
                let key = key.clone();
                async move {
                    c.kv_client()
                        .get(key, Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await
            .map_err(StoreError::etcd("current revision"))?;
        Ok(response.header().map_or(0, |h| to_u64(h.revision())))
    }
}
