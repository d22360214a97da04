//! Collaborative editing over HTTP (PROTOCOL §8): a thin adapter from axum
//! to [`crate::edit::Editing`], which holds every rule. Bodies are the
//! [`crate::edit::api`] types as they are; ids come from the path. Each
//! route spends its §12 rate (`edit_operations` for operations, client
//! actions for start, save and locks) and answers with `X-RateLimit-*`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::extract::{Auth, Json, Path, Query, check_user_id};
use super::{AppState, with_rate_headers};
use crate::edit::api::{
    DocumentRequest, LockRequest, RenewLockRequest, StartSessionRequest, SubmitOperationRequest,
};
use crate::error::ApiError;
use crate::limits::Rate;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/realtime/edit/sessions", post(start_session))
        .route("/realtime/edit/sessions/{session_id}", delete(leave))
        .route(
            "/realtime/edit/sessions/{session_id}/operations",
            post(submit_operation),
        )
        .route("/realtime/edit/sessions/{session_id}/save", post(save))
        .route("/realtime/edit/documents", get(document))
        .route("/realtime/edit/locks", post(lock))
        .route("/realtime/edit/locks/{lock_id}", delete(unlock))
        .route("/realtime/edit/locks/{lock_id}/renew", post(renew_lock))
}

/// A JSON body that may be left out entirely (no bytes): then `T::default()`.
struct OptionalJson<T>(T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if req.headers().contains_key(axum::http::header::CONTENT_TYPE) {
            let Json(body) = Json::<T>::from_request(req, state).await?;
            return Ok(Self(body));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::invalid_message(format!("Unreadable body: {}", e.body_text()))
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        Err(ApiError::invalid_message(
            "Send the body as JSON with 'Content-Type: application/json'",
        ))
    }
}

async fn start_session(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(body): Json<StartSessionRequest>,
) -> Result<Response, ApiError> {
    let rate = app.limits.check(&who, Rate::Action)?;
    let answer = app.editing.start_session(&who, body).await?;
    Ok(with_rate_headers(
        (StatusCode::CREATED, axum::Json(answer)).into_response(),
        rate,
    ))
}

async fn submit_operation(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(session_id): Path<String>,
    Json(body): Json<SubmitOperationRequest>,
) -> Result<Response, ApiError> {
    let rate = app.limits.check(&who, Rate::EditOperation)?;
    app.presence.acted(&who).await?;
    let answer = app
        .editing
        .submit_operation(&who, &session_id, body)
        .await?;
    Ok(with_rate_headers(axum::Json(answer).into_response(), rate))
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
    check_user_id(&who, legacy.user_id.as_deref())?;
    let answer = app.editing.document(&who, &query).await?;
    Ok(axum::Json(answer).into_response())
}

async fn save(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    let rate = app.limits.check(&who, Rate::Action)?;
    let answer = app.editing.save(&who, &session_id).await?;
    Ok(with_rate_headers(axum::Json(answer).into_response(), rate))
}

async fn leave(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    app.editing.leave(&who, &session_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn lock(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(body): Json<LockRequest>,
) -> Result<Response, ApiError> {
    let rate = app.limits.check(&who, Rate::Action)?;
    let answer = app.editing.lock(&who, body).await?;
    Ok(with_rate_headers(
        (StatusCode::CREATED, axum::Json(answer)).into_response(),
        rate,
    ))
}

async fn renew_lock(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(lock_id): Path<String>,
    OptionalJson(body): OptionalJson<RenewLockRequest>,
) -> Result<Response, ApiError> {
    let rate = app.limits.check(&who, Rate::Action)?;
    let answer = app.editing.renew_lock(&who, &lock_id, body).await?;
    Ok(with_rate_headers(axum::Json(answer).into_response(), rate))
}

async fn unlock(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(lock_id): Path<String>,
) -> Result<Response, ApiError> {
    let rate = app.limits.check(&who, Rate::Action)?;
    app.editing.unlock(&who, &lock_id).await?;
    Ok(with_rate_headers(
        StatusCode::NO_CONTENT.into_response(),
        rate,
    ))
}
