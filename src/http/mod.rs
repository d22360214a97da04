//! The HTTP transports: thin adapters from axum to the core.
//!
//! Each module owns its routes: [`ops`] (health, status, metrics, spec),
//! [`sse`] and [`poll`] (reading), [`publish`] (writing). Every response
//! carries `X-Request-Id`; every failure is an [`ApiError`]. [`server`] is
//! the accept loop; [`stream_socket`] writes SSE responses on raw sockets.

pub mod edit;
pub mod extract;
pub mod ops;
pub mod poll;
pub mod presence;
pub mod publish;
pub mod server;
pub mod sse;
pub mod stream_socket;
pub mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

use crate::auth::Authenticator;
use crate::channel::Namespaces;
use crate::error::{ApiError, ErrorCode, REQUEST_ID};
use crate::limits::{Limits, RateInfo};
use crate::log::EventLog;
use crate::metrics::Metrics;
use crate::presence::Presence;

/// Largest request body (a publish batch).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

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
    ("POST", "/realtime/edit/locks"),
    ("DELETE", "/realtime/edit/locks/{lock_id}"),
    ("POST", "/realtime/edit/locks/{lock_id}/renew"),
];

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub log: Arc<EventLog>,
    pub auth: Arc<Authenticator>,
    pub namespaces: Arc<Namespaces>,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub presence: Arc<Presence>,
    /// Collaborative editing (PROTOCOL §8).
    pub editing: crate::edit::Editing,
    /// Interval of the server's WebSocket pings.
    pub ws_ping: Duration,
    /// Idle time before an SSE `: ping`.
    pub keepalive: Duration,
    /// Cancelled when the server begins to shut down.
    pub shutdown: CancellationToken,
    pub started: Instant,
}

/// The whole HTTP surface.
pub fn router(state: AppState, cors_origins: Option<&str>) -> Router {
    let router = Router::new()
        .merge(ops::router())
        .merge(sse::router())
        .merge(poll::router())
        .merge(publish::router())
        .merge(presence::router())
        .merge(edit::router())
        .merge(ws::router())
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

fn cors(origins: &str) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            axum::http::header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
        ])
        .max_age(Duration::from_secs(600));
    if origins.trim() == "*" {
        // A wildcard origin cannot carry credentials; token by header or query then.
        layer.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<HeaderValue> = origins
            .split(',')
            .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
            .collect();
        layer.allow_origin(list).allow_credentials(true)
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

/// `{"events":[envelope,...]` (left open for more fields), from envelopes
/// rendered once at append time.
pub fn events_array(events: &[Arc<crate::event::Event>]) -> String {
    let mut body =
        String::with_capacity(16 + events.iter().map(|e| e.envelope().len() + 1).sum::<usize>());
    body.push_str("{\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(event.envelope());
    }
    body.push(']');
    body
}

/// Adds the `X-RateLimit-*` headers of a limited request that passed.
pub fn with_rate_headers(mut response: Response, info: Option<RateInfo>) -> Response {
    for (name, value) in info.iter().flat_map(|i| i.headers(false)) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
