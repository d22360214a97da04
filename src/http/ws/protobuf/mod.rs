//! The protobuf form of the WebSocket messages (`switchyard.v1`,
//! `proto/switchyard.proto`), translated to and from the JSON messages the
//! connection works on.
//!
//! A client frame is decoded as a `ClientMessage` and rewritten as the
//! JSON message with the same fields, which [`super::messages`] then reads
//! exactly as it reads a text frame: one reading of every message, so the
//! same checks, limits, acks and errors in both modes. Free JSON (`data`)
//! is checked to be JSON and copied in as it is, never walked into a tree.
//! Replies go the other way, from their JSON to a `ServerMessage`. Events,
//! the hot path, are encoded straight from the log's [`Event`], once per
//! event ([`Event::binary_envelope`]).

use bytes::Bytes;
use prost::Message as _;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use switchyard_core::Error;
use switchyard_core::clock::format_timestamp;
use switchyard_core::event::Event;
use switchyard_proto::{self as proto, client_message, server_message};

/// A client frame that could not be read, with its `ack_id` when that much
/// was read.
pub type Refusal = (Box<Error>, Option<Value>);

/// A client frame (a `ClientMessage`) as its JSON message.
pub fn client_json(frame: Bytes) -> Result<String, Refusal> {
    let message = proto::ClientMessage::decode(frame).map_err(|e| {
        (
            Box::new(Error::invalid_message(format!(
                "A binary frame is one switchyard.v1.ClientMessage: {e}"
            ))),
            None,
        )
    })?;
    let ack_id = message.ack_id.as_deref();
    let refuse = |e: Error| (Box::new(e), ack_id.map(|id| Value::String(id.to_string())));
    let Some(kind) = &message.message else {
        return Err(refuse(Error::invalid_message(
            "A ClientMessage holds one of subscribe, unsubscribe, ping, pong, publish, presence, \
             edit, notifications, conversations or members",
        )));
    };
    let text = match kind {
        client_message::Message::Subscribe(m) => to_json(
            "subscribe",
            Subscribe {
                channels: &m.channels,
                last_event_id: m.last_event_id,
            },
            ack_id,
        ),
        client_message::Message::Unsubscribe(m) => to_json(
            "unsubscribe",
            Unsubscribe {
                channels: &m.channels,
            },
            ack_id,
        ),
        client_message::Message::Ping(m) => to_json(
            "ping",
            Timestamp {
                timestamp: m.timestamp,
            },
            ack_id,
        ),
        client_message::Message::Pong(m) => to_json(
            "pong",
            Timestamp {
                timestamp: m.timestamp,
            },
            ack_id,
        ),
        client_message::Message::Publish(m) => {
            let events = m
                .events
                .iter()
                .map(|item| {
                    Ok(Item {
                        channel: item.channel.as_deref(),
                        channels: non_empty(&item.channels),
                        event: &item.event,
                        data: json_field(&item.data, "events[].data")?,
                        expected_last_id: item.expected_last_id,
                    })
                })
                .collect::<Result<Vec<_>, Error>>()
                .map_err(refuse)?;
            to_json(
                "publish",
                Publish {
                    channel: m.channel.as_deref(),
                    channels: non_empty(&m.channels),
                    event: m.event.as_deref(),
                    data: json_field(&m.data, "data").map_err(refuse)?,
                    expected_last_id: m.expected_last_id,
                    events: (!events.is_empty()).then_some(events),
                    idempotency_key: m.idempotency_key.as_deref(),
                    user_id: m.user_id.as_deref(),
                    exclude_self: m.exclude_self,
                },
                ack_id,
            )
        }
        client_message::Message::Presence(m) => to_json(
            "presence",
            Action {
                action: &m.action,
                data: json_field(&m.data, "data").map_err(refuse)?,
            },
            ack_id,
        ),
        client_message::Message::Edit(m) => to_json(
            "edit",
            Action {
                action: &m.action,
                data: json_field(&m.data, "data").map_err(refuse)?,
            },
            ack_id,
        ),
        client_message::Message::Notifications(m) => {
            action("notifications", m, ack_id).map_err(refuse)?
        }
        client_message::Message::Conversations(m) => {
            action("conversations", m, ack_id).map_err(refuse)?
        }
        client_message::Message::Members(m) => action("members", m, ack_id).map_err(refuse)?,
    };
    Ok(text)
}

/// A reply (a JSON message) as a `ServerMessage` frame.
pub fn server_frame(reply: &Value) -> Bytes {
    server_message(reply).encode_to_vec().into()
}

/// A reply as a `ServerMessage`. Every message the connection sends but
/// events has a case here; one without (a bug) goes out as a
/// `server_error`, and is logged.
pub fn server_message(reply: &Value) -> proto::ServerMessage {
    use server_message::Message as M;
    let text = |field: &str| reply[field].as_str().unwrap_or_default().to_string();
    let ack_id = reply.get("ack_id").map(|id| match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let message = match reply["type"].as_str().unwrap_or_default() {
        "connected" => M::Connected(proto::Connected {
            connection_id: text("connection_id"),
            user_id: text("user_id"),
        }),
        "subscription" => M::Subscription(proto::Subscription {
            status: text("status"),
            channels: strings(&reply["channels"]),
            removed: strings(&reply["removed"]),
            errors: reply["errors"]
                .as_array()
                .map(|errors| {
                    errors
                        .iter()
                        .map(|e| proto::ChannelError {
                            channel: e["channel"].as_str().unwrap_or_default().to_string(),
                            code: e["code"].as_str().unwrap_or_default().to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
        "ack" => M::Ack(proto::Ack {
            status: text("status"),
            data: json_bytes(&reply["data"]),
        }),
        "error" => M::Error(proto::Error {
            code: text("code"),
            message: text("message"),
            details: json_bytes(&reply["details"]),
            request_id: text("request_id"),
        }),
        "reset" => M::Reset(proto::Reset {
            reason: text("reason"),
            oldest_id: reply["oldest_id"].as_u64().unwrap_or_default(),
        }),
        "system" => M::System(proto::System {
            event: text("event"),
            data: json_bytes(&reply["data"]),
        }),
        "ping" => M::Ping(proto::Ping {
            timestamp: reply["timestamp"].as_i64(),
        }),
        "pong" => M::Pong(proto::Pong {
            timestamp: reply["timestamp"].as_i64(),
        }),
        other => {
            tracing::error!(kind = other, "a WebSocket message has no protobuf form");
            M::Error(proto::Error {
                code: "server_error".into(),
                message: "Internal server error".into(),
                details: Bytes::from_static(b"{}"),
                request_id: reply["request_id"].as_str().unwrap_or_default().into(),
            })
        }
    };
    proto::ServerMessage {
        ack_id,
        message: Some(message),
    }
}

/// An event's `ServerMessage` frame: made once per event and shared by
/// every connection that sends it.
pub fn event_frame(event: &Event) -> Bytes {
    event
        .binary_envelope(|event| {
            // As in the JSON envelope: a stored `data` that is not JSON (a
            // corrupt row) goes out as null rather than as a broken value.
            let data = if serde_json::from_str::<&RawValue>(&event.data).is_ok() {
                Bytes::from(event.data.clone().into_bytes())
            } else {
                Bytes::from_static(b"null")
            };
            let message = proto::ServerMessage {
                ack_id: None,
                message: Some(server_message::Message::Event(proto::Event {
                    id: event.id,
                    channel: event.channel.clone(),
                    event: event.event.clone(),
                    data,
                    user_id: event.user_id.clone(),
                    timestamp: format_timestamp(event.timestamp_ms),
                    channels: if event.also.is_empty() {
                        Vec::new()
                    } else {
                        event.channels().map(str::to_string).collect()
                    },
                })),
            };
            message.encode_to_vec().into()
        })
        .clone()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Free JSON as its text; `null` (or nothing) as empty bytes.
fn json_bytes(value: &Value) -> Bytes {
    if value.is_null() {
        Bytes::new()
    } else {
        serde_json::to_vec(value)
            .expect("a JSON value serializes")
            .into()
    }
}

/// A `bytes` field of JSON text, checked to be JSON; empty is absent.
fn json_field<'a>(bytes: &'a [u8], field: &str) -> Result<Option<&'a RawValue>, Error> {
    if bytes.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| Error::invalid_message(format!("Field '{field}' is not JSON text: {e}")))
}

fn non_empty(items: &[String]) -> Option<&[String]> {
    (!items.is_empty()).then_some(items)
}

/// A JSON message: its `type`, its fields, its `ack_id`.
fn to_json<T: Serialize>(kind: &'static str, fields: T, ack_id: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Message<'a, T> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        fields: T,
        #[serde(skip_serializing_if = "Option::is_none")]
        ack_id: Option<&'a str>,
    }
    serde_json::to_string(&Message {
        kind,
        fields,
        ack_id,
    })
    .expect("a message of strings, numbers and JSON text serializes")
}

// The JSON messages' fields (PROTOCOL §10), as `messages` reads them.

#[derive(Serialize)]
struct Subscribe<'a> {
    channels: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    last_event_id: Option<u64>,
}

#[derive(Serialize)]
struct Unsubscribe<'a> {
    channels: &'a [String],
}

#[derive(Serialize)]
struct Timestamp {
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<i64>,
}

#[derive(Serialize)]
struct Publish<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_last_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<Item<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exclude_self: Option<bool>,
}

#[derive(Serialize)]
struct Item<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a [String]>,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_last_id: Option<u64>,
}

#[derive(Serialize)]
struct Action<'a> {
    action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
}

/// An inbox message (an action and its JSON data) as its JSON twin.
fn action(kind: &'static str, m: &proto::Action, ack_id: Option<&str>) -> Result<String, Error> {
    Ok(to_json(
        kind,
        Action {
            action: &m.action,
            data: json_field(&m.data, "data")?,
        },
        ack_id,
    ))
}

#[cfg(test)]
mod tests;
