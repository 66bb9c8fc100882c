//! The embedded store's redb tables and its two counters (current and compacted revision).

use redb::{ReadableTable, TableDefinition};

use crate::store::StoreError;

/// key → `create | mod | value` (see `codec::encode_entry`).
pub(crate) const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// revision → the event written at that revision (see `codec::encode_event`).
pub(crate) const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// counter name → value.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Revision of the last committed write.
pub(crate) const REVISION: &str = "revision";
/// History at and below this revision is gone.
pub(crate) const COMPACTED: &str = "compacted";

/// Reads a counter of the meta table; absent counters are 0.
pub(crate) fn counter(
    meta: &impl ReadableTable<&'static str, u64>,
    name: &'static str,
) -> Result<u64, StoreError> {
    Ok(meta
        .get(name)
        .map_err(StoreError::embedded("read meta"))?
        .map(|guard| guard.value())
        .unwrap_or(0))
}

/// Creates the tables of a fresh database so read transactions can open them.
pub(crate) fn create_tables(db: &redb::Database) -> Result<(), StoreError> {
    let txn = db
        .begin_write()
        .map_err(StoreError::embedded("begin write"))?;
    txn.open_table(KEYS)
        .map_err(StoreError::embedded("create keys table"))?;
    txn.open_table(HISTORY)
        .map_err(StoreError::embedded("create history table"))?;
    txn.open_table(META)
        .map_err(StoreError::embedded("create meta table"))?;
    txn.commit().map_err(StoreError::embedded("commit"))
}
