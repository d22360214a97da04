//! The core's failures, on the ground floor: every other module may use
//! this one, and it uses none of them.
//!
//! [`Error`] is the domain error every core operation returns: a refusal
//! the client can act on (with one of PROTOCOL §11's codes), a limit that
//! refused it (with [`RateInfo`] for the `X-RateLimit-*` headers), a storage
//! fault, or an internal fault. [`Error::body`] renders §11's error body;
//! transports add only their framing (the HTTP side maps each code to its
//! status). Invariant: storage and internal faults render with a fixed
//! message, so internals never reach a client.
//!
//! [`StorageError`] is what storage drivers report: each backend classifies
//! its own errors by numeric code into a [`StorageFault`].

use std::time::Duration;

use serde_json::{Value, json};

/// The error codes of PROTOCOL §11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Not in §11's table: the client took too long to send its request (408).
    RequestTimeout,
    /// Not in §11's table: a request head too large (431).
    HeadersTooLarge,
}

impl ErrorCode {
    /// Every code, in declaration order (`code as usize` is its index).
    pub const ALL: [ErrorCode; 21] = [
        Self::MissingToken,
        Self::InvalidToken,
        Self::TokenExpired,
        Self::PermissionDenied,
        Self::NotFound,
        Self::ChannelNotFound,
        Self::InvalidMessage,
        Self::InvalidChannel,
        Self::SubscriptionLimitExceeded,
        Self::InvalidOperation,
        Self::Conflict,
        Self::ResourceLocked,
        Self::SessionExpired,
        Self::PayloadTooLarge,
        Self::RateLimitExceeded,
        Self::MaxConnections,
        Self::ServerError,
        Self::Unavailable,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::HeadersTooLarge,
    ];

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
            Self::RequestTimeout => "request_timeout",
            Self::HeadersTooLarge => "headers_too_large",
        }
    }
}

/// Where a caller stands against one limit (PROTOCOL §12).
#[derive(Debug, Clone, Copy)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again (allowed) or the next request may pass (refused).
    pub reset_after: Duration,
}

impl RateInfo {
    /// `X-RateLimit-*` (and, when refused, `Retry-After`) header pairs.
    pub fn headers(&self, refused: bool) -> Vec<(&'static str, String)> {
        let reset = chrono::Utc::now().timestamp() as u64 + ceil_secs(self.reset_after);
        let mut headers = vec![
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", reset.to_string()),
        ];
        if refused {
            headers.push(("retry-after", self.retry_after_secs().to_string()));
        }
        headers
    }

    /// Of two limits a request spent, the one closer to refusing (by the
    /// share of its budget left): what the `X-RateLimit-*` headers show.
    pub fn tightest(a: Option<RateInfo>, b: Option<RateInfo>) -> Option<RateInfo> {
        match (a, b) {
            (Some(a), Some(b)) => {
                let share = |i: &RateInfo| i.remaining as u64 * 1_000_000 / i.limit.max(1) as u64;
                Some(if share(&b) < share(&a) { b } else { a })
            }
            (a, b) => a.or(b),
        }
    }

    /// Whole seconds until the next request may pass, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.reset_after).max(1)
    }

    /// When the limit lets the next request through, RFC 3339.
    pub fn reset_at(&self) -> String {
        let at =
            chrono::Utc::now() + chrono::Duration::from_std(self.reset_after).unwrap_or_default();
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// How a storage failure is to be treated, as the backend classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// The database could not be reached, is overloaded or busy: retry
    /// later (503).
    Unavailable,
    /// The storage was closed (the server is shutting down).
    Closed,
    /// The transaction lost to a concurrent one (a deadlock, a
    /// serialization failure) and was rolled back: running it again is
    /// expected to succeed; if it cannot be retried, retry later (503).
    Conflict,
    /// A constraint refused the write (a unique key, a check).
    Constraint,
    /// Anything else: a bug or a corrupt database (500).
    Other,
}

/// A failure reported by a storage driver, already classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StorageError {
    pub fault: StorageFault,
    /// The driver's own description, for logs only.
    pub message: String,
}

impl StorageError {
    pub fn new(fault: StorageFault, message: impl Into<String>) -> Self {
        Self {
            fault,
            message: message.into(),
        }
    }

    /// True when the database could not be reached or is shutting down,
    /// as opposed to a query that failed on a healthy database.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.fault,
            StorageFault::Unavailable | StorageFault::Closed | StorageFault::Conflict
        )
    }
}

/// What storage operations return.
pub type StorageResult<T> = std::result::Result<T, StorageError>;

/// A failure answered to a client, on any transport.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A refusal the client can act on: its code, a human message, details.
    #[error("{}: {message}", code.as_str())]
    Refused {
        code: ErrorCode,
        message: String,
        details: Value,
    },
    /// A rate or connection limit refused the request (429, with headers).
    #[error("{}: {message}", code.as_str())]
    Limited {
        code: ErrorCode,
        message: String,
        info: RateInfo,
    },
    /// Storage failed; rendered as `unavailable` or `server_error`, never with the cause.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A bug or an unexpected condition; rendered as an opaque `server_error`.
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    /// The same refusal with `details` (no effect on other variants).
    pub fn with_details(self, extra: Value) -> Self {
        match self {
            Self::Refused { code, message, .. } => Self::Refused {
                code,
                message,
                details: extra,
            },
            other => other,
        }
    }

    pub fn limited(code: ErrorCode, message: impl Into<String>, info: RateInfo) -> Self {
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

    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// The code this error renders with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Refused { code, .. } | Self::Limited { code, .. } => *code,
            Self::Storage(e) if e.is_unavailable() => ErrorCode::Unavailable,
            Self::Storage(_) | Self::Internal(_) => ErrorCode::ServerError,
        }
    }

    /// Whether this is the client's doing (logged quietly) rather than a fault.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::Limited { .. })
    }

    /// The limit that refused the request, if one did.
    pub fn rate_info(&self) -> Option<&RateInfo> {
        match self {
            Self::Limited { info, .. } => Some(info),
            _ => None,
        }
    }

    /// The protocol's error body (PROTOCOL §11), for any transport.
    pub fn body(&self, request_id: &str) -> Value {
        let (message, details) = match self {
            Self::Refused {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_codes_are_listed_at_their_index() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i, "{code:?}");
        }
    }
}
