//! The SQLite log: the embedded default (WAL; log appends commit with
//! `synchronous=FULL`, everything else with `NORMAL`; all writes share one
//! connection).
//!
//! Appends take `BEGIN IMMEDIATE`, the database's one write lock, so the
//! pruner and the writer never trip over each other's snapshots; they run
//! as direct transactions ([`direct`]), one thread hop each. Channel lists
//! are bound as one JSON array (`json_each`), so every query is a static,
//! cached statement.

mod direct;
mod edit;
mod presence;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::append::append_batch;
use super::{
    AppendOutcome, AppendRequest, CursorExpired, IDEMPOTENCY_WINDOW_MS, Result, Storage,
    event_from_row,
};
use crate::event::Event;

pub struct SqliteStorage {
    /// The direct transactions' view of the write connection's handle, kept
    /// for its prepared statements (see [`direct`]). Declared first, so it
    /// is dropped (its statements finalized) before the pool can close the
    /// handle.
    direct: direct::DirectView,
    /// Every write (the log, presence, editing, pruning) on ONE connection.
    /// SQLite has a single write lock and its busy handler sleeps and retries
    /// unfairly: writers on several connections starve each other into
    /// "database is locked". One connection makes writes a FIFO queue.
    pool: SqlitePool,
    /// Reads of the log (the hot path of every stream and poll).
    read_pool: SqlitePool,
}

impl SqliteStorage {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        // No ping before each acquire: a local file handle does not go stale,
        // and the ping is one more thread round trip per write.
        let single = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false);
        let pool = single.connect_with(options.clone()).await?;
        // An in-memory database lives and dies with its one connection.
        let read_pool = if memory {
            pool.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await?
        };
        Ok(Self {
            direct: direct::DirectView::default(),
            pool,
            read_pool,
        })
    }
}

fn channel_list(channels: &[String]) -> String {
    serde_json::to_string(channels).expect("strings serialize")
}

#[async_trait]
impl Storage for SqliteStorage {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
        Ok(())
    }

    async fn append(&self, batch: &[AppendRequest], now_ms: i64) -> Result<Vec<AppendOutcome>> {
        // Durable: an acknowledged publish is on disk (its WAL frames, and
        // every frame before them).
        self.write_durably(|tx| direct::ready(append_batch(tx, batch, now_ms)))
            .await
    }

    async fn read(
        &self,
        tenant: &str,
        channels: &[String],
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>> {
        let rows = sqlx::query_as(
            "SELECT id, tenant, channel, event, data, user_id, created_at FROM events \
             WHERE tenant = ?1 AND channel IN (SELECT value FROM json_each(?2)) AND id > ?3 \
             ORDER BY id LIMIT ?4",
        )
        .bind(tenant)
        .bind(channel_list(channels))
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(&self.read_pool)
        .await?;
        Ok(rows.into_iter().map(event_from_row).collect())
    }

    async fn read_range(&self, after: u64, through: u64) -> Result<Vec<Arc<Event>>> {
        let rows = sqlx::query_as(
            "SELECT id, tenant, channel, event, data, user_id, created_at FROM events \
             WHERE id > ?1 AND id <= ?2 ORDER BY id",
        )
        .bind(after as i64)
        .bind(through as i64)
        .fetch_all(&self.read_pool)
        .await?;
        Ok(rows.into_iter().map(event_from_row).collect())
    }

    async fn read_since(
        &self,
        tenant: &str,
        channels: &[String],
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>> {
        let rows = sqlx::query_as(
            "SELECT id, tenant, channel, event, data, user_id, created_at FROM events \
             WHERE tenant = ?1 AND channel IN (SELECT value FROM json_each(?2)) AND created_at >= ?3 \
             ORDER BY id LIMIT ?4",
        )
        .bind(tenant)
        .bind(channel_list(channels))
        .bind(since_ms)
        .bind(limit as i64)
        .fetch_all(&self.read_pool)
        .await?;
        Ok(rows.into_iter().map(event_from_row).collect())
    }

    async fn head(&self) -> Result<u64> {
        let (id,): (i64,) = sqlx::query_as("SELECT last_id FROM log_head WHERE singleton = 1")
            .fetch_one(&self.read_pool)
            .await?;
        Ok(id as u64)
    }

    async fn expired_cursor(
        &self,
        tenant: &str,
        channels: &[String],
        cursor: u64,
    ) -> Result<Option<CursorExpired>> {
        let (pruned,): (Option<i64>,) = sqlx::query_as(
            "SELECT MAX(through_id) FROM pruned_channels \
             WHERE tenant = ?1 AND channel IN (SELECT value FROM json_each(?2)) AND through_id > ?3",
        )
        .bind(tenant)
        .bind(channel_list(channels))
        .bind(cursor as i64)
        .fetch_one(&self.read_pool)
        .await?;
        let Some(pruned) = pruned else {
            return Ok(None);
        };
        let (oldest,): (Option<i64>,) = sqlx::query_as(
            "SELECT MIN(id) FROM events \
             WHERE tenant = ?1 AND channel IN (SELECT value FROM json_each(?2)) AND id > ?3",
        )
        .bind(tenant)
        .bind(channel_list(channels))
        .bind(cursor as i64)
        .fetch_one(&self.read_pool)
        .await?;
        Ok(Some(CursorExpired {
            oldest_id: oldest.unwrap_or(pruned + 1) as u64,
        }))
    }

    async fn prune(&self, now_ms: i64) -> Result<u64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO pruned_channels (tenant, channel, through_id) \
             SELECT tenant, channel, MAX(id) FROM events WHERE expires_at <= ?1 GROUP BY tenant, channel \
             ON CONFLICT (tenant, channel) DO UPDATE SET through_id = MAX(through_id, excluded.through_id)",
        )
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM events WHERE expires_at <= ?1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= ?1")
            .bind(now_ms - IDEMPOTENCY_WINDOW_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read_pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.forget_direct_view().await;
        self.pool.close().await;
        self.read_pool.close().await;
    }
}
