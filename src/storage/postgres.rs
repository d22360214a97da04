//! The Postgres log: production and clusters.
//!
//! Ids are allocated under the `log_head` row lock (`SELECT ... FOR UPDATE`)
//! held through commit, so across nodes a transaction holding id N commits
//! before another can take N+1: readers never see an id appear below one
//! they were already given (a bare sequence would break this).

mod edit;
mod presence;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Transaction};

use super::append::{
    AppendTx, CHANNEL_LAST_ID, EventRow, FIND_RECEIPT, INSERT_CHUNK, ReceiptRow, SET_HEAD,
    UPSERT_RECEIPT, append_batch, insert_events, select_head,
};
use super::{
    AppendOutcome, AppendRequest, CursorExpired, IDEMPOTENCY_WINDOW_MS, Result, Storage,
    event_from_row,
};
use crate::event::Event;

/// Carries the new log head after each appending transaction.
const NOTIFY_CHANNEL: &str = "switchyard_log";

pub struct PostgresStorage {
    pool: PgPool,
}

impl PostgresStorage {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Storage for PostgresStorage {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
        Ok(())
    }

    async fn append(&self, batch: &[AppendRequest], now_ms: i64) -> Result<Vec<AppendOutcome>> {
        let mut tx = self.pool.begin().await?;
        let outcomes = append_batch(&mut PgTx(&mut tx), batch, now_ms).await?;
        tx.commit().await?;
        Ok(outcomes)
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
             WHERE tenant = $1 AND channel = ANY($2) AND id > $3 ORDER BY id LIMIT $4",
        )
        .bind(tenant)
        .bind(channels)
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(event_from_row).collect())
    }

    async fn read_range(&self, after: u64, through: u64) -> Result<Vec<Arc<Event>>> {
        let rows = sqlx::query_as(
            "SELECT id, tenant, channel, event, data, user_id, created_at FROM events \
             WHERE id > $1 AND id <= $2 ORDER BY id",
        )
        .bind(after as i64)
        .bind(through as i64)
        .fetch_all(&self.pool)
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
             WHERE tenant = $1 AND channel = ANY($2) AND created_at >= $3 ORDER BY id LIMIT $4",
        )
        .bind(tenant)
        .bind(channels)
        .bind(since_ms)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(event_from_row).collect())
    }

    async fn head(&self) -> Result<u64> {
        let (id,): (i64,) = sqlx::query_as("SELECT last_id FROM log_head WHERE singleton = 1")
            .fetch_one(&self.pool)
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
            "SELECT MAX(through_id) FROM pruned_channels WHERE tenant = $1 AND channel = ANY($2) AND through_id > $3",
        )
        .bind(tenant)
        .bind(channels)
        .bind(cursor as i64)
        .fetch_one(&self.pool)
        .await?;
        let Some(pruned) = pruned else {
            return Ok(None);
        };
        let (oldest,): (Option<i64>,) = sqlx::query_as(
            "SELECT MIN(id) FROM events WHERE tenant = $1 AND channel = ANY($2) AND id > $3",
        )
        .bind(tenant)
        .bind(channels)
        .bind(cursor as i64)
        .fetch_one(&self.pool)
        .await?;
        Ok(Some(CursorExpired {
            oldest_id: oldest.unwrap_or(pruned + 1) as u64,
        }))
    }

    async fn prune(&self, now_ms: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO pruned_channels (tenant, channel, through_id) \
             SELECT tenant, channel, MAX(id) FROM events WHERE expires_at <= $1 GROUP BY tenant, channel \
             ON CONFLICT (tenant, channel) DO UPDATE SET through_id = GREATEST(pruned_channels.through_id, excluded.through_id)",
        )
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM events WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at <= $1")
            .bind(now_ms - IDEMPOTENCY_WINDOW_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn listen(
        &self,
        heads: tokio::sync::mpsc::Sender<u64>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for appends from other nodes; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                continue;
            }
            // Whatever was appended while not listening is caught up from the head.
            let _ = heads.send(0).await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    received = listener.recv() => match received {
                        Ok(n) => {
                            let _ = heads.send(n.payload().parse().unwrap_or(0)).await;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "lost the notification connection; reconnecting");
                            break;
                        }
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// The primitives of an appending (or edit) transaction on Postgres.
pub(super) struct PgTx<'a, 'c>(pub(super) &'a mut Transaction<'c, Postgres>);

#[async_trait]
impl AppendTx for PgTx<'_, '_> {
    async fn lock_head(&mut self) -> Result<u64> {
        let (id,): (i64,) = sqlx::query_as(concat!(select_head!(), " FOR UPDATE"))
            .fetch_one(&mut **self.0)
            .await?;
        Ok(id as u64)
    }

    async fn find_receipt(
        &mut self,
        tenant: &str,
        user_id: &str,
        key: &str,
        newer_than_ms: i64,
    ) -> Result<Option<String>> {
        let row: Option<(String,)> = sqlx::query_as(FIND_RECEIPT)
            .bind(tenant)
            .bind(user_id)
            .bind(key)
            .bind(newer_than_ms)
            .fetch_optional(&mut **self.0)
            .await?;
        Ok(row.map(|(r,)| r))
    }

    async fn channel_last_id(&mut self, tenant: &str, channel: &str) -> Result<u64> {
        let (id,): (Option<i64>,) = sqlx::query_as(CHANNEL_LAST_ID)
            .bind(tenant)
            .bind(channel)
            .fetch_one(&mut **self.0)
            .await?;
        Ok(id.unwrap_or(0) as u64)
    }

    async fn insert_events(&mut self, rows: &[EventRow]) -> Result<()> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<Postgres> = QueryBuilder::new(insert_events!());
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.id)
                    .push_bind(r.tenant.clone())
                    .push_bind(r.channel.clone())
                    .push_bind(r.event.clone())
                    .push_bind(r.data.clone())
                    .push_bind(r.user_id.clone())
                    .push_bind(r.created_at)
                    .push_bind(r.expires_at);
            });
            q.build().execute(&mut **self.0).await?;
        }
        Ok(())
    }

    async fn insert_receipts(&mut self, rows: &[ReceiptRow]) -> Result<()> {
        for r in rows {
            sqlx::query(UPSERT_RECEIPT)
                .bind(&r.tenant)
                .bind(&r.user_id)
                .bind(&r.key)
                .bind(&r.receipt)
                .bind(r.created_at)
                .execute(&mut **self.0)
                .await?;
        }
        Ok(())
    }

    async fn set_head(&mut self, head: u64) -> Result<()> {
        sqlx::query(SET_HEAD)
            .bind(head as i64)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }

    async fn notify_head(&mut self, head: u64) -> Result<()> {
        // Delivered at commit. Once per transaction: NOTIFY per event would
        // serialize every append on Postgres's notification lock.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(head.to_string())
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }
}
