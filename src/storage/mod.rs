//! The storage drivers: the core's storage traits implemented once
//! ([`Store`]) over a [`Backend`], SQLite (embedded, the default) or
//! Postgres (production, clusters).
//!
//! One way to share code: the rules ([`log`], [`presence`], [`sessions`], [`edit`]) are
//! plain async functions over a backend's transaction ([`tx::Tx`]), with
//! every statement in one dialect table ([`sql`]). A backend only opens
//! transactions, binds parameters, reads rows and classifies its errors by
//! code. Invariants of the log (ids dense and visible in order, appends
//! atomic) are the rules'; see `switchyard_core::storage`.

pub mod backend;
pub mod edit;
pub mod inbox;
pub mod log;
pub mod postgres;
pub mod presence;
pub mod sessions;
pub mod sql;
pub mod sqlite;
mod store;
pub mod tx;

use std::sync::Arc;

use switchyard_core::storage::Storage;

pub use store::Store;

/// Opens the storage a database URL names: `sqlite://path`, `sqlite::memory:`
/// or `postgres://...`.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Storage>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(Store::new(
            postgres::Postgres::connect(url).await?,
        )))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(Store::new(sqlite::Sqlite::open(url)?)))
    } else {
        anyhow::bail!(
            "unsupported database URL: expected sqlite://..., sqlite::memory: or postgres://..."
        )
    }
}
