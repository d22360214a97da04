//! Presence, viewing and typing over HTTP (PROTOCOL §7): thin adapters over
//! the core's commands ([`switchyard_core::Realtime`]) and presence views.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use switchyard_core::Charged;
use switchyard_core::presence::requests::{StatusRequest, TypingRequest, ViewingRequest};

use super::error::ApiError;
use super::extract::{Auth, Json, Path, Query};
use super::respond::with_rate_headers;
use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/realtime/presence", post(set_status).get(resource))
        .route("/realtime/presence/viewing", post(set_viewing))
        .route("/realtime/presence/users/{user_id}", get(user))
        .route("/realtime/typing", post(set_typing))
}

fn answer(charged: Charged<Value>) -> Response {
    with_rate_headers(axum::Json(charged.value).into_response(), charged.rate)
}

async fn set_status(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(req): Json<StatusRequest>,
) -> Result<Response, ApiError> {
    Ok(answer(app.realtime.set_status(&who, req).await?))
}

async fn set_viewing(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(req): Json<ViewingRequest>,
) -> Result<Response, ApiError> {
    Ok(answer(app.realtime.set_viewing(&who, req).await?))
}

async fn set_typing(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(req): Json<TypingRequest>,
) -> Result<Response, ApiError> {
    Ok(answer(app.realtime.set_typing(&who, req).await?))
}

#[derive(Deserialize)]
struct ResourceQuery {
    resource: Option<String>,
    id: Option<String>,
}

async fn resource(
    State(app): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<ResourceQuery>,
) -> Result<Response, ApiError> {
    let (Some(resource), Some(id)) = (q.resource, q.id) else {
        return Err(ApiError::invalid_message(
            "Query 'resource' and 'id' are required, e.g. ?resource=task&id=123",
        ));
    };
    let view = app.realtime.presence.resource(&who, &resource, &id).await?;
    Ok(axum::Json(view).into_response())
}

async fn user(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let view = app.realtime.presence.user(&who, &user_id).await?;
    Ok(axum::Json(view).into_response())
}
