//! Events: what the log stores and every transport delivers (PROTOCOL §3).
//!
//! An [`Event`] is immutable once appended; its envelope JSON is rendered
//! once, when the event is built (with its SSE frame), so fan-out to many
//! readers never re-serializes or copies per reader. Invariant: `data` is compact JSON (no newlines), so an
//! envelope always fits on one SSE `data:` line.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::error::{ApiError, ErrorCode};

/// Largest encoded `data` a publish may carry.
pub const MAX_DATA_BYTES: usize = 64 * 1024;

/// One event of the log.
#[derive(Debug)]
pub struct Event {
    pub id: u64,
    pub tenant: String,
    pub channel: String,
    pub event: String,
    /// Compact JSON text.
    pub data: String,
    pub user_id: Option<String>,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// `id: N\ndata: <envelope>\n\n`, shared by every SSE stream it goes to;
    /// the envelope is a slice of it, so an event is held in memory once.
    sse_frame: bytes::Bytes,
    /// Where the envelope starts in `sse_frame` (it ends 2 bytes before the end).
    envelope_at: usize,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: u64,
    channel: &'a str,
    event: &'a str,
    data: &'a RawValue,
    user_id: Option<&'a str>,
    timestamp: String,
}

impl Event {
    pub fn new(
        id: u64,
        tenant: String,
        channel: String,
        event: String,
        data: String,
        user_id: Option<String>,
        timestamp_ms: i64,
    ) -> Arc<Self> {
        let raw: &RawValue = serde_json::from_str(&data).unwrap_or_else(|_| {
            // Stored data is always valid JSON; a corrupt row renders as null rather than a broken frame.
            serde_json::from_str("null").expect("null is JSON")
        });
        let envelope = serde_json::to_string(&Envelope {
            kind: "event",
            id,
            channel: &channel,
            event: &event,
            data: raw,
            user_id: user_id.as_deref(),
            timestamp: format_timestamp(timestamp_ms),
        })
        .expect("envelope serializes");
        let prefix = format!("id: {id}\ndata: ");
        let envelope_at = prefix.len();
        let sse_frame = bytes::Bytes::from(prefix + &envelope + "\n\n");
        Arc::new(Self {
            id,
            tenant,
            channel,
            event,
            data,
            user_id,
            timestamp_ms,
            sse_frame,
            envelope_at,
        })
    }

    /// The envelope JSON, one line.
    pub fn envelope(&self) -> &str {
        let json = &self.sse_frame[self.envelope_at..self.sse_frame.len() - 2];
        std::str::from_utf8(json).expect("the frame was built from a String")
    }

    /// Roughly the heap this event holds, for memory bounds.
    pub fn memory_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.tenant.len()
            + self.channel.len()
            + self.event.len()
            + self.data.len()
            + self.user_id.as_ref().map_or(0, String::len)
            + self.sse_frame.len()
    }

    /// The event as one SSE frame (cheap to clone: reference-counted).
    pub fn sse_frame(&self) -> &bytes::Bytes {
        &self.sse_frame
    }
}

/// RFC 3339 UTC with milliseconds.
pub fn format_timestamp(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `[A-Za-z0-9_.:-]{1,64}`.
pub fn validate_event_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_message(
            "Field 'event' must be 1-64 characters of [A-Za-z0-9_.:-]",
        ))
    }
}

/// Encodes `data` compactly and enforces the size cap.
pub fn encode_data(data: &serde_json::Value) -> Result<String, ApiError> {
    let text = serde_json::to_string(data).map_err(|e| ApiError::Internal(e.into()))?;
    if text.len() > MAX_DATA_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "Field 'data' is {} bytes encoded; the limit is {MAX_DATA_BYTES}",
                text.len()
            ),
        )
        .with_details(serde_json::json!({ "limit": MAX_DATA_BYTES, "size": text.len() })));
    }
    Ok(text)
}

/// An event to append, validated, before it has an id.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub channel: Channel,
    pub event: String,
    /// Compact JSON text.
    pub data: String,
    /// Append only if the channel's last id equals this (optimistic concurrency).
    pub expected_last_id: Option<u64>,
    /// How long the event is retained, from its timestamp.
    pub retention_ms: i64,
}
