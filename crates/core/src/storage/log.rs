//! The log's vocabulary in storage: what an append asks for and what it
//! came to (PROTOCOL §3, §6).

use std::sync::Arc;

use serde_json::json;

use super::notification::NotificationRow;
use crate::clock::format_timestamp;
use crate::event::{Event, NewEvent};

/// One publish: a set of events appended atomically, or not at all.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub tenant: String,
    pub user_id: Option<String>,
    pub events: Vec<NewEvent>,
    /// A retry with the same key (per tenant and user, within 24 h) gets the
    /// first receipt back and appends nothing.
    pub idempotency_key: Option<String>,
    /// Live streams subscribed to the request's channels when it was taken
    /// for appending; part of the receipt.
    pub recipients: u64,
    /// Notifications to store with the events (a `notification` published
    /// on a user's channel), in the same transaction.
    pub notifications: Vec<NotificationRow>,
    /// The publishing connection, when it asked `exclude_self`: its stream
    /// skips these events (PROTOCOL §6).
    pub origin: Option<String>,
}

/// What became of one [`AppendRequest`].
#[derive(Debug, Clone)]
pub enum AppendOutcome {
    /// Appended; `receipt` is the JSON answer.
    Appended {
        events: Vec<Arc<Event>>,
        receipt: String,
    },
    /// The idempotency key was seen before: the first receipt.
    Replayed { receipt: String },
    /// An `expected_last_id` did not hold; nothing was appended.
    Conflict { channel: String, last_id: u64 },
    /// The database refused this request (its batch was retried one by
    /// one and only this request failed); nothing was appended.
    Failed,
}

/// The oldest retained id when a cursor points before pruned events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorExpired {
    pub oldest_id: u64,
}

/// How long idempotency keys are remembered.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// The receipt a publish is answered with (PROTOCOL §6).
pub fn render_receipt(ids: &[u64], recipients: u64, timestamp_ms: i64) -> String {
    json!({
        "status": "sent",
        "id": ids.last().copied().unwrap_or(0),
        "ids": ids,
        "recipients": recipients,
        "timestamp": format_timestamp(timestamp_ms),
    })
    .to_string()
}
