//! Storage behind one trait: the durable event log and its side tables.
//!
//! Two implementations, [`sqlite::SqliteStorage`] (the embedded default) and
//! [`postgres::PostgresStorage`] (production, clusters), share the append
//! algorithm in [`append::append_batch`], so the log's rules are written once.
//!
//! Invariants every implementation keeps:
//! - ids come from the `log_head` counter row, read and advanced inside the
//!   appending transaction, so ids are dense and become visible in order: a
//!   transaction that holds id N commits before any transaction can take N+1.
//! - `append` is atomic per batch: all its events, receipts and the new head
//!   commit together or not at all.

pub mod append;
pub mod edit;
mod edit_sql;
pub mod postgres;
pub mod presence;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::event::{Event, NewEvent};

/// A storage failure. Connection-level failures are `unavailable` (503).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StorageError(#[from] pub sqlx::Error);

impl StorageError {
    /// True when the database could not be reached or is shutting down,
    /// as opposed to a query that failed on a healthy database.
    pub fn is_unavailable(&self) -> bool {
        match &self.0 {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // Postgres: connection exceptions (08), invalid authorization (28),
                // a database that is gone (3D000), insufficient resources (53),
                // operator intervention (57), system errors (58);
                // SQLite: BUSY (5) and LOCKED (6).
                ["08", "28", "3D", "53", "57", "58"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || code == "5"
                    || code == "6"
            }
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// One publish: a set of events appended atomically, or not at all.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub tenant: String,
    pub user_id: Option<String>,
    pub events: Vec<NewEvent>,
    /// A retry with the same key (per tenant and user, within 24 h) gets the
    /// first receipt back and appends nothing.
    pub idempotency_key: Option<String>,
    /// Live streams subscribed to the request's channels when it was taken
    /// for appending; part of the receipt.
    pub recipients: u64,
}

/// What became of one [`AppendRequest`].
#[derive(Debug, Clone)]
pub enum AppendOutcome {
    /// Appended; `receipt` is the JSON answer.
    Appended {
        events: Vec<Arc<Event>>,
        receipt: String,
    },
    /// The idempotency key was seen before: the first receipt.
    Replayed { receipt: String },
    /// An `expected_last_id` did not hold; nothing was appended.
    Conflict { channel: String, last_id: u64 },
    /// The database refused this request (its batch was retried one by
    /// one and only this request failed); nothing was appended.
    Failed,
}

/// The oldest retained id when a cursor points before pruned events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorExpired {
    pub oldest_id: u64,
}

/// How long idempotency keys are remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The durable log.
#[async_trait]
pub trait Storage: edit::EditStore + presence::PresenceStore + Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;

    /// Appends a batch in one transaction (group commit). Outcomes are in
    /// request order; ids are assigned in request order.
    async fn append(&self, batch: &[AppendRequest], now_ms: i64) -> Result<Vec<AppendOutcome>>;

    /// Events of `channels` in `tenant` with `id > after`, by id, at most `limit`.
    async fn read(
        &self,
        tenant: &str,
        channels: &[String],
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>>;

    /// Every event (all tenants) with `after < id <= through`, by id.
    async fn read_range(&self, after: u64, through: u64) -> Result<Vec<Arc<Event>>>;

    /// Events of `channels` in `tenant` stamped at or after `since_ms`, by id.
    async fn read_since(
        &self,
        tenant: &str,
        channels: &[String],
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>>;

    /// The highest id committed.
    async fn head(&self) -> Result<u64>;

    /// `Some` when events of `channels` with ids above `cursor` were pruned.
    async fn expired_cursor(
        &self,
        tenant: &str,
        channels: &[String],
        cursor: u64,
    ) -> Result<Option<CursorExpired>>;

    /// Deletes events past their retention and old idempotency keys; returns
    /// how many events went.
    async fn prune(&self, now_ms: i64) -> Result<u64>;

    /// Reports the log head appended by any process (other nodes included)
    /// on `heads` until `shutdown`; reconnects by itself and reports a 0
    /// after a reconnect so the caller re-checks. Backends without
    /// cross-process notifications return at once.
    async fn listen(
        &self,
        heads: tokio::sync::mpsc::Sender<u64>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let _ = (heads, shutdown);
    }

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<()>;

    /// Closes the pool, after in-flight queries finish.
    async fn close(&self);
}

/// Opens the storage a database URL names: `sqlite://path`, `sqlite::memory:`
/// or `postgres://...`.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Storage>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStorage::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStorage::connect(url).await?))
    } else {
        anyhow::bail!(
            "unsupported database URL: expected sqlite://..., sqlite::memory: or postgres://..."
        )
    }
}

/// A stored row, as both backends read it.
pub(crate) type EventRow = (i64, String, String, String, String, Option<String>, i64);

pub(crate) fn event_from_row(row: EventRow) -> Arc<Event> {
    let (id, tenant, channel, event, data, user_id, created_at) = row;
    Event::new(id as u64, tenant, channel, event, data, user_id, created_at)
}
