//! Editing's storage rules (PROTOCOL §8), written once for every backend
//! over [`Tx`]: documents, their history, sessions and locks, and the
//! transform-and-apply transaction ([`submit`]) that runs the editing
//! core's verdicts on the locked document and appends their events.
//!
//! Invariants (see `switchyard_core::storage::edit` for the contract): the
//! document is locked first and held to commit, and the log head after it,
//! as in every edit transaction, so two transactions never lock in opposite
//! orders; a batch's operations each see the document as the ones before
//! them left it; revisions are dense; a `client_op_id` is stored once.

use std::sync::Arc;

use switchyard_core::event::Event;
use switchyard_core::storage::edit::{
    ContentChange, ContentSet, DocKey, DocumentRow, LockAttempt, LockRow, OperationBatch,
    OperationRequest, SessionRow, Submission, Submitted,
};
use switchyard_core::storage::{AppendOutcome, AppendRequest, Result};

use super::log::append_batch;
use super::sql;
use super::tx::{Column, Param, Row, Tx};

fn key_params(k: &DocKey) -> [Param<'_>; 4] {
    [
        Param::Text(&k.tenant),
        Param::Text(&k.resource_type),
        Param::Text(&k.resource_id),
        Param::Text(&k.field),
    ]
}

/// `$1`-`$4` a document's key, then `rest`.
fn with_key<'a>(k: &'a DocKey, rest: &[Param<'a>]) -> Vec<Param<'a>> {
    let mut params = key_params(k).to_vec();
    params.extend_from_slice(rest);
    params
}

fn document(row: Option<Row>) -> Result<Option<DocumentRow>> {
    row.map(|mut r| {
        Ok(DocumentRow {
            content: r.text(0)?,
            revision: r.int(1)? as u64,
            updated_at: r.int(2)?,
        })
    })
    .transpose()
}

fn session(mut r: Row) -> Result<SessionRow> {
    Ok(SessionRow {
        session_id: r.text(0)?,
        key: DocKey {
            tenant: r.text(1)?,
            resource_type: r.text(2)?,
            resource_id: r.text(3)?,
            field: r.text(4)?,
        },
        user_id: r.text(5)?,
        name: r.opt_text(6)?,
        created_at: r.int(7)?,
        last_active_at: r.int(8)?,
        ended_at: r.opt_int(9)?,
    })
}

fn lock(mut r: Row) -> Result<LockRow> {
    Ok(LockRow {
        lock_id: r.text(0)?,
        key: DocKey {
            tenant: r.text(1)?,
            resource_type: r.text(2)?,
            resource_id: r.text(3)?,
            field: r.text(4)?,
        },
        user_id: r.text(5)?,
        name: r.opt_text(6)?,
        ttl_ms: r.int(7)?,
        created_at: r.int(8)?,
        expires_at: r.int(9)?,
    })
}

fn locks(rows: Vec<Row>) -> Result<Vec<LockRow>> {
    rows.into_iter().map(lock).collect()
}

/// Creates the document (empty, revision 0) unless it exists and records
/// the session; returns the document.
pub async fn create_session(
    tx: &mut dyn Tx,
    s: &SessionRow,
    initial_content: &str,
) -> Result<DocumentRow> {
    let k = &s.key;
    tx.execute(
        &sql::CREATE_DOCUMENT,
        &with_key(k, &[Param::Int(s.created_at), Param::Text(initial_content)]),
    )
    .await?;
    tx.execute(
        &sql::INSERT_SESSION,
        &[
            Param::Text(&s.session_id),
            Param::Text(&k.tenant),
            Param::Text(&k.resource_type),
            Param::Text(&k.resource_id),
            Param::Text(&k.field),
            Param::Text(&s.user_id),
            Param::OptText(s.name.as_deref()),
            Param::Int(s.created_at),
            Param::Int(s.last_active_at),
            Param::OptInt(s.ended_at),
        ],
    )
    .await?;
    let doc = tx.query_opt(&sql::DOCUMENT, &key_params(k)).await?;
    Ok(document(doc)?.expect("created above"))
}

pub async fn find_session(
    tx: &mut dyn Tx,
    tenant: &str,
    session_id: &str,
) -> Result<Option<SessionRow>> {
    let row = tx
        .query_opt(
            &sql::SESSION,
            &[Param::Text(tenant), Param::Text(session_id)],
        )
        .await?;
    row.map(session).transpose()
}

pub async fn end_session(tx: &mut dyn Tx, session_id: &str, now_ms: i64) -> Result<()> {
    tx.execute(
        &sql::END_SESSION,
        &[Param::Text(session_id), Param::Int(now_ms)],
    )
    .await?;
    Ok(())
}

pub async fn active_editors(
    tx: &mut dyn Tx,
    k: &DocKey,
    since_ms: i64,
) -> Result<Vec<(String, Option<String>)>> {
    let rows = tx
        .query(&sql::ACTIVE_EDITORS, &with_key(k, &[Param::Int(since_ms)]))
        .await?;
    rows.into_iter()
        .map(|mut r| Ok((r.text(0)?, r.opt_text(1)?)))
        .collect()
}

pub async fn find_document(tx: &mut dyn Tx, k: &DocKey) -> Result<Option<DocumentRow>> {
    document(tx.query_opt(&sql::DOCUMENT, &key_params(k)).await?)
}

/// Records the current revision as saved and marks the session active.
pub async fn save_document(
    tx: &mut dyn Tx,
    k: &DocKey,
    session_id: &str,
    now_ms: i64,
) -> Result<Option<DocumentRow>> {
    let doc = tx
        .query_opt(&sql::SAVE_DOCUMENT, &with_key(k, &[Param::Int(now_ms)]))
        .await?;
    let ids = [session_id];
    tx.execute(
        &sql::TOUCH_SESSIONS,
        &[Param::Texts(&ids), Param::Int(now_ms)],
    )
    .await?;
    document(doc)
}

pub async fn live_lock(tx: &mut dyn Tx, k: &DocKey, now_ms: i64) -> Result<Option<LockRow>> {
    let row = tx
        .query_opt(&sql::LIVE_LOCK, &with_key(k, &[Param::Int(now_ms)]))
        .await?;
    row.map(lock).transpose()
}

pub async fn find_lock(tx: &mut dyn Tx, tenant: &str, lock_id: &str) -> Result<Option<LockRow>> {
    let row = tx
        .query_opt(
            &sql::FIND_LOCK,
            &[Param::Text(tenant), Param::Text(lock_id)],
        )
        .await?;
    row.map(lock).transpose()
}

/// Takes the lock for its user unless another holds a live one; also
/// returns the expired lock it replaced, if any.
pub async fn acquire_lock(
    tx: &mut dyn Tx,
    wanted: &LockRow,
    now_ms: i64,
) -> Result<(LockAttempt, Vec<LockRow>)> {
    let k = &wanted.key;
    let expired = tx
        .query(
            &sql::DELETE_EXPIRED_LOCK,
            &with_key(k, &[Param::Int(now_ms)]),
        )
        .await?;
    // The holder's own retry refreshes their lock; anyone else's upsert
    // matches no row and returns nothing.
    let mine = tx
        .query_opt(
            &sql::TAKE_LOCK,
            &[
                Param::Text(&wanted.lock_id),
                Param::Text(&k.tenant),
                Param::Text(&k.resource_type),
                Param::Text(&k.resource_id),
                Param::Text(&k.field),
                Param::Text(&wanted.user_id),
                Param::OptText(wanted.name.as_deref()),
                Param::Int(wanted.ttl_ms),
                Param::Int(wanted.created_at),
                Param::Int(wanted.expires_at),
            ],
        )
        .await?;
    let attempt = match mine {
        Some(row) => LockAttempt::Acquired(lock(row)?),
        None => LockAttempt::Held(lock(
            tx.query_one(&sql::LOCK_OF_FIELD, &key_params(k)).await?,
        )?),
    };
    Ok((attempt, locks(expired)?))
}

pub async fn renew_lock(
    tx: &mut dyn Tx,
    tenant: &str,
    lock_id: &str,
    user_id: &str,
    ttl_ms: i64,
    now_ms: i64,
) -> Result<Option<LockRow>> {
    let row = tx
        .query_opt(
            &sql::RENEW_LOCK,
            &[
                Param::Text(tenant),
                Param::Text(lock_id),
                Param::Text(user_id),
                Param::Int(ttl_ms),
                Param::Int(now_ms),
            ],
        )
        .await?;
    row.map(lock).transpose()
}

pub async fn release_lock(
    tx: &mut dyn Tx,
    tenant: &str,
    lock_id: &str,
    user_id: &str,
    now_ms: i64,
) -> Result<Option<LockRow>> {
    let row = tx
        .query_opt(
            &sql::RELEASE_LOCK,
            &[
                Param::Text(tenant),
                Param::Text(lock_id),
                Param::Text(user_id),
                Param::Int(now_ms),
            ],
        )
        .await?;
    row.map(lock).transpose()
}

pub async fn expire_locks(tx: &mut dyn Tx, now_ms: i64) -> Result<Vec<LockRow>> {
    locks(tx.query(&sql::EXPIRE_LOCKS, &[Param::Int(now_ms)]).await?)
}

/// Sets a document's content unless a session on it is live; the caller
/// commits.
pub async fn set_content(tx: &mut dyn Tx, change: ContentChange) -> Result<ContentSet> {
    let k = &change.key;
    let doc = document(tx.query_opt(&sql::LOCK_DOCUMENT, &key_params(k)).await?)?;
    let live = tx
        .query(
            &sql::ACTIVE_EDITORS,
            &with_key(k, &[Param::Int(change.live_since_ms)]),
        )
        .await?;
    if !live.is_empty() {
        let users = live
            .into_iter()
            .map(|mut r| r.text(0))
            .collect::<Result<Vec<_>>>()?;
        return Ok(ContentSet::Busy(users));
    }
    let Some(old) = doc else {
        tx.execute(
            &sql::CREATE_DOCUMENT,
            &with_key(
                k,
                &[Param::Int(change.now_ms), Param::Text(&change.content)],
            ),
        )
        .await?;
        let created = document(tx.query_opt(&sql::DOCUMENT, &key_params(k)).await?)?;
        return Ok(ContentSet::Created(created.expect("created above")));
    };
    if old.content == change.content {
        return Ok(ContentSet::Unchanged(old));
    }
    let ops = (change.replace)(&old);
    let revision = old.revision + 1;
    tx.insert_rows(
        &sql::INSERT_OPERATIONS,
        &[
            Column::Texts(vec![k.tenant.as_str()]),
            Column::Texts(vec![k.resource_type.as_str()]),
            Column::Texts(vec![k.resource_id.as_str()]),
            Column::Texts(vec![k.field.as_str()]),
            Column::Ints(vec![revision as i64]),
            Column::Texts(vec![ops.as_str()]),
            Column::Texts(vec![change.change_id.as_str()]),
            Column::Texts(vec![change.user_id.as_str()]),
            Column::OptTexts(vec![None]),
            Column::Ints(vec![change.now_ms]),
        ],
    )
    .await?;
    tx.execute(
        &sql::UPDATE_DOCUMENT,
        &with_key(
            k,
            &[
                Param::Text(&change.content),
                Param::Int(revision as i64),
                Param::Int(change.now_ms),
            ],
        ),
    )
    .await?;
    let announcement = [(change.announce)(revision, &ops)];
    let mut events = Vec::new();
    for appended in append_batch(tx, &announcement, change.now_ms).await? {
        if let AppendOutcome::Appended { events: new, .. } = appended {
            events.extend(new);
        }
    }
    Ok(ContentSet::Replaced {
        document: DocumentRow {
            content: change.content,
            revision,
            updated_at: change.now_ms,
        },
        ops,
        events,
    })
}

/// Transform-and-apply of a batch; the caller commits. Per operation the
/// order matters: the session is checked first (as the stored row is now:
/// a left or idle session answers even a retry), then a retry is answered
/// before anything else is checked (it was accepted once), and a lock taken
/// since then does not turn it into a refusal.
pub async fn submit(tx: &mut dyn Tx, batch: &OperationBatch) -> Result<Submission> {
    let key = &batch.key;
    let Some(mut doc) = document(tx.query_opt(&sql::LOCK_DOCUMENT, &key_params(key)).await?)?
    else {
        return Ok(Submission {
            outcomes: batch
                .operations
                .iter()
                .map(|_| Submitted::NoDocument)
                .collect(),
            events: Vec::new(),
        });
    };
    let lock = live_lock(tx, key, batch.now_ms).await?;
    let sessions = read_sessions(tx, key, &batch.operations).await?;
    let mut history = History::read(tx, key, &doc, &batch.operations).await?;
    let mut outcomes = Vec::with_capacity(batch.operations.len());
    let mut inserts: Vec<NewOperation<'_>> = Vec::new();
    let rules = &batch.rules;
    for (index, request) in batch.operations.iter().enumerate() {
        let id = request.session.session_id.as_str();
        let stored = sessions.iter().find(|s| s.session_id == id);
        if let Err(refusal) = rules.check_session(index, stored) {
            outcomes.push(Submitted::Refused(refusal));
            continue;
        }
        if let Some(client_op_id) = request.client_op_id.as_deref()
            && let Some((revision, ops)) = replay(tx, &inserts, request, client_op_id).await?
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
        let applied = match rules.decide(index, &doc, history.since(request.base_revision, &doc)) {
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
    let mut events: Vec<Arc<Event>> = Vec::with_capacity(inserts.len());
    if !inserts.is_empty() {
        insert_operations(tx, key, &inserts, batch.now_ms).await?;
        tx.execute(
            &sql::UPDATE_DOCUMENT,
            &with_key(
                key,
                &[
                    Param::Text(&doc.content),
                    Param::Int(doc.revision as i64),
                    Param::Int(batch.now_ms),
                ],
            ),
        )
        .await?;
        let mut sessions: Vec<&str> = inserts
            .iter()
            .map(|o| o.request.session.session_id.as_str())
            .collect();
        sessions.sort_unstable();
        sessions.dedup();
        tx.execute(
            &sql::TOUCH_SESSIONS,
            &[Param::Texts(&sessions), Param::Int(batch.now_ms)],
        )
        .await?;
        let announcements: Vec<AppendRequest> = inserts
            .iter()
            .map(|o| rules.announce(o.index, o.revision, &o.ops))
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
async fn read_sessions(
    tx: &mut dyn Tx,
    key: &DocKey,
    operations: &[OperationRequest],
) -> Result<Vec<SessionRow>> {
    let mut ids: Vec<&str> = operations
        .iter()
        .map(|o| o.session.session_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = tx
        .query(
            &sql::SESSIONS,
            &[Param::Text(&key.tenant), Param::Texts(&ids)],
        )
        .await?;
    rows.into_iter().map(session).collect()
}

/// An operation applied in this batch, to be stored with the others.
struct NewOperation<'a> {
    /// Its index in the batch.
    index: usize,
    revision: u64,
    /// As applied, wire JSON.
    ops: String,
    request: &'a OperationRequest,
}

async fn insert_operations(
    tx: &mut dyn Tx,
    k: &DocKey,
    operations: &[NewOperation<'_>],
    now_ms: i64,
) -> Result<()> {
    let n = operations.len();
    tx.insert_rows(
        &sql::INSERT_OPERATIONS,
        &[
            Column::Texts(vec![k.tenant.as_str(); n]),
            Column::Texts(vec![k.resource_type.as_str(); n]),
            Column::Texts(vec![k.resource_id.as_str(); n]),
            Column::Texts(vec![k.field.as_str(); n]),
            Column::Ints(operations.iter().map(|o| o.revision as i64).collect()),
            Column::Texts(operations.iter().map(|o| o.ops.as_str()).collect()),
            Column::Texts(
                operations
                    .iter()
                    .map(|o| o.request.session.session_id.as_str())
                    .collect(),
            ),
            Column::Texts(
                operations
                    .iter()
                    .map(|o| o.request.session.user_id.as_str())
                    .collect(),
            ),
            Column::OptTexts(
                operations
                    .iter()
                    .map(|o| o.request.client_op_id.as_deref())
                    .collect(),
            ),
            Column::Ints(vec![now_ms; n]),
        ],
    )
    .await
}

/// The stored answer to an earlier `client_op_id` of the session: applied
/// earlier in this batch (not stored yet) or before it.
async fn replay(
    tx: &mut dyn Tx,
    batch: &[NewOperation<'_>],
    request: &OperationRequest,
    client_op_id: &str,
) -> Result<Option<(u64, String)>> {
    let session_id = request.session.session_id.as_str();
    let earlier = batch.iter().find(|o| {
        o.request.client_op_id.as_deref() == Some(client_op_id)
            && o.request.session.session_id == session_id
    });
    if let Some(o) = earlier {
        return Ok(Some((o.revision, o.ops.clone())));
    }
    let row = tx
        .query_opt(
            &sql::FIND_CLIENT_OP,
            &[Param::Text(session_id), Param::Text(client_op_id)],
        )
        .await?;
    row.map(|mut r| Ok((r.int(0)? as u64, r.text(1)?)))
        .transpose()
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
    async fn read(
        tx: &mut dyn Tx,
        key: &DocKey,
        doc: &DocumentRow,
        operations: &[OperationRequest],
    ) -> Result<History> {
        let oldest = operations
            .iter()
            .map(|r| r.base_revision)
            .min()
            .unwrap_or(doc.revision)
            .min(doc.revision);
        let ops = if oldest < doc.revision {
            let rows = tx
                .query(&sql::HISTORY, &with_key(key, &[Param::Int(oldest as i64)]))
                .await?;
            rows.into_iter()
                .map(|mut r| r.text(0))
                .collect::<Result<_>>()?
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
