//! What the core needs from storage: the durable log ([`Storage`]) and its
//! side tables ([`presence::PresenceStore`], [`edit::EditStore`]), as
//! traits. The drivers (SQLite, Postgres) live outside the core and
//! implement them; every failure they report is a [`StorageError`] they
//! classified themselves.
//!
//! Invariants every implementation keeps:
//! - ids come from one counter, read and advanced inside the appending
//!   transaction, so ids are dense and become visible in order: a
//!   transaction that holds id N commits before any transaction can take N+1;
//! - `append` is atomic per request batch: all its events, receipts and the
//!   new head commit together or not at all.

pub mod edit;
pub mod inbox;
pub mod log;
pub mod notification;
pub mod presence;

use std::sync::Arc;

use async_trait::async_trait;

use crate::event::Event;

pub use crate::error::{StorageError, StorageFault, StorageResult as Result};
pub use log::{AppendOutcome, AppendRequest, CursorExpired, IDEMPOTENCY_WINDOW_MS, render_receipt};

/// The durable log, with the side tables of presence, editing and the inbox.
#[async_trait]
pub trait Storage:
    edit::EditStore + presence::PresenceStore + inbox::InboxStore + Send + Sync + 'static
{
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;

    /// Appends a batch in one transaction (group commit). Outcomes are in
    /// request order; ids are assigned in request order.
    async fn append(&self, batch: Arc<[AppendRequest]>, now_ms: i64) -> Result<Vec<AppendOutcome>>;

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

    /// Closes the storage, after in-flight work finishes.
    async fn close(&self);
}
