//! WebSocket, the optional upgrade (PROTOCOL §10): the same messages, the
//! same envelopes and the same streams as SSE, over one socket.
//!
//! One task per connection owns the socket and the core's
//! [`Stream`]: it writes the stream's items only as fast as the socket takes
//! them, so a slow socket leaves its readers' cursors behind and they catch
//! up from the log, exactly like an SSE stream. Client messages are read
//! and answered in [`messages`] (the inbox's in [`inbox`]); [`codec`] frames them, as JSON text or as
//! protobuf ([`protobuf`]), as the client's `Sec-WebSocket-Protocol` asked.
//! Invariants: a malformed frame, or one of the kind the connection does
//! not speak, gets an `error` and the connection stays open; a frame the
//! WebSocket protocol refuses closes it with RFC 6455's code (1007 invalid
//! UTF-8, 1002 protocol error, 1009 too big); shutdown is seen before
//! anything else; no write waits longer than the write deadline (shorter
//! after shutdown), and events are written in batches of bounded bytes.

mod codec;
mod inbox;
mod messages;
mod protobuf;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use switchyard_core::limits::ConnectionLimiter;
use switchyard_core::session::{Item, Stream, Transport};

use super::error::ApiError;
use super::extract::Auth;
use super::state::AppState;
use codec::Codec;

/// Largest frame accepted; past it the socket is closed with 1009.
const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Most bytes of events written before a flush: what a slow reader can make
/// the connection hold.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// After shutdown, how long the goodbye may take to write.
const SHUTDOWN_WRITE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/realtime/connect", get(connect))
        .route("/ws", get(connect))
}

async fn connect(
    State(app): State<AppState>,
    Auth(who): Auth,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let mut upgrade = upgrade
        .map_err(|e| ApiError::invalid_message(format!("Expected a WebSocket upgrade: {e}")))?;
    let (codec, protocol) = Codec::negotiate(&headers)?;
    if let Some(protocol) = protocol {
        upgrade.set_selected_protocol(protocol);
    }
    let frames = app.realtime.limits.frame_limiter(&who);
    let frame_bytes = app.realtime.limits.frame_bytes_limiter(&who);
    let (stream, _) = app
        .realtime
        .sessions
        .open_stream(who, Transport::WebSocket, &[], None, None)
        .await?;
    Ok(upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            let connection = Connection {
                app,
                codec,
                stream,
                frames,
                frame_bytes,
                unanswered_pings: 0,
            };
            connection.run(socket).await;
        }))
}

struct Connection {
    app: AppState,
    /// How messages are framed, for the connection's whole life.
    codec: Codec,
    stream: Stream,
    /// Frames a second, when limited.
    frames: Option<(u32, ConnectionLimiter)>,
    /// Frame bytes a second, when limited: spent before a frame is read.
    frame_bytes: Option<(u32, ConnectionLimiter)>,
    /// Server pings sent since the client last answered.
    unanswered_pings: u32,
}

/// What the connection loop does next.
enum Step {
    Continue,
    Close(Option<CloseFrame>),
}

fn close(code: u16, reason: &'static str) -> Step {
    Step::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

impl Connection {
    async fn run(mut self, socket: WebSocket) {
        let (mut tx, mut rx) = socket.split();
        let id = self.stream.id().to_string();
        let connected =
            json!({"type": "connected", "connection_id": id, "user_id": self.stream.who().user_id});
        if tx.send(self.codec.encode(&connected)).await.is_err() {
            return;
        }
        tracing::debug!(connection = %id, user = %self.stream.who().user_id, "websocket connected");
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.app.ws_ping,
            self.app.ws_ping,
        );
        let shutdown = self.app.realtime.shutdown.clone();
        let deadline = self.app.deadlines.write;
        let codec = self.codec;
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let goodbye = codec.encode(&Item::Shutdown.control_json(&id).unwrap_or_default());
                    let _ = tokio::time::timeout(SHUTDOWN_WRITE_GRACE, tx.send(goodbye)).await;
                    close(close_code::AWAY, "server shutting down")
                }
                _ = ping.tick() => {
                    if self.unanswered_pings >= 2 {
                        close(close_code::POLICY, "missed two pings")
                    } else {
                        self.unanswered_pings += 1;
                        let ping = json!({"type": "ping", "timestamp": chrono::Utc::now().timestamp_millis()});
                        send(&mut tx, codec.encode(&ping), deadline).await
                    }
                }
                incoming = rx.next() => match incoming {
                    Some(Ok(message)) => {
                        let mut step = Step::Continue;
                        for reply in self.handle(message).await {
                            if let Step::Close(frame) = send(&mut tx, codec.encode(&reply), deadline).await {
                                step = Step::Close(frame);
                                break;
                            }
                        }
                        step
                    }
                    Some(Err(e)) => {
                        tracing::debug!(connection = %id, error = %e, "websocket read failed");
                        let (code, reason) = refusal(e);
                        close(code, reason)
                    }
                    None => Step::Close(None),
                },
                item = self.stream.next() => match item {
                    Some(Item::Events(events)) => {
                        let written = tokio::time::timeout(deadline, write_events(&mut tx, codec, &events)).await;
                        match written {
                            Ok(Ok(())) => Step::Continue,
                            _ => Step::Close(None),
                        }
                    }
                    // Never asked for here: pings have their own timer.
                    Some(Item::Quiet) => Step::Continue,
                    Some(item) => {
                        let message = item.control_json(&id).unwrap_or_default();
                        let sent = send(&mut tx, codec.encode(&message), deadline).await;
                        match item {
                            Item::TokenExpired => close(close_code::POLICY, "token expired"),
                            Item::Shutdown => close(close_code::AWAY, "server shutting down"),
                            Item::Failed(_) => close(close_code::AGAIN, "storage unavailable"),
                            _ => sent,
                        }
                    }
                    None => Step::Close(None),
                },
            };
            if let Step::Close(frame) = step {
                let _ = tokio::time::timeout(SHUTDOWN_WRITE_GRACE, tx.send(Message::Close(frame)))
                    .await;
                break;
            }
        }
        tracing::debug!(connection = %id, "websocket closed");
    }
}

/// Sends one message; a client that does not take it within `deadline`
/// is dropped.
async fn send<S>(tx: &mut S, message: Message, deadline: std::time::Duration) -> Step
where
    S: futures_util::Sink<Message> + Unpin,
{
    match tokio::time::timeout(deadline, tx.send(message)).await {
        Ok(Ok(())) => Step::Continue,
        _ => Step::Close(None),
    }
}

/// Writes events, flushing every [`MAX_BATCH_BYTES`] and at the end.
async fn write_events<S>(
    tx: &mut S,
    codec: Codec,
    events: &[std::sync::Arc<switchyard_core::event::Event>],
) -> Result<(), S::Error>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let mut pending = 0;
    for event in events {
        tx.feed(codec.event(event)).await?;
        // The JSON envelope's length: a protobuf frame is shorter.
        pending += event.envelope().len();
        if pending >= MAX_BATCH_BYTES {
            tx.flush().await?;
            pending = 0;
        }
    }
    tx.flush().await
}

/// The close code for a frame the WebSocket protocol refuses (RFC 6455).
fn refusal(error: axum::Error) -> (u16, &'static str) {
    match error.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) => match *e {
            tungstenite::Error::Capacity(_) => (close_code::SIZE, "frame too big"),
            tungstenite::Error::Utf8(_) => (close_code::INVALID, "invalid UTF-8"),
            tungstenite::Error::Protocol(_) => (close_code::PROTOCOL, "protocol error"),
            _ => (close_code::ERROR, "read failed"),
        },
        Err(_) => (close_code::ERROR, "read failed"),
    }
}
