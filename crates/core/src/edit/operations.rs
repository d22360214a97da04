//! Submitting operations (PROTOCOL §8), applied in batches per document.
//!
//! Each operation is queued on its document's [`Sequencer`](super::sequencer)
//! by a detached task, which then takes the document's turn. A session this
//! node has seen needs no lookup to find its document: whether it may still
//! be used (exists, the caller's, not left or idle) is checked in the
//! batch's transaction, one read for all its sessions, with the answers a
//! lookup would give. The turn holder takes every operation queued by then
//! (up to [`MAX_BATCH`]) and, in ONE storage transaction:
//! 1. transforms and applies them in arrival order, each past everything
//!    applied before it, earlier ones of the batch included; each keeps its
//!    own outcome (applied, a retry's first answer, or a refusal that
//!    changes nothing for the others);
//! 2. appends the `edit.operation` events of the applied ones, in revision
//!    order, with the new content and history rows;
//!
//! then hands the committed events to this node's readers and answers each
//! caller: an acknowledged operation is durable and announced.
//!
//! Invariants: a change and its event commit together (no crash can leave
//! a revision unannounced), and under the document's lock, so a document's
//! events enter the log in revision order on every node of a cluster; the
//! detached task finishes the transaction even if its caller went away.
//! The turn keeps one batch per document in flight on a node, so the
//! operations that arrive meanwhile make the next batch instead of
//! contending for the document's lock one by one.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::api::*;
use super::ot::{Operation, OtError};
use super::pending::{Answer, Pending, Queued};
use super::service::{
    Editing, MAX_ID_LEN, decide, invalid_operation, no_document, parse_stored, resource_locked,
};
use crate::channel::Channel;
use crate::clock::now_ms;
use crate::error::Error;
use crate::event::NewEvent;
use crate::identity::Identity;
use crate::names::is_valid_opaque_id;
use crate::storage::AppendRequest;
use crate::storage::edit::{
    Applied, DocumentRow, OperationBatch, OperationRequest, OperationRules, SessionRow, Submission,
    Submitted,
};

/// Most operations applied in one transaction: bounds how long a turn (and
/// the database's write lock) is held.
pub const MAX_BATCH: usize = 256;

impl Editing {
    /// Transforms an operation against everything applied since its base
    /// revision, applies and stores it, and appends `edit.operation`.
    pub async fn submit_operation(
        &self,
        who: &Identity,
        session_id: &str,
        req: SubmitOperationRequest,
    ) -> Result<SubmitOperationResponse, Error> {
        // The session first: an operation for no session of the caller's
        // is 404 (or 403, 410) whatever it holds, as for every other path id.
        let (session, channel) = self.operation_session(who, session_id).await?;
        if let Some(id) = &req.client_op_id
            && !is_valid_opaque_id(id, MAX_ID_LEN)
        {
            return Err(Error::invalid_message(
                "client_op_id must be 1-128 characters, none of them control characters",
            ));
        }
        let op = Operation::from_json(&req.ops).map_err(invalid_operation)?;
        let base = u64::try_from(req.revision).map_err(|_| {
            invalid_operation(OtError(format!(
                "revision must be a non-negative integer, got {}",
                req.revision
            )))
        })?;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            queued: Queued {
                session,
                channel,
                op,
                base,
                client_op_id: req.client_op_id,
            },
            reply,
        };
        // Detached: once queued, the operation is applied and announced even
        // if this caller goes away.
        tokio::spawn(self.clone().queue_operation(pending));
        answer
            .await
            .map_err(|_| Error::internal("edit task failed"))?
    }

    /// The session and channel of an operation. A session this node knows
    /// needs no lookup: its owner and channel are checked here, whether it
    /// is left or idle in the batch's transaction. Otherwise, and whenever
    /// a check fails here, the lookup checks everything, so the answers come
    /// in the same order as ever (404, 403 owner, 410, 403 channel).
    async fn operation_session(
        &self,
        who: &Identity,
        session_id: &str,
    ) -> Result<(SessionRow, Channel), Error> {
        if let Some(session) = self.known_session(&who.tenant, session_id)
            && session.user_id == who.user_id
            && let Ok(channel) = self.writable(who, &session.key)
        {
            return Ok((session, channel));
        }
        let session = self.live_session(who, session_id).await?;
        let channel = self.writable(who, &session.key)?;
        Ok((session, channel))
    }

    /// Queues `pending` on its document and takes the turn; applies whatever
    /// is queued by then (maybe nothing: an earlier turn took it).
    async fn queue_operation(self, pending: Pending) {
        let key = pending.queued.session.key.clone();
        let turn = self.sequencer.queue(&key, pending).await;
        let batch = turn.take_queued(MAX_BATCH);
        if !batch.is_empty() {
            self.apply_batch(batch).await;
        }
        drop(turn);
    }

    /// Applies `batch` (one document's operations, in arrival order) in one
    /// transaction, appends the events of the applied ones together and
    /// answers every caller. Run under the document's turn.
    async fn apply_batch(&self, batch: Vec<Pending>) {
        match self.submit_batch(&batch).await {
            Ok(submission) => {
                let answers = self.announce(submission).await;
                answer_all(batch, answers);
            }
            Err(e) if batch.len() > 1 => {
                // A batch the database refused must not fail operations that
                // would pass alone: apply them one by one.
                tracing::warn!(error = %e, operations = batch.len(), "edit batch failed; applying one by one");
                for pending in batch {
                    self.apply_alone(pending).await;
                }
            }
            Err(e) => answer_all(batch, vec![Err(e)]),
        }
    }

    /// [`Self::apply_batch`] for one operation, without a fallback.
    async fn apply_alone(&self, pending: Pending) {
        let batch = vec![pending];
        let answers = match self.submit_batch(&batch).await {
            Ok(submission) => self.announce(submission).await,
            Err(e) => vec![Err(e)],
        };
        answer_all(batch, answers);
    }

    /// One storage transaction for the whole batch, its events included.
    async fn submit_batch(&self, batch: &[Pending]) -> Result<Submission, Error> {
        let now = now_ms();
        let request = OperationBatch {
            key: batch[0].queued.session.key.clone(),
            now_ms: now,
            operations: batch
                .iter()
                .map(|p| OperationRequest {
                    session: p.queued.session.clone(),
                    client_op_id: p.queued.client_op_id.clone(),
                    base_revision: p.queued.base,
                })
                .collect(),
            rules: Arc::new(BatchRules {
                editing: self.clone(),
                now_ms: now,
                operations: batch.iter().map(|p| p.queued.clone()).collect(),
            }),
        };
        Ok(self.store().submit_operations(request).await?)
    }

    /// Hands the batch's events (committed with it) to this node's readers,
    /// then turns outcomes into answers: an applied operation is answered
    /// only once it is durable and announced.
    async fn announce(&self, submission: Submission) -> Vec<Answer> {
        self.log
            .metrics()
            .edit_batch(submission.events.len() as u64);
        self.log.ingest_committed(&submission.events).await;
        submission
            .outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Submitted::Applied { revision, ops } | Submitted::Replayed { revision, ops } => {
                    parse_stored(&ops).map(|ops| SubmitOperationResponse { revision, ops })
                }
                Submitted::Refused(error) => Err(error),
                Submitted::Locked(lock) => Err(resource_locked(&lock)),
                Submitted::NoDocument => Err(no_document()),
            })
            .collect()
    }
}

/// The editing core's verdicts on a batch, run by storage inside the
/// batch's transaction.
struct BatchRules {
    editing: Editing,
    now_ms: i64,
    operations: Vec<Queued>,
}

impl OperationRules for BatchRules {
    fn check_session(&self, index: usize, stored: Option<&SessionRow>) -> Result<(), Error> {
        let s = &self.operations[index].session;
        self.editing
            .check_live(&s.user_id, &s.session_id, stored, self.now_ms)
    }

    fn decide(
        &self,
        index: usize,
        doc: &DocumentRow,
        history: &[String],
    ) -> Result<Applied, Error> {
        let q = &self.operations[index];
        decide(&q.op, q.base, doc, history)
    }

    /// The `edit.operation` event of an applied operation (`ops`: as
    /// applied, wire JSON).
    fn announce(&self, index: usize, revision: u64, ops: &str) -> AppendRequest {
        let pending = &self.operations[index];
        let (session, k) = (&pending.session, &pending.session.key);
        let ops: &RawValue = serde_json::from_str(ops).unwrap_or_else(|_| {
            // Rendered by `decide` from an operation: always JSON.
            serde_json::from_str("null").expect("null is JSON")
        });
        let data = serde_json::to_string(&OperationEvent {
            session_id: &session.session_id,
            user_id: &session.user_id,
            resource_type: &k.resource_type,
            resource_id: &k.resource_id,
            field: &k.field,
            revision,
            ops,
            client_op_id: pending.client_op_id.as_deref(),
        })
        .expect("an event serializes");
        AppendRequest {
            origin: None,
            tenant: k.tenant.clone(),
            user_id: Some(session.user_id.clone()),
            events: vec![NewEvent {
                also: Vec::new(),
                channel: pending.channel.clone(),
                event: "edit.operation".to_string(),
                data,
                expected_last_id: None,
                retention_ms: self
                    .editing
                    .namespaces
                    .retention(&pending.channel)
                    .as_millis() as i64,
            }],
            idempotency_key: None,
            recipients: 0,
            notifications: Vec::new(),
        }
    }
}

/// The data of `edit.operation` (PROTOCOL §8).
#[derive(Serialize)]
pub(super) struct OperationEvent<'a> {
    pub session_id: &'a str,
    pub user_id: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub field: &'a str,
    pub revision: u64,
    pub ops: &'a RawValue,
    pub client_op_id: Option<&'a str>,
}

/// Sends each caller its answer (a caller that went away is not waiting).
fn answer_all(batch: Vec<Pending>, answers: Vec<Answer>) {
    for (pending, answer) in batch.into_iter().zip(answers) {
        let _ = pending.reply.send(answer);
    }
}
