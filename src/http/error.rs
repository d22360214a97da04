//! The one HTTP error type: the core's [`Error`] with its HTTP status and
//! headers (PROTOCOL §11).
//!
//! Every failure, from any handler, extractor rejection, unknown route or
//! storage fault, becomes an [`ApiError`] and renders the same body:
//! `{"type":"error","code","message","details","request_id"}`. Invariant:
//! storage and internal faults are logged with their cause and rendered
//! with a fixed message, so internals never reach a client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchyard_core::error::{Error, ErrorCode};

/// A failure answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(Error::new(code, message))
    }

    pub fn invalid_message(message: impl Into<String>) -> Self {
        Self(Error::invalid_message(message))
    }

    pub fn with_details(self, details: serde_json::Value) -> Self {
        Self(self.0.with_details(details))
    }

    pub fn code(&self) -> ErrorCode {
        self.0.code()
    }
}

/// The HTTP status of each of §11's codes.
pub fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MissingToken | ErrorCode::InvalidToken | ErrorCode::TokenExpired => {
            StatusCode::UNAUTHORIZED
        }
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::NotFound | ErrorCode::ChannelNotFound => StatusCode::NOT_FOUND,
        ErrorCode::InvalidMessage
        | ErrorCode::InvalidChannel
        | ErrorCode::SubscriptionLimitExceeded => StatusCode::BAD_REQUEST,
        ErrorCode::InvalidOperation => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Conflict | ErrorCode::ResourceLocked => StatusCode::CONFLICT,
        ErrorCode::SessionExpired => StatusCode::GONE,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimitExceeded | ErrorCode::MaxConnections => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    }
}

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware so
    /// that errors rendered anywhere below it carry it.
    pub static REQUEST_ID: String;
}

/// The current request's id, or a fresh one outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| uuid::Uuid::now_v7().to_string())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        let code = error.code();
        if error.is_refusal() {
            tracing::debug!(error = %error, "request refused");
        } else {
            tracing::error!(error = %error, "request failed");
        }
        switchyard_core::metrics::error_answered(code);
        let body = error.body(&current_request_id());
        let mut response = (status(code), axum::Json(body)).into_response();
        if let Some(info) = error.rate_info() {
            for (name, value) in info.headers(true) {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, value);
                }
            }
        }
        if code == ErrorCode::Unavailable {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
