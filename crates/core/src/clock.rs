//! Time as the protocol writes it: milliseconds since the epoch inside the
//! service, RFC 3339 UTC with milliseconds on the wire (PROTOCOL
//! conventions). A leaf module.

use chrono::{DateTime, SecondsFormat, Utc};

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-22T14:30:45.123Z`.
pub fn format_timestamp(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}
