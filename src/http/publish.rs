//! Writing over HTTP (PROTOCOL §6): `POST /realtime/broadcast` (service
//! tokens), `POST /realtime/publish` (clients), and reading by time with
//! `GET /realtime/activity`. The rules are the core's
//! ([`switchyard_core::publish`]); a 202 means the events are committed.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use switchyard_core::publish::{PublishRequest, Published, Via, Writer};

use super::error::ApiError;
use super::extract::{Auth, Json, Query};
use super::respond::{events_array, split_list, with_rate_headers};
use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/realtime/broadcast", post(broadcast))
        .route("/realtime/publish", post(publish))
        .route("/realtime/activity", get(activity))
}

async fn broadcast(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(body): Json<PublishRequest>,
) -> Result<Response, ApiError> {
    answer(
        app.realtime
            .publish(&who, body, Writer::Broadcast, Via::Http)
            .await?,
    )
}

async fn publish(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(body): Json<PublishRequest>,
) -> Result<Response, ApiError> {
    answer(
        app.realtime
            .publish(&who, body, Writer::Publish, Via::Http)
            .await?,
    )
}

/// 202 with the receipt and the rate-limit headers.
fn answer(published: Published) -> Result<Response, ApiError> {
    Ok(with_rate_headers(
        (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            published.receipt,
        )
            .into_response(),
        published.rate,
    ))
}

#[derive(Deserialize)]
struct ActivityQuery {
    since: Option<String>,
    channels: Option<String>,
    limit: Option<usize>,
    user_id: Option<String>,
}

async fn activity(
    State(app): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<ActivityQuery>,
) -> Result<Response, ApiError> {
    who.check_named_user(q.user_id.as_deref())?;
    let since = q.since.as_deref().ok_or_else(|| {
        ApiError::invalid_message(
            "Query 'since' (an RFC 3339 timestamp or milliseconds since the epoch) is required",
        )
    })?;
    let since = since_ms(since).ok_or_else(|| {
        ApiError::invalid_message(
            "'since' must be an RFC 3339 timestamp (2026-11-22T14:30:45.123Z) or milliseconds \
             since the epoch (1795357845123)",
        )
    })?;
    let channels = split_list(q.channels.as_deref().unwrap_or(""));
    let (events, errors) = app
        .realtime
        .sessions
        .activity(&who, &channels, since, q.limit.unwrap_or(100))
        .await?;
    let mut body = events_array(&events);
    if !errors.is_empty() {
        body.push_str(&format!(",\"errors\":{}", json!(errors)));
    }
    body.push('}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `since` as RFC 3339 or as whole milliseconds since the epoch.
fn since_ms(text: &str) -> Option<i64> {
    if !text.is_empty() && text.len() <= 15 && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::since_ms;

    #[test]
    fn since_takes_rfc3339_or_epoch_milliseconds() {
        assert_eq!(since_ms("1795357845123"), Some(1_795_357_845_123));
        assert_eq!(
            since_ms("2026-11-22T14:30:45.123Z"),
            Some(1_795_357_845_123)
        );
        assert_eq!(since_ms("0"), Some(0));
        for bad in ["", "-5", "12.5", "1e9", "9999999999999999", "yesterday"] {
            assert_eq!(since_ms(bad), None, "{bad}");
        }
    }
}
