//! The browser client and the demo board, served from the binary (issue 17).
//!
//! - `GET /client.js`, `GET /client.d.ts`: the client in `clients/js`,
//!   compiled in, so a page always gets the client of the server it talks to.
//! - `GET /demo`, `GET /demo/{file}`: the task board built on it; off with
//!   `SWITCHYARD_DEMO=off`.
//! - `GET /demo/token?sub=NAME`: a dev token for the board, minted only when
//!   the server generated its own secret (no configured key); 404 otherwise,
//!   so a production server never hands out tokens.
//!
//! None of these needs a token.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use switchyard_core::ErrorCode;
use switchyard_core::auth::claims_for;
use switchyard_core::names::is_valid_id;

use super::error::ApiError;
use super::extract::{Path, Query};
use super::state::AppState;

const CLIENT_JS: &str = include_str!("../../clients/js/switchyard.js");
const CLIENT_DTS: &str = include_str!("../../clients/js/switchyard.d.ts");

/// The demo's files: name, content type, content.
const DEMO_FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../clients/js/demo/index.html"),
    ),
    (
        "app.js",
        "application/javascript; charset=utf-8",
        include_str!("../../clients/js/demo/app.js"),
    ),
    (
        "board.js",
        "application/javascript; charset=utf-8",
        include_str!("../../clients/js/demo/board.js"),
    ),
    (
        "inbox.js",
        "application/javascript; charset=utf-8",
        include_str!("../../clients/js/demo/inbox.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../clients/js/demo/style.css"),
    ),
];

/// The demo's page may load its own files and talk to this server only.
const DEMO_CSP: &str = "default-src 'self'; img-src 'self' data:; connect-src 'self'; \
                        object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Lifetime of a dev token; the board asks for a new one before it ends.
const DEV_TOKEN_SECS: i64 = 3600;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/client.js", get(client_js))
        .route("/client.d.ts", get(client_dts))
        .route("/demo", get(demo_index))
        .route("/demo/token", get(demo_token))
        .route("/demo/{file}", get(demo_file))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidate every time: an upgraded server serves a new client at once.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn client_js() -> Response {
    asset("application/javascript; charset=utf-8", CLIENT_JS)
}

async fn client_dts() -> Response {
    asset("application/typescript; charset=utf-8", CLIENT_DTS)
}

fn demo_off() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "The demo is off on this server (SWITCHYARD_DEMO=off)",
    )
}

async fn demo_index(State(app): State<AppState>) -> Result<Response, ApiError> {
    demo_file(State(app), Path("index.html".to_string())).await
}

async fn demo_file(
    State(app): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    if !app.demo.enabled {
        return Err(demo_off());
    }
    let (_, content_type, body) = DEMO_FILES
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("No demo file {file}")))?;
    let mut response = asset(content_type, body);
    if content_type.starts_with("text/html") {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static(DEMO_CSP),
        );
    }
    Ok(response)
}

#[derive(Deserialize)]
struct TokenQuery {
    sub: Option<String>,
}

async fn demo_token(
    State(app): State<AppState>,
    Query(query): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    if !app.demo.enabled {
        return Err(demo_off());
    }
    let off = || {
        ApiError::new(
            ErrorCode::NotFound,
            "Dev tokens are off: this server has a configured key. Mint a token with `switchyard token`",
        )
    };
    if !app.demo.dev_tokens {
        return Err(off());
    }
    let sub = query.sub.unwrap_or_default();
    if !is_valid_id(&sub) {
        return Err(ApiError::invalid_message(
            "sub must be 1-128 characters of [A-Za-z0-9_.@-]",
        ));
    }
    let mut claims = claims_for(&sub, DEV_TOKEN_SECS);
    claims.name = Some(sub.clone());
    claims.channels = vec!["project:demo".into(), "task:*".into()];
    claims.publish = vec!["project:demo".into(), "task:*".into()];
    let token = app.realtime.auth.sign(&claims).ok_or_else(off)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({ "token": token, "user_id": sub, "expires_in": DEV_TOKEN_SECS })),
    )
        .into_response())
}
