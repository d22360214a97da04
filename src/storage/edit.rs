//! Storage for collaborative editing (PROTOCOL §8): documents, their
//! operation history, edit sessions and locks.
//!
//! Storage knows nothing of operational transformation: the editing core
//! hands [`EditStore::submit_operations`] a batch of operations on one
//! document, each with its [`Decide`] callback, and storage runs them in
//! order on the locked document. Invariants every implementation keeps:
//! - `submit_operations` is one transaction that holds the document's write
//!   lock (`SELECT ... FOR UPDATE` on Postgres, `BEGIN IMMEDIATE` on SQLite)
//!   from reading the document and its history until the new content, the
//!   history rows and the `edit.operation` events commit together, so
//!   transform-and-apply is serialized per document across every node of a
//!   cluster, a document's events enter the log in revision order, and an
//!   applied operation is never left unannounced (the log is appended in the
//!   same transaction, by the shared [`append_batch`]);
//! - within a batch each operation sees the document as the operations
//!   before it left it (content, revision, history, recorded
//!   `client_op_id`s), exactly as if each had its own transaction; a
//!   refused one changes nothing and does not affect the others;
//! - revisions are dense: the history holds exactly one row for each of
//!   `1..=revision`, keyed by (document, revision);
//! - a `client_op_id` is recorded once per session, in that transaction, so
//!   a retry can never apply twice;
//! - a field has at most one lock row, and an expired row is removed (and
//!   returned, for its `edit.unlock`) by exactly one caller.

use std::sync::Arc;

use async_trait::async_trait;

use super::append::{AppendTx, append_batch};
use super::{AppendOutcome, AppendRequest, Result};
use crate::error::ApiError;
use crate::event::Event;

/// Which document: every key carries its tenant, so nothing crosses tenants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DocKey {
    pub tenant: String,
    pub resource_type: String,
    pub resource_id: String,
    pub field: String,
}

/// A document as stored.
#[derive(Debug, Clone)]
pub struct DocumentRow {
    pub content: String,
    pub revision: u64,
    /// When the content last changed (ms since the epoch).
    pub updated_at: i64,
}

/// One user's edit session on one document.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub session_id: String,
    pub key: DocKey,
    pub user_id: String,
    pub name: Option<String>,
    pub created_at: i64,
    /// Bumped by every operation and save; idle expiry counts from here.
    pub last_active_at: i64,
    /// Set when the session was left.
    pub ended_at: Option<i64>,
}

/// A lock on one field.
#[derive(Debug, Clone)]
pub struct LockRow {
    pub lock_id: String,
    pub key: DocKey,
    pub user_id: String,
    pub name: Option<String>,
    /// The TTL asked for, reused by a renew that names none.
    pub ttl_ms: i64,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An operation to transform and apply.
#[derive(Clone, Copy)]
pub struct OperationRequest<'a> {
    /// Its session as the caller knows it: id, document and owner (which
    /// never change); whether it may still be used is [`Self::check_session`]'s.
    pub session: &'a SessionRow,
    /// The editing core's verdict on the session as stored (`None`: no such
    /// session in the tenant), checked first.
    pub check_session: CheckSession<'a>,
    pub client_op_id: Option<&'a str>,
    /// The revision the operation was made against.
    pub base_revision: u64,
    /// The editing core's verdict on this operation.
    pub decide: Decide<'a>,
}

/// Operations on one document, applied in order in one transaction.
#[derive(Clone, Copy)]
pub struct OperationBatch<'a> {
    pub key: &'a DocKey,
    pub now_ms: i64,
    /// All on `key`; each gets one [`Submitted`], in this order.
    pub operations: &'a [OperationRequest<'a>],
    /// The event announcing an applied operation, appended in the same
    /// transaction.
    pub announce: Announce<'a>,
}

/// The editing core's event for an applied operation: given its index in
/// [`OperationBatch::operations`], the revision it made and the operation
/// as applied (wire JSON). Pure and quick.
pub type Announce<'a> = &'a (dyn Fn(usize, u64, &str) -> AppendRequest + Sync);

/// What a batch came to.
#[derive(Debug)]
pub struct Submission {
    /// One per operation, in order.
    pub outcomes: Vec<Submitted>,
    /// The events appended for the applied ones, in id (and revision) order.
    pub events: Vec<Arc<Event>>,
}

/// What the editing core computed from the locked document.
#[derive(Debug, Clone)]
pub struct Applied {
    pub content: String,
    /// The operation as applied, wire JSON.
    pub ops: String,
}

/// The editing core's verdict on an operation, given the locked document and
/// the wire JSON of every operation applied after the base revision, in
/// revision order. Runs inside the transaction: pure and quick.
pub type Decide<'a> =
    &'a (dyn Fn(&DocumentRow, &[String]) -> std::result::Result<Applied, ApiError> + Sync);

/// The editing core's verdict on an operation's session, read in the
/// transaction: may it still be used? Pure and quick.
pub type CheckSession<'a> =
    &'a (dyn Fn(Option<&SessionRow>) -> std::result::Result<(), ApiError> + Sync);

/// What became of an [`OperationRequest`].
#[derive(Debug)]
pub enum Submitted {
    /// Stored as `revision`.
    Applied { revision: u64, ops: String },
    /// The session sent this `client_op_id` before: its first answer.
    Replayed { revision: u64, ops: String },
    /// [`CheckSession`] or [`Decide`] refused it; nothing changed.
    Refused(ApiError),
    /// Another user holds a live lock on the field; nothing changed.
    Locked(LockRow),
    /// The document does not exist (sessions create it, so: never expected).
    NoDocument,
}

/// Outcome of [`EditStore::acquire_lock`].
#[derive(Debug)]
pub enum LockAttempt {
    /// The caller holds the lock: new, or theirs already with a fresh expiry.
    Acquired(LockRow),
    /// Another user holds it.
    Held(LockRow),
}

/// What editing needs from storage; implemented for each backend in
/// `sqlite/edit.rs` and `postgres/edit.rs`.
#[async_trait]
pub trait EditStore: Send + Sync {
    /// Creates the document (empty, revision 0) unless it exists, and records
    /// the session, in one transaction; returns the document.
    async fn create_session(&self, session: &SessionRow) -> Result<DocumentRow>;

    /// A session of `tenant`, ended or not.
    async fn session(&self, tenant: &str, session_id: &str) -> Result<Option<SessionRow>>;

    /// Marks a session left.
    async fn end_session(&self, session_id: &str, now_ms: i64) -> Result<()>;

    /// Users with a session on `key` not left and active after `since_ms`,
    /// as (user_id, name), in order of their first session.
    async fn active_editors(
        &self,
        key: &DocKey,
        since_ms: i64,
    ) -> Result<Vec<(String, Option<String>)>>;

    async fn document(&self, key: &DocKey) -> Result<Option<DocumentRow>>;

    /// Transforms and applies a batch of operations in order under the
    /// document's lock and appends their events, in one transaction; see
    /// the module invariants. Also marks the sessions of applied operations
    /// active.
    async fn submit_operations(&self, batch: OperationBatch<'_>) -> Result<Submission>;

    /// Records the current revision as saved and marks the session active;
    /// `None` without a document.
    async fn save_document(
        &self,
        key: &DocKey,
        session_id: &str,
        now_ms: i64,
    ) -> Result<Option<DocumentRow>>;

    /// The live (unexpired at `now_ms`) lock on `key`, if any.
    async fn current_lock(&self, key: &DocKey, now_ms: i64) -> Result<Option<LockRow>>;

    /// A lock of `tenant` by id, expired or not.
    async fn find_lock(&self, tenant: &str, lock_id: &str) -> Result<Option<LockRow>>;

    /// Takes the lock on `lock.key` for `lock.user_id` unless another user
    /// holds a live one; the same user gets their lock back with
    /// `lock.expires_at`. Also returns the expired lock it replaced, if any.
    async fn acquire_lock(
        &self,
        lock: &LockRow,
        now_ms: i64,
    ) -> Result<(LockAttempt, Vec<LockRow>)>;

    /// Moves a live lock of `user_id` to expire `ttl_ms` after `now_ms`.
    async fn renew_lock(
        &self,
        tenant: &str,
        lock_id: &str,
        user_id: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Option<LockRow>>;

    /// Deletes a live lock of `user_id`; returns it.
    async fn release_lock(
        &self,
        tenant: &str,
        lock_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<Option<LockRow>>;

    /// Deletes every lock expired at `now_ms` (all tenants) and returns them.
    async fn expire_locks(&self, now_ms: i64) -> Result<Vec<LockRow>>;
}

/// The columns of a [`SessionRow`], in [`SessionTuple`] order.
macro_rules! session_columns {
    () => {
        "session_id, tenant, resource_type, resource_id, field, user_id, name, created_at, last_active_at, ended_at"
    };
}
/// The columns of a [`LockRow`], in [`LockTuple`] order.
macro_rules! lock_columns {
    () => {
        "lock_id, tenant, resource_type, resource_id, field, user_id, name, ttl_ms, created_at, expires_at"
    };
}
pub(crate) use {lock_columns, session_columns};

/// A session as both backends read it.
pub(crate) type SessionTuple = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    Option<i64>,
);

pub(crate) fn session_from_row(row: SessionTuple) -> SessionRow {
    let (
        session_id,
        tenant,
        resource_type,
        resource_id,
        field,
        user_id,
        name,
        created,
        active,
        ended,
    ) = row;
    SessionRow {
        session_id,
        key: DocKey {
            tenant,
            resource_type,
            resource_id,
            field,
        },
        user_id,
        name,
        created_at: created,
        last_active_at: active,
        ended_at: ended,
    }
}

/// A lock as both backends read it.
pub(crate) type LockTuple = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    i64,
);

pub(crate) fn lock_from_row(row: LockTuple) -> LockRow {
    let (
        lock_id,
        tenant,
        resource_type,
        resource_id,
        field,
        user_id,
        name,
        ttl_ms,
        created,
        expires,
    ) = row;
    LockRow {
        lock_id,
        key: DocKey {
            tenant,
            resource_type,
            resource_id,
            field,
        },
        user_id,
        name,
        ttl_ms,
        created_at: created,
        expires_at: expires,
    }
}

pub(crate) fn document_from_row(
    (content, revision, updated_at): (String, i64, i64),
) -> DocumentRow {
    DocumentRow {
        content,
        revision: revision as u64,
        updated_at,
    }
}

/// What one backend does inside the submit transaction (which also appends
/// to the log, hence [`AppendTx`]).
#[async_trait]
pub(crate) trait SubmitTx: AppendTx {
    /// Reads the document and holds its write lock until commit.
    async fn lock_document(&mut self, key: &DocKey) -> Result<Option<DocumentRow>>;
    /// The stored answer to an earlier `client_op_id` of the session.
    async fn find_client_op(
        &mut self,
        session_id: &str,
        client_op_id: &str,
    ) -> Result<Option<(u64, String)>>;
    async fn live_lock(&mut self, key: &DocKey, now_ms: i64) -> Result<Option<LockRow>>;
    /// The sessions of `tenant` among `session_ids`, in one statement.
    async fn sessions(&mut self, tenant: &str, session_ids: &[&str]) -> Result<Vec<SessionRow>>;
    /// Operations after `after`, by revision, as wire JSON.
    async fn history(&mut self, key: &DocKey, after: u64) -> Result<Vec<String>>;
    /// Stores the history rows of `operations`, all of `key`, in one statement.
    async fn insert_operations(
        &mut self,
        key: &DocKey,
        operations: &[NewOperation<'_>],
        now_ms: i64,
    ) -> Result<()>;
    async fn update_document(
        &mut self,
        key: &DocKey,
        content: &str,
        revision: u64,
        now_ms: i64,
    ) -> Result<()>;
    /// Marks sessions active, in one statement.
    async fn touch_sessions(&mut self, session_ids: &[&str], now_ms: i64) -> Result<()>;
}

/// Transform-and-apply of a batch through `tx`; the caller commits.
/// Per operation the order matters: the session is checked first (as the
/// stored row is now: a left or idle session answers even a retry), then a
/// retry is answered before anything else is checked (it was accepted
/// once), and a lock taken since then does not turn it into a refusal.
pub(crate) async fn submit_in<T: SubmitTx>(
    tx: &mut T,
    batch: OperationBatch<'_>,
) -> Result<Submission> {
    let key = batch.key;
    let Some(mut doc) = tx.lock_document(key).await? else {
        return Ok(Submission {
            outcomes: batch
                .operations
                .iter()
                .map(|_| Submitted::NoDocument)
                .collect(),
            events: Vec::new(),
        });
    };
    let lock = tx.live_lock(key, batch.now_ms).await?;
    let sessions = read_sessions(tx, key, batch.operations).await?;
    let mut history = History::read(tx, key, &doc, batch.operations).await?;
    let mut outcomes = Vec::with_capacity(batch.operations.len());
    let mut inserts: Vec<NewOperation<'_>> = Vec::new();
    for (index, request) in batch.operations.iter().enumerate() {
        let id = request.session.session_id.as_str();
        let stored = sessions.iter().find(|s| s.session_id == id);
        if let Err(refusal) = (request.check_session)(stored) {
            outcomes.push(Submitted::Refused(refusal));
            continue;
        }
        if let Some(id) = request.client_op_id
            && let Some((revision, ops)) = replay(tx, &inserts, request.session, id).await?
        {
            outcomes.push(Submitted::Replayed { revision, ops });
            continue;
        }
        if let Some(lock) = &lock
            && lock.user_id != request.session.user_id
        {
            outcomes.push(Submitted::Locked(lock.clone()));
            continue;
        }
        let applied = match (request.decide)(&doc, history.since(request.base_revision, &doc)) {
            Ok(applied) => applied,
            Err(refusal) => {
                outcomes.push(Submitted::Refused(refusal));
                continue;
            }
        };
        let revision = doc.revision + 1;
        history.push(applied.ops.clone());
        doc = DocumentRow {
            content: applied.content,
            revision,
            updated_at: batch.now_ms,
        };
        inserts.push(NewOperation {
            index,
            revision,
            ops: applied.ops.clone(),
            request,
        });
        outcomes.push(Submitted::Applied {
            revision,
            ops: applied.ops,
        });
    }
    let mut events = Vec::with_capacity(inserts.len());
    if !inserts.is_empty() {
        tx.insert_operations(key, &inserts, batch.now_ms).await?;
        tx.update_document(key, &doc.content, doc.revision, batch.now_ms)
            .await?;
        let mut sessions: Vec<&str> = inserts
            .iter()
            .map(|o| o.request.session.session_id.as_str())
            .collect();
        sessions.sort_unstable();
        sessions.dedup();
        tx.touch_sessions(&sessions, batch.now_ms).await?;
        let announcements: Vec<AppendRequest> = inserts
            .iter()
            .map(|o| (batch.announce)(o.index, o.revision, &o.ops))
            .collect();
        // Plain appends (no expected ids, no idempotency keys): each is appended.
        for appended in append_batch(tx, &announcements, batch.now_ms).await? {
            if let AppendOutcome::Appended { events: new, .. } = appended {
                events.extend(new);
            }
        }
    }
    Ok(Submission { outcomes, events })
}

/// The stored sessions of the batch's operations, read once.
async fn read_sessions<T: SubmitTx>(
    tx: &mut T,
    key: &DocKey,
    operations: &[OperationRequest<'_>],
) -> Result<Vec<SessionRow>> {
    let mut ids: Vec<&str> = operations
        .iter()
        .map(|o| o.session.session_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    tx.sessions(&key.tenant, &ids).await
}

/// An operation applied in this batch, to be stored with the others.
pub(crate) struct NewOperation<'a> {
    /// Its index in the batch.
    pub index: usize,
    pub revision: u64,
    /// As applied, wire JSON.
    pub ops: String,
    pub request: &'a OperationRequest<'a>,
}

/// The stored answer to an earlier `client_op_id` of the session: applied
/// earlier in this batch (not stored yet) or before it.
async fn replay<T: SubmitTx>(
    tx: &mut T,
    batch: &[NewOperation<'_>],
    session: &SessionRow,
    client_op_id: &str,
) -> Result<Option<(u64, String)>> {
    let earlier = batch.iter().find(|o| {
        o.request.client_op_id == Some(client_op_id)
            && o.request.session.session_id == session.session_id
    });
    if let Some(o) = earlier {
        return Ok(Some((o.revision, o.ops.clone())));
    }
    tx.find_client_op(&session.session_id, client_op_id).await
}

/// The operations applied after the batch's oldest base revision, read once
/// and extended as the batch applies more, so each operation is transformed
/// past everything before it, earlier ones of the batch included.
struct History {
    /// The revision `ops[0]` was applied on top of.
    after: u64,
    ops: Vec<String>,
}

impl History {
    async fn read<T: SubmitTx>(
        tx: &mut T,
        key: &DocKey,
        doc: &DocumentRow,
        operations: &[OperationRequest<'_>],
    ) -> Result<History> {
        let oldest = operations
            .iter()
            .map(|r| r.base_revision)
            .min()
            .unwrap_or(doc.revision)
            .min(doc.revision);
        let ops = if oldest < doc.revision {
            tx.history(key, oldest).await?
        } else {
            Vec::new()
        };
        Ok(History { after: oldest, ops })
    }

    /// The operations applied after `base`, in order; none for a base the
    /// document has not reached (the verdict refuses it).
    fn since(&self, base: u64, doc: &DocumentRow) -> &[String] {
        if base >= doc.revision {
            return &[];
        }
        let skip = usize::try_from(base - self.after).unwrap_or(usize::MAX);
        self.ops.get(skip..).unwrap_or_default()
    }

    fn push(&mut self, ops: String) {
        self.ops.push(ops);
    }
}
