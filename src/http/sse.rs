//! `GET /realtime/sse`: a reader rendered as Server-Sent Events (PROTOCOL §4).
//!
//! Frames: `retry:` and the `subscription` control message first, then an
//! optional `reset`, then one `id:`/`data:` frame per event; every batch the
//! reader hands out goes to the socket as one write. Memory stays bounded:
//! the body is pulled by the connection, so a slow client just leaves its
//! reader's cursor behind and it catches up from the log later.

use std::convert::Infallible;
use std::fmt::Write;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::extract::{Auth, Query, check_user_id};
use super::{AppState, with_rate_headers};
use crate::channel::{plan_subscription, split_list};
use crate::error::{ApiError, current_request_id};
use crate::expiry::{Notice, TokenExpiry};
use crate::limits::Rate;
use crate::log::Opened;

/// Most events written per frame batch.
const BATCH: usize = 256;

pub fn router() -> Router<AppState> {
    Router::new().route("/realtime/sse", get(sse))
}

#[derive(Deserialize)]
struct SseQuery {
    channels: Option<String>,
    last_event_id: Option<u64>,
    user_id: Option<String>,
}

async fn sse(
    State(app): State<AppState>,
    Auth(who): Auth,
    headers: HeaderMap,
    Query(query): Query<SseQuery>,
) -> Result<Response, ApiError> {
    check_user_id(&who, query.user_id.as_deref())?;
    let requested = split_list(query.channels.as_deref().unwrap_or(""));
    let (granted, errors) = plan_subscription(&app.namespaces, &who, &requested)?;
    let cursor = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid_message(
                        "Last-Event-ID must be an event id (a non-negative integer)",
                    )
                })?,
        ),
        None => query.last_event_id,
    };
    let rate = app.limits.check(&who, Rate::NewConnection)?;
    let slot = app.limits.open_stream(&who)?;
    let Opened { mut reader, reset } = app.log.reader(&who.tenant, &granted, cursor).await?;
    let online = app.presence.stream_opened(&who, &granted).await?;
    tracing::debug!(user = %who.user_id, channels = ?reader.channels(), position = reader.position(), "sse stream opened");

    let mut head = String::from("retry: 2000\n\n");
    let subscription = json!({
        "type": "subscription",
        "status": "success",
        "channels": reader.channels(),
        "errors": errors,
    });
    let _ = write!(head, "data: {subscription}\n\n");
    if let Some(reset) = reset {
        let mut message = reset.to_json();
        message["type"] = json!("reset");
        let _ = write!(head, "data: {message}\n\n");
    }

    let request_id = current_request_id();
    let body = async_stream::stream! {
        let _open = app.metrics.stream_opened();
        let _slot = slot;
        let _online = online;
        let mut expiry = TokenExpiry::new(who.expires_at);
        // One timer for keep-alives, not one per wake-up: it ticks every half
        // interval and a ping goes out when nothing was written since the
        // last tick, so an idle stream hears from us at least once an interval.
        let half = app.keepalive / 2;
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + half, half);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wrote = false;
        yield Ok::<Bytes, Infallible>(Bytes::from(head));
        loop {
            tokio::select! {
                biased;
                _ = app.shutdown.cancelled() => {
                    yield Ok(Bytes::from_static(b"data: {\"type\":\"system\",\"event\":\"server.shutdown\"}\n\n"));
                    break;
                }
                notice = expiry.next() => match notice {
                    Notice::Expiring(message) => {
                        wrote = true;
                        yield Ok(Bytes::from(format!("data: {message}\n\n")));
                    }
                    Notice::Expired(message) => {
                        yield Ok(Bytes::from(format!("data: {message}\n\n")));
                        break;
                    }
                },
                _ = keepalive.tick() => {
                    if !std::mem::take(&mut wrote) {
                        yield Ok(Bytes::from_static(b": ping\n\n"));
                    }
                }
                next = reader.next(BATCH) => match next {
                    Ok(events) => {
                        wrote = true;
                        app.metrics.events_delivered(events.len() as u64);
                        yield Ok(frames(&events));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sse stream ended: storage read failed");
                        let error = ApiError::Storage(e).body(&request_id);
                        yield Ok(Bytes::from(format!("data: {error}\n\n")));
                        break;
                    }
                },
            }
        }
    };
    let response = Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(body))
        .expect("static headers are valid");
    Ok(with_rate_headers(response, rate))
}

/// Events as SSE frames in one buffer: one event is its shared frame, as is.
fn frames(events: &[std::sync::Arc<crate::event::Event>]) -> Bytes {
    if let [one] = events {
        return one.sse_frame().clone();
    }
    let mut buf = bytes::BytesMut::with_capacity(events.iter().map(|e| e.sse_frame().len()).sum());
    for event in events {
        buf.extend_from_slice(event.sse_frame());
    }
    buf.freeze()
}
