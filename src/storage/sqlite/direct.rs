//! The write transactions on the hot path (log appends, edit batches), run
//! in one hop on the write connection's own SQLite handle.
//!
//! sqlx runs every SQLite statement on its connection's worker thread, so
//! each statement is a round trip between threads: two context switches, and
//! `BEGIN`/`COMMIT` wait until the caller has taken the answer. A dozen
//! statements per transaction spent most of the server's time switching
//! (measured in BENCHMARKS.md, "Round 3: editing"). Here sqlx lends us the
//! handle ([`sqlx::sqlite::LockedSqliteHandle`]: its worker waits meanwhile)
//! and the whole transaction runs on this thread through rusqlite, which
//! links the same SQLite library.
//!
//! Invariants:
//! - the rusqlite connection over the handle ([`DirectView`]) is used only
//!   while sqlx lends the handle, and never closes it; it is kept between
//!   transactions for its prepared statements (parsing them anew each time
//!   cost a tenth of an edit's CPU), and dropped, finalizing them, before
//!   the handle closes ([`SqliteStorage::forget_direct_view`] at close, or
//!   field order on drop). sqlx's close of a handle with statements still
//!   prepared fails and leaves it open, so a view found on an old handle is
//!   still safe to drop;
//! - a transaction begun here ends here: committed, or rolled back by
//!   [`DirectTx`]'s drop on any error or panic, so sqlx never finds one open;
//! - it commits with `synchronous = FULL` (the commit is the durable point of
//!   what it appends) and leaves the connection at `NORMAL`, the level of
//!   every other write;
//! - [`DirectTx`]'s async primitives never suspend (every statement runs on
//!   the calling thread), so the shared async algorithms over them complete
//!   in one poll ([`ready`]).

use std::future::Future;

use async_trait::async_trait;
use futures_util::FutureExt;
use rusqlite::{Connection, Statement, ToSql};

use super::SqliteStorage;
use crate::storage::append::{
    AppendTx, CHANNEL_LAST_ID, EventRow, FIND_RECEIPT, INSERT_EVENT, ReceiptRow, SET_HEAD,
    UPSERT_RECEIPT, select_head,
};
use crate::storage::{Result, StorageError};

/// Statements the view keeps prepared: more than the direct transactions use.
const STATEMENTS: usize = 32;

/// A rusqlite connection over the write connection's handle, with the
/// handle it was made for.
#[derive(Default)]
pub(in crate::storage) struct DirectView(std::sync::Mutex<Option<(usize, Connection)>>);

impl SqliteStorage {
    /// Runs `work` as one durable transaction (`BEGIN IMMEDIATE`, committed
    /// with `synchronous = FULL`) on the write connection; rolls it back if
    /// `work` fails.
    pub(super) async fn write_durably<T>(
        &self,
        work: impl FnOnce(&mut DirectTx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.pool.acquire().await?;
        let mut lent = conn.lock_handle().await?;
        let handle = lent.as_raw_handle().as_ptr();
        let outcome = blocking(|| {
            // Uncontended: taken only while the one write handle is lent.
            let mut view = self.direct.0.lock().unwrap_or_else(|poisoned| {
                // A transaction panicked (and was rolled back): start afresh.
                let mut view = poisoned.into_inner();
                *view = None;
                self.direct.0.clear_poison();
                view
            });
            if view
                .as_ref()
                .is_none_or(|(made_for, _)| *made_for != handle as usize)
            {
                // SAFETY: the view does not close the handle, and is used
                // only while `lent` gives this thread the handle alone.
                let db = unsafe { Connection::from_handle(handle) }?;
                db.set_prepared_statement_cache_capacity(STATEMENTS);
                *view = Some((handle as usize, db));
            }
            let (_, db) = view.as_mut().expect("set above");
            DirectTx::run(db, work)
        });
        drop(lent);
        outcome
    }

    /// Drops the direct view, finalizing its statements, while the handle
    /// is lent: before the pool closes the connection.
    pub(super) async fn forget_direct_view(&self) {
        if let Ok(mut conn) = self.pool.acquire().await
            && let Ok(_lent) = conn.lock_handle().await
        {
            let mut view = self.direct.0.lock().unwrap_or_else(|p| p.into_inner());
            view.take();
        }
    }
}

/// An open transaction on the lent handle.
pub(in crate::storage) struct DirectTx<'c> {
    db: &'c mut Connection,
    committed: bool,
}

impl<'c> DirectTx<'c> {
    fn run<T>(
        db: &'c mut Connection,
        work: impl FnOnce(&mut DirectTx<'_>) -> Result<T>,
    ) -> Result<T> {
        execute(db, "PRAGMA synchronous = FULL")?;
        let outcome = DirectTx::begin(db).and_then(|mut tx| {
            let out = work(&mut tx)?;
            tx.commit()?;
            Ok(out)
        });
        if let Err(e) = execute(db, "PRAGMA synchronous = NORMAL") {
            // The transaction's outcome stands; later writes just sync more.
            tracing::warn!(error = %e, "could not restore synchronous = NORMAL");
        }
        outcome
    }

    fn begin(db: &'c mut Connection) -> Result<Self> {
        execute(db, "BEGIN IMMEDIATE")?;
        Ok(Self {
            db,
            committed: false,
        })
    }

    fn commit(mut self) -> Result<()> {
        execute(self.db, "COMMIT")?;
        self.committed = true;
        Ok(())
    }

    /// A statement, prepared the first time the view runs it and kept.
    pub(in crate::storage) fn statement(&self, sql: &str) -> Result<rusqlite::CachedStatement<'_>> {
        Ok(self.db.prepare_cached(sql)?)
    }
}

impl Drop for DirectTx<'_> {
    fn drop(&mut self) {
        if !self.committed
            && !self.db.is_autocommit()
            && let Err(e) = execute(self.db, "ROLLBACK")
        {
            tracing::error!(error = %e, "could not roll back a failed write transaction");
        }
    }
}

/// Runs one parameterless statement, prepared once.
fn execute(db: &Connection, sql: &str) -> rusqlite::Result<()> {
    db.prepare_cached(sql)?.raw_execute()?;
    Ok(())
}

/// Binds the `$N` placeholders of a shared SQL text (see `edit_sql`) by
/// their number, as sqlx does, whatever order they appear in.
pub(in crate::storage) fn bind_numbered(
    stmt: &mut Statement<'_>,
    values: &[&dyn ToSql],
) -> Result<()> {
    for i in 1..=stmt.parameter_count() {
        let number = stmt
            .parameter_name(i)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok());
        match number.and_then(|n| values.get(n.wrapping_sub(1))) {
            Some(value) => stmt.raw_bind_parameter(i, value)?,
            None => {
                let name = stmt.parameter_name(i).unwrap_or("?").to_string();
                return Err(rusqlite::Error::InvalidParameterName(name).into());
            }
        }
    }
    Ok(())
}

/// The output of a future that completes without suspending: the shared
/// async algorithms run over [`DirectTx`], whose primitives never wait.
pub(in crate::storage) fn ready<F: Future>(future: F) -> F::Output {
    future
        .now_or_never()
        .expect("a direct SQLite transaction never suspends")
}

/// Runs `f`, which blocks this thread (statements and the commit's fsync);
/// on a multi-threaded runtime the worker's other tasks move elsewhere
/// meanwhile.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[async_trait]
impl AppendTx for DirectTx<'_> {
    async fn lock_head(&mut self) -> Result<u64> {
        // BEGIN IMMEDIATE already holds the write lock.
        let id: i64 = self
            .statement(select_head!())?
            .query_row([], |row| row.get(0))?;
        Ok(id as u64)
    }

    async fn find_receipt(
        &mut self,
        tenant: &str,
        user_id: &str,
        key: &str,
        newer_than_ms: i64,
    ) -> Result<Option<String>> {
        let mut stmt = self.statement(FIND_RECEIPT)?;
        bind_numbered(&mut stmt, &[&tenant, &user_id, &key, &newer_than_ms])?;
        let receipt = stmt.raw_query().next()?.map(|row| row.get(0)).transpose()?;
        Ok(receipt)
    }

    async fn channel_last_id(&mut self, tenant: &str, channel: &str) -> Result<u64> {
        let mut stmt = self.statement(CHANNEL_LAST_ID)?;
        bind_numbered(&mut stmt, &[&tenant, &channel])?;
        let id: Option<i64> = stmt
            .raw_query()
            .next()?
            .map(|row| row.get(0))
            .transpose()?
            .flatten();
        Ok(id.unwrap_or(0) as u64)
    }

    async fn insert_events(&mut self, rows: &[EventRow]) -> Result<()> {
        // A prepared statement per row: no round trips to save here.
        let mut insert = self.statement(INSERT_EVENT)?;
        for r in rows {
            bind_numbered(
                &mut insert,
                &[
                    &r.id,
                    &r.tenant,
                    &r.channel,
                    &r.event,
                    &r.data,
                    &r.user_id,
                    &r.created_at,
                    &r.expires_at,
                ],
            )?;
            insert.raw_execute()?;
        }
        Ok(())
    }

    async fn insert_receipts(&mut self, rows: &[ReceiptRow]) -> Result<()> {
        let mut upsert = self.statement(UPSERT_RECEIPT)?;
        for r in rows {
            bind_numbered(
                &mut upsert,
                &[&r.tenant, &r.user_id, &r.key, &r.receipt, &r.created_at],
            )?;
            upsert.raw_execute()?;
        }
        Ok(())
    }

    async fn set_head(&mut self, head: u64) -> Result<()> {
        let mut stmt = self.statement(SET_HEAD)?;
        bind_numbered(&mut stmt, &[&(head as i64)])?;
        stmt.raw_execute()?;
        Ok(())
    }

    async fn notify_head(&mut self, _head: u64) -> Result<()> {
        // Nodes on one SQLite file find new events by the follower's head check.
        Ok(())
    }
}

/// A rusqlite error as the `sqlx::Error::Database` the rest of storage
/// classifies: the same extended result code sqlx would report, so
/// `is_unavailable` (BUSY, LOCKED) reads both alike.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct DirectError {
    code: Option<i32>,
    message: String,
}

impl sqlx::error::DatabaseError for DirectError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.code.map(|c| c.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        match self.code {
            Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                sqlx::error::ErrorKind::UniqueViolation
            }
            Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => sqlx::error::ErrorKind::ForeignKeyViolation,
            Some(ffi::SQLITE_CONSTRAINT_NOTNULL) => sqlx::error::ErrorKind::NotNullViolation,
            Some(ffi::SQLITE_CONSTRAINT_CHECK) => sqlx::error::ErrorKind::CheckViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        let code = match &e {
            rusqlite::Error::SqliteFailure(failure, _) => Some(failure.extended_code),
            _ => None,
        };
        StorageError(sqlx::Error::Database(Box::new(DirectError {
            code,
            message: e.to_string(),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(db: &Connection, sql: &str, values: &[&dyn ToSql]) -> Result<String> {
        let mut stmt = db.prepare(sql)?;
        bind_numbered(&mut stmt, values)?;
        let mut rows = stmt.raw_query();
        let row = rows.next()?.expect("one row");
        Ok(row.get(0)?)
    }

    #[test]
    fn placeholders_bind_by_their_number_in_any_order() {
        let db = Connection::open_in_memory().unwrap();
        let got = select(&db, "SELECT $2 || $1 || $2", &[&"a", &"b"]).unwrap();
        assert_eq!(got, "bab");
        assert!(select(&db, "SELECT $3", &[&"a"]).is_err());
        assert!(select(&db, "SELECT ?1", &[&"a"]).is_err());
    }
}
