//! GET of one object and of lists (JSON or Table), with label and field selectors and
//! pagination that never returns more than `limit` items.

use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::super::admit::set_resource_version;
use super::super::request::{ListQuery, Target};
use super::super::status::ApiError;
use super::super::table;
use super::{AppState, json, name_of};
use crate::store::{Kv, ListOptions};

/// A stored entry as an API object: its JSON with `resourceVersion` = its mod revision.
pub(crate) fn decode(kv: &Kv) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(&kv.value)
        .map_err(|_| ApiError::internal(format!("stored object {} is not valid JSON", kv.key)))?;
    set_resource_version(&mut object, kv.mod_revision);
    Ok(object)
}

/// The current object of a single-object target and its revision; 404 if absent.
pub(crate) async fn load(state: &AppState, target: &Target) -> Result<(Value, u64), ApiError> {
    let r = target.resource;
    let name = name_of(target);
    let key = r.key(target.namespace.as_deref(), name);
    let kv = state
        .store
        .get(&key)
        .await
        .map_err(|e| ApiError::from_store(e, r.group, r.plural, name))?
        .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
    Ok((decode(&kv)?, kv.mod_revision))
}

pub(super) async fn get(
    state: &AppState,
    target: &Target,
    as_table: bool,
) -> Result<Response, ApiError> {
    let (object, revision) = load(state, target).await?;
    if as_table && target.subresource.is_none() {
        let mut meta = Map::new();
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
        let body = table::table(
            target.resource.printer,
            &[object],
            meta,
            Timestamp::now(),
            true,
        );
        return Ok(json(StatusCode::OK, &body));
    }
    Ok(json(StatusCode::OK, &object))
}

/// How many objects one store read of an unlimited list asks for.
const STORE_PAGE: usize = 1000;

/// One page of a list: the matching objects, the list revision, the continue token and
/// (without selectors) how many items remain.
pub(crate) struct Page {
    pub items: Vec<Value>,
    pub revision: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

/// Lists `target` with `query`'s selectors and paging.
pub(crate) async fn collect(
    state: &AppState,
    target: &Target,
    query: &ListQuery,
) -> Result<Page, ApiError> {
    let r = target.resource;
    query.fields.check(|f| r.supports_field(f))?;
    let prefix = r.list_prefix(target.namespace.as_deref());
    let filtered = !query.labels.0.is_empty() || !query.fields.0.is_empty();
    let mut page = Page {
        items: Vec::new(),
        revision: 0,
        continue_token: query.continue_token.clone(),
        remaining: None,
    };
    loop {
        // Without a limit the store is still read in pages: one etcd reply stays small
        // (etcd-client refuses replies over 4 MiB) and the token keeps the revision.
        let want = Some(query.limit.map_or(STORE_PAGE, |l| l - page.items.len()));
        let options = ListOptions {
            limit: want,
            continue_token: page.continue_token.take(),
            revision: None,
        };
        let result = state
            .store
            .list(&prefix, options)
            .await
            .map_err(|e| ApiError::from_store(e, r.group, r.plural, ""))?;
        page.revision = result.revision;
        page.remaining = if filtered { None } else { result.remaining };
        for kv in &result.items {
            let object = decode(kv)?;
            if query.labels.matches(&object) && query.fields.matches(&object) {
                page.items.push(object);
            }
        }
        page.continue_token = result.continue_token;
        let full = query.limit.is_some_and(|l| page.items.len() >= l);
        if full || page.continue_token.is_none() {
            return Ok(page);
        }
    }
}

/// `ListMeta` of a page.
pub(super) fn list_meta(page: &Page) -> Map<String, Value> {
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(page.revision.to_string()));
    if let Some(token) = &page.continue_token {
        meta.insert("continue".into(), json!(token));
    }
    if let Some(remaining) = page.remaining.filter(|_| page.continue_token.is_some()) {
        meta.insert("remainingItemCount".into(), json!(remaining));
    }
    meta
}

pub(super) async fn list(
    state: &AppState,
    target: &Target,
    query: &ListQuery,
    as_table: bool,
) -> Result<Response, ApiError> {
    let r = target.resource;
    let page = collect(state, target, query).await?;
    let meta = list_meta(&page);
    let body = if as_table {
        table::table(r.printer, &page.items, meta, Timestamp::now(), true)
    } else {
        json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": meta, "items": page.items})
    };
    Ok(json(StatusCode::OK, &body))
}
