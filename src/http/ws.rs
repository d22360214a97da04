//! WebSocket, the optional upgrade (PROTOCOL §10): the same messages, the
//! same envelopes and the same readers as SSE, over one socket.
//!
//! One task per connection owns the socket and a set of readers (one per
//! `subscribe`); it writes events only as fast as the socket takes them,
//! so a slow socket leaves its readers' cursors behind and they catch up
//! from the log, exactly like an SSE stream. Invariants: a channel is
//! followed by at most one reader (no duplicates); unsubscribing restarts
//! the remaining channels at the old position (no loss); a malformed or
//! binary frame gets an `error` and the connection stays open.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::Auth;
use super::publish::{PublishBody, Writer, publish_events};
use crate::auth::Identity;
use crate::channel::{Channel, ChannelError, MAX_CHANNELS_PER_STREAM};
use crate::error::{ApiError, ErrorCode};
use crate::event::Event;
use crate::expiry::{Notice, TokenExpiry};
use crate::limits::{ConnectionLimiter, Rate, check_connection};
use crate::log::{Opened, Reader};

/// Largest frame accepted; past it the socket is closed with 1009.
const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Most events written per flush.
const BATCH: usize = 256;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/realtime/connect", get(connect))
        .route("/ws", get(connect))
}

async fn connect(
    State(app): State<AppState>,
    Auth(who): Auth,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade
        .map_err(|e| ApiError::invalid_message(format!("Expected a WebSocket upgrade: {e}")))?;
    app.limits.check(&who, Rate::NewConnection)?;
    let slot = app.limits.open_stream(&who)?;
    let own = Channel::user(&who.user_id);
    let Opened { reader, .. } = app
        .log
        .reader(&who.tenant, std::slice::from_ref(&own), None)
        .await?;
    let online = app
        .presence
        .stream_opened(&who, std::slice::from_ref(&own))
        .await?;
    Ok(upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            let _slot = slot;
            let _online = online;
            let _open = app.metrics.stream_opened();
            let connection = Connection::new(app, who, reader);
            connection.run(socket).await;
        }))
}

/// A client message's envelope; the rest of the object is the payload.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    ack_id: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    #[serde(rename = "type")]
    _kind: String,
    channels: Vec<String>,
    #[serde(default)]
    last_event_id: Option<u64>,
    #[serde(default)]
    ack_id: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Unsubscribe {
    #[serde(rename = "type")]
    _kind: String,
    channels: Vec<String>,
    /// Read from the envelope; declared so strict parsing accepts it.
    #[serde(default, rename = "ack_id")]
    _ack_id: Option<Value>,
}

/// `presence` and `edit` messages: an action and its request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Action {
    #[serde(rename = "type")]
    _kind: String,
    action: String,
    #[serde(default)]
    data: Value,
    #[serde(default, rename = "ack_id")]
    _ack_id: Option<Value>,
}

/// One `subscribe`'s channels and their reader.
struct Group {
    channels: Vec<Channel>,
    reader: Reader,
}

struct Connection {
    app: AppState,
    who: Identity,
    id: String,
    groups: Vec<Group>,
    frames: Option<(u32, ConnectionLimiter)>,
    changes: Option<(u32, ConnectionLimiter)>,
    /// Server pings sent since the client last answered.
    unanswered_pings: u32,
}

/// What the connection loop does next.
enum Step {
    Continue,
    Close(Option<CloseFrame>),
}

impl Connection {
    fn new(app: AppState, who: Identity, own: Reader) -> Self {
        let own_channel = Channel::user(&who.user_id);
        Self {
            frames: app.limits.frame_limiter(&who),
            changes: app.limits.subscription_limiter(&who),
            id: uuid::Uuid::now_v7().to_string(),
            groups: vec![Group {
                channels: vec![own_channel],
                reader: own,
            }],
            app,
            who,
            unanswered_pings: 0,
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut tx, mut rx) = socket.split();
        let connected =
            json!({"type": "connected", "connection_id": self.id, "user_id": self.who.user_id});
        if tx.send(text(&connected)).await.is_err() {
            return;
        }
        tracing::debug!(connection = %self.id, user = %self.who.user_id, "websocket connected");
        let mut expiry = TokenExpiry::new(self.who.expires_at);
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.app.ws_ping,
            self.app.ws_ping,
        );
        let shutdown = self.app.shutdown.clone();
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let _ = tx.send(text(&json!({"type": "system", "event": "server.shutdown"}))).await;
                    Step::Close(Some(CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() }))
                }
                notice = expiry.next() => match notice {
                    Notice::Expiring(message) => send(&mut tx, &message).await,
                    Notice::Expired(message) => {
                        let _ = tx.send(text(&message)).await;
                        Step::Close(Some(CloseFrame { code: close_code::POLICY, reason: "token expired".into() }))
                    }
                },
                _ = ping.tick() => {
                    if self.unanswered_pings >= 2 {
                        Step::Close(Some(CloseFrame { code: close_code::POLICY, reason: "missed two pings".into() }))
                    } else {
                        self.unanswered_pings += 1;
                        send(&mut tx, &json!({"type": "ping", "timestamp": chrono::Utc::now().timestamp_millis()})).await
                    }
                }
                incoming = rx.next() => match incoming {
                    Some(Ok(message)) => {
                        let replies = self.handle(message).await;
                        let mut step = Step::Continue;
                        for reply in replies {
                            if let Step::Close(frame) = send(&mut tx, &reply).await {
                                step = Step::Close(frame);
                                break;
                            }
                        }
                        step
                    }
                    Some(Err(e)) => {
                        tracing::debug!(connection = %self.id, error = %e, "websocket read failed");
                        Step::Close(Some(CloseFrame { code: close_code::SIZE, reason: "frame refused".into() }))
                    }
                    None => Step::Close(None),
                },
                batch = next_batch(&mut self.groups) => match batch {
                    Ok(events) => {
                        let n = events.len() as u64;
                        let mut failed = false;
                        for event in &events {
                            if tx.feed(Message::Text(event.envelope().into())).await.is_err() {
                                failed = true;
                                break;
                            }
                        }
                        if failed || tx.flush().await.is_err() {
                            Step::Close(None)
                        } else {
                            self.app.metrics.events_delivered(n);
                            Step::Continue
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(text(&e.body(&self.id))).await;
                        Step::Close(Some(CloseFrame { code: close_code::AGAIN, reason: "storage unavailable".into() }))
                    }
                },
            };
            if let Step::Close(frame) = step {
                let _ = tx.send(Message::Close(frame)).await;
                break;
            }
        }
        tracing::debug!(connection = %self.id, "websocket closed");
    }

    /// Answers one client frame with zero or more messages.
    async fn handle(&mut self, message: Message) -> Vec<Value> {
        let raw = match message {
            Message::Text(raw) => raw,
            Message::Binary(_) => {
                return vec![self.error(
                    ApiError::invalid_message(
                        "Binary frames are not supported; send JSON text frames",
                    ),
                    None,
                )];
            }
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
        let value: Value = match serde_json::from_str(&raw) {
            Ok(v) => v,
            Err(e) => {
                return vec![self.error(
                    ApiError::invalid_message(format!("Frame is not JSON: {e}")),
                    None,
                )];
            }
        };
        let envelope: Incoming = match serde_json::from_value(value.clone()) {
            Ok(m) => m,
            Err(_) => {
                return vec![self.error(
                    ApiError::invalid_message("A message is a JSON object with a string 'type'"),
                    None,
                )];
            }
        };
        let ack_id = envelope.ack_id.clone();
        let answer = match envelope.kind.as_str() {
            "subscribe" => {
                return self
                    .subscribe(value)
                    .await
                    .unwrap_or_else(|e| vec![self.error(e, ack_id)]);
            }
            "unsubscribe" => self.unsubscribe(value).await,
            "ping" => {
                return vec![with_ack(
                    json!({"type": "pong", "timestamp": chrono::Utc::now().timestamp_millis()}),
                    &ack_id,
                )];
            }
            "pong" => {
                self.unanswered_pings = 0;
                return vec![];
            }
            "publish" => self.publish(value).await,
            "presence" => self.presence(value).await,
            "edit" => self.edit(value).await,
            other => Err(ApiError::invalid_message(format!(
                "Unknown message type '{}': expected subscribe, unsubscribe, ping, pong, publish, presence or edit",
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

    fn error(&self, error: ApiError, ack_id: Option<Value>) -> Value {
        let mut body = error.body(&uuid::Uuid::now_v7().to_string());
        if let Some(ack_id) = ack_id {
            body["ack_id"] = ack_id;
        }
        if let ApiError::Limited { info, .. } = &error {
            body["details"]["retry_after"] = json!(info.reset_after.as_secs_f64().ceil() as u64);
        }
        body
    }

    fn spend_change(&self) -> Result<(), ApiError> {
        if let Some(changes) = &self.changes {
            check_connection(changes, "subscription changes")?;
        }
        Ok(())
    }

    fn followed(&self) -> impl Iterator<Item = &Channel> {
        self.groups.iter().flat_map(|g| g.channels.iter())
    }

    async fn subscribe(&mut self, value: Value) -> Result<Vec<Value>, ApiError> {
        let req: Subscribe = parse(value)?;
        self.spend_change()?;
        let ns = &self.app.namespaces;
        let mut granted: Vec<Channel> = Vec::new();
        let mut errors: Vec<ChannelError> = Vec::new();
        for name in &req.channels {
            let channel = ns.resolve(name, &self.who)?;
            if !ns.may_subscribe(&self.who, &channel) {
                errors.push(ChannelError {
                    channel: name.clone(),
                    code: ErrorCode::PermissionDenied.as_str(),
                });
            } else if !granted.contains(&channel) && !self.followed().any(|c| *c == channel) {
                granted.push(channel);
            }
        }
        let own = Channel::user(&self.who.user_id);
        let count = self.followed().filter(|c| **c != own).count()
            + granted.iter().filter(|c| **c != own).count();
        if count > MAX_CHANNELS_PER_STREAM {
            return Err(ApiError::new(
                ErrorCode::SubscriptionLimitExceeded,
                format!("At most {MAX_CHANNELS_PER_STREAM} channels per connection"),
            )
            .with_details(json!({ "limit": MAX_CHANNELS_PER_STREAM, "requested": count })));
        }
        if granted.is_empty() && !errors.is_empty() {
            return Err(ApiError::permission_denied(
                "None of the requested channels may be read with this token",
            )
            .with_details(json!({ "errors": errors })));
        }
        let mut replies = Vec::new();
        if !granted.is_empty() {
            let Opened { reader, reset } = self
                .app
                .log
                .reader(&self.who.tenant, &granted, req.last_event_id)
                .await?;
            if let Some(reset) = reset {
                let mut message = reset.to_json();
                message["type"] = json!("reset");
                replies.push(message);
            }
            self.groups.push(Group {
                channels: granted.clone(),
                reader,
            });
        }
        let all: Vec<&str> = self.followed().map(Channel::as_str).collect();
        let subscription =
            json!({"type": "subscription", "status": "success", "channels": all, "errors": errors});
        let data = json!({"channels": all, "added": granted.iter().map(Channel::as_str).collect::<Vec<_>>(), "errors": errors});
        replies.insert(0, subscription);
        if let Some(ack_id) = req.ack_id {
            replies.insert(
                0,
                json!({"type": "ack", "ack_id": ack_id, "status": "success", "data": data}),
            );
        }
        Ok(replies)
    }

    async fn unsubscribe(&mut self, value: Value) -> Result<Value, ApiError> {
        let req: Unsubscribe = parse(value)?;
        self.spend_change()?;
        let own = Channel::user(&self.who.user_id);
        let mut removed = Vec::new();
        for name in &req.channels {
            let channel = self.app.namespaces.resolve(name, &self.who)?;
            if channel != own {
                removed.push(channel);
            }
        }
        let mut kept = Vec::new();
        for group in std::mem::take(&mut self.groups) {
            if !group.channels.iter().any(|c| removed.contains(c)) {
                kept.push(group);
                continue;
            }
            let rest: Vec<Channel> = group
                .channels
                .iter()
                .filter(|c| !removed.contains(c))
                .cloned()
                .collect();
            if rest.is_empty() {
                continue;
            }
            // The remaining channels go on from where the group was: nothing lost, nothing repeated.
            let position = group.reader.position();
            drop(group);
            let Opened { reader, .. } = self
                .app
                .log
                .reader(&self.who.tenant, &rest, Some(position))
                .await?;
            kept.push(Group {
                channels: rest,
                reader,
            });
        }
        self.groups = kept;
        Ok(json!({"channels": self.followed().map(Channel::as_str).collect::<Vec<_>>()}))
    }

    async fn publish(&mut self, mut value: Value) -> Result<Value, ApiError> {
        if let Some(object) = value.as_object_mut() {
            object.remove("type");
            object.remove("ack_id");
        }
        let body: PublishBody = parse(value)?;
        let writer = if self.who.is_service {
            Writer::Broadcast
        } else {
            Writer::Publish
        };
        let (receipt, _) = publish_events(&self.app, &self.who, body, writer).await?;
        serde_json::from_str(&receipt).map_err(|e| ApiError::Internal(e.into()))
    }

    async fn presence(&mut self, value: Value) -> Result<Value, ApiError> {
        let action: Action = parse(value)?;
        self.app.limits.check(&self.who, Rate::Action)?;
        let presence = &self.app.presence;
        match action.action.as_str() {
            "update" => presence.set_status(&self.who, parse(action.data)?).await,
            "viewing" => presence.set_viewing(&self.who, parse(action.data)?).await,
            "typing" => presence.set_typing(&self.who, parse(action.data)?).await,
            other => Err(ApiError::invalid_message(format!(
                "Unknown presence action '{}': expected update, viewing or typing",
                other.chars().take(32).collect::<String>()
            ))),
        }
    }

    /// `edit` messages: `data` is the HTTP request body, plus the
    /// `session_id` or `lock_id` that HTTP puts in the path.
    async fn edit(&mut self, value: Value) -> Result<Value, ApiError> {
        let Action {
            action, mut data, ..
        } = parse(value)?;
        let editing = &self.app.editing;
        let who = &self.who;
        let mut take_id = |name: &str| -> Result<String, ApiError> {
            data.as_object_mut()
                .and_then(|o| o.remove(name))
                .and_then(|v| v.as_str().map(str::to_string))
                .ok_or_else(|| {
                    ApiError::invalid_message(format!(
                        "data.{name} is required for edit action '{action}'"
                    ))
                })
        };
        let answer = match action.as_str() {
            "start" => {
                self.app.limits.check(who, Rate::Action)?;
                to_json(editing.start_session(who, parse(data)?).await?)
            }
            "operation" => {
                let session_id = take_id("session_id")?;
                self.app.limits.check(who, Rate::EditOperation)?;
                self.app.presence.acted(who).await?;
                to_json(
                    editing
                        .submit_operation(who, &session_id, parse(data)?)
                        .await?,
                )
            }
            "save" => {
                let session_id = take_id("session_id")?;
                self.app.limits.check(who, Rate::Action)?;
                to_json(editing.save(who, &session_id).await?)
            }
            "leave" => {
                let session_id = take_id("session_id")?;
                editing.leave(who, &session_id).await?;
                Ok(json!({"session_id": session_id, "left": true}))
            }
            "lock" => {
                self.app.limits.check(who, Rate::Action)?;
                to_json(editing.lock(who, parse(data)?).await?)
            }
            "renew" => {
                let lock_id = take_id("lock_id")?;
                self.app.limits.check(who, Rate::Action)?;
                let renew = if data.as_object().is_some_and(|o| o.is_empty()) || data.is_null() {
                    Default::default()
                } else {
                    parse(data)?
                };
                to_json(editing.renew_lock(who, &lock_id, renew).await?)
            }
            "unlock" => {
                let lock_id = take_id("lock_id")?;
                self.app.limits.check(who, Rate::Action)?;
                editing.unlock(who, &lock_id).await?;
                Ok(json!({"lock_id": lock_id, "released": true}))
            }
            other => Err(ApiError::invalid_message(format!(
                "Unknown edit action '{}': expected start, operation, save, leave, lock, renew or unlock",
                other.chars().take(32).collect::<String>()
            ))),
        }?;
        Ok(answer)
    }
}

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value)
        .map_err(|e| ApiError::invalid_message(format!("Invalid message: {e}")))
}

fn to_json<T: serde::Serialize>(value: T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.into()))
}

fn text(value: &Value) -> Message {
    Message::Text(value.to_string().into())
}

fn with_ack(mut value: Value, ack_id: &Option<Value>) -> Value {
    if let Some(ack_id) = ack_id {
        value["ack_id"] = ack_id.clone();
    }
    value
}

async fn send<S>(tx: &mut S, value: &Value) -> Step
where
    S: futures_util::Sink<Message> + Unpin,
{
    match tx.send(text(value)).await {
        Ok(()) => Step::Continue,
        Err(_) => Step::Close(None),
    }
}

/// The next batch from whichever group has events first.
async fn next_batch(groups: &mut [Group]) -> Result<Vec<Arc<Event>>, ApiError> {
    if groups.is_empty() {
        return std::future::pending().await;
    }
    let futures = groups.iter_mut().map(|g| Box::pin(g.reader.next(BATCH)));
    let (result, _, _) = futures_util::future::select_all(futures).await;
    Ok(result?)
}
