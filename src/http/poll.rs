//! Long polling (PROTOCOL §5): `GET`/`POST /realtime/poll` and
//! `GET /realtime/poll/missed`, over the same reader as SSE.
//!
//! Invariants: an answer is immediate when events wait; otherwise the poll
//! sleeps on the reader's wake-up (no timer loop) until an event, the
//! timeout or shutdown, and shutdown answers 200. `last_poll_id` never goes
//! backwards and never skips a future event.

use std::fmt::Write;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::extract::{Auth, Json, Query, check_user_id};
use super::{AppState, with_rate_headers};
use crate::auth::Identity;
use crate::channel::{plan_subscription, split_list};
use crate::error::ApiError;
use crate::limits::Rate;
use crate::log::Opened;

const MAX_TIMEOUT_SECS: u64 = 30;
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/realtime/poll", get(poll_get).post(poll_post))
        .route("/realtime/poll/missed", get(missed))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollBody {
    channels: Vec<String>,
    #[serde(default)]
    last_poll_id: u64,
    timeout: Option<u64>,
    limit: Option<usize>,
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct PollQuery {
    channels: Option<String>,
    #[serde(default)]
    last_poll_id: u64,
    timeout: Option<u64>,
    limit: Option<usize>,
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct MissedQuery {
    channels: Option<String>,
    #[serde(default)]
    last_sequence: u64,
    limit: Option<usize>,
    user_id: Option<String>,
}

async fn poll_get(
    State(app): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<PollQuery>,
) -> Result<Response, ApiError> {
    let channels = split_list(q.channels.as_deref().unwrap_or(""));
    poll(
        app,
        who,
        channels,
        q.last_poll_id,
        q.timeout,
        q.limit,
        q.user_id,
    )
    .await
}

async fn poll_post(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(b): Json<PollBody>,
) -> Result<Response, ApiError> {
    poll(
        app,
        who,
        b.channels,
        b.last_poll_id,
        b.timeout,
        b.limit,
        b.user_id,
    )
    .await
}

async fn missed(
    State(app): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<MissedQuery>,
) -> Result<Response, ApiError> {
    let channels = split_list(q.channels.as_deref().unwrap_or(""));
    poll(
        app,
        who,
        channels,
        q.last_sequence,
        Some(0),
        q.limit,
        q.user_id,
    )
    .await
}

async fn poll(
    app: AppState,
    who: Identity,
    channels: Vec<String>,
    last_poll_id: u64,
    timeout: Option<u64>,
    limit: Option<usize>,
    user_id: Option<String>,
) -> Result<Response, ApiError> {
    check_user_id(&who, user_id.as_deref())?;
    let limit = match limit {
        Some(0) => {
            return Err(ApiError::invalid_message(
                "limit must be between 1 and 1000",
            ));
        }
        Some(n) => n.min(MAX_LIMIT),
        None => DEFAULT_LIMIT,
    };
    let timeout = Duration::from_secs(timeout.unwrap_or(MAX_TIMEOUT_SECS).min(MAX_TIMEOUT_SECS));
    let (granted, errors) = plan_subscription(&app.namespaces, &who, &channels)?;
    let rate = app.limits.check(&who, Rate::Poll)?;
    let Opened { mut reader, reset } = app
        .log
        .reader(&who.tenant, &granted, Some(last_poll_id))
        .await?;
    app.presence.polled(&who, &granted).await?;

    // One more than the limit tells whether the limit cut the answer.
    let mut events = reader.fetch(limit + 1).await?;
    if events.is_empty() && !timeout.is_zero() && !app.shutdown.is_cancelled() {
        let _waiting = app.metrics.poll_waiting();
        tokio::select! {
            _ = app.shutdown.cancelled() => {}
            waited = tokio::time::timeout(timeout, reader.next(limit + 1)) => {
                if let Ok(got) = waited {
                    events = got?;
                }
            }
        }
    }
    let has_more = events.len() > limit;
    events.truncate(limit);
    let cursor = match events.last() {
        Some(last) => last.id,
        // Never below the request's cursor, except after a reset for a cursor
        // beyond the end of the log, where following it would skip ids to come.
        None => reader.position(),
    };
    app.metrics.events_delivered(events.len() as u64);

    let mut body = super::events_array(&events);
    let _ = write!(body, ",\"last_poll_id\":{cursor},\"has_more\":{has_more}");
    if !errors.is_empty() {
        let _ = write!(body, ",\"errors\":{}", json!(errors));
    }
    if let Some(reset) = reset {
        let _ = write!(body, ",\"reset\":{}", reset.to_json());
    }
    body.push('}');
    Ok(with_rate_headers(
        ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        rate,
    ))
}
