//! The SQLite implementation of [`EditStore`]: the shared SQL of
//! `storage/edit_sql.rs`, with every writing transaction begun
//! `BEGIN IMMEDIATE`: the write lock held up front serializes
//! transform-and-apply per document (and everything else). Sessions are
//! looked up on the read pool (committed rows; WAL readers never block).
//! Transform-and-apply with its log append is one direct transaction
//! ([`super::direct`]), its statements run on this thread.

use async_trait::async_trait;
use rusqlite::types::FromSql;
use rusqlite::{Statement, ToSql};
use sqlx::{Sqlite, Transaction};

use super::SqliteStorage;
use super::direct::{DirectTx, bind_numbered, ready};
use crate::storage::Result;
use crate::storage::edit::{
    DocKey, DocumentRow, EditStore, LockAttempt, LockRow, LockTuple, NewOperation, OperationBatch,
    SessionRow, SessionTuple, Submission, SubmitTx, document_from_row, lock_columns, lock_from_row,
    session_columns, session_from_row, submit_in,
};
use crate::storage::edit_sql::{
    FIND_CLIENT_OP, HISTORY, INSERT_OPERATION, LIVE_LOCK, TOUCH_SESSION, UPDATE_DOCUMENT,
    select_document,
};

crate::storage::edit_sql::impl_edit_store!(
    SqliteStorage,
    Sqlite,
    begin = "BEGIN IMMEDIATE",
    reads = read_pool
);

impl SqliteStorage {
    async fn submit_batch(&self, batch: OperationBatch<'_>) -> Result<Submission> {
        self.write_durably(|tx| ready(submit_in(tx, batch))).await
    }
}

#[async_trait]
impl SubmitTx for DirectTx<'_> {
    async fn lock_document(&mut self, k: &DocKey) -> Result<Option<DocumentRow>> {
        // BEGIN IMMEDIATE already holds the write lock.
        let mut stmt = self.statement(select_document!())?;
        bind_key(&mut stmt, k, &[])?;
        let row = stmt
            .raw_query()
            .next()?
            .map(|row| Ok::<_, rusqlite::Error>((row.get(0)?, row.get(1)?, row.get(2)?)))
            .transpose()?;
        Ok(row.map(document_from_row))
    }

    async fn find_client_op(
        &mut self,
        session_id: &str,
        client_op_id: &str,
    ) -> Result<Option<(u64, String)>> {
        let mut stmt = self.statement(FIND_CLIENT_OP)?;
        bind_numbered(&mut stmt, &[&session_id, &client_op_id])?;
        let row = stmt
            .raw_query()
            .next()?
            .map(|row| Ok::<_, rusqlite::Error>((row.get::<_, i64>(0)? as u64, row.get(1)?)))
            .transpose()?;
        Ok(row)
    }

    async fn live_lock(&mut self, k: &DocKey, now_ms: i64) -> Result<Option<LockRow>> {
        let mut stmt = self.statement(LIVE_LOCK)?;
        bind_key(&mut stmt, k, &[&now_ms])?;
        let row: Option<LockTuple> = stmt.raw_query().next()?.map(ten_columns).transpose()?;
        Ok(row.map(lock_from_row))
    }

    async fn sessions(&mut self, tenant: &str, session_ids: &[&str]) -> Result<Vec<SessionRow>> {
        let ids = serde_json::to_string(session_ids).expect("strings serialize");
        let mut stmt = self.statement(concat!(
            "SELECT ",
            session_columns!(),
            " FROM edit_sessions WHERE tenant = ?1 AND session_id IN (SELECT value FROM json_each(?2))"
        ))?;
        let rows = stmt
            .query_map(rusqlite::params![tenant, ids], ten_columns)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.into_iter().map(session_from_row).collect())
    }

    async fn history(&mut self, k: &DocKey, after: u64) -> Result<Vec<String>> {
        let mut stmt = self.statement(HISTORY)?;
        let after = after as i64;
        bind_key(&mut stmt, k, &[&after])?;
        let mut rows = stmt.raw_query();
        let mut ops = Vec::new();
        while let Some(row) = rows.next()? {
            ops.push(row.get(0)?);
        }
        Ok(ops)
    }

    async fn insert_operations(
        &mut self,
        k: &DocKey,
        operations: &[NewOperation<'_>],
        now_ms: i64,
    ) -> Result<()> {
        let mut stmt = self.statement(INSERT_OPERATION)?;
        for o in operations {
            let revision = o.revision as i64;
            let s = o.request.session;
            bind_key(
                &mut stmt,
                k,
                &[
                    &revision,
                    &o.ops,
                    &s.session_id,
                    &s.user_id,
                    &o.request.client_op_id,
                    &now_ms,
                ],
            )?;
            stmt.raw_execute()?;
        }
        Ok(())
    }

    async fn update_document(
        &mut self,
        k: &DocKey,
        content: &str,
        revision: u64,
        now_ms: i64,
    ) -> Result<()> {
        let mut stmt = self.statement(UPDATE_DOCUMENT)?;
        let revision = revision as i64;
        bind_key(&mut stmt, k, &[&content, &revision, &now_ms])?;
        stmt.raw_execute()?;
        Ok(())
    }

    async fn touch_sessions(&mut self, session_ids: &[&str], now_ms: i64) -> Result<()> {
        let mut stmt = self.statement(TOUCH_SESSION)?;
        for id in session_ids {
            bind_numbered(&mut stmt, &[id, &now_ms])?;
            stmt.raw_execute()?;
        }
        Ok(())
    }
}

/// Binds a statement whose `$1`-`$4` are a document's key, then `rest`.
fn bind_key(stmt: &mut Statement<'_>, k: &DocKey, rest: &[&dyn ToSql]) -> Result<()> {
    let mut values: Vec<&dyn ToSql> = vec![&k.tenant, &k.resource_type, &k.resource_id, &k.field];
    values.extend_from_slice(rest);
    bind_numbered(stmt, &values)
}

/// A row of ten columns as a tuple: a [`LockTuple`] or a [`SessionTuple`].
#[allow(clippy::type_complexity)]
fn ten_columns<A, B, C, D, E, F, G, H, I, J>(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<(A, B, C, D, E, F, G, H, I, J)>
where
    A: FromSql,
    B: FromSql,
    C: FromSql,
    D: FromSql,
    E: FromSql,
    F: FromSql,
    G: FromSql,
    H: FromSql,
    I: FromSql,
    J: FromSql,
{
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
    ))
}
