//! Storage for collaborative editing (PROTOCOL §8): documents, their
//! operation history, edit sessions and locks.
//!
//! Storage knows nothing of operational transformation: the editing core
//! hands [`EditStore::submit_operations`] a batch of operations on one
//! document with its [`OperationRules`] (the verdict on each operation and
//! the event announcing it), and storage runs them in order on the locked
//! document. Invariants every implementation keeps:
//! - `submit_operations` is one transaction that holds the document's write
//!   lock from reading the document and its history until the new content,
//!   the history rows and the `edit.operation` events commit together, so
//!   transform-and-apply is serialized per document across every node of a
//!   cluster, a document's events enter the log in revision order, and an
//!   applied operation is never left unannounced (the log is appended in the
//!   same transaction, by the same rules as every append);
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

use super::log::AppendRequest;
use crate::error::{Error, StorageResult as Result};
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
#[derive(Debug, Clone)]
pub struct OperationRequest {
    /// Its session as the caller knows it: id, document and owner (which
    /// never change); whether it may still be used is
    /// [`OperationRules::check_session`]'s.
    pub session: SessionRow,
    pub client_op_id: Option<String>,
    /// The revision the operation was made against.
    pub base_revision: u64,
}

/// Operations on one document, applied in order in one transaction.
pub struct OperationBatch {
    pub key: DocKey,
    pub now_ms: i64,
    /// All on `key`; each gets one [`Submitted`], in this order.
    pub operations: Vec<OperationRequest>,
    /// The editing core's verdicts, by index into `operations`.
    pub rules: Arc<dyn OperationRules>,
}

/// The editing core's side of a batch. Each method is given an operation's
/// index in [`OperationBatch::operations`] and runs inside the transaction:
/// pure and quick.
pub trait OperationRules: Send + Sync {
    /// May the operation's session still be used, as stored now (`None`:
    /// no such session in the tenant)? Checked first.
    fn check_session(
        &self,
        index: usize,
        stored: Option<&SessionRow>,
    ) -> std::result::Result<(), Error>;

    /// The operation transformed past `history` (the wire JSON of every
    /// operation applied after its base revision, in revision order) and
    /// applied to the locked document.
    fn decide(
        &self,
        index: usize,
        doc: &DocumentRow,
        history: &[String],
    ) -> std::result::Result<Applied, Error>;

    /// The event announcing the applied operation, given the revision it
    /// made and the operation as applied (wire JSON); appended in the same
    /// transaction.
    fn announce(&self, index: usize, revision: u64, ops: &str) -> AppendRequest;
}

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

/// What became of an [`OperationRequest`].
#[derive(Debug)]
pub enum Submitted {
    /// Stored as `revision`.
    Applied { revision: u64, ops: String },
    /// The session sent this `client_op_id` before: its first answer.
    Replayed { revision: u64, ops: String },
    /// [`OperationRules`] refused it; nothing changed.
    Refused(Error),
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

/// Builds the event announcing an operation from its revision and its
/// wire JSON. Pure and quick: it runs inside the transaction.
pub type AnnounceOperation = Box<dyn FnOnce(u64, &str) -> AppendRequest + Send>;

/// A backend setting a document's content while no one edits it.
pub struct ContentChange {
    pub key: DocKey,
    pub content: String,
    /// Who sets it.
    pub user_id: String,
    /// The id the history row and the event carry in place of a session's.
    pub change_id: String,
    /// Sessions active after this are live: with one, nothing changes.
    pub live_since_ms: i64,
    pub now_ms: i64,
    /// The operation turning the old content into the new (wire JSON).
    pub replace: Box<dyn FnOnce(&DocumentRow) -> String + Send>,
    /// The event announcing that operation at its revision.
    pub announce: AnnounceOperation,
}

/// What [`EditStore::set_content`] came to.
#[derive(Debug)]
pub enum ContentSet {
    /// No document existed: created with the content at revision 0.
    Created(DocumentRow),
    /// The content replaced the old one as the next revision.
    Replaced {
        document: DocumentRow,
        ops: String,
        events: Vec<Arc<Event>>,
    },
    /// The document already had this content.
    Unchanged(DocumentRow),
    /// Sessions are live on it (these users): nothing changed.
    Busy(Vec<String>),
}

/// What editing needs from storage.
#[async_trait]
pub trait EditStore: Send + Sync {
    /// Creates the document (with `initial_content`, revision 0) unless it
    /// exists, and records the session, in one transaction; returns the
    /// document (an existing one keeps its content: the first seed wins).
    async fn create_session(
        &self,
        session: &SessionRow,
        initial_content: &str,
    ) -> Result<DocumentRow>;

    /// Sets a document's content unless a session on it is live, in one
    /// transaction under the document's lock: creates it at revision 0, or
    /// records the replacing operation as the next revision and appends its
    /// event (see [`ContentChange`]).
    async fn set_content(&self, change: ContentChange) -> Result<ContentSet>;

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
    async fn submit_operations(&self, batch: OperationBatch) -> Result<Submission>;

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
