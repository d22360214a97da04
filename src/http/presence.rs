//! Presence, viewing and typing over HTTP (PROTOCOL §7): thin adapters over
//! [`crate::presence::Presence`].

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::extract::{Auth, Json, Path, Query};
use super::{AppState, with_rate_headers};
use crate::error::ApiError;
use crate::limits::Rate;
use crate::presence::{StatusRequest, TypingRequest, ViewingRequest};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/realtime/presence", post(set_status).get(resource))
        .route("/realtime/presence/viewing", post(set_viewing))
        .route("/realtime/presence/users/{user_id}", get(user))
        .route("/realtime/typing", post(set_typing))
}

async fn set_status(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(req): Json<StatusRequest>,
) -> Result<Response, ApiError> {
    let rate = app.limits.check(&who, Rate::Action)?;
    let answer = app.presence.set_status(&who, req).await?;
    Ok(with_rate_headers(axum::Json(answer).into_response(), rate))
}

async fn set_viewing(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(req): Json<ViewingRequest>,
) -> Result<Response, ApiError> {
    let rate = app.limits.check(&who, Rate::Action)?;
    let answer = app.presence.set_viewing(&who, req).await?;
    Ok(with_rate_headers(axum::Json(answer).into_response(), rate))
}

async fn set_typing(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(req): Json<TypingRequest>,
) -> Result<Response, ApiError> {
    let rate = app.limits.check(&who, Rate::Action)?;
    let answer = app.presence.set_typing(&who, req).await?;
    Ok(with_rate_headers(axum::Json(answer).into_response(), rate))
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
    Ok(axum::Json(app.presence.resource(&who, &resource, &id).await?).into_response())
}

async fn user(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(app.presence.user(&who, &user_id).await?).into_response())
}
