//! The one error type of the service (PROTOCOL §11).
//!
//! Every failure, from any handler, extractor rejection, unknown route or
//! storage fault, becomes an [`ApiError`] and renders the same body:
//! `{"type":"error","code","message","details","request_id"}`.
//! Invariant: storage and internal errors are logged with their cause and
//! rendered with a fixed message, so internals never reach a client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::storage::StorageError;

/// The error codes of PROTOCOL §11, each with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MissingToken,
    InvalidToken,
    TokenExpired,
    PermissionDenied,
    NotFound,
    ChannelNotFound,
    InvalidMessage,
    InvalidChannel,
    SubscriptionLimitExceeded,
    InvalidOperation,
    Conflict,
    ResourceLocked,
    SessionExpired,
    PayloadTooLarge,
    RateLimitExceeded,
    MaxConnections,
    ServerError,
    Unavailable,
    /// Not in §11's table: a known path asked with the wrong method (405).
    MethodNotAllowed,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::ChannelNotFound => "channel_not_found",
            Self::InvalidMessage => "invalid_message",
            Self::InvalidChannel => "invalid_channel",
            Self::SubscriptionLimitExceeded => "subscription_limit_exceeded",
            Self::InvalidOperation => "invalid_operation",
            Self::Conflict => "conflict",
            Self::ResourceLocked => "resource_locked",
            Self::SessionExpired => "session_expired",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimitExceeded => "rate_limit_exceeded",
            Self::MaxConnections => "max_connections",
            Self::ServerError => "server_error",
            Self::Unavailable => "unavailable",
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::MissingToken | Self::InvalidToken | Self::TokenExpired => {
                StatusCode::UNAUTHORIZED
            }
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::NotFound | Self::ChannelNotFound => StatusCode::NOT_FOUND,
            Self::InvalidMessage | Self::InvalidChannel | Self::SubscriptionLimitExceeded => {
                StatusCode::BAD_REQUEST
            }
            Self::InvalidOperation => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict | Self::ResourceLocked => StatusCode::CONFLICT,
            Self::SessionExpired => StatusCode::GONE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimitExceeded | Self::MaxConnections => StatusCode::TOO_MANY_REQUESTS,
            Self::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// A failure answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A failure the client can act on: its code, a human message, details.
    #[error("{}: {message}", code.as_str())]
    Client {
        code: ErrorCode,
        message: String,
        details: Value,
    },
    /// A rate or connection limit refused the request (429, with headers).
    #[error("{}: {message}", code.as_str())]
    Limited {
        code: ErrorCode,
        message: String,
        info: crate::limits::RateInfo,
    },
    /// Storage failed; rendered as 503 `unavailable` or 500, never with the cause.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A bug or an unexpected condition; rendered as an opaque 500.
    #[error("internal: {0}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Client {
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    pub fn with_details(self, extra: Value) -> Self {
        match self {
            Self::Client { code, message, .. } => Self::Client {
                code,
                message,
                details: extra,
            },
            other => other,
        }
    }

    pub fn limited(
        code: ErrorCode,
        message: impl Into<String>,
        info: crate::limits::RateInfo,
    ) -> Self {
        Self::Limited {
            code,
            message: message.into(),
            info,
        }
    }

    pub fn invalid_message(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidMessage, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PermissionDenied, message)
    }

    /// The code this error renders with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Client { code, .. } | Self::Limited { code, .. } => *code,
            Self::Storage(e) if e.is_unavailable() => ErrorCode::Unavailable,
            Self::Storage(_) | Self::Internal(_) => ErrorCode::ServerError,
        }
    }

    /// The protocol's error body, for any transport.
    pub fn body(&self, request_id: &str) -> Value {
        let (message, details) = match self {
            Self::Client {
                message, details, ..
            } => (message.as_str(), details.clone()),
            Self::Limited { message, info, .. } => (
                message.as_str(),
                json!({ "limit": info.limit, "reset_at": info.reset_at() }),
            ),
            Self::Storage(_) if self.code() == ErrorCode::Unavailable => {
                ("Storage is unavailable, retry shortly", json!({}))
            }
            _ => ("Internal server error", json!({})),
        };
        json!({
            "type": "error",
            "code": self.code().as_str(),
            "message": message,
            "details": details,
            "request_id": request_id,
        })
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
        let code = self.code();
        match &self {
            Self::Client { .. } | Self::Limited { .. } => {
                tracing::debug!(error = %self, "request refused")
            }
            _ => tracing::error!(error = %self, "request failed"),
        }
        let body = self.body(&current_request_id());
        let mut response = (code.status(), axum::Json(body)).into_response();
        if let Self::Limited { info, .. } = &self {
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
