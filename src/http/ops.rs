//! Operator endpoints: health, readiness, status, namespaces, metrics and
//! the OpenAPI document. None needs a token (PROTOCOL §1, §13).

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

use switchyard_core::ErrorCode;
use switchyard_core::channel::NOTIFICATIONS;

use super::error::ApiError;
use super::state::AppState;

/// The OpenAPI document, as committed at the top of the repository.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.yaml", get(openapi))
        .route("/realtime/status", get(status))
        .route("/realtime/channels", get(channels))
}

async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

async fn readyz(State(app): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    if app.realtime.shutdown.is_cancelled() {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "The server is shutting down",
        ));
    }
    app.realtime.log.storage().ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(ErrorCode::Unavailable, "Storage is not reachable")
    })?;
    Ok(axum::Json(json!({ "status": "ready" })))
}

async fn status(State(app): State<AppState>) -> axum::Json<Value> {
    let secs = app.started.elapsed().as_secs();
    axum::Json(json!({
        "status": "operational",
        "connections": app.realtime.metrics.streams(),
        "uptime": format!("{}d {}h {}m", secs / 86400, secs % 86400 / 3600, secs % 3600 / 60),
        "uptime_seconds": secs,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn channels(State(app): State<AppState>) -> axum::Json<Value> {
    let list: Vec<Value> = app
        .realtime
        .namespaces
        .iter()
        .map(|(name, ns)| {
            let pattern = match name.as_str() {
                NOTIFICATIONS | "system" => name.clone(),
                "presence" => "presence or presence:{user_id}".to_string(),
                "user" => "user:{user_id}".to_string(),
                _ => format!("{name}:{{id}}"),
            };
            json!({
                "name": name,
                "description": ns.description,
                "subscription_pattern": pattern,
                "subscribe": ns.subscribe,
                "retention_seconds": ns.retention_secs,
                "client_publish": ns.client_publish,
                "client_write": ns.accepts_client_writes(),
                "presence": ns.presence,
            })
        })
        .collect();
    axum::Json(json!({ "channels": list }))
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.realtime.metrics.render(),
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML)
}
