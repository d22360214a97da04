//! Submitting operations (PROTOCOL §8), applied in batches per document.
//!
//! Each operation is queued on its document's [`Sequencer`](super::sequencer)
//! by a detached task, which then takes the document's turn. A session this
//! node has seen needs no lookup to find its document: whether it may still
//! be used (exists, the caller's, not left or idle) is checked in the
//! batch's transaction, one read for all its sessions, with the answers a
//! lookup would give. The turn
//! holder takes every operation queued by then (up to [`MAX_BATCH`]) and:
//! 1. transforms and applies them in arrival order in ONE storage
//!    transaction, each past everything applied before it, earlier ones of
//!    the batch included; each keeps its own outcome (applied, a retry's
//!    first answer, or a refusal that changes nothing for the others);
//! 2. appends the `edit.operation` events of the applied ones together, in
//!    revision order, so one group commit of the log covers them all;
//! 3. answers each caller, only after that commit: an acknowledged
//!    operation is durable and announced.
//!
//! Invariants: the turn is held from the transaction until the events are
//! appended, so one node appends a document's events in revision order; the
//! detached task finishes the commit and the append even if its caller
//! went away. On SQLite the document transaction commits without an fsync
//! (`synchronous=NORMAL`); the log commit after it (`FULL`) syncs the WAL up
//! to and including it, so the append is the durable point for both.

use serde_json::json;
use tokio::sync::oneshot;

use super::api::*;
use super::ot::{Operation, OtError};
use super::service::{
    Editing, MAX_ID_LEN, decide, invalid_operation, no_document, parse_stored, resource_locked,
};
use crate::auth::Identity;
use crate::channel::Channel;
use crate::error::ApiError;
use crate::event::{NewEvent, now_ms};
use crate::storage::AppendRequest;
use crate::storage::edit::{DocumentRow, OperationBatch, OperationRequest, SessionRow, Submitted};

/// Most operations applied in one transaction: bounds how long a turn (and
/// the database's write lock) is held.
pub const MAX_BATCH: usize = 256;

/// An operation waiting for its document's turn.
pub struct Pending {
    session: SessionRow,
    channel: Channel,
    op: Operation,
    /// The revision the operation was made against.
    base: u64,
    client_op_id: Option<String>,
    /// Where its caller waits for the answer.
    reply: oneshot::Sender<Result<SubmitOperationResponse, ApiError>>,
}

type Answer = Result<SubmitOperationResponse, ApiError>;

impl Editing {
    /// Transforms an operation against everything applied since its base
    /// revision, applies and stores it, and appends `edit.operation`.
    pub async fn submit_operation(
        &self,
        who: &Identity,
        session_id: &str,
        req: SubmitOperationRequest,
    ) -> Result<SubmitOperationResponse, ApiError> {
        if let Some(id) = &req.client_op_id
            && !(1..=MAX_ID_LEN).contains(&id.len())
        {
            return Err(ApiError::invalid_message(
                "client_op_id must be 1-128 characters",
            ));
        }
        let op = Operation::from_json(&req.ops).map_err(invalid_operation)?;
        let base = u64::try_from(req.revision).map_err(|_| {
            invalid_operation(OtError(format!(
                "revision must be a non-negative integer, got {}",
                req.revision
            )))
        })?;
        let (session, channel) = self.operation_session(who, session_id).await?;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            session,
            channel,
            op,
            base,
            client_op_id: req.client_op_id,
            reply,
        };
        // Detached: once queued, the operation is applied and announced even
        // if this caller goes away.
        tokio::spawn(self.clone().queue_operation(pending));
        answer
            .await
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("edit task failed")))?
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
    ) -> Result<(SessionRow, Channel), ApiError> {
        if let Some(session) = self.known_session(&who.tenant, session_id)
            && session.user_id == who.user_id
            && let Ok(channel) = self.readable(who, &session.key)
        {
            return Ok((session, channel));
        }
        let session = self.live_session(who, session_id).await?;
        let channel = self.readable(who, &session.key)?;
        Ok((session, channel))
    }

    /// Queues `pending` on its document and takes the turn; applies whatever
    /// is queued by then (maybe nothing: an earlier turn took it).
    async fn queue_operation(self, pending: Pending) {
        let key = pending.session.key.clone();
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
            Ok(outcomes) => {
                let answers = self.announce(&batch, outcomes).await;
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
            Ok(outcomes) => self.announce(&batch, outcomes).await,
            Err(e) => vec![Err(e)],
        };
        answer_all(batch, answers);
    }

    /// One storage transaction for the whole batch.
    async fn submit_batch(&self, batch: &[Pending]) -> Result<Vec<Submitted>, ApiError> {
        let now = now_ms();
        let checks: Vec<_> = batch
            .iter()
            .map(|p| {
                let s = &p.session;
                move |found: Option<&SessionRow>| {
                    self.check_live(&s.user_id, &s.session_id, found, now)
                }
            })
            .collect();
        let verdicts: Vec<_> = batch
            .iter()
            .map(|p| {
                move |doc: &DocumentRow, history: &[String]| decide(&p.op, p.base, doc, history)
            })
            .collect();
        let operations: Vec<OperationRequest<'_>> = batch
            .iter()
            .zip(checks.iter().zip(&verdicts))
            .map(|(p, (check, verdict))| OperationRequest {
                session: &p.session,
                check_session: check,
                client_op_id: p.client_op_id.as_deref(),
                base_revision: p.base,
                decide: verdict,
            })
            .collect();
        let request = OperationBatch {
            key: &batch[0].session.key,
            now_ms: now,
            operations: &operations,
        };
        Ok(self.store().submit_operations(request).await?)
    }

    /// Turns outcomes into answers, appending `edit.operation` for each
    /// applied operation, all at once and in revision order; an applied
    /// operation is answered only once its event is committed.
    async fn announce(&self, batch: &[Pending], outcomes: Vec<Submitted>) -> Vec<Answer> {
        let mut answers = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        for (pending, outcome) in batch.iter().zip(outcomes) {
            let answer = match outcome {
                Submitted::Applied { revision, ops } => parse_stored(&ops).map(|ops| {
                    events.push((answers.len(), self.operation_event(pending, revision, &ops)));
                    SubmitOperationResponse { revision, ops }
                }),
                Submitted::Replayed { revision, ops } => {
                    parse_stored(&ops).map(|ops| SubmitOperationResponse { revision, ops })
                }
                Submitted::Refused(error) => Err(error),
                Submitted::Locked(lock) => Err(resource_locked(&lock)),
                Submitted::NoDocument => Err(no_document()),
            };
            answers.push(answer);
        }
        let (indexes, requests): (Vec<usize>, Vec<AppendRequest>) = events.into_iter().unzip();
        let appended = self.log.append_all(requests).await;
        for (i, outcome) in indexes.into_iter().zip(appended) {
            if let Err(e) = outcome {
                answers[i] = Err(e);
            }
        }
        answers
    }

    /// The `edit.operation` event of an applied operation.
    fn operation_event(
        &self,
        pending: &Pending,
        revision: u64,
        ops: &serde_json::Value,
    ) -> AppendRequest {
        let (session, k) = (&pending.session, &pending.session.key);
        let data = json!({
            "session_id": session.session_id,
            "user_id": session.user_id,
            "resource_type": k.resource_type,
            "resource_id": k.resource_id,
            "field": k.field,
            "revision": revision,
            "ops": ops,
            "client_op_id": pending.client_op_id,
        });
        AppendRequest {
            tenant: k.tenant.clone(),
            user_id: Some(session.user_id.clone()),
            events: vec![NewEvent {
                channel: pending.channel.clone(),
                event: "edit.operation".to_string(),
                data: data.to_string(),
                expected_last_id: None,
                retention_ms: self.namespaces.retention(&pending.channel).as_millis() as i64,
            }],
            idempotency_key: None,
            recipients: 0,
        }
    }
}

/// Sends each caller its answer (a caller that went away is not waiting).
fn answer_all(batch: Vec<Pending>, answers: Vec<Answer>) {
    for (pending, answer) in batch.into_iter().zip(answers) {
        let _ = pending.reply.send(answer);
    }
}
