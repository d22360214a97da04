//! Events: what the log stores and every transport delivers (PROTOCOL §3).
//!
//! An [`Event`] is immutable once appended; its envelope JSON is rendered
//! once, when the event is built (with its SSE frame), so fan-out to many
//! readers never re-serializes or copies per reader. A transport that sends
//! the envelope in a binary encoding (the WebSocket's protobuf frames)
//! renders it once too, into a slot the event keeps for it. Invariant:
//! `data` is compact JSON (no newlines), so an envelope always fits on one
//! SSE `data:` line.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::clock::format_timestamp;
use crate::error::{Error, ErrorCode};

/// Largest encoded `data` a publish may carry.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Deepest nesting of arrays and objects in `data` (readers' parsers
/// recurse).
pub const MAX_DATA_DEPTH: usize = 64;

/// One event of the log.
#[derive(Debug)]
pub struct Event {
    pub id: u64,
    pub tenant: String,
    /// Its (first) channel.
    pub channel: String,
    /// Its other channels, for an event published to several (PROTOCOL §6):
    /// one id, visible on each; empty for most events.
    pub also: Box<[String]>,
    pub event: String,
    /// Compact JSON text.
    pub data: String,
    pub user_id: Option<String>,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The connection that published it asking `exclude_self`: that
    /// connection's stream skips it (when its user is the publisher).
    pub origin: Option<String>,
    /// `id: N\ndata: <envelope>\n\n`, shared by every SSE stream it goes to;
    /// the envelope is a slice of it, so an event is held in memory once.
    sse_frame: bytes::Bytes,
    /// Where the envelope starts in `sse_frame` (it ends 2 bytes before the end).
    envelope_at: usize,
    /// The envelope in the one binary encoding a transport sends it in,
    /// rendered by the first connection that sends it so and shared by the
    /// rest. The core does not know the format: the transport fills it.
    binary_envelope: OnceLock<bytes::Bytes>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: u64,
    channel: &'a str,
    /// Every channel, for an event on several.
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<Vec<&'a str>>,
    event: &'a str,
    data: &'a RawValue,
    user_id: Option<&'a str>,
    timestamp: String,
}

/// An event's fields, as appended or read back.
#[derive(Debug, Clone)]
pub struct EventParts {
    pub id: u64,
    pub tenant: String,
    pub channel: String,
    pub also: Vec<String>,
    pub event: String,
    pub data: String,
    pub user_id: Option<String>,
    pub timestamp_ms: i64,
    pub origin: Option<String>,
}

impl Event {
    /// An event on one channel.
    pub fn new(
        id: u64,
        tenant: String,
        channel: String,
        event: String,
        data: String,
        user_id: Option<String>,
        timestamp_ms: i64,
    ) -> Arc<Self> {
        Self::build(EventParts {
            id,
            tenant,
            channel,
            also: Vec::new(),
            event,
            data,
            user_id,
            timestamp_ms,
            origin: None,
        })
    }

    /// An event from its parts; its envelope and SSE frame rendered once.
    pub fn build(parts: EventParts) -> Arc<Self> {
        let EventParts {
            id,
            tenant,
            channel,
            also,
            event,
            data,
            user_id,
            timestamp_ms,
            origin,
        } = parts;
        let raw: &RawValue = serde_json::from_str(&data).unwrap_or_else(|_| {
            // Stored data is always valid JSON; a corrupt row renders as null rather than a broken frame.
            serde_json::from_str("null").expect("null is JSON")
        });
        let envelope = serde_json::to_string(&Envelope {
            kind: "event",
            id,
            channel: &channel,
            channels: (!also.is_empty()).then(|| {
                std::iter::once(channel.as_str())
                    .chain(also.iter().map(String::as_str))
                    .collect()
            }),
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
            also: also.into_boxed_slice(),
            event,
            data,
            user_id,
            timestamp_ms,
            origin,
            sse_frame,
            envelope_at,
            binary_envelope: OnceLock::new(),
        })
    }

    /// Every channel of the event, its first one first.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.channel.as_str()).chain(self.also.iter().map(String::as_str))
    }

    /// Whether the event is on `channel`.
    pub fn is_on(&self, channel: &str) -> bool {
        self.channel == channel || self.also.iter().any(|c| c == channel)
    }

    /// Whether `connection` of `user_id` published it asking not to get it
    /// back.
    pub fn skipped_by(&self, connection: &str, user_id: &str) -> bool {
        self.origin.as_deref() == Some(connection) && self.user_id.as_deref() == Some(user_id)
    }

    /// The envelope JSON, one line.
    pub fn envelope(&self) -> &str {
        let json = &self.sse_frame[self.envelope_at..self.sse_frame.len() - 2];
        std::str::from_utf8(json).expect("the frame was built from a String")
    }

    /// The envelope JSON as shared bytes: a slice of the SSE frame, not a
    /// copy.
    pub fn envelope_bytes(&self) -> bytes::Bytes {
        self.sse_frame
            .slice(self.envelope_at..self.sse_frame.len() - 2)
    }

    /// Roughly the heap this event holds, for memory bounds. Constant over
    /// the event's life (bounds add it when an event comes in and take it
    /// off when it goes), so it counts the binary envelope before there is
    /// one, as the JSON envelope's length: a binary rendering of the same
    /// fields is shorter.
    pub fn memory_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.tenant.len()
            + self.channel.len()
            + self.also.iter().map(|c| c.len() + 24).sum::<usize>()
            + self.origin.as_ref().map_or(0, String::len)
            + self.event.len()
            + self.data.len()
            + self.user_id.as_ref().map_or(0, String::len)
            + self.sse_frame.len()
            + self.envelope().len()
    }

    /// The envelope in a transport's binary encoding: rendered by `render`
    /// the first time it is asked for, then shared (cheap to clone:
    /// reference-counted). Only one encoding may use it: the WebSocket's
    /// protobuf frames.
    pub fn binary_envelope(&self, render: impl FnOnce(&Event) -> bytes::Bytes) -> &bytes::Bytes {
        self.binary_envelope.get_or_init(|| render(self))
    }

    /// The event as one SSE frame (cheap to clone: reference-counted).
    pub fn sse_frame(&self) -> &bytes::Bytes {
        &self.sse_frame
    }
}

/// `[A-Za-z0-9_.:-]{1,64}`.
pub fn validate_event_name(name: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_message(
            "Field 'event' must be 1-64 characters of [A-Za-z0-9_.:-]",
        ))
    }
}

/// Encodes `data` compactly and enforces the size cap.
pub fn encode_data(data: &serde_json::Value) -> Result<String, Error> {
    let text = serde_json::to_string(data).map_err(|e| Error::internal(e.to_string()))?;
    check_size(text)
}

/// A client's `data` as it arrived (already valid JSON, not walked into a
/// tree), compacted and held to the size cap; `null` when absent.
pub fn raw_data(data: Option<&RawValue>) -> Result<String, Error> {
    match data {
        Some(raw) => check_size(compact_json(raw.get())?),
        None => Ok("null".to_string()),
    }
}

fn check_size(text: String) -> Result<String, Error> {
    if text.len() > MAX_DATA_BYTES {
        return Err(Error::new(
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

/// Valid JSON without the whitespace between its tokens (JSON strings
/// cannot hold a raw newline, so the result fits on one SSE line), refused
/// when it nests deeper than [`MAX_DATA_DEPTH`]. One pass over the bytes:
/// whitespace, quotes, brackets and backslashes are ASCII, so multi-byte
/// characters are copied untouched.
pub fn compact_json(json: &str) -> Result<String, Error> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped, mut depth) = (false, false, 0usize);
    for &b in json.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
            out.push(b);
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            match b {
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_DATA_DEPTH {
                        return Err(Error::invalid_message(format!(
                            "Field 'data' nests deeper than {MAX_DATA_DEPTH} levels"
                        )));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            out.push(b);
        }
    }
    Ok(String::from_utf8(out).expect("only ASCII whitespace was removed from UTF-8"))
}

/// An event to append, validated, before it has an id.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub channel: Channel,
    /// Further channels the one event is on (PROTOCOL §6).
    pub also: Vec<Channel>,
    pub event: String,
    /// Compact JSON text.
    pub data: String,
    /// Append only if the channel's last id equals this (optimistic concurrency).
    pub expected_last_id: Option<u64>,
    /// How long the event is retained, from its timestamp (the longest of
    /// its channels').
    pub retention_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_keeps_strings_and_drops_the_rest() {
        let raw = "{ \"a\" : [1, 2,\n 3],\t\"b\": \"x y\\\" z\\\\\", \"é\" : \" \" }";
        let compact = compact_json(raw).unwrap();
        assert_eq!(compact, r#"{"a":[1,2,3],"b":"x y\" z\\","é":" "}"#);
        let a: serde_json::Value = serde_json::from_str(raw).unwrap();
        let b: serde_json::Value = serde_json::from_str(&compact).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn data_is_held_to_the_cap_after_compaction() {
        let padded = format!("[{}1]", " ".repeat(MAX_DATA_BYTES));
        let raw: Box<RawValue> = serde_json::from_str(&padded).unwrap();
        assert_eq!(raw_data(Some(&raw)).unwrap(), "[1]");
        let big = format!("\"{}\"", "x".repeat(MAX_DATA_BYTES));
        let raw: Box<RawValue> = serde_json::from_str(&big).unwrap();
        assert_eq!(
            raw_data(Some(&raw)).unwrap_err().code(),
            ErrorCode::PayloadTooLarge
        );
        assert_eq!(raw_data(None).unwrap(), "null");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_DATA_DEPTH),
            "]".repeat(MAX_DATA_DEPTH)
        );
        assert!(compact_json(&ok).is_ok());
        let deep = format!("[{ok}]");
        assert!(compact_json(&deep).is_err());
        assert!(
            compact_json(&format!("\"{}\"", "[".repeat(500))).is_ok(),
            "brackets in strings"
        );
    }
}
