//! The wire types of collaborative editing (PROTOCOL §8): every request and
//! answer body, exactly as the HTTP routes take and give them. The WebSocket
//! `edit` messages carry the same JSON in `data`; ids that HTTP puts in the
//! path (`session_id`, `lock_id`) are arguments of the [`super::Editing`]
//! methods instead. Integers are read with [`crate::whole`] (`60.0` is 60),
//! and `null` for an optional field is the field left out.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /realtime/edit/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartSessionRequest {
    /// A channel namespace, e.g. `task`.
    pub resource_type: String,
    /// A channel id, e.g. `123`: the resource's channel is `task:123`.
    pub resource_id: String,
    /// `[A-Za-z0-9_.-]{1,64}`, e.g. `description`.
    pub field: String,
    /// The content a document created by this session starts with (the
    /// field's text as the app stores it); ignored when the document
    /// exists: the first seed wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_content: Option<String>,
}

/// `PUT /realtime/edit/documents?resource_type=&resource_id=&field=`
/// (service tokens, while no session on the document is live).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetContentRequest {
    pub content: String,
}

/// A user editing, or holding a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Editor {
    pub user_id: String,
    /// The token's `name` claim, if it had one.
    pub name: Option<String>,
}

/// Answer to [`StartSessionRequest`] (201).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartSessionResponse {
    pub session_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub field: String,
    pub content: String,
    /// Operations are made against this revision until events move it on.
    pub revision: u64,
    /// Users with a live session on the document, the caller included.
    pub active_editors: Vec<Editor>,
}

/// `POST /realtime/edit/sessions/{session_id}/operations`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitOperationRequest {
    /// The revision the operation was made against. Signed so that a
    /// negative one is an `invalid_operation` like every other bad operation.
    #[serde(deserialize_with = "crate::whole::i64")]
    pub revision: i64,
    /// `[{"retain":n},{"insert":"text"},{"delete":n}, ...]`, spanning the
    /// whole document at `revision`. Kept as JSON so every defect in it is
    /// a 422 `invalid_operation`, not a body parse error.
    pub ops: Value,
    /// A retry with the same id from the same session gets the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_op_id: Option<String>,
}

/// Answer to [`SubmitOperationRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitOperationResponse {
    /// The document's revision after the operation.
    pub revision: u64,
    /// The operation as applied, after transformation.
    pub ops: Value,
}

/// `GET /realtime/edit/documents?resource_type=&resource_id=&field=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocumentRequest {
    pub resource_type: String,
    pub resource_id: String,
    pub field: String,
}

/// Answer to [`DocumentRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocumentResponse {
    pub content: String,
    pub revision: u64,
    /// When the content last changed, RFC 3339.
    pub updated_at: String,
}

/// Answer to `POST /realtime/edit/sessions/{session_id}/save` (no body).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SaveResponse {
    pub resource_type: String,
    pub resource_id: String,
    pub field: String,
    /// The content saved.
    pub content: String,
    /// The revision recorded as saved.
    pub revision: u64,
    /// When the content last changed, RFC 3339.
    pub updated_at: String,
}

/// `POST /realtime/edit/locks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockRequest {
    pub resource_type: String,
    pub resource_id: String,
    pub field: String,
    /// 1-3600; default 60.
    #[serde(
        default,
        deserialize_with = "crate::whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_seconds: Option<u64>,
}

/// `POST /realtime/edit/locks/{lock_id}/renew`; the body may be empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewLockRequest {
    /// 1-3600; default: the TTL the lock was taken with.
    #[serde(
        default,
        deserialize_with = "crate::whole::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_seconds: Option<u64>,
}

/// Answer to [`LockRequest`] (201) and [`RenewLockRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockResponse {
    pub lock_id: String,
    /// RFC 3339.
    pub expires_at: String,
    pub locked_by: Editor,
}
