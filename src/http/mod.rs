//! The HTTP side: thin transports over the core, and the accept loop.
//!
//! Each module owns its routes: [`ops`] (health, status, metrics, spec),
//! [`sse`] and [`poll`] (reading), [`publish`] (writing), [`presence`],
//! [`edit`], [`inbox`] (notifications, members, conversations), [`ws`] (the WebSocket), [`assets`] (the browser client and
//! demo, compiled in). They only turn requests into core
//! calls and core answers into responses; none calls another. Shared
//! below them: [`state`], [`error`] (the one [`ApiError`]), [`extract`]
//! (which refuses cookie-authenticated actions from untrusted sites, see
//! [`origin`]) and [`respond`]. [`server`] is the accept loop, with
//! [`connections`] (the count and cap of open connections), [`socket`]
//! (what hyper reads and writes) and [`tracked`]; [`stream_socket`] writes
//! SSE responses on raw sockets. This module puts the routes together;
//! every response carries `X-Request-Id`.

pub mod assets;
pub mod connections;
pub mod edit;
pub mod error;
pub mod extract;
pub mod inbox;
pub mod ops;
pub mod origin;
pub mod poll;
pub mod presence;
pub mod publish;
pub mod respond;
pub mod server;
pub mod socket;
pub mod sse;
pub mod state;
pub mod stream_socket;
pub mod tracked;
pub mod ws;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use switchyard_core::ErrorCode;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

use crate::config::CorsOrigins;
use error::{ApiError, REQUEST_ID};
use extract::MAX_BODY_BYTES;
use state::AppState;

/// Every route the server answers, as (method, path). `openapi.yaml` must
/// list exactly these; a test holds both to it.
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.yaml"),
    ("GET", "/realtime/status"),
    ("GET", "/realtime/channels"),
    ("GET", "/realtime/sse"),
    ("GET", "/realtime/poll"),
    ("POST", "/realtime/poll"),
    ("GET", "/realtime/poll/missed"),
    ("POST", "/realtime/broadcast"),
    ("POST", "/realtime/publish"),
    ("GET", "/realtime/activity"),
    ("POST", "/realtime/presence"),
    ("GET", "/realtime/presence"),
    ("POST", "/realtime/presence/viewing"),
    ("GET", "/realtime/presence/users/{user_id}"),
    ("POST", "/realtime/typing"),
    ("GET", "/realtime/connect"),
    ("GET", "/ws"),
    ("POST", "/realtime/edit/sessions"),
    ("DELETE", "/realtime/edit/sessions/{session_id}"),
    ("POST", "/realtime/edit/sessions/{session_id}/operations"),
    ("POST", "/realtime/edit/sessions/{session_id}/save"),
    ("GET", "/realtime/edit/documents"),
    ("PUT", "/realtime/edit/documents"),
    ("POST", "/realtime/edit/locks"),
    ("DELETE", "/realtime/edit/locks/{lock_id}"),
    ("POST", "/realtime/edit/locks/{lock_id}/renew"),
    ("GET", "/realtime/notifications"),
    ("POST", "/realtime/notifications"),
    ("GET", "/realtime/notifications/unread-count"),
    ("POST", "/realtime/notifications/read-all"),
    ("POST", "/realtime/notifications/{id}/read"),
    ("GET", "/realtime/channels/{channel}/members"),
    ("PUT", "/realtime/channels/{channel}/members/{user_id}"),
    ("DELETE", "/realtime/channels/{channel}/members/{user_id}"),
    ("GET", "/realtime/conversations"),
    ("POST", "/realtime/conversations"),
    ("GET", "/realtime/conversations/{id}/messages"),
    ("POST", "/realtime/conversations/{id}/messages"),
    (
        "PATCH",
        "/realtime/conversations/{id}/messages/{message_id}",
    ),
    (
        "DELETE",
        "/realtime/conversations/{id}/messages/{message_id}",
    ),
    ("POST", "/realtime/conversations/{id}/read"),
    ("GET", "/client.js"),
    ("GET", "/client.d.ts"),
    ("GET", "/demo"),
    ("GET", "/demo/token"),
    ("GET", "/demo/{file}"),
];

/// The whole HTTP surface.
pub fn router(state: AppState, cors_origins: Option<&CorsOrigins>) -> Router {
    let router = Router::new()
        .merge(ops::router())
        .merge(sse::router())
        .merge(poll::router())
        .merge(publish::router())
        .merge(presence::router())
        .merge(edit::router())
        .merge(inbox::router())
        .merge(ws::router())
        .merge(assets::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    let router = match cors_origins.map(cors) {
        Some(layer) => router.layer(layer),
        None => router,
    };
    router.layer(axum::middleware::from_fn(request_id))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("No route for {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> Response {
    let path = request.uri().path().to_string();
    let allowed: Vec<&str> = ENDPOINTS
        .iter()
        .filter(|(_, p)| *p == path)
        .map(|(m, _)| *m)
        .collect();
    let error = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {path}; use {}",
            request.method(),
            allowed.join(" or ")
        ),
    )
    .with_details(serde_json::json!({ "allowed": allowed }));
    let mut response = error.into_response();
    if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
        response
            .headers_mut()
            .insert(axum::http::header::ALLOW, value);
    }
    response
}

fn cors(origins: &CorsOrigins) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            axum::http::header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(600));
    match origins {
        // A wildcard origin cannot carry credentials, and echoing every
        // origin with credentials would let any site read a visitor's
        // streams with their cookie: with `*`, other origins send the token
        // by header or query (README, protocol notes).
        CorsOrigins::Any => layer.allow_origin(AllowOrigin::any()),
        CorsOrigins::List(list) => {
            let list: Vec<HeaderValue> = list
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect();
            layer.allow_origin(list).allow_credentials(true)
        }
    }
}

/// Gives each request an id (the caller's `X-Request-Id` if sane), makes it
/// visible to error rendering, and echoes it in the response.
async fn request_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let span = tracing::info_span!("request", id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    tracing::debug!(parent: &span, status = response.status().as_u16(), "answered");
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
