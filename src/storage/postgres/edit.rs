//! The Postgres implementation of [`EditStore`]: the shared SQL of
//! `storage/edit_sql.rs`, with the document row locked
//! (`FOR UPDATE`) through commit during transform-and-apply.

use async_trait::async_trait;
use sqlx::{Postgres, QueryBuilder, Transaction};

use super::PostgresStorage;
use crate::storage::Result;
use crate::storage::edit::{
    DocKey, DocumentRow, EditStore, LockAttempt, LockRow, LockTuple, NewOperation, OperationBatch,
    SessionRow, SessionTuple, SubmitTx, Submitted, document_from_row, lock_columns, lock_from_row,
    session_columns, session_from_row, submit_in,
};

crate::storage::edit_sql::impl_edit_store!(
    PostgresStorage,
    Postgres,
    begin = "BEGIN",
    lock_row = " FOR UPDATE",
    reads = pool
);
