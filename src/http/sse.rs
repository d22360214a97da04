//! `GET /realtime/sse`: a stream rendered as Server-Sent Events (PROTOCOL §4).
//!
//! Frames: `retry:` first, then every item of the core's stream
//! ([`switchyard_core::session::Stream`]) in order: control messages as
//! `data:` frames without `id:`, each batch of events as one write of
//! `id:`/`data:` frames; a `: ping` comment when nothing was written for a
//! while. Memory stays bounded: the body is pulled by the connection, so a
//! slow client just leaves its reader's cursor behind and it catches up
//! from the log later.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use switchyard_core::event::Event;
use switchyard_core::session::{Item, Transport};

use super::error::{ApiError, current_request_id};
use super::extract::{Auth, Query};
use super::respond::{split_list, with_rate_headers};
use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/realtime/sse", get(sse))
}

#[derive(Deserialize)]
struct SseQuery {
    channels: Option<String>,
    last_event_id: Option<u64>,
    user_id: Option<String>,
    /// The stream's connection id (what `exclude_self` publishes name);
    /// one is made up without it.
    connection_id: Option<String>,
}

/// `Last-Event-ID` (sent by browsers on reconnect) wins over the query.
/// Digits only, as `openapi.yaml` says; more than a u64 holds is a cursor
/// past the end of the log like any other (a `reset` follows).
fn cursor(headers: &HeaderMap, query: Option<u64>) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(query);
    };
    let digits = value.as_bytes().trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ApiError::invalid_message(
            "Last-Event-ID must be an event id (a non-negative integer)",
        ));
    }
    let cursor = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    Ok(Some(cursor))
}

async fn sse(
    State(app): State<AppState>,
    Auth(who): Auth,
    headers: HeaderMap,
    Query(query): Query<SseQuery>,
) -> Result<Response, ApiError> {
    who.check_named_user(query.user_id.as_deref())?;
    let requested = split_list(query.channels.as_deref().unwrap_or(""));
    let cursor = cursor(&headers, query.last_event_id)?;
    let (mut stream, rate) = app
        .realtime
        .sessions
        .open_stream(who, Transport::Sse, &requested, cursor, query.connection_id)
        .await?;
    let request_id = current_request_id();
    // A `: ping` when nothing was written for half the interval, timed by
    // the stream's one timer (its token expiry's).
    stream.keep_alive(app.keepalive);
    drop(app);
    // Only this moves into the stream: it lives as long as the connection.
    let body = async_stream::stream! {
        yield Ok::<Bytes, Infallible>(Bytes::from_static(b"retry: 2000\n\n"));
        while let Some(item) = stream.next().await {
            yield Ok(match item {
                Item::Events(events) => frames(&events),
                Item::Quiet => Bytes::from_static(b": ping\n\n"),
                item => match item.control_json(&request_id) {
                    Some(message) => Bytes::from(format!("data: {message}\n\n")),
                    None => continue,
                },
            });
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
fn frames(events: &[Arc<Event>]) -> Bytes {
    if let [one] = events {
        return one.sse_frame().clone();
    }
    let mut buf = bytes::BytesMut::with_capacity(events.iter().map(|e| e.sse_frame().len()).sum());
    for event in events {
        buf.extend_from_slice(event.sse_frame());
    }
    buf.freeze()
}
