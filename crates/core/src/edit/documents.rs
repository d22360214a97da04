//! Documents with content from outside (PROTOCOL §8, beyond its text):
//! a session may seed a new document with `initial_content` (the field's
//! text as the app stores it; the first seed wins), and a backend may set
//! a document's content while no session on it is live.
//!
//! Invariants: a set content is one more revision, recorded in the history
//! like any operation (a replacing `[{"delete": n}, {"insert": text}]`) and
//! announced by an `edit.operation` whose `session_id` is the change's id,
//! committed together under the document's lock; with a live session
//! nothing changes (409), so no editor's revision goes stale under it.

use serde_json::json;
use serde_json::value::RawValue;

use super::api::{DocumentRequest, DocumentResponse, SetContentRequest};
use super::operations::OperationEvent;
use super::service::{Editing, MAX_DOCUMENT_BYTES, detached};
use crate::clock::{format_timestamp, now_ms};
use crate::error::{Error, ErrorCode};
use crate::event::NewEvent;
use crate::identity::Identity;
use crate::names::is_storable_text;
use crate::storage::AppendRequest;
use crate::storage::edit::{ContentChange, ContentSet, DocumentRow};

/// 413 past [`MAX_DOCUMENT_BYTES`], 400 for text storage cannot hold.
fn check_content(content: &str) -> Result<(), Error> {
    if content.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "The content is {} bytes; a document holds at most {MAX_DOCUMENT_BYTES}",
                content.len()
            ),
        )
        .with_details(json!({ "limit": MAX_DOCUMENT_BYTES, "size": content.len() })));
    }
    if !is_storable_text(content) {
        return Err(Error::invalid_message(
            "content may not contain NUL characters",
        ));
    }
    Ok(())
}

/// The operation replacing `old` by `new` (lengths in Unicode scalar
/// values), wire JSON.
fn replacing(old: &DocumentRow, new: &str) -> String {
    let mut ops = Vec::new();
    let removed = old.content.chars().count();
    if removed > 0 {
        ops.push(json!({ "delete": removed }));
    }
    if !new.is_empty() {
        ops.push(json!({ "insert": new }));
    }
    serde_json::Value::Array(ops).to_string()
}

impl Editing {
    /// The content a session's new document starts with: its
    /// `initial_content`, checked, or empty.
    pub(super) fn seed(initial_content: Option<String>) -> Result<String, Error> {
        let content = initial_content.unwrap_or_default();
        check_content(&content)?;
        Ok(content)
    }

    /// `PUT /realtime/edit/documents`: a backend sets a document's content
    /// (creating it) while no session on it is live.
    pub async fn set_content(
        &self,
        who: &Identity,
        req: &DocumentRequest,
        body: SetContentRequest,
    ) -> Result<DocumentResponse, Error> {
        if !who.is_service {
            return Err(Error::permission_denied(
                "A document's content is set by backends: use a service token, or edit it in a session",
            ));
        }
        let (key, channel) =
            self.writable_resource(who, &req.resource_type, &req.resource_id, &req.field)?;
        check_content(&body.content)?;
        let now = now_ms();
        let change_id = uuid::Uuid::now_v7().to_string();
        let (tenant, user) = (who.tenant.clone(), who.user_id.clone());
        let retention_ms = self.namespaces.retention(&channel).as_millis() as i64;
        let announce = {
            let (key, change_id, user) = (key.clone(), change_id.clone(), user.clone());
            Box::new(move |revision: u64, ops: &str| {
                let ops: &RawValue =
                    serde_json::from_str(ops).expect("the replacing operation is JSON");
                let data = serde_json::to_string(&OperationEvent {
                    session_id: &change_id,
                    user_id: &user,
                    resource_type: &key.resource_type,
                    resource_id: &key.resource_id,
                    field: &key.field,
                    revision,
                    ops,
                    client_op_id: None,
                })
                .expect("an event serializes");
                AppendRequest {
                    origin: None,
                    tenant,
                    user_id: Some(user),
                    events: vec![NewEvent {
                        also: Vec::new(),
                        channel,
                        event: "edit.operation".to_string(),
                        data,
                        expected_last_id: None,
                        retention_ms,
                    }],
                    idempotency_key: None,
                    recipients: 0,
                    notifications: Vec::new(),
                }
            })
        };
        let new = body.content.clone();
        let change = ContentChange {
            key,
            content: body.content,
            user_id: user,
            change_id,
            live_since_ms: now - self.idle.as_millis() as i64,
            now_ms: now,
            replace: Box::new(move |old| replacing(old, &new)),
            announce,
        };
        let this = self.clone();
        let outcome = detached(async move {
            let outcome = this.store().set_content(change).await?;
            if let ContentSet::Replaced { events, .. } = &outcome {
                this.log.ingest_committed(events).await;
            }
            Ok(outcome)
        })
        .await?;
        let doc = match outcome {
            ContentSet::Created(doc) | ContentSet::Unchanged(doc) => doc,
            ContentSet::Replaced { document, .. } => document,
            ContentSet::Busy(users) => {
                return Err(Error::new(
                    ErrorCode::Conflict,
                    "Sessions on this document are live: its content changes through their operations",
                )
                .with_details(json!({ "active_editors": users })));
            }
        };
        Ok(DocumentResponse {
            content: doc.content,
            revision: doc.revision,
            updated_at: format_timestamp(doc.updated_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(content: &str) -> DocumentRow {
        DocumentRow {
            content: content.into(),
            revision: 3,
            updated_at: 0,
        }
    }

    #[test]
    fn the_replacing_operation_spans_the_old_content_in_characters() {
        assert_eq!(
            replacing(&doc("héllo"), "bye"),
            r#"[{"delete":5},{"insert":"bye"}]"#
        );
        assert_eq!(replacing(&doc(""), "new"), r#"[{"insert":"new"}]"#);
        assert_eq!(replacing(&doc("gone"), ""), r#"[{"delete":4}]"#);
        let op = super::super::ot::Operation::from_json(
            &serde_json::from_str(&replacing(&doc("héllo"), "bye")).unwrap(),
        )
        .unwrap();
        assert_eq!(op.apply("héllo").unwrap(), "bye");
    }
}
