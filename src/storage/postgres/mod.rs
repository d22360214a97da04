//! The Postgres backend: production, and clusters of nodes on one database.
//!
//! Ids are allocated under the `log_head` row lock (`SELECT ... FOR
//! UPDATE`) held through commit, so across nodes a transaction holding id N
//! commits before another can take N+1: readers never see an id appear
//! below one they were already given (a bare sequence would break this).
//! Every appending transaction sends one `NOTIFY` with the new head, which
//! every node `LISTEN`s for ([`Postgres::listen`]).

mod error;
pub mod tx;

use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::Connection;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use switchyard_core::storage::Result;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, Durability};
use super::sql::NOTIFY_CHANNEL;
use super::tx::Tx;
use error::classify;
use tx::PgTx;

/// Connections per node.
const POOL_SIZE: u32 = 16;
/// How long a request waits for a free connection before answering 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Postgres {
    pool: PgPool,
}

impl Postgres {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        Ok(Self { pool })
    }
}

impl Backend for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| classify(sqlx::Error::Migrate(Box::new(e))))
    }

    async fn write<R: Send + 'static>(
        &self,
        // Postgres commits durably (its own `synchronous_commit`) either way.
        _durability: Durability,
        work: impl for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<R>> + Send + 'static,
    ) -> Result<R> {
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        let mut tx = conn.begin().await.map_err(classify)?;
        // Dropped without commit (an error or a panic): rolled back.
        let value = work(&mut PgTx { conn: &mut tx }).await?;
        tx.commit().await.map_err(classify)?;
        Ok(value)
    }

    async fn read<R: Send + 'static>(
        &self,
        work: impl for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<R>> + Send + 'static,
    ) -> Result<R> {
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        work(&mut PgTx { conn: &mut conn }).await
    }

    async fn listen(&self, heads: mpsc::Sender<u64>, shutdown: CancellationToken) {
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

    async fn close(&self) {
        self.pool.close().await;
    }
}
