//! Response helpers shared by the HTTP transports.

use std::sync::Arc;

use axum::http::HeaderValue;
use axum::response::Response;
use switchyard_core::RateInfo;
use switchyard_core::event::Event;

/// `{"events":[envelope,...]` (left open for more fields), from envelopes
/// rendered once at append time.
pub fn events_array(events: &[Arc<Event>]) -> String {
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

/// Splits a comma-separated `channels` query value. Spaces around a name
/// and empty entries are dropped; nothing else is (`openapi.yaml`'s
/// `Channels` pattern says exactly this).
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|s| s.trim_matches(' ').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}
