//! The inbox over HTTP (PROTOCOL §9, §9a): notifications, members kept by
//! the server, conversations and their messages. A thin adapter to the
//! core's commands ([`switchyard_core::Realtime`]), which hold every rule
//! and spend the §12 rates; bodies are `switchyard_core::inbox::api`'s.
//!
//! Status codes: `201` when a change made something new (a notification,
//! a member added, a conversation opened, a message sent), `200` when it
//! found it made already (a member already there, the pair's direct
//! conversation, a retried `client_message_id`), `204` for a removal.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use serde::Serialize;
use serde_json::json;
use switchyard_core::inbox::api::{
    CreateNotification, EditMessage, ListConversations, ListMessages, ListNotifications,
    OpenConversation, ReadConversation, SendMessage,
};
use switchyard_core::{Charged, Made};

use super::error::ApiError;
use super::extract::{Auth, Json, Path, Query};
use super::respond::with_rate_headers;
use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/realtime/notifications",
            get(notifications).post(create_notification),
        )
        .route("/realtime/notifications/unread-count", get(unread_count))
        .route("/realtime/notifications/read-all", post(read_all))
        .route("/realtime/notifications/{id}/read", post(read_one))
        .route("/realtime/channels/{channel}/members", get(members))
        .route(
            "/realtime/channels/{channel}/members/{user_id}",
            put(add_member).delete(remove_member),
        )
        .route(
            "/realtime/conversations",
            get(conversations).post(open_conversation),
        )
        .route(
            "/realtime/conversations/{id}/messages",
            get(messages).post(send_message),
        )
        .route(
            "/realtime/conversations/{id}/messages/{message_id}",
            patch(edit_message).delete(delete_message),
        )
        .route("/realtime/conversations/{id}/read", post(read_conversation))
}

fn ok<T: Serialize>(charged: Charged<T>) -> Response {
    with_rate_headers(axum::Json(charged.value).into_response(), charged.rate)
}

fn made<T: Serialize>(charged: Charged<Made<T>>) -> Response {
    let status = if charged.value.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    with_rate_headers(
        (status, axum::Json(charged.value.value)).into_response(),
        charged.rate,
    )
}

async fn create_notification(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(body): Json<CreateNotification>,
) -> Result<Response, ApiError> {
    let answer = app.realtime.create_notification(&who, body).await?;
    Ok(with_rate_headers(
        (StatusCode::CREATED, axum::Json(answer.value)).into_response(),
        answer.rate,
    ))
}

async fn notifications(
    State(app): State<AppState>,
    Auth(who): Auth,
    Query(query): Query<ListNotifications>,
) -> Result<Response, ApiError> {
    let page = app.realtime.notifications(&who, query).await?;
    Ok(axum::Json(page).into_response())
}

async fn unread_count(State(app): State<AppState>, Auth(who): Auth) -> Result<Response, ApiError> {
    let unread_count = app.realtime.unread_notifications(&who).await?;
    Ok(axum::Json(json!({ "unread_count": unread_count })).into_response())
}

async fn read_one(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(ok(app.realtime.read_notifications(&who, Some(&id)).await?))
}

async fn read_all(State(app): State<AppState>, Auth(who): Auth) -> Result<Response, ApiError> {
    Ok(ok(app.realtime.read_notifications(&who, None).await?))
}

async fn members(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    let list = app.realtime.members(&who, &channel).await?;
    Ok(axum::Json(list).into_response())
}

async fn add_member(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path((channel, user_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(made(
        app.realtime.add_member(&who, &channel, &user_id).await?,
    ))
}

async fn remove_member(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path((channel, user_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let answer = app.realtime.remove_member(&who, &channel, &user_id).await?;
    Ok(with_rate_headers(
        StatusCode::NO_CONTENT.into_response(),
        answer.rate,
    ))
}

async fn open_conversation(
    State(app): State<AppState>,
    Auth(who): Auth,
    Json(body): Json<OpenConversation>,
) -> Result<Response, ApiError> {
    Ok(made(app.realtime.open_conversation(&who, body).await?))
}

async fn conversations(
    State(app): State<AppState>,
    Auth(who): Auth,
    Query(query): Query<ListConversations>,
) -> Result<Response, ApiError> {
    let page = app.realtime.conversations(&who, query).await?;
    Ok(axum::Json(page).into_response())
}

async fn messages(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Query(query): Query<ListMessages>,
) -> Result<Response, ApiError> {
    let page = app.realtime.messages(&who, &id, query).await?;
    Ok(axum::Json(page).into_response())
}

async fn send_message(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Json(body): Json<SendMessage>,
) -> Result<Response, ApiError> {
    Ok(made(app.realtime.send_message(&who, &id, body).await?))
}

async fn edit_message(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path((id, message_id)): Path<(String, String)>,
    Json(body): Json<EditMessage>,
) -> Result<Response, ApiError> {
    Ok(ok(app
        .realtime
        .change_message(&who, &id, &message_id, Some(body))
        .await?))
}

async fn delete_message(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path((id, message_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(ok(app
        .realtime
        .change_message(&who, &id, &message_id, None)
        .await?))
}

async fn read_conversation(
    State(app): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Json(body): Json<ReadConversation>,
) -> Result<Response, ApiError> {
    Ok(ok(app.realtime.read_conversation(&who, &id, body).await?))
}
