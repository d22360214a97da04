//! The client's WebSocket messages (PROTOCOL §10): `subscribe`,
//! `unsubscribe`, `ping`/`pong`, `publish`, `presence` and `edit` (the
//! inbox's `notifications`, `members` and `conversations` are in
//! [`super::inbox`]), each
//! answered by the same core call as its HTTP twin. A message with an
//! `ack_id` gets an `ack` (or an `error` carrying it).
//!
//! Bounded before it costs: a frame (text or binary, whichever the
//! connection speaks) spends the connection's frame and byte budgets
//! before it is read; its JSON (as sent, or from protobuf, by
//! [`super::codec`]) is then read into its message type
//! directly (its envelope first, skimmed without building anything), and
//! payloads (`data`) stay raw JSON until the command measures them.

use std::borrow::Cow;

use axum::extract::ws::Message;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use switchyard_core::Error;
use switchyard_core::edit::DocumentRequest;
use switchyard_core::limits::{check_connection, check_connection_n};
use switchyard_core::publish::{Via, Writer};
use switchyard_core::session::Item;

use super::Connection;

/// A client message's envelope; the rest of the object is skimmed over.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    ack_id: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
    channels: Vec<String>,
    #[serde(default, deserialize_with = "switchyard_core::whole::opt_u64")]
    last_event_id: Option<u64>,
    /// Read from the envelope; declared so strict parsing accepts it.
    #[serde(default, rename = "ack_id")]
    _ack_id: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unsubscribe {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
    channels: Vec<String>,
    #[serde(default, rename = "ack_id")]
    _ack_id: Option<IgnoredAny>,
}

/// `presence`, `edit` and the inbox's messages: an action and its request body, kept
/// raw until the action's own type reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Action {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
    pub(super) action: String,
    #[serde(default)]
    pub(super) data: Option<Box<RawValue>>,
    #[serde(default, rename = "ack_id")]
    _ack_id: Option<IgnoredAny>,
}

/// `ping`: the client's clock, echoed in the `pong`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ping {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
    #[serde(default)]
    timestamp: Option<Box<RawValue>>,
    #[serde(default, rename = "ack_id")]
    _ack_id: Option<IgnoredAny>,
}

impl Connection {
    /// Answers one client frame with zero or more messages.
    pub(super) async fn handle(&mut self, message: Message) -> Vec<Value> {
        let len = match &message {
            Message::Text(text) => text.len(),
            Message::Binary(bytes) => bytes.len(),
            Message::Pong(_) => {
                self.unanswered_pings = 0;
                return vec![];
            }
            Message::Ping(_) | Message::Close(_) => return vec![],
        };
        if let Some(frames) = &self.frames
            && let Err(e) = check_connection(frames, "WebSocket frames")
        {
            return vec![self.error(e, None)];
        }
        if let Some(bytes) = &self.frame_bytes
            && let Err(e) = check_connection_n(bytes, len as u32, "WebSocket frame bytes")
        {
            return vec![self.error(e, None)];
        }
        // The message's JSON, whichever way it was framed.
        let raw = match self.codec.read(message) {
            Ok(raw) => raw,
            Err((e, ack_id)) => return vec![self.error(*e, ack_id)],
        };
        let envelope = match serde_json::from_str::<Envelope<'_>>(&raw) {
            Ok(envelope) => envelope,
            Err(e) if e.is_data() => {
                return vec![self.error(
                    Error::invalid_message("A message is a JSON object with a string 'type'"),
                    None,
                )];
            }
            Err(e) => {
                return vec![self.error(
                    Error::invalid_message(format!("Frame is not JSON: {e}")),
                    None,
                )];
            }
        };
        let ack_id: Option<Value> = envelope
            .ack_id
            .and_then(|raw| serde_json::from_str(raw.get()).ok());
        let text = raw.as_str();
        let answer = match envelope.kind.as_ref() {
            "subscribe" => {
                return match self.subscribe(text, &ack_id).await {
                    Ok(replies) => replies,
                    Err(e) => vec![self.error(e, ack_id)],
                };
            }
            "unsubscribe" => self.unsubscribe(text).await,
            "ping" => {
                return match parse::<Ping>(text) {
                    Ok(ping) => vec![with_ack(pong(ping.timestamp.as_deref()), &ack_id)],
                    Err(e) => vec![self.error(e, ack_id)],
                };
            }
            "pong" => {
                self.unanswered_pings = 0;
                return vec![];
            }
            "publish" => self.publish(text).await,
            "presence" => self.presence(text).await,
            "edit" => self.edit(text).await,
            "notifications" => self.notifications(text).await,
            "members" => self.members(text).await,
            "conversations" => self.conversations(text).await,
            other => Err(Error::invalid_message(format!(
                "Unknown message type '{}': expected subscribe, unsubscribe, ping, pong, publish, \
                 presence, edit, notifications, members or conversations",
                other.chars().take(32).collect::<String>()
            ))),
        };
        match answer {
            Ok(data) => match ack_id {
                Some(ack_id) => vec![
                    json!({"type": "ack", "ack_id": ack_id, "status": "success", "data": data}),
                ],
                None => vec![],
            },
            Err(e) => vec![self.error(e, ack_id)],
        }
    }

    fn error(&self, error: Error, ack_id: Option<Value>) -> Value {
        switchyard_core::metrics::error_answered(error.code());
        let mut body = error.body(&uuid::Uuid::now_v7().to_string());
        if let Some(ack_id) = ack_id {
            body["ack_id"] = ack_id;
        }
        if let Some(info) = error.rate_info() {
            body["details"]["retry_after"] = json!(info.reset_after.as_secs_f64().ceil() as u64);
        }
        body
    }

    /// The `ack` (when asked for) comes first, then the `subscription`
    /// message and any `reset`.
    async fn subscribe(&mut self, text: &str, ack_id: &Option<Value>) -> Result<Vec<Value>, Error> {
        let req: Subscribe = parse(text)?;
        let items = self
            .stream
            .subscribe(&req.channels, req.last_event_id)
            .await?;
        let mut replies = Vec::new();
        if let (Some(ack_id), Some(Item::Subscription(s))) = (ack_id, items.first()) {
            replies.push(json!({"type": "ack", "ack_id": ack_id, "status": "success",
                "data": {"channels": s.channels, "added": s.added, "errors": s.errors}}));
        }
        let id = self.stream.id().to_string();
        replies.extend(items.iter().filter_map(|item| item.control_json(&id)));
        Ok(replies)
    }

    async fn unsubscribe(&mut self, text: &str) -> Result<Value, Error> {
        let req: Unsubscribe = parse(text)?;
        let channels = self.stream.unsubscribe(&req.channels).await?;
        Ok(json!({ "channels": channels }))
    }

    async fn publish(&mut self, text: &str) -> Result<Value, Error> {
        let who = self.app.realtime.current(self.stream.who()).await?;
        let who = who.as_ref();
        let writer = if who.is_service {
            Writer::Broadcast
        } else {
            Writer::Publish
        };
        let published = self
            .app
            .realtime
            .publish(
                who,
                parse(text)?,
                writer,
                Via::WebSocket {
                    connection: self.stream.id(),
                },
            )
            .await?;
        serde_json::from_str(&published.receipt).map_err(|e| Error::internal(e.to_string()))
    }

    async fn presence(&mut self, text: &str) -> Result<Value, Error> {
        let action: Action = parse(text)?;
        let data = action.data.as_deref().map_or("null", RawValue::get);
        let realtime = &self.app.realtime;
        let who = realtime.current(self.stream.who()).await?;
        let who = who.as_ref();
        let answer = match action.action.as_str() {
            "update" => realtime.set_status(who, parse(data)?).await?,
            "viewing" => realtime.set_viewing(who, parse(data)?).await?,
            "typing" => realtime.set_typing(who, parse(data)?).await?,
            other => {
                return Err(Error::invalid_message(format!(
                    "Unknown presence action '{}': expected update, viewing or typing",
                    other.chars().take(32).collect::<String>()
                )));
            }
        };
        Ok(answer.value)
    }

    /// `edit` messages: `data` is the HTTP request body, plus the
    /// `session_id` or `lock_id` that HTTP puts in the path.
    async fn edit(&mut self, text: &str) -> Result<Value, Error> {
        let Action { action, data, .. } = parse(text)?;
        // Small (an edit request): read as a tree, for the ids HTTP puts in
        // the path.
        let mut data: Value = match data {
            Some(raw) => parse(raw.get())?,
            None => Value::Null,
        };
        let realtime = &self.app.realtime;
        let who = realtime.current(self.stream.who()).await?;
        let who = who.as_ref();
        let mut take_id = |name: &str| -> Result<String, Error> {
            data.as_object_mut()
                .and_then(|o| o.remove(name))
                .and_then(|v| v.as_str().map(str::to_string))
                .ok_or_else(|| {
                    Error::invalid_message(format!(
                        "data.{name} is required for edit action '{action}'"
                    ))
                })
        };
        match action.as_str() {
            "start" => to_json(realtime.start_session(who, from_value(data)?).await?.value),
            "operation" => {
                let session_id = take_id("session_id")?;
                let answer = realtime
                    .submit_operation(who, &session_id, from_value(data)?)
                    .await?;
                to_json(answer.value)
            }
            "save" => {
                let session_id = take_id("session_id")?;
                to_json(realtime.save(who, &session_id).await?.value)
            }
            "leave" => {
                let session_id = take_id("session_id")?;
                realtime.leave(who, &session_id).await?;
                Ok(json!({"session_id": session_id, "left": true}))
            }
            "set" => {
                let query: DocumentRequest = from_value(json!({
                    "resource_type": take_id("resource_type")?,
                    "resource_id": take_id("resource_id")?,
                    "field": take_id("field")?,
                }))?;
                to_json(
                    realtime
                        .set_content(who, &query, from_value(data)?)
                        .await?
                        .value,
                )
            }
            "lock" => to_json(realtime.lock(who, from_value(data)?).await?.value),
            "renew" => {
                let lock_id = take_id("lock_id")?;
                let renew = if data.as_object().is_some_and(|o| o.is_empty()) || data.is_null() {
                    Default::default()
                } else {
                    from_value(data)?
                };
                to_json(realtime.renew_lock(who, &lock_id, renew).await?.value)
            }
            "unlock" => {
                let lock_id = take_id("lock_id")?;
                realtime.unlock(who, &lock_id).await?;
                Ok(json!({"lock_id": lock_id, "released": true}))
            }
            other => Err(Error::invalid_message(format!(
                "Unknown edit action '{}': expected start, operation, save, leave, set, lock, renew or unlock",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Error> {
    // serde would fill a struct from an array too; messages are objects.
    if !text.trim_start().starts_with('{') {
        return Err(Error::invalid_message(
            "Invalid message: expected a JSON object",
        ));
    }
    serde_json::from_str(text).map_err(|e| Error::invalid_message(format!("Invalid message: {e}")))
}

pub(super) fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, Error> {
    if !value.is_object() {
        return Err(Error::invalid_message(
            "Invalid message: expected a JSON object",
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| Error::invalid_message(format!("Invalid message: {e}")))
}

/// The `pong` to a client's `ping`: its `timestamp` echoed, else the
/// server's clock.
fn pong(timestamp: Option<&RawValue>) -> Value {
    let timestamp = timestamp
        .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
        .unwrap_or_else(|| json!(chrono::Utc::now().timestamp_millis()));
    json!({"type": "pong", "timestamp": timestamp})
}

pub(super) fn to_json<T: serde::Serialize>(value: T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|e| Error::internal(e.to_string()))
}

fn with_ack(mut value: Value, ack_id: &Option<Value>) -> Value {
    if let Some(ack_id) = ack_id {
        value["ack_id"] = ack_id.clone();
    }
    value
}
