//! The SQL of collaborative editing, written once for both backends.
//!
//! sqlx's SQLite driver takes `$N` placeholders as Postgres does (and the
//! SQLite edit transaction binds them by number too), and `ON CONFLICT`
//! upserts and `RETURNING` mean the same on both, so one text serves both.
//! What differs is how a transaction locks: SQLite begins with
//! `BEGIN IMMEDIATE` (its one write lock, taken up front so a read-then-write
//! transaction never has to upgrade it), Postgres locks the document row with
//! `FOR UPDATE` and keeps it through commit, so across nodes one document's
//! operations are applied one at a time. The transform-and-apply
//! transaction itself is each backend's ([`crate::storage::edit::SubmitTx`]
//! in `postgres/edit.rs` and `sqlite/edit.rs`) over the statements below.

use crate::storage::edit::lock_columns;

/// A document's row by key (`$1`-`$4`); Postgres adds `FOR UPDATE` to lock it.
macro_rules! select_document {
    () => {
        "SELECT content, revision, updated_at FROM edit_documents \
         WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND field = $4"
    };
}
pub(crate) use select_document;

/// The stored answer to a session's `client_op_id`.
pub(crate) const FIND_CLIENT_OP: &str =
    "SELECT revision, ops FROM edit_operations WHERE session_id = $1 AND client_op_id = $2";

/// The lock on a field (`$1`-`$4`) unexpired at `$5`.
pub(crate) const LIVE_LOCK: &str = concat!(
    "SELECT ",
    lock_columns!(),
    " FROM edit_locks WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 \
     AND field = $4 AND expires_at > $5"
);

/// A document's operations after revision `$5`, in order.
pub(crate) const HISTORY: &str = "SELECT ops FROM edit_operations \
     WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND field = $4 AND revision > $5 \
     ORDER BY revision";

/// Sets a document's content, revision and `updated_at`.
pub(crate) const UPDATE_DOCUMENT: &str = "UPDATE edit_documents SET content = $5, revision = $6, updated_at = $7 \
     WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND field = $4";

/// The start of an insert of history rows, in [`INSERT_OPERATION`]'s column order.
macro_rules! insert_operations {
    () => {
        "INSERT INTO edit_operations (tenant, resource_type, resource_id, field, revision, ops, \
         session_id, user_id, client_op_id, created_at) "
    };
}
pub(crate) use insert_operations;

/// One history row.
pub(crate) const INSERT_OPERATION: &str = concat!(
    insert_operations!(),
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
);

/// Marks one session active at `$2`.
pub(crate) const TOUCH_SESSION: &str =
    "UPDATE edit_sessions SET last_active_at = $2 WHERE session_id = $1";

/// Implements [`EditStore`](crate::storage::edit::EditStore) for a backend
/// with a `pool` field, but for `submit_operations`, which calls the
/// backend's own `submit_batch`: `$begin` opens each writing transaction,
/// `reads` names the pool that looks sessions up (on SQLite not the one
/// write connection, so every operation's lookup does not queue behind the
/// writes). The caller imports what the SQL code names (see `sqlite/edit.rs`).
macro_rules! impl_edit_store {
    ($storage:ty, $db:ty, begin = $begin:literal, reads = $reads:ident) => {
        #[async_trait]
        impl EditStore for $storage {
            async fn create_session(&self, s: &SessionRow) -> Result<DocumentRow> {
                let k = &s.key;
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query(
                    "INSERT INTO edit_documents (tenant, resource_type, resource_id, field, content, revision, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, '', 0, $5, $5) ON CONFLICT DO NOTHING",
                )
                .bind(&k.tenant)
                .bind(&k.resource_type)
                .bind(&k.resource_id)
                .bind(&k.field)
                .bind(s.created_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(concat!(
                    "INSERT INTO edit_sessions (",
                    session_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ))
                .bind(&s.session_id)
                .bind(&k.tenant)
                .bind(&k.resource_type)
                .bind(&k.resource_id)
                .bind(&k.field)
                .bind(&s.user_id)
                .bind(&s.name)
                .bind(s.created_at)
                .bind(s.last_active_at)
                .bind(s.ended_at)
                .execute(&mut *tx)
                .await?;
                let doc = select_document(&mut tx, k).await?.expect("inserted above");
                tx.commit().await?;
                Ok(doc)
            }

            async fn session(&self, tenant: &str, session_id: &str) -> Result<Option<SessionRow>> {
                let row: Option<SessionTuple> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM edit_sessions WHERE tenant = $1 AND session_id = $2"
                ))
                .bind(tenant)
                .bind(session_id)
                .fetch_optional(&self.$reads)
                .await?;
                Ok(row.map(session_from_row))
            }

            async fn end_session(&self, session_id: &str, now_ms: i64) -> Result<()> {
                sqlx::query(
                    "UPDATE edit_sessions SET ended_at = $2 WHERE session_id = $1 AND ended_at IS NULL",
                )
                .bind(session_id)
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn active_editors(
                &self,
                k: &DocKey,
                since_ms: i64,
            ) -> Result<Vec<(String, Option<String>)>> {
                Ok(sqlx::query_as(
                    "SELECT user_id, MAX(name) FROM edit_sessions \
                     WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND field = $4 \
                     AND ended_at IS NULL AND last_active_at > $5 \
                     GROUP BY user_id ORDER BY MIN(created_at), user_id",
                )
                .bind(&k.tenant)
                .bind(&k.resource_type)
                .bind(&k.resource_id)
                .bind(&k.field)
                .bind(since_ms)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn document(&self, k: &DocKey) -> Result<Option<DocumentRow>> {
                let row: Option<(String, i64, i64)> = sqlx::query_as(select_document!())
                .bind(&k.tenant)
                .bind(&k.resource_type)
                .bind(&k.resource_id)
                .bind(&k.field)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(document_from_row))
            }

            async fn submit_operations(&self, batch: OperationBatch<'_>) -> Result<Submission> {
                self.submit_batch(batch).await
            }

            async fn save_document(
                &self,
                k: &DocKey,
                session_id: &str,
                now_ms: i64,
            ) -> Result<Option<DocumentRow>> {
                let mut tx = self.pool.begin_with($begin).await?;
                let row: Option<(String, i64, i64)> = sqlx::query_as(
                    "UPDATE edit_documents SET saved_revision = revision, saved_at = $5 \
                     WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND field = $4 \
                     RETURNING content, revision, updated_at",
                )
                .bind(&k.tenant)
                .bind(&k.resource_type)
                .bind(&k.resource_id)
                .bind(&k.field)
                .bind(now_ms)
                .fetch_optional(&mut *tx)
                .await?;
                sqlx::query(TOUCH_SESSION)
                    .bind(session_id)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(row.map(document_from_row))
            }

            async fn current_lock(&self, k: &DocKey, now_ms: i64) -> Result<Option<LockRow>> {
                let row: Option<LockTuple> = sqlx::query_as(LIVE_LOCK)
                .bind(&k.tenant)
                .bind(&k.resource_type)
                .bind(&k.resource_id)
                .bind(&k.field)
                .bind(now_ms)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(lock_from_row))
            }

            async fn find_lock(&self, tenant: &str, lock_id: &str) -> Result<Option<LockRow>> {
                let row: Option<LockTuple> = sqlx::query_as(concat!(
                    "SELECT ",
                    lock_columns!(),
                    " FROM edit_locks WHERE tenant = $1 AND lock_id = $2"
                ))
                .bind(tenant)
                .bind(lock_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(lock_from_row))
            }

            async fn acquire_lock(
                &self,
                lock: &LockRow,
                now_ms: i64,
            ) -> Result<(LockAttempt, Vec<LockRow>)> {
                let k = &lock.key;
                let mut tx = self.pool.begin_with($begin).await?;
                let expired: Vec<LockTuple> = sqlx::query_as(concat!(
                    "DELETE FROM edit_locks WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 \
                     AND field = $4 AND expires_at <= $5 RETURNING ",
                    lock_columns!()
                ))
                .bind(&k.tenant)
                .bind(&k.resource_type)
                .bind(&k.resource_id)
                .bind(&k.field)
                .bind(now_ms)
                .fetch_all(&mut *tx)
                .await?;
                // The holder's own retry refreshes their lock; anyone else's upsert
                // matches the WHERE on no row and returns nothing.
                let mine: Option<LockTuple> = sqlx::query_as(concat!(
                    "INSERT INTO edit_locks (",
                    lock_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     ON CONFLICT (tenant, resource_type, resource_id, field) DO UPDATE SET \
                     expires_at = excluded.expires_at, ttl_ms = excluded.ttl_ms, name = excluded.name \
                     WHERE edit_locks.user_id = excluded.user_id RETURNING ",
                    lock_columns!()
                ))
                .bind(&lock.lock_id)
                .bind(&k.tenant)
                .bind(&k.resource_type)
                .bind(&k.resource_id)
                .bind(&k.field)
                .bind(&lock.user_id)
                .bind(&lock.name)
                .bind(lock.ttl_ms)
                .bind(lock.created_at)
                .bind(lock.expires_at)
                .fetch_optional(&mut *tx)
                .await?;
                let attempt = match mine {
                    Some(row) => LockAttempt::Acquired(lock_from_row(row)),
                    None => {
                        let holder: LockTuple = sqlx::query_as(concat!(
                            "SELECT ",
                            lock_columns!(),
                            " FROM edit_locks WHERE tenant = $1 AND resource_type = $2 \
                             AND resource_id = $3 AND field = $4"
                        ))
                        .bind(&k.tenant)
                        .bind(&k.resource_type)
                        .bind(&k.resource_id)
                        .bind(&k.field)
                        .fetch_one(&mut *tx)
                        .await?;
                        LockAttempt::Held(lock_from_row(holder))
                    }
                };
                tx.commit().await?;
                Ok((attempt, expired.into_iter().map(lock_from_row).collect()))
            }

            async fn renew_lock(
                &self,
                tenant: &str,
                lock_id: &str,
                user_id: &str,
                ttl_ms: i64,
                now_ms: i64,
            ) -> Result<Option<LockRow>> {
                let row: Option<LockTuple> = sqlx::query_as(concat!(
                    "UPDATE edit_locks SET expires_at = $5 + $4, ttl_ms = $4 \
                     WHERE tenant = $1 AND lock_id = $2 AND user_id = $3 AND expires_at > $5 RETURNING ",
                    lock_columns!()
                ))
                .bind(tenant)
                .bind(lock_id)
                .bind(user_id)
                .bind(ttl_ms)
                .bind(now_ms)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(lock_from_row))
            }

            async fn release_lock(
                &self,
                tenant: &str,
                lock_id: &str,
                user_id: &str,
                now_ms: i64,
            ) -> Result<Option<LockRow>> {
                let row: Option<LockTuple> = sqlx::query_as(concat!(
                    "DELETE FROM edit_locks \
                     WHERE tenant = $1 AND lock_id = $2 AND user_id = $3 AND expires_at > $4 RETURNING ",
                    lock_columns!()
                ))
                .bind(tenant)
                .bind(lock_id)
                .bind(user_id)
                .bind(now_ms)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(lock_from_row))
            }

            async fn expire_locks(&self, now_ms: i64) -> Result<Vec<LockRow>> {
                let rows: Vec<LockTuple> = sqlx::query_as(concat!(
                    "DELETE FROM edit_locks WHERE expires_at <= $1 RETURNING ",
                    lock_columns!()
                ))
                .bind(now_ms)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(lock_from_row).collect())
            }
        }

        async fn select_document(
            tx: &mut Transaction<'_, $db>,
            k: &DocKey,
        ) -> Result<Option<DocumentRow>> {
            let row: Option<(String, i64, i64)> = sqlx::query_as(select_document!())
            .bind(&k.tenant)
            .bind(&k.resource_type)
            .bind(&k.resource_id)
            .bind(&k.field)
            .fetch_optional(&mut **tx)
            .await?;
            Ok(row.map(document_from_row))
        }
    };
}

pub(crate) use impl_edit_store;
