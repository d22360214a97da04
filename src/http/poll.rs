//! Long polling (PROTOCOL §5): `GET`/`POST /realtime/poll` and
//! `GET /realtime/poll/missed`, answered by the core's poll
//! ([`switchyard_core::session::poll`]); this module only reads the
//! request's three shapes and renders the answer.

use std::fmt::Write;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use switchyard_core::Identity;
use switchyard_core::session::poll::{DEFAULT_LIMIT, MAX_TIMEOUT, PollAnswer, PollRequest};
use switchyard_core::session::reset_json;
use switchyard_core::whole;

use super::error::ApiError;
use super::extract::{Auth, Json, Query};
use super::respond::{events_array, split_list, with_rate_headers};
use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/realtime/poll", get(poll_get).post(poll_post))
        .route("/realtime/poll/missed", get(missed))
}

/// Integers as JSON Schema counts them (`30.0` is 30); `null` is absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollBody {
    /// None or empty: the user's inbox (PROTOCOL §9a).
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default, deserialize_with = "whole::opt_u64")]
    last_poll_id: Option<u64>,
    #[serde(default, deserialize_with = "whole::opt_u64")]
    timeout: Option<u64>,
    #[serde(default, deserialize_with = "whole::opt_usize")]
    limit: Option<usize>,
    user_id: Option<String>,
    connection_id: Option<String>,
}

#[derive(Deserialize)]
struct PollQuery {
    channels: Option<String>,
    #[serde(default)]
    last_poll_id: u64,
    timeout: Option<u64>,
    limit: Option<usize>,
    user_id: Option<String>,
    connection_id: Option<String>,
}

#[derive(Deserialize)]
struct MissedQuery {
    channels: Option<String>,
    #[serde(default)]
    last_sequence: u64,
    limit: Option<usize>,
    user_id: Option<String>,
    connection_id: Option<String>,
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
        q.user_id,
        request(
            channels,
            q.last_poll_id,
            q.timeout,
            q.limit,
            q.connection_id,
        ),
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
        b.user_id,
        request(
            b.channels,
            b.last_poll_id.unwrap_or(0),
            b.timeout,
            b.limit,
            b.connection_id,
        ),
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
        q.user_id,
        request(channels, q.last_sequence, Some(0), q.limit, q.connection_id),
    )
    .await
}

fn request(
    channels: Vec<String>,
    last_poll_id: u64,
    timeout: Option<u64>,
    limit: Option<usize>,
    connection_id: Option<String>,
) -> PollRequest {
    PollRequest {
        channels,
        last_poll_id,
        timeout: timeout.map_or(MAX_TIMEOUT, Duration::from_secs),
        limit: limit.unwrap_or(DEFAULT_LIMIT),
        connection_id,
    }
}

async fn poll(
    app: AppState,
    who: Identity,
    named: Option<String>,
    request: PollRequest,
) -> Result<Response, ApiError> {
    who.check_named_user(named.as_deref())?;
    let answer = app.realtime.sessions.poll(&who, request).await?;
    let rate = answer.rate;
    Ok(with_rate_headers(
        (
            [(header::CONTENT_TYPE, "application/json")],
            render(&answer),
        )
            .into_response(),
        rate,
    ))
}

/// `{"events":[...],"last_poll_id":N,"has_more":false}` with `errors` and
/// `reset` when there are any.
fn render(answer: &PollAnswer) -> String {
    let mut body = events_array(&answer.events);
    let _ = write!(
        body,
        ",\"last_poll_id\":{},\"has_more\":{}",
        answer.last_poll_id, answer.has_more
    );
    if !answer.errors.is_empty() {
        let _ = write!(body, ",\"errors\":{}", json!(answer.errors));
    }
    if let Some(reset) = &answer.reset {
        let _ = write!(body, ",\"reset\":{}", reset_json(reset));
    }
    if let Some(id) = &answer.connection_id {
        let _ = write!(body, ",\"connection_id\":{}", json!(id));
    }
    body.push('}');
    body
}
