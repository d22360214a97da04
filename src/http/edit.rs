//! Collaborative editing over HTTP (PROTOCOL §8): a thin adapter from axum
//! to the core's editing commands ([`switchyard_core::Realtime`]), which
//! hold every rule and spend the §12 rates. Bodies are the
//! `switchyard_core::edit::api` types as they are; ids come from the path.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use switchyard_core::edit::api::{
    DocumentRequest, LockRequest, RenewLockRequest, SetContentRequest, StartSessionRequest,
    SubmitOperationRequest,
};

use super::error::ApiError;
use super::extract::{Auth, Json, OptionalJson, Path, Query};
use super::respond::with_rate_headers;
use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/realtime/edit/sessions", post(start_session))
        .route("/realtime/edit/sessions/{session_id}", delete(leave))
        .route(
            "/realtime/edit/sessions/{session_id}/operations",
            post(submit_operation),
        )
        .route("/realtime/edit/sessions/{session_id}/save", post(save))
        .route("/realtime/edit/documents", get(document).put(set_content))
        .route("/realtime/edit/locks", post(lock))
        .route("/realtime/edit/locks/{lock_id}", delete(unlock))
        .route("/realtime/edit/locks/{lock_id}/renew", post(renew_lock))
}

async fn start_session(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(body): Json<StartSessionRequest>,
) -> Result<Response, ApiError> {
    let answer = app.realtime.start_session(&who, body).await?;
    Ok(with_rate_headers(
        (StatusCode::CREATED, axum::Json(answer.value)).into_response(),
        answer.rate,
    ))
}

async fn submit_operation(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(session_id): Path<String>,
    Json(body): Json<SubmitOperationRequest>,
) -> Result<Response, ApiError> {
    let answer = app
        .realtime
        .submit_operation(&who, &session_id, body)
        .await?;
    Ok(with_rate_headers(
        axum::Json(answer.value).into_response(),
        answer.rate,
    ))
}

#[derive(Deserialize)]
struct LegacyUserId {
    user_id: Option<String>,
}

async fn document(
    State(app): State<AppState>,
    Auth(who): Auth,
    Query(legacy): Query<LegacyUserId>,
    Query(query): Query<DocumentRequest>,
) -> Result<Response, ApiError> {
    who.check_named_user(legacy.user_id.as_deref())?;
    let answer = app.realtime.document(&who, &query).await?;
    Ok(axum::Json(answer).into_response())
}

async fn set_content(
    State(app): State<AppState>,
    Auth(who): Auth,
    Query(query): Query<DocumentRequest>,
    Json(body): Json<SetContentRequest>,
) -> Result<Response, ApiError> {
    let answer = app.realtime.set_content(&who, &query, body).await?;
    Ok(with_rate_headers(
        axum::Json(answer.value).into_response(),
        answer.rate,
    ))
}

async fn save(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    let answer = app.realtime.save(&who, &session_id).await?;
    Ok(with_rate_headers(
        axum::Json(answer.value).into_response(),
        answer.rate,
    ))
}

async fn leave(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    app.realtime.leave(&who, &session_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn lock(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(body): Json<LockRequest>,
) -> Result<Response, ApiError> {
    let answer = app.realtime.lock(&who, body).await?;
    Ok(with_rate_headers(
        (StatusCode::CREATED, axum::Json(answer.value)).into_response(),
        answer.rate,
    ))
}

async fn renew_lock(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(lock_id): Path<String>,
    OptionalJson(body): OptionalJson<RenewLockRequest>,
) -> Result<Response, ApiError> {
    let answer = app.realtime.renew_lock(&who, &lock_id, body).await?;
    Ok(with_rate_headers(
        axum::Json(answer.value).into_response(),
        answer.rate,
    ))
}

async fn unlock(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(lock_id): Path<String>,
) -> Result<Response, ApiError> {
    let answer = app.realtime.unlock(&who, &lock_id).await?;
    Ok(with_rate_headers(
        StatusCode::NO_CONTENT.into_response(),
        answer.rate,
    ))
}
