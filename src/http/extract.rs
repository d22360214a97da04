//! Extractors whose every rejection is an [`ApiError`], so malformed JSON,
//! bad query strings and missing tokens all get the protocol's error body.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::AppState;
use crate::auth::Identity;
use crate::error::{ApiError, ErrorCode};

/// A JSON body; see [`From<JsonRejection>`] for the errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// A query string.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::invalid_message(
                "Send the body as JSON with 'Content-Type: application/json'",
            ),
            JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(ErrorCode::PayloadTooLarge, "Request body is too large")
                    .with_details(serde_json::json!({ "limit": super::MAX_BODY_BYTES }))
            }
            other => ApiError::invalid_message(format!("Invalid JSON body: {}", other.body_text())),
        }
    }
}

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
/// the `switchyard_token` cookie, in that order.
pub struct Auth(pub Identity);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)
            .or_else(|| query_token(parts))
            .or_else(|| cookie_token(parts));
        let Some(token) = token else {
            return Err(ApiError::new(
                ErrorCode::MissingToken,
                "Send a token: 'Authorization: Bearer <jwt>', '?token=<jwt>' or the 'switchyard_token' cookie",
            ));
        };
        state.auth.verify(&token).map(Auth)
    }
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

/// PROTOCOL §1: a request naming a `user_id` other than the token's gets 403.
pub fn check_user_id(who: &Identity, named: Option<&str>) -> Result<(), ApiError> {
    match named {
        Some(id) if id != who.user_id => Err(ApiError::permission_denied(format!(
            "user_id '{id}' does not match the token's subject"
        ))),
        _ => Ok(()),
    }
}
