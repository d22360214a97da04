//! Writing (PROTOCOL §6): `POST /realtime/broadcast` for service tokens,
//! `POST /realtime/publish` for clients, and `GET /realtime/activity`.
//!
//! A body is one event on one channel, one event on several channels, or a
//! batch; all of it is validated before anything is appended, and appended
//! atomically. Invariant: a 202 means the events are committed.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{Auth, Json, Query, check_user_id};
use super::{AppState, with_rate_headers};
use crate::auth::Identity;
use crate::channel::{Channel, plan_subscription, split_list};
use crate::error::{ApiError, ErrorCode};
use crate::event::{NewEvent, encode_data, validate_event_name};
use crate::limits::{Rate, RateInfo};
use crate::storage::{AppendOutcome, AppendRequest};

/// Most events one publish may append.
const MAX_BATCH_EVENTS: usize = 1000;
const MAX_IDEMPOTENCY_KEY: usize = 255;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/realtime/broadcast", post(broadcast))
        .route("/realtime/publish", post(publish))
        .route("/realtime/activity", get(activity))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    channel: Option<String>,
    channels: Option<Vec<String>>,
    event: Option<String>,
    #[serde(default)]
    data: Value,
    expected_last_id: Option<u64>,
    events: Option<Vec<BatchItem>>,
    idempotency_key: Option<String>,
    user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    channel: Option<String>,
    channels: Option<Vec<String>>,
    event: String,
    #[serde(default)]
    data: Value,
    expected_last_id: Option<u64>,
}

/// Who may write where: the two endpoints differ only here.
#[derive(Clone, Copy)]
pub enum Writer {
    Broadcast,
    Publish,
}

async fn broadcast(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(body): Json<PublishBody>,
) -> Result<Response, ApiError> {
    if !who.is_service {
        return Err(ApiError::permission_denied(
            "POST /realtime/broadcast needs a service token (role: service)",
        ));
    }
    answer(publish_events(&app, &who, body, Writer::Broadcast).await?)
}

async fn publish(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(body): Json<PublishBody>,
) -> Result<Response, ApiError> {
    answer(publish_events(&app, &who, body, Writer::Publish).await?)
}

/// 202 with the receipt and the rate-limit headers.
fn answer((receipt, rate): (String, Option<RateInfo>)) -> Result<Response, ApiError> {
    Ok(with_rate_headers(
        (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            receipt,
        )
            .into_response(),
        rate,
    ))
}

/// Validates and appends a publish; returns the receipt JSON. Shared by the
/// HTTP endpoints and WebSocket `publish` messages.
pub async fn publish_events(
    app: &AppState,
    who: &Identity,
    body: PublishBody,
    writer: Writer,
) -> Result<(String, Option<RateInfo>), ApiError> {
    check_user_id(who, body.user_id.as_deref())?;
    if let Some(key) = &body.idempotency_key
        && (key.is_empty()
            || key.chars().count() > MAX_IDEMPOTENCY_KEY
            || key.chars().any(char::is_control))
    {
        return Err(ApiError::invalid_message(
            "idempotency_key must be 1-255 characters, none of them control characters",
        ));
    }
    let items = match body.events {
        Some(items) => {
            if body.channel.is_some()
                || body.channels.is_some()
                || body.event.is_some()
                || body.expected_last_id.is_some()
            {
                return Err(ApiError::invalid_message(
                    "Send either 'events' (a batch) or 'channel'/'channels' with 'event', not both",
                ));
            }
            if items.is_empty() || items.len() > MAX_BATCH_EVENTS {
                return Err(ApiError::invalid_message(format!(
                    "'events' must hold 1-{MAX_BATCH_EVENTS} events"
                )));
            }
            items
        }
        None => vec![BatchItem {
            channel: body.channel,
            channels: body.channels,
            event: body
                .event
                .ok_or_else(|| ApiError::invalid_message("Field 'event' is required"))?,
            data: body.data,
            expected_last_id: body.expected_last_id,
        }],
    };

    let mut events = Vec::new();
    for item in items {
        let names = match (item.channel, item.channels) {
            (Some(one), None) => vec![one],
            (None, Some(many)) if !many.is_empty() => {
                if item.expected_last_id.is_some() && many.len() > 1 {
                    return Err(ApiError::invalid_message(
                        "'expected_last_id' needs a single 'channel'",
                    ));
                }
                many
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_message(
                    "Send 'channel' or 'channels', not both",
                ));
            }
            _ => {
                return Err(ApiError::invalid_message(
                    "Field 'channel' (or a non-empty 'channels') is required",
                ));
            }
        };
        validate_event_name(&item.event)?;
        let data = encode_data(&item.data)?;
        for name in names {
            let channel = app.namespaces.resolve(&name, who)?;
            check_may_write(app, who, &channel, writer)?;
            events.push(NewEvent {
                retention_ms: app.namespaces.retention(&channel).as_millis() as i64,
                channel,
                event: item.event.clone(),
                data: data.clone(),
                expected_last_id: item.expected_last_id,
            });
        }
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::invalid_message(format!(
            "A publish may append at most {MAX_BATCH_EVENTS} events"
        )));
    }

    let rate = app.limits.check(who, Rate::Action)?;
    app.presence.acted(who).await?;
    let outcome = app
        .log
        .append(AppendRequest {
            tenant: who.tenant.clone(),
            user_id: Some(who.user_id.clone()),
            events,
            idempotency_key: body.idempotency_key,
            recipients: 0,
        })
        .await?;
    match outcome {
        AppendOutcome::Appended { receipt, .. } | AppendOutcome::Replayed { receipt } => {
            Ok((receipt, rate))
        }
        AppendOutcome::Conflict { channel, last_id } => Err(ApiError::new(
            ErrorCode::Conflict,
            format!("Channel '{channel}' has moved on: its last event id is {last_id}"),
        )
        .with_details(json!({ "channel": channel, "last_id": last_id }))),
        AppendOutcome::Failed => Err(ApiError::new(
            ErrorCode::ServerError,
            "The event could not be stored",
        )),
    }
}

fn check_may_write(
    app: &AppState,
    who: &Identity,
    channel: &Channel,
    writer: Writer,
) -> Result<(), ApiError> {
    let allowed = match writer {
        Writer::Broadcast => who.is_service,
        Writer::Publish => app.namespaces.may_publish(who, channel),
    };
    if allowed {
        Ok(())
    } else {
        Err(
            ApiError::permission_denied(format!("This token may not publish to '{channel}'"))
                .with_details(json!({ "channel": channel.as_str() })),
        )
    }
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
    check_user_id(&who, q.user_id.as_deref())?;
    let since = q.since.as_deref().ok_or_else(|| {
        ApiError::invalid_message("Query 'since' (an RFC 3339 timestamp) is required")
    })?;
    let since = chrono::DateTime::parse_from_rfc3339(since)
        .map_err(|_| {
            ApiError::invalid_message(
                "'since' must be an RFC 3339 timestamp, e.g. 2026-11-22T14:30:45.123Z",
            )
        })?
        .timestamp_millis();
    let limit = match q.limit {
        Some(0) => {
            return Err(ApiError::invalid_message(
                "limit must be between 1 and 1000",
            ));
        }
        Some(n) => n.min(1000),
        None => 100,
    };
    let (granted, errors) = plan_subscription(
        &app.namespaces,
        &who,
        &split_list(q.channels.as_deref().unwrap_or("")),
    )?;
    let events = app
        .log
        .read_since(&who.tenant, &granted, since, limit)
        .await?;
    let mut body = super::events_array(&events);
    if !errors.is_empty() {
        body.push_str(&format!(",\"errors\":{}", json!(errors)));
    }
    body.push('}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
