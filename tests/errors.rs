//! Errors (PROTOCOL §11): every code this server can produce today, with
//! its status and the one error body, plus 405 and request ids.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

const PROBE: &str = "/realtime/poll?channels=system&timeout=0";

/// Words that would betray internals in a client-facing message.
const INTERNAL_WORDS: &[&str] = &[
    "sqlx",
    "panicked",
    "error {",
    "anyhow",
    "backtrace",
    ".rs:",
    "src/",
    "thread '",
    "axum",
    "hyper",
    "tokio",
    "sqlite",
    "postgres",
    "database",
];

/// The full error contract: status, code, body shape (exactly the five
/// fields), `request_id` equal to the `x-request-id` header, and no internals.
async fn expect_protocol_error(res: reqwest::Response, status: u16, code: &str) -> Value {
    let header = res
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("{code} answer has an x-request-id header"))
        .to_str()
        .unwrap()
        .to_string();
    let body = expect_error(res, status, code).await;
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["type", "code", "message", "details", "request_id"]),
        "{body}"
    );
    assert_eq!(
        body["request_id"], header,
        "body request_id is the x-request-id header"
    );
    let text = body.to_string().to_lowercase();
    for word in INTERNAL_WORDS {
        assert!(
            !text.contains(word),
            "error body leaks internals ({word}): {body}"
        );
    }
    body
}

async fn post_raw(
    server: &Server,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    server
        .client
        .post(server.url(path))
        .bearer_auth(service_token())
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST")
}

async fn missing_token_is_401(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server.client.get(server.url(PROBE)).send().await.unwrap();
    expect_protocol_error(res, 401, "missing_token").await;
}

async fn invalid_token_is_401(backend: Backend) {
    let server = Server::start(&backend).await;
    expect_protocol_error(server.get(PROBE, "garbage").await, 401, "invalid_token").await;
}

async fn token_expired_is_401(backend: Backend) {
    let server = Server::start(&backend).await;
    let expired = sign(&json!({"sub": "alice", "exp": exp_in(-60)}));
    expect_protocol_error(server.get(PROBE, &expired).await, 401, "token_expired").await;
}

async fn permission_denied_is_403(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .get("/realtime/poll?channels=task:1&timeout=0", &token("alice"))
        .await;
    expect_protocol_error(res, 403, "permission_denied").await;
}

// Unknown routes, including unknown paths under /realtime, are 404
// not_found (with or without a token).
async fn unknown_route_is_not_found(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server.client.get(server.url("/nope")).send().await.unwrap();
    expect_protocol_error(res, 404, "not_found").await;
    expect_protocol_error(
        server.get("/realtime/nope", &token("alice")).await,
        404,
        "not_found",
    )
    .await;
    let res = server
        .post("/realtime/poll/missed/extra", &service_token(), &json!({}))
        .await;
    expect_protocol_error(res, 404, "not_found").await;
}

// A well-formed channel in an unknown namespace: 404 channel_not_found.
async fn unknown_namespace_is_channel_not_found(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .get(
            "/realtime/poll?channels=widget:1&timeout=0",
            &token("alice"),
        )
        .await;
    let body = expect_protocol_error(res, 404, "channel_not_found").await;
    assert_eq!(body["details"]["channel"], "widget:1");
    let res = server
        .post(
            "/realtime/broadcast",
            &service_token(),
            &json!({"channel": "widget:1", "event": "e", "data": 1}),
        )
        .await;
    expect_protocol_error(res, 404, "channel_not_found").await;
}

async fn malformed_json_body_is_invalid_message(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = post_raw(
        &server,
        "/realtime/broadcast",
        "application/json",
        r#"{"channel": "system", "event":"#,
    )
    .await;
    expect_protocol_error(res, 400, "invalid_message").await;
    let res = post_raw(&server, "/realtime/poll", "application/json", "[not json").await;
    expect_protocol_error(res, 400, "invalid_message").await;
}

// A JSON body sent without `Content-Type: application/json`.
async fn body_without_json_content_type_is_invalid_message(backend: Backend) {
    let server = Server::start(&backend).await;
    let body = json!({"channel": "system", "event": "e", "data": 1}).to_string();
    let res = post_raw(&server, "/realtime/broadcast", "text/plain", body.clone()).await;
    expect_protocol_error(res, 400, "invalid_message").await;
    let res = server
        .client
        .post(server.url("/realtime/broadcast"))
        .bearer_auth(service_token())
        .body(body)
        .send()
        .await
        .unwrap();
    expect_protocol_error(res, 400, "invalid_message").await;
}

async fn missing_required_field_is_invalid_message(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    let res = server
        .post(
            "/realtime/broadcast",
            &service,
            &json!({"channel": "system", "data": 1}),
        )
        .await;
    expect_protocol_error(res, 400, "invalid_message").await;
    let res = server
        .post(
            "/realtime/broadcast",
            &service,
            &json!({"event": "e", "data": 1}),
        )
        .await;
    expect_protocol_error(res, 400, "invalid_message").await;
    let res = server
        .post(
            "/realtime/conversations",
            &token("alice"),
            &json!({"user_id": "bob"}),
        )
        .await;
    expect_protocol_error(res, 400, "invalid_message").await;
    let res = server
        .post(
            "/realtime/notifications",
            &service,
            &json!({"user_id": "alice", "type": "t"}),
        )
        .await;
    expect_protocol_error(res, 400, "invalid_message").await;
}

async fn unknown_body_field_is_invalid_message(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    let res = server
        .post(
            "/realtime/broadcast",
            &service,
            &json!({"channel": "system", "event": "e", "data": 1, "colour": "red"}),
        )
        .await;
    expect_protocol_error(res, 400, "invalid_message").await;
    let res = server
        .post(
            "/realtime/poll",
            &service,
            &json!({"channels": ["system"], "timeout": 0, "cursor": 3}),
        )
        .await;
    expect_protocol_error(res, 400, "invalid_message").await;
}

// Query values of the wrong type or out of range.
async fn bad_query_value_is_invalid_message(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    for query in [
        "last_poll_id=abc",
        "last_poll_id=-1",
        "timeout=soon",
        "limit=0",
        "limit=x",
    ] {
        let res = server
            .get(&format!("/realtime/poll?channels=system&{query}"), &alice)
            .await;
        expect_protocol_error(res, 400, "invalid_message").await;
    }
    let res = server
        .get(
            "/realtime/poll/missed?channels=system&last_sequence=abc",
            &alice,
        )
        .await;
    expect_protocol_error(res, 400, "invalid_message").await;
    let res = server
        .get("/realtime/sse?channels=system&last_event_id=abc", &alice)
        .await;
    expect_protocol_error(res, 400, "invalid_message").await;
    let res = server
        .client
        .get(server.url("/realtime/sse?channels=system"))
        .bearer_auth(&alice)
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    expect_protocol_error(res, 400, "invalid_message").await;
}

async fn bad_since_is_invalid_message(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    for since in [
        "since=yesterday",
        "since=2026-13-01T00:00:00Z",
        "since=",
        "since=-5",
        "since=12.5",
    ] {
        let res = server
            .get(
                &format!("/realtime/activity?channels=system&{since}"),
                &alice,
            )
            .await;
        expect_protocol_error(res, 400, "invalid_message").await;
    }
    expect_protocol_error(
        server
            .get("/realtime/activity?channels=system", &alice)
            .await,
        400,
        "invalid_message",
    )
    .await;
}

// A name outside `namespace[:id]`: 400 invalid_channel naming it.
async fn malformed_channel_name_is_invalid_channel(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .get("/realtime/poll?channels=Task:1&timeout=0", &token("alice"))
        .await;
    let body = expect_protocol_error(res, 400, "invalid_channel").await;
    assert_eq!(body["details"]["channel"], "Task:1");
    for bad in ["task:", "a:b:c", "task:a b"] {
        let res = server
            .post(
                "/realtime/broadcast",
                &service_token(),
                &json!({"channel": bad, "event": "e", "data": 1}),
            )
            .await;
        expect_protocol_error(res, 400, "invalid_channel").await;
    }
}

// At most 50 channels per stream: 51 distinct is refused, 50 is fine.
async fn more_than_50_channels_is_subscription_limit_exceeded(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let list = |n: usize| {
        (0..n)
            .map(|i| format!("feed:{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let res = server
        .get(
            &format!("/realtime/poll?timeout=0&channels={}", list(51)),
            &alice,
        )
        .await;
    let body = expect_protocol_error(res, 400, "subscription_limit_exceeded").await;
    assert_eq!(body["details"]["limit"], 50);
    let res = server
        .get(&format!("/realtime/sse?channels={}", list(51)), &alice)
        .await;
    expect_protocol_error(res, 400, "subscription_limit_exceeded").await;
    let res = server
        .get(
            &format!("/realtime/poll?timeout=0&channels={}", list(50)),
            &alice,
        )
        .await;
    assert_eq!(res.status(), 200, "50 channels are allowed");
}

async fn stale_expected_last_id_is_conflict(backend: Backend) {
    let server = Server::start(&backend).await;
    let last = server.broadcast("project:1", "e", json!(1)).await;
    let res = server
        .post(
            "/realtime/broadcast",
            &service_token(),
            &json!({"channel": "project:1", "event": "e", "data": 2, "expected_last_id": last + 7}),
        )
        .await;
    let body = expect_protocol_error(res, 409, "conflict").await;
    assert_eq!(
        body["details"],
        json!({"channel": "project:1", "last_id": last})
    );
}

// `data` larger than 64 KiB encoded.
async fn oversized_data_is_payload_too_large(backend: Backend) {
    let server = Server::start(&backend).await;
    let data = json!({"blob": "x".repeat(64 * 1024)});
    let res = server
        .post(
            "/realtime/broadcast",
            &service_token(),
            &json!({"channel": "system", "event": "e", "data": data}),
        )
        .await;
    expect_protocol_error(res, 413, "payload_too_large").await;
}

// A request body over 1 MiB, though every event's data is under 64 KiB.
async fn oversized_body_is_payload_too_large(backend: Backend) {
    let server = Server::start(&backend).await;
    let chunk = "x".repeat(60 * 1024);
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"channel": format!("task:{i}"), "event": "e", "data": chunk}))
        .collect();
    let body = json!({"events": events}).to_string();
    assert!(body.len() > 1024 * 1024);
    let res = post_raw(&server, "/realtime/broadcast", "application/json", body).await;
    expect_protocol_error(res, 413, "payload_too_large").await;
}

// A known path with the wrong method: 405 method_not_allowed and an Allow
// header listing the methods the path answers.
async fn wrong_method_is_method_not_allowed_with_allow_header(backend: Backend) {
    let server = Server::start(&backend).await;
    for (method, path, allowed) in [
        (
            reqwest::Method::DELETE,
            "/realtime/poll",
            vec!["GET", "POST"],
        ),
        (reqwest::Method::GET, "/realtime/broadcast", vec!["POST"]),
        (reqwest::Method::PUT, "/healthz", vec!["GET"]),
    ] {
        let res = server
            .client
            .request(method.clone(), server.url(path))
            .bearer_auth(service_token())
            .send()
            .await
            .unwrap();
        let allow = res
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("{method} {path} has an Allow header"))
            .to_str()
            .unwrap();
        let mut got: Vec<&str> = allow.split(',').map(str::trim).collect();
        got.sort();
        assert_eq!(got, allowed, "Allow for {method} {path}");
        expect_protocol_error(res, 405, "method_not_allowed").await;
    }
}

// A caller's X-Request-Id is echoed in the header and the error body; without
// one, each request gets its own id.
async fn caller_request_id_is_echoed(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .client
        .get(server.url(PROBE))
        .header("x-request-id", "client-req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "client-req-42");
    let body = expect_protocol_error(res, 401, "missing_token").await;
    assert_eq!(body["request_id"], "client-req-42");

    let res = server
        .client
        .get(server.url("/healthz"))
        .header("x-request-id", "ok-req-7")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["x-request-id"],
        "ok-req-7",
        "echoed on success too"
    );

    let a = expect_protocol_error(server.get(PROBE, "garbage").await, 401, "invalid_token").await;
    let b = expect_protocol_error(server.get(PROBE, "garbage").await, 401, "invalid_token").await;
    assert_ne!(
        a["request_id"], b["request_id"],
        "generated ids are per request"
    );
}

/// A server with `[limits]` from a TOML file and rate limits on.
async fn limited_server(backend: &Backend, limits: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, format!("[limits]\n{limits}\n")).unwrap();
    let server = Server::start_with(
        backend,
        &[
            ("SWITCHYARD_RATE_LIMITS", "on"),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
        ],
    )
    .await;
    (server, dir)
}

// Past a rate limit: 429 rate_limit_exceeded with Retry-After.
async fn exceeding_a_rate_limit_is_rate_limit_exceeded(backend: Backend) {
    let (server, _dir) = limited_server(&backend, "polls_per_minute = 1").await;
    let alice = token("alice");
    assert_eq!(server.get(PROBE, &alice).await.status(), 200);
    let res = server.get(PROBE, &alice).await;
    assert!(
        res.headers().get("retry-after").is_some(),
        "429 carries Retry-After"
    );
    let body = expect_protocol_error(res, 429, "rate_limit_exceeded").await;
    assert_eq!(body["details"]["limit"], 1);
}

// Past the open-stream limit: 429 max_connections.
async fn too_many_open_streams_is_max_connections(backend: Backend) {
    let (server, _dir) = limited_server(
        &backend,
        "open_streams_per_user = 1\nnew_connections_per_minute = 100",
    )
    .await;
    let alice = token("alice");
    let mut open = server.sse("channels=system", &alice).await;
    open.subscription().await;
    let res = server.get("/realtime/sse?channels=system", &alice).await;
    let body = expect_protocol_error(res, 429, "max_connections").await;
    assert_eq!(body["details"]["limit"], 1);
}

on_both_backends!(
    missing_token_is_401,
    invalid_token_is_401,
    token_expired_is_401,
    permission_denied_is_403,
    unknown_route_is_not_found,
    unknown_namespace_is_channel_not_found,
    malformed_json_body_is_invalid_message,
    body_without_json_content_type_is_invalid_message,
    missing_required_field_is_invalid_message,
    unknown_body_field_is_invalid_message,
    bad_query_value_is_invalid_message,
    bad_since_is_invalid_message,
    malformed_channel_name_is_invalid_channel,
    more_than_50_channels_is_subscription_limit_exceeded,
    stale_expected_last_id_is_conflict,
    oversized_data_is_payload_too_large,
    oversized_body_is_payload_too_large,
    wrong_method_is_method_not_allowed_with_allow_header,
    caller_request_id_is_echoed,
    exceeding_a_rate_limit_is_rate_limit_exceeded,
    too_many_open_streams_is_max_connections,
);
