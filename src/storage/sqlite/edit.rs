//! The SQLite implementation of [`EditStore`]: the shared SQL of
//! `storage/edit_sql.rs`, with every writing transaction
//! begun `BEGIN IMMEDIATE`: the write lock held up front serializes
//! transform-and-apply per document (and everything else). Sessions are
//! looked up on the read pool (committed rows; WAL readers never block).

use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::SqliteStorage;
use crate::storage::Result;
use crate::storage::edit::{
    DocKey, DocumentRow, EditStore, LockAttempt, LockRow, LockTuple, NewOperation, OperationBatch,
    SessionRow, SessionTuple, SubmitTx, Submitted, document_from_row, lock_columns, lock_from_row,
    session_columns, session_from_row, submit_in,
};

crate::storage::edit_sql::impl_edit_store!(
    SqliteStorage,
    Sqlite,
    begin = "BEGIN IMMEDIATE",
    lock_row = "",
    reads = read_pool
);
