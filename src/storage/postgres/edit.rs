//! The Postgres implementation of [`EditStore`]: the shared SQL of
//! `storage/edit_sql.rs`, with the document row locked (`FOR UPDATE`)
//! through commit during transform-and-apply. The edit transaction appends
//! its events with the log's own primitives ([`PgTx`]), so the log head is
//! locked after the document, as every edit transaction does: no two lock
//! in the other order, so they cannot deadlock.

use async_trait::async_trait;
use sqlx::{Postgres, QueryBuilder, Transaction};

use super::{PgTx, PostgresStorage};
use crate::storage::Result;
use crate::storage::edit::{
    DocKey, DocumentRow, EditStore, LockAttempt, LockRow, LockTuple, NewOperation, OperationBatch,
    SessionRow, SessionTuple, Submission, SubmitTx, document_from_row, lock_columns, lock_from_row,
    session_columns, session_from_row, submit_in,
};
use crate::storage::edit_sql::{
    FIND_CLIENT_OP, HISTORY, LIVE_LOCK, TOUCH_SESSION, UPDATE_DOCUMENT, insert_operations,
    select_document,
};

crate::storage::edit_sql::impl_edit_store!(
    PostgresStorage,
    Postgres,
    begin = "BEGIN",
    reads = pool
);

impl PostgresStorage {
    async fn submit_batch(&self, batch: OperationBatch<'_>) -> Result<Submission> {
        let mut tx = self.pool.begin().await?;
        let submission = submit_in(&mut PgTx(&mut tx), batch).await?;
        tx.commit().await?;
        Ok(submission)
    }
}

#[async_trait]
impl SubmitTx for PgTx<'_, '_> {
    async fn lock_document(&mut self, k: &DocKey) -> Result<Option<DocumentRow>> {
        let row: Option<(String, i64, i64)> =
            sqlx::query_as(concat!(select_document!(), " FOR UPDATE"))
                .bind(&k.tenant)
                .bind(&k.resource_type)
                .bind(&k.resource_id)
                .bind(&k.field)
                .fetch_optional(&mut **self.0)
                .await?;
        Ok(row.map(document_from_row))
    }

    async fn find_client_op(
        &mut self,
        session_id: &str,
        client_op_id: &str,
    ) -> Result<Option<(u64, String)>> {
        let row: Option<(i64, String)> = sqlx::query_as(FIND_CLIENT_OP)
            .bind(session_id)
            .bind(client_op_id)
            .fetch_optional(&mut **self.0)
            .await?;
        Ok(row.map(|(r, ops)| (r as u64, ops)))
    }

    async fn live_lock(&mut self, k: &DocKey, now_ms: i64) -> Result<Option<LockRow>> {
        let row: Option<LockTuple> = sqlx::query_as(LIVE_LOCK)
            .bind(&k.tenant)
            .bind(&k.resource_type)
            .bind(&k.resource_id)
            .bind(&k.field)
            .bind(now_ms)
            .fetch_optional(&mut **self.0)
            .await?;
        Ok(row.map(lock_from_row))
    }

    async fn sessions(&mut self, tenant: &str, session_ids: &[&str]) -> Result<Vec<SessionRow>> {
        let rows: Vec<SessionTuple> = sqlx::query_as(concat!(
            "SELECT ",
            session_columns!(),
            " FROM edit_sessions WHERE tenant = $1 AND session_id = ANY($2)"
        ))
        .bind(tenant)
        .bind(session_ids)
        .fetch_all(&mut **self.0)
        .await?;
        Ok(rows.into_iter().map(session_from_row).collect())
    }

    async fn history(&mut self, k: &DocKey, after: u64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(HISTORY)
            .bind(&k.tenant)
            .bind(&k.resource_type)
            .bind(&k.resource_id)
            .bind(&k.field)
            .bind(after as i64)
            .fetch_all(&mut **self.0)
            .await?;
        Ok(rows.into_iter().map(|(ops,)| ops).collect())
    }

    async fn insert_operations(
        &mut self,
        k: &DocKey,
        operations: &[NewOperation<'_>],
        now_ms: i64,
    ) -> Result<()> {
        // One statement for the batch: one round trip to the server.
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(insert_operations!());
        q.push_values(operations, |mut row, o| {
            row.push_bind(&k.tenant)
                .push_bind(&k.resource_type)
                .push_bind(&k.resource_id)
                .push_bind(&k.field)
                .push_bind(o.revision as i64)
                .push_bind(&o.ops)
                .push_bind(&o.request.session.session_id)
                .push_bind(&o.request.session.user_id)
                .push_bind(o.request.client_op_id)
                .push_bind(now_ms);
        });
        q.build().execute(&mut **self.0).await?;
        Ok(())
    }

    async fn update_document(
        &mut self,
        k: &DocKey,
        content: &str,
        revision: u64,
        now_ms: i64,
    ) -> Result<()> {
        sqlx::query(UPDATE_DOCUMENT)
            .bind(&k.tenant)
            .bind(&k.resource_type)
            .bind(&k.resource_id)
            .bind(&k.field)
            .bind(content)
            .bind(revision as i64)
            .bind(now_ms)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }

    async fn touch_sessions(&mut self, session_ids: &[&str], now_ms: i64) -> Result<()> {
        sqlx::query("UPDATE edit_sessions SET last_active_at = $2 WHERE session_id = ANY($1)")
            .bind(session_ids)
            .bind(now_ms)
            .execute(&mut **self.0)
            .await?;
        Ok(())
    }
}
