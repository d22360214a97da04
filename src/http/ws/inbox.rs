//! The inbox's WebSocket messages (PROTOCOL §9, §9a, §10): `notifications`,
//! `members` and `conversations`, each an `action` with the HTTP request's
//! body as `data`, plus the ids HTTP puts in the path (`id`, `channel`,
//! `user_id`, `conversation_id`, `message_id`). The `ack` carries what the
//! HTTP call answers.

use serde_json::{Value, json};
use switchyard_core::Error;

use super::Connection;
use super::messages::{Action, from_value, parse, to_json};

/// Takes `name` out of `data` (a string), as HTTP takes it from the path.
fn take(data: &mut Value, name: &str, action: &str) -> Result<String, Error> {
    data.as_object_mut()
        .and_then(|o| o.remove(name))
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or_else(|| Error::invalid_message(format!("data.{name} is required for '{action}'")))
}

/// `data` as an action's body: `null` or absent is `{}`.
fn body(data: Option<Box<serde_json::value::RawValue>>) -> Result<Value, Error> {
    match data {
        Some(raw) => match parse::<Value>(raw.get())? {
            Value::Null => Ok(json!({})),
            value => Ok(value),
        },
        None => Ok(json!({})),
    }
}

fn unknown(kind: &str, action: &str, expected: &str) -> Error {
    Error::invalid_message(format!(
        "Unknown {kind} action '{}': expected {expected}",
        action.chars().take(32).collect::<String>()
    ))
}

impl Connection {
    /// `{"type":"notifications","action":"list"|"unread_count"|"read"|"read_all"|"create"}`.
    pub(super) async fn notifications(&mut self, text: &str) -> Result<Value, Error> {
        let Action { action, data, .. } = parse(text)?;
        let mut data = body(data)?;
        let realtime = &self.app.realtime;
        let who = realtime.current(self.stream.who()).await?;
        match action.as_str() {
            "list" => to_json(realtime.notifications(&who, from_value(data)?).await?),
            "unread_count" => Ok(json!({
                "unread_count": realtime.unread_notifications(&who).await?
            })),
            "read" => {
                let id = take(&mut data, "id", &action)?;
                to_json(realtime.read_notifications(&who, Some(&id)).await?.value)
            }
            "read_all" => to_json(realtime.read_notifications(&who, None).await?.value),
            "create" => to_json(
                realtime
                    .create_notification(&who, from_value(data)?)
                    .await?
                    .value,
            ),
            other => Err(unknown(
                "notifications",
                other,
                "list, unread_count, read, read_all or create",
            )),
        }
    }

    /// `{"type":"members","action":"list"|"add"|"remove","data":{"channel","user_id"}}`.
    pub(super) async fn members(&mut self, text: &str) -> Result<Value, Error> {
        let Action { action, data, .. } = parse(text)?;
        let mut data = body(data)?;
        let realtime = &self.app.realtime;
        let who = realtime.current(self.stream.who()).await?;
        let channel = take(&mut data, "channel", &action)?;
        match action.as_str() {
            "list" => to_json(realtime.members(&who, &channel).await?),
            "add" => {
                let user_id = take(&mut data, "user_id", &action)?;
                let made = realtime.add_member(&who, &channel, &user_id).await?.value;
                to_json(made.value)
            }
            "remove" => {
                let user_id = take(&mut data, "user_id", &action)?;
                realtime.remove_member(&who, &channel, &user_id).await?;
                Ok(json!({ "channel": channel, "user_id": user_id, "removed": true }))
            }
            other => Err(unknown("members", other, "list, add or remove")),
        }
    }

    /// `{"type":"conversations","action":"open"|"list"|"messages"|"send"|"edit"|"delete"|"read"}`.
    pub(super) async fn conversations(&mut self, text: &str) -> Result<Value, Error> {
        let Action { action, data, .. } = parse(text)?;
        let mut data = body(data)?;
        let realtime = &self.app.realtime;
        let who = realtime.current(self.stream.who()).await?;
        match action.as_str() {
            "open" => to_json(
                realtime
                    .open_conversation(&who, from_value(data)?)
                    .await?
                    .value
                    .value,
            ),
            "list" => to_json(realtime.conversations(&who, from_value(data)?).await?),
            "messages" => {
                let id = take(&mut data, "conversation_id", &action)?;
                to_json(realtime.messages(&who, &id, from_value(data)?).await?)
            }
            "send" => {
                let id = take(&mut data, "conversation_id", &action)?;
                let sent = realtime.send_message(&who, &id, from_value(data)?).await?;
                to_json(sent.value.value)
            }
            "edit" => {
                let id = take(&mut data, "conversation_id", &action)?;
                let message_id = take(&mut data, "message_id", &action)?;
                let edit = Some(from_value(data)?);
                to_json(
                    realtime
                        .change_message(&who, &id, &message_id, edit)
                        .await?
                        .value,
                )
            }
            "delete" => {
                let id = take(&mut data, "conversation_id", &action)?;
                let message_id = take(&mut data, "message_id", &action)?;
                to_json(
                    realtime
                        .change_message(&who, &id, &message_id, None)
                        .await?
                        .value,
                )
            }
            "read" => {
                let id = take(&mut data, "conversation_id", &action)?;
                to_json(
                    realtime
                        .read_conversation(&who, &id, from_value(data)?)
                        .await?
                        .value,
                )
            }
            other => Err(unknown(
                "conversations",
                other,
                "open, list, messages, send, edit, delete or read",
            )),
        }
    }
}
