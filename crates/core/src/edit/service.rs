//! [`Editing`]: the transport-independent core of collaborative editing
//! (PROTOCOL §8). Sessions, documents and saves live here, with [`decide`],
//! the verdict on one operation; submitting operations (in batches) in
//! [`super::operations`], locks in [`super::locks`].
//!
//! Invariants:
//! - every document, session and lock is keyed by the caller's tenant;
//! - the caller must be able to read the resource's channel, and to write
//!   it for anything that changes or announces something (its namespace
//!   takes client writes, see [`Namespaces::may_write`]), checked on every
//!   request (a token can lose a claim mid-session);
//! - an operation is transformed and applied inside the storage transaction
//!   that locks its document (see [`crate::storage::edit`]); a refused one
//!   changes nothing;
//! - once a change commits, its event is appended even if the client goes
//!   away ([`detached`]; an operation's event commits with it, in the
//!   detached batch of [`super::operations`]); a save appends under the
//!   document's [`Turn`](super::sequencer::Turn), after the operations
//!   this node applied before it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::api::*;
use super::ot::{Operation, OtError, transform};
use super::pending::Pending;
use super::sequencer::Sequencer;
use crate::channel::{Channel, Namespaces};
use crate::clock::{format_timestamp, now_ms};
use crate::error::{Error, ErrorCode};
use crate::event::NewEvent;
use crate::identity::Identity;
use crate::log::EventLog;
use crate::names::{is_valid_field, is_valid_id, is_valid_opaque_id};
use crate::storage::AppendRequest;
use crate::storage::edit::{Applied, DocKey, DocumentRow, EditStore, LockRow, SessionRow};

/// Largest document, in UTF-8 bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Default idle time after which a session answers 410 `session_expired`.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// Longest `client_op_id` and session id accepted.
pub(super) const MAX_ID_LEN: usize = 128;
/// Most sessions remembered by [`Editing::known_session`]; past this the
/// memory starts over.
const KNOWN_SESSIONS: usize = 65_536;

/// The editing core. Cheap to clone: every field is shared.
#[derive(Clone)]
pub struct Editing {
    pub(super) log: Arc<EventLog>,
    pub(super) namespaces: Arc<Namespaces>,
    /// How long a session may go without an operation or save.
    pub(super) idle: Duration,
    /// Turns and queued operations per document.
    pub(super) sequencer: Arc<Sequencer<Pending>>,
    /// Sessions looked up or started here, by (tenant, id). Only what never
    /// changes is trusted from it (document and owner), so an operation
    /// finds its document without a lookup; whether the session may still
    /// be used is checked in the operation's transaction.
    known: Arc<Mutex<HashMap<(String, String), SessionRow>>>,
}

impl Editing {
    pub fn new(log: Arc<EventLog>, namespaces: Arc<Namespaces>, idle: Duration) -> Self {
        Self {
            log,
            namespaces,
            idle,
            sequencer: Arc::new(Sequencer::default()),
            known: Arc::default(),
        }
    }

    /// A session this node has seen, as it was then: trust only its id,
    /// document and owner.
    pub(super) fn known_session(&self, tenant: &str, session_id: &str) -> Option<SessionRow> {
        let known = self.known.lock().expect("sessions lock");
        known
            .get(&(tenant.to_string(), session_id.to_string()))
            .cloned()
    }

    fn remember(&self, session: &SessionRow) {
        let mut known = self.known.lock().expect("sessions lock");
        if known.len() >= KNOWN_SESSIONS {
            known.clear();
        }
        known.insert(
            (session.key.tenant.clone(), session.session_id.clone()),
            session.clone(),
        );
    }

    pub(super) fn store(&self) -> &dyn EditStore {
        &**self.log.storage()
    }

    /// Opens a session on a document (creating it empty) and appends `edit.started`.
    pub async fn start_session(
        &self,
        who: &Identity,
        req: StartSessionRequest,
    ) -> Result<StartSessionResponse, Error> {
        let (key, channel) =
            self.writable_resource(who, &req.resource_type, &req.resource_id, &req.field)?;
        let initial = Self::seed(req.initial_content)?;
        let now = now_ms();
        if let Some(lock) = self.store().current_lock(&key, now).await?
            && lock.user_id != who.user_id
        {
            return Err(resource_locked(&lock));
        }
        let session = SessionRow {
            session_id: uuid::Uuid::now_v7().to_string(),
            key,
            user_id: who.user_id.clone(),
            name: who.name.clone(),
            created_at: now,
            last_active_at: now,
            ended_at: None,
        };
        let this = self.clone();
        detached(async move {
            let doc = this.store().create_session(&session, &initial).await?;
            this.remember(&session);
            let since = now - this.idle.as_millis() as i64;
            let editors = this
                .store()
                .active_editors(&session.key, since)
                .await?
                .into_iter()
                .map(|(user_id, name)| Editor { user_id, name })
                .collect();
            let k = &session.key;
            this.append(
                &k.tenant,
                Some(&session.user_id),
                &channel,
                "edit.started",
                json!({
                    "session_id": session.session_id,
                    "user_id": session.user_id,
                    "name": session.name,
                    "resource_type": k.resource_type,
                    "resource_id": k.resource_id,
                    "field": k.field,
                    "revision": doc.revision,
                }),
            )
            .await?;
            Ok(StartSessionResponse {
                session_id: session.session_id.clone(),
                resource_type: k.resource_type.clone(),
                resource_id: k.resource_id.clone(),
                field: k.field.clone(),
                content: doc.content,
                revision: doc.revision,
                active_editors: editors,
            })
        })
        .await
    }

    /// The document's content and revision.
    pub async fn document(
        &self,
        who: &Identity,
        req: &DocumentRequest,
    ) -> Result<DocumentResponse, Error> {
        let (key, _) = self.resource(who, &req.resource_type, &req.resource_id, &req.field)?;
        let doc = self.store().document(&key).await?.ok_or_else(no_document)?;
        Ok(DocumentResponse {
            content: doc.content,
            revision: doc.revision,
            updated_at: format_timestamp(doc.updated_at),
        })
    }

    /// Records the current revision as saved and appends `edit.saved`.
    pub async fn save(&self, who: &Identity, session_id: &str) -> Result<SaveResponse, Error> {
        let session = self.live_session(who, session_id).await?;
        let channel = self.writable(who, &session.key)?;
        let this = self.clone();
        detached(async move {
            // In turn, so `edit.saved` for revision N follows `edit.operation` N.
            let _turn = this.sequencer.turn(&session.key).await;
            let doc = this
                .store()
                .save_document(&session.key, &session.session_id, now_ms())
                .await?
                .ok_or_else(no_document)?;
            let k = &session.key;
            let updated_at = format_timestamp(doc.updated_at);
            this.append(
                &k.tenant,
                Some(&session.user_id),
                &channel,
                "edit.saved",
                json!({
                    "session_id": session.session_id,
                    "user_id": session.user_id,
                    "resource_type": k.resource_type,
                    "resource_id": k.resource_id,
                    "field": k.field,
                    "revision": doc.revision,
                    "updated_at": updated_at,
                }),
            )
            .await?;
            Ok(SaveResponse {
                resource_type: k.resource_type.clone(),
                resource_id: k.resource_id.clone(),
                field: k.field.clone(),
                content: doc.content,
                revision: doc.revision,
                updated_at,
            })
        })
        .await
    }

    /// Ends a session. Idempotent: leaving a left or expired session succeeds.
    pub async fn leave(&self, who: &Identity, session_id: &str) -> Result<(), Error> {
        let session = self.own_session(who, session_id).await?;
        self.store()
            .end_session(&session.session_id, now_ms())
            .await?;
        Ok(())
    }

    /// The caller's session, whatever its state: 404 unknown (in this
    /// tenant), 403 another user's.
    async fn own_session(&self, who: &Identity, session_id: &str) -> Result<SessionRow, Error> {
        // Ids are ours (UUIDs): one no session can have is not looked up,
        // so what storage cannot hold (NUL) never reaches it.
        let found = if is_valid_opaque_id(session_id, MAX_ID_LEN) {
            self.store().session(&who.tenant, session_id).await?
        } else {
            None
        };
        if let Some(session) = &found {
            self.remember(session);
        }
        own(&who.user_id, session_id, found.as_ref())?;
        Ok(found.expect("checked by own"))
    }

    /// The caller's session if it may still be used: 410 once left or idle too long.
    pub(super) async fn live_session(
        &self,
        who: &Identity,
        session_id: &str,
    ) -> Result<SessionRow, Error> {
        let session = self.own_session(who, session_id).await?;
        self.usable(&session, now_ms())?;
        Ok(session)
    }

    /// [`Self::live_session`]'s verdict on a session read elsewhere (in an
    /// operation's transaction): the same answers, in the same order.
    pub(super) fn check_live(
        &self,
        user_id: &str,
        session_id: &str,
        found: Option<&SessionRow>,
        now_ms: i64,
    ) -> Result<(), Error> {
        let session = own(user_id, session_id, found)?;
        self.usable(session, now_ms)
    }

    /// 410 once left or idle too long at `now_ms`.
    fn usable(&self, session: &SessionRow, now_ms: i64) -> Result<(), Error> {
        let idle_ms = self.idle.as_millis() as i64;
        let reason = if session.ended_at.is_some() {
            Some(("left", "The edit session was left".to_string()))
        } else if now_ms - session.last_active_at > idle_ms {
            Some((
                "idle",
                format!(
                    "The edit session expired after {} s without activity",
                    self.idle.as_secs()
                ),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = reason {
            return Err(Error::new(
                ErrorCode::SessionExpired,
                format!("{message}; start a new one"),
            )
            .with_details(json!({ "session_id": session.session_id, "reason": reason })));
        }
        Ok(())
    }

    /// Validates a resource and field, and checks the caller may read its
    /// channel: 400 for bad names, 404 for an unknown namespace, 403 otherwise.
    pub(super) fn resource(
        &self,
        who: &Identity,
        resource_type: &str,
        resource_id: &str,
        field: &str,
    ) -> Result<(DocKey, Channel), Error> {
        if !(1..=32).contains(&resource_type.len())
            || !resource_type
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            return Err(Error::invalid_message(
                "resource_type must be a channel namespace: 1-32 characters of [a-z_]",
            ));
        }
        if !is_valid_id(resource_id) {
            return Err(Error::invalid_message(
                "resource_id must be 1-128 characters of [A-Za-z0-9_.@-]",
            ));
        }
        if !is_valid_field(field) {
            return Err(Error::invalid_message(
                "field must be 1-64 characters of [A-Za-z0-9_.-]",
            ));
        }
        let key = DocKey {
            tenant: who.tenant.clone(),
            resource_type: resource_type.to_string(),
            resource_id: resource_id.to_string(),
            field: field.to_string(),
        };
        let channel = self.readable(who, &key)?;
        Ok((key, channel))
    }

    /// [`Self::resource`] for a request that writes: 403 also when the
    /// namespace takes no client writes.
    pub(super) fn writable_resource(
        &self,
        who: &Identity,
        resource_type: &str,
        resource_id: &str,
        field: &str,
    ) -> Result<(DocKey, Channel), Error> {
        let (key, _) = self.resource(who, resource_type, resource_id, field)?;
        let channel = self.writable(who, &key)?;
        Ok((key, channel))
    }

    /// The document's channel, if the caller may read it and write to it.
    pub(super) fn writable(&self, who: &Identity, key: &DocKey) -> Result<Channel, Error> {
        let channel = self.readable(who, key)?;
        if !self.namespaces.may_write(who, &channel) {
            return Err(Error::permission_denied(format!(
                "Namespace '{}' does not take edits or locks from clients (client_write is off)",
                channel.namespace()
            ))
            .with_details(json!({ "channel": channel.as_str() })));
        }
        Ok(channel)
    }

    /// The document's channel, if the caller may read it.
    pub(super) fn readable(&self, who: &Identity, key: &DocKey) -> Result<Channel, Error> {
        let name = format!("{}:{}", key.resource_type, key.resource_id);
        let channel = self.namespaces.resolve(&name, who)?;
        if !self.namespaces.may_subscribe(who, &channel) {
            return Err(Error::permission_denied(format!(
                "This token may not read '{channel}', so it may not edit it"
            ))
            .with_details(json!({ "channel": channel.as_str() })));
        }
        Ok(channel)
    }

    /// Appends one `edit.*` event on a resource channel.
    pub(super) async fn append(
        &self,
        tenant: &str,
        user_id: Option<&str>,
        channel: &Channel,
        event: &str,
        data: Value,
    ) -> Result<(), Error> {
        self.log
            .append(AppendRequest {
                origin: None,
                tenant: tenant.to_string(),
                user_id: user_id.map(str::to_string),
                events: vec![NewEvent {
                    also: Vec::new(),
                    channel: channel.clone(),
                    event: event.to_string(),
                    data: data.to_string(),
                    expected_last_id: None,
                    retention_ms: self.namespaces.retention(channel).as_millis() as i64,
                }],
                idempotency_key: None,
                recipients: 0,
                notifications: Vec::new(),
            })
            .await?;
        Ok(())
    }
}

/// The core of transform-and-apply, run on the locked document: `op`, made
/// against revision `base`, is transformed past `history` (the operations
/// applied after `base`, in order; the incoming one is the first argument,
/// so it inserts first on a tie, as in ot.js) and applied.
pub fn decide(
    op: &Operation,
    base: u64,
    doc: &DocumentRow,
    history: &[String],
) -> Result<Applied, Error> {
    if base > doc.revision {
        return Err(invalid_operation(OtError(format!(
            "revision {base} is newer than the document's revision {}",
            doc.revision
        )))
        .with_details(json!({ "revision": doc.revision })));
    }
    let mut op = op.clone();
    for (i, stored) in history.iter().enumerate() {
        let past = Operation::from_json(&parse_stored(stored)?)
            .map_err(|e| Error::internal(format!("stored operation: {e}")))?;
        if i == 0 && op.base_len() != past.base_len() {
            return Err(invalid_operation(OtError(format!(
                "operation spans {} characters but the document had {} at revision {base}",
                op.base_len(),
                past.base_len()
            ))));
        }
        op = transform(&op, &past).map_err(invalid_operation)?.0;
    }
    let content = op.apply(&doc.content).map_err(invalid_operation)?;
    if content.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "The document would be {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
                content.len()
            ),
        )
        .with_details(json!({ "limit": MAX_DOCUMENT_BYTES, "size": content.len() })));
    }
    Ok(Applied {
        content,
        ops: op.to_json().to_string(),
    })
}

pub(super) fn invalid_operation(e: OtError) -> Error {
    Error::new(ErrorCode::InvalidOperation, e.0)
}

/// 409 `resource_locked`, naming the holder and the expiry.
pub(super) fn resource_locked(lock: &LockRow) -> Error {
    let expires_at = format_timestamp(lock.expires_at);
    Error::new(
        ErrorCode::ResourceLocked,
        format!(
            "{}:{} {} is locked by {} until {expires_at}",
            lock.key.resource_type, lock.key.resource_id, lock.key.field, lock.user_id
        ),
    )
    .with_details(json!({
        "locked_by": { "user_id": lock.user_id, "name": lock.name },
        "expires_at": expires_at,
    }))
}

pub(super) fn no_document() -> Error {
    Error::new(
        ErrorCode::NotFound,
        "No document for this resource and field yet; start an edit session to create it",
    )
}

pub(super) fn parse_stored(ops: &str) -> Result<Value, Error> {
    serde_json::from_str(ops)
        .map_err(|e| Error::internal(format!("stored operation is not JSON: {e}")))
}

/// The caller's (`user_id`'s) session: 404 unknown, 403 another user's.
fn own<'a>(
    user_id: &str,
    session_id: &str,
    found: Option<&'a SessionRow>,
) -> Result<&'a SessionRow, Error> {
    let session = found.ok_or_else(|| {
        Error::new(
            ErrorCode::NotFound,
            format!("No edit session '{}'", truncate(session_id)),
        )
    })?;
    if session.user_id != user_id {
        return Err(Error::permission_denied(
            "This edit session belongs to another user",
        ));
    }
    Ok(session)
}

fn truncate(s: &str) -> String {
    s.chars().take(MAX_ID_LEN).collect()
}

/// Runs `work` to completion even if the caller stops waiting (a client
/// that disconnects drops its request's future): once a change commits,
/// its event must be appended, or readers would never see that revision.
pub(super) async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> Result<T, Error> {
    tokio::spawn(work)
        .await
        .map_err(|e| Error::internal(format!("edit task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(content: &str, revision: u64) -> DocumentRow {
        DocumentRow {
            content: content.into(),
            revision,
            updated_at: 0,
        }
    }

    fn op(v: Value) -> Operation {
        Operation::from_json(&v).unwrap()
    }

    fn code(r: Result<Applied, Error>) -> &'static str {
        r.expect_err("refused").code().as_str()
    }

    #[test]
    fn transforms_past_history_with_the_incoming_op_first() {
        // Revision 1 inserted "Y" at 1 of "ab"; the incoming op, made at
        // revision 0, inserts "X" at the same place and goes first.
        let history = [json!([{"retain": 1}, {"insert": "Y"}, {"retain": 1}]).to_string()];
        let incoming = op(json!([{"retain": 1}, {"insert": "X"}, {"retain": 1}]));
        let applied = decide(&incoming, 0, &doc("aYb", 1), &history).unwrap();
        assert_eq!(applied.content, "aXYb");
        assert_eq!(
            applied.ops,
            json!([{"retain": 1}, {"insert": "X"}, {"retain": 2}]).to_string()
        );
    }

    #[test]
    fn refuses_inconsistent_operations() {
        let d = doc("héllo", 2);
        let two = [
            json!([{"retain": 5}, {"insert": "!"}]).to_string(),
            json!([{"retain": 6}]).to_string(),
        ];
        // Wrong base length, with and without history to transform past.
        assert_eq!(
            code(decide(&op(json!([{"retain": 4}])), 2, &d, &[])),
            "invalid_operation"
        );
        assert_eq!(
            code(decide(&op(json!([{"retain": 6}])), 0, &d, &two)),
            "invalid_operation"
        );
        // Delete past the end.
        let past_end = op(json!([{"retain": 3}, {"delete": 5}]));
        assert_eq!(code(decide(&past_end, 2, &d, &[])), "invalid_operation");
        // A revision from the future.
        assert_eq!(
            code(decide(&op(json!([{"retain": 5}])), 3, &d, &[])),
            "invalid_operation"
        );
    }

    #[test]
    fn refuses_documents_over_the_cap() {
        let big = "x".repeat(MAX_DOCUMENT_BYTES);
        let grow = op(json!([{"retain": MAX_DOCUMENT_BYTES}, {"insert": "é"}]));
        assert_eq!(
            code(decide(&grow, 0, &doc(&big, 0), &[])),
            "payload_too_large"
        );
        let same = op(json!([{"retain": MAX_DOCUMENT_BYTES - 1}, {"delete": 1}, {"insert": "y"}]));
        assert!(
            decide(&same, 0, &doc(&big, 0), &[]).is_ok(),
            "exactly 1 MiB is allowed"
        );
    }
}
