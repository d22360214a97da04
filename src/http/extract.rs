//! Extractors whose every rejection is an [`ApiError`], so malformed JSON,
//! bad query strings and missing tokens all get the protocol's error body.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use switchyard_core::limits::Rate;
use switchyard_core::{ErrorCode, Identity};

use super::error::ApiError;
use super::state::AppState;

/// Largest request body (a publish batch).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body, read within the body deadline and the size cap, then
/// parsed once. A refusal (no JSON content type, too large, too slow,
/// malformed) costs the caller one client action, like an accepted request:
/// a flood of bad requests meets 429.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let who = req.extensions().get::<Identity>().cloned();
        let read = async {
            if !is_json(req.headers()) {
                return Err(ApiError::invalid_message(
                    "Send the body as JSON with 'Content-Type: application/json'",
                ));
            }
            let bytes = body_bytes(req, state).await?;
            parse(&bytes)
        };
        match read.await {
            Ok(value) => Ok(Self(value)),
            Err(refusal) => Err(charged(state, who.as_ref(), refusal)),
        }
    }
}

/// A refused request still spends one client action of its user; past the
/// limit the answer is the limit's 429 rather than the refusal.
fn charged(state: &AppState, who: Option<&Identity>, refusal: ApiError) -> ApiError {
    match who.map(|who| state.realtime.limits.check(who, Rate::Action)) {
        Some(Err(limited)) => ApiError(limited),
        _ => refusal,
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"))
}

fn too_large() -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, "Request body is too large")
        .with_details(serde_json::json!({ "limit": MAX_BODY_BYTES }))
}

/// The body, whole: refused at once when its declared length is over the
/// cap, cut when more arrives than the cap, 408 when it does not arrive
/// within the body deadline.
async fn body_bytes(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(req.into_body(), MAX_BODY_BYTES);
    match tokio::time::timeout(state.deadlines.body, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            "The request body took too long to arrive",
        )
        .with_details(serde_json::json!({ "timeout_secs": state.deadlines.body.as_secs() }))),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::invalid_message(format!(
            "The request body could not be read: {e}"
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Every request body is a JSON object: serde would also fill a struct
/// from an array (`[null, null]`), which no client means and
/// `openapi.yaml` does not allow.
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: T = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_message(format!("Invalid JSON body: {e}")))?;
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid_message("The body must be a JSON object"));
    }
    Ok(value)
}

/// A query string.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::invalid_message(format!("Invalid query string: {}", rejection.body_text()))
    }
}

/// A path parameter.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::invalid_message(format!("Invalid path: {}", rejection.body_text()))
    }
}

/// The caller, from `Authorization: Bearer`, the `token` query parameter or
/// the `switchyard_token` cookie, in that order. With the cookie, a
/// WebSocket upgrade or a request that changes state must come from a
/// trusted origin (see [`super::origin`]).
pub struct Auth(pub Identity);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = match bearer(parts).or_else(|| query_token(parts)) {
            Some(token) => Some(token),
            None => match cookie_token(parts) {
                Some(token) => {
                    check_cookie_origin(parts, state)?;
                    Some(token)
                }
                None => None,
            },
        };
        let Some(token) = token else {
            return Err(ApiError::new(
                ErrorCode::MissingToken,
                "Send a token: 'Authorization: Bearer <jwt>', '?token=<jwt>' or the 'switchyard_token' cookie",
            ));
        };
        let who = state.realtime.authenticate(&token).await?;
        // For the body extractor, which charges refused requests to the caller.
        parts.extensions.insert(who.clone());
        Ok(Auth(who))
    }
}

/// 403 when a cookie-authenticated WebSocket upgrade or state-changing
/// request comes from an origin not trusted with the cookie.
fn check_cookie_origin(parts: &Parts, state: &AppState) -> Result<(), ApiError> {
    let acts = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
        || parts.headers.contains_key(header::UPGRADE);
    if !acts {
        return Ok(());
    }
    // An Origin that is not text is not one we trust.
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("null"));
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if state.cookie_origins.allow(origin, host) {
        return Ok(());
    }
    let shown = origin
        .unwrap_or_default()
        .chars()
        .take(128)
        .collect::<String>();
    Err(ApiError::new(
        ErrorCode::PermissionDenied,
        format!(
            "The token cookie may not be used from origin '{shown}': send the token in the \
             Authorization header, or list the origin in SWITCHYARD_CORS_ORIGINS"
        ),
    )
    .with_details(serde_json::json!({ "origin": shown })))
}

fn bearer(parts: &Parts) -> Option<String> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn query_token(parts: &Parts) -> Option<String> {
    let query = parts.uri.query()?;
    form_pairs(query)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

fn cookie_token(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == "switchyard_token")
        .map(|(_, v)| v.to_string())
}

fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
}

/// A JSON body that may be left out entirely: no bytes (or only
/// whitespace), with or without `Content-Type: application/json` (what
/// generated clients send for an optional body they leave out), is
/// `T::default()`. Anything else is read as [`Json`] reads it.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let who = req.extensions().get::<Identity>().cloned();
        let json = is_json(req.headers());
        let read = async {
            let bytes = body_bytes(req, state).await?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(T::default());
            }
            if !json {
                return Err(ApiError::invalid_message(
                    "Send the body as JSON with 'Content-Type: application/json'",
                ));
            }
            parse(&bytes)
        };
        match read.await {
            Ok(value) => Ok(Self(value)),
            Err(refusal) => Err(charged(state, who.as_ref(), refusal)),
        }
    }
}
