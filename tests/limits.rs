//! Rate limits, connection limits and token expiry on open streams
//! (PROTOCOL §12 and §1): each limit trips at its documented count with the
//! exact status, body and headers, per user, with service tokens exempt.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const ON: (&str, &str) = ("SWITCHYARD_RATE_LIMITS", "on");

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Asserts a 429 with the documented body and headers.
async fn expect_limited(res: reqwest::Response, code: &str, limit: u64) {
    assert_eq!(
        header(&res, "x-ratelimit-limit").as_deref(),
        Some(limit.to_string().as_str())
    );
    assert_eq!(header(&res, "x-ratelimit-remaining").as_deref(), Some("0"));
    let reset: u64 = header(&res, "x-ratelimit-reset")
        .expect("X-RateLimit-Reset")
        .parse()
        .unwrap();
    assert!(
        reset >= chrono::Utc::now().timestamp() as u64,
        "reset is an epoch second not in the past"
    );
    let retry: u64 = header(&res, "retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body = expect_error(res, 429, code).await;
    assert_eq!(body["details"]["limit"], limit);
    let reset_at = body["details"]["reset_at"]
        .as_str()
        .expect("details.reset_at");
    chrono::DateTime::parse_from_rfc3339(reset_at).expect("reset_at is RFC 3339");
}

fn poll_path() -> &'static str {
    "/realtime/poll?channels=system&timeout=0"
}

/// Sends requests until one is refused and returns that refusal. Asserts
/// the first answer shows `limit - 1` remaining, each answer counts down by
/// one unless the quota refilled, and the number let through is `limit` plus
/// at most what the quota refilled while the requests ran (one unit per
/// `limit`th of `window`): the limit trips at its documented count.
async fn send_until_limited<F, Fut>(limit: u64, window: Duration, mut send: F) -> reqwest::Response
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    let started = Instant::now();
    let mut passed = 0u64;
    let mut last_remaining = None;
    loop {
        let res = send().await;
        if res.status() == 429 {
            let refill = (started.elapsed().as_secs_f64() / (window.as_secs_f64() / limit as f64))
                .floor() as u64;
            assert!(
                passed >= limit && passed <= limit + refill,
                "{passed} requests passed; the limit is {limit} (+{refill} refilled meanwhile)"
            );
            return res;
        }
        assert!(res.status().is_success(), "answered {}", res.status());
        assert_eq!(header(&res, "x-ratelimit-limit"), Some(limit.to_string()));
        let remaining: u64 = header(&res, "x-ratelimit-remaining")
            .unwrap()
            .parse()
            .unwrap();
        match last_remaining {
            None => assert_eq!(remaining, limit - 1, "the first request leaves limit - 1"),
            Some(before) => assert!(
                remaining <= before,
                "remaining never grows faster than the refill"
            ),
        }
        last_remaining = Some(remaining);
        passed += 1;
        assert!(passed <= 2 * limit, "the limit never tripped");
    }
}

const MINUTE: Duration = Duration::from_secs(60);

async fn polls_trip_at_30_a_minute_per_user(backend: Backend) {
    let server = Server::start_with(&backend, &[ON]).await;
    let alice = token("alice");
    let refused = send_until_limited(30, MINUTE, || server.get(poll_path(), &alice)).await;
    expect_limited(refused, "rate_limit_exceeded", 30).await;
    // Per user: bob is unaffected.
    assert_eq!(server.get(poll_path(), &token("bob")).await.status(), 200);
}

async fn client_actions_trip_at_100_a_minute_per_user(backend: Backend) {
    let server = Server::start_with(&backend, &[ON]).await;
    let alice = token_with("alice", json!({"publish": ["feed:*"]}));
    let publish = json!({"channel": "feed:updates", "event": "e", "data": {}});
    let refused = send_until_limited(100, MINUTE, || {
        server.post("/realtime/publish", &alice, &publish)
    })
    .await;
    expect_limited(refused, "rate_limit_exceeded", 100).await;
    let bob = token_with("bob", json!({"publish": ["feed:*"]}));
    assert_eq!(
        server
            .post("/realtime/publish", &bob, &publish)
            .await
            .status(),
        202
    );
}

async fn client_actions_are_also_limited_per_tenant(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        "[limits]\nactions_per_minute_per_user = 3\nactions_per_minute_per_tenant = 5\n",
    )
    .unwrap();
    let server = Server::start_with(
        &backend,
        &[ON, ("SWITCHYARD_CONFIG", config.to_str().unwrap())],
    )
    .await;
    let publish = json!({"channel": "feed:updates", "event": "e", "data": {}});
    let user = |sub: &str, tenant: &str| {
        token_with(sub, json!({"publish": ["feed:*"], "tenant_id": tenant}))
    };
    for _ in 0..3 {
        assert_eq!(
            server
                .post("/realtime/publish", &user("a", "acme"), &publish)
                .await
                .status(),
            202
        );
    }
    for _ in 0..2 {
        assert_eq!(
            server
                .post("/realtime/publish", &user("b", "acme"), &publish)
                .await
                .status(),
            202
        );
    }
    // b has used 2 of its 3, but the tenant's 5 are gone.
    expect_limited(
        server
            .post("/realtime/publish", &user("b", "acme"), &publish)
            .await,
        "rate_limit_exceeded",
        5,
    )
    .await;
    // Another tenant has its own budget.
    assert_eq!(
        server
            .post("/realtime/publish", &user("b", "other"), &publish)
            .await
            .status(),
        202
    );
}

async fn new_connections_trip_at_10_a_minute(backend: Backend) {
    let server = Server::start_with(&backend, &[ON]).await;
    let alice = token("alice");
    // Each stream is dropped at once, so only the new-connection rate is spent.
    let refused = send_until_limited(10, MINUTE, || {
        server.get("/realtime/sse?channels=system", &alice)
    })
    .await;
    expect_limited(refused, "rate_limit_exceeded", 10).await;
}

async fn the_eleventh_open_stream_is_refused_and_closing_one_frees_a_slot(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, "[limits]\nnew_connections_per_minute = 100\n").unwrap();
    let server = Server::start_with(
        &backend,
        &[ON, ("SWITCHYARD_CONFIG", config.to_str().unwrap())],
    )
    .await;
    let alice = token("alice");
    let mut streams = Vec::new();
    for _ in 0..10 {
        let mut s = server.sse("channels=system", &alice).await;
        s.subscription().await;
        streams.push(s);
    }
    expect_limited(
        server.get("/realtime/sse?channels=system", &alice).await,
        "max_connections",
        10,
    )
    .await;
    // Other users keep their own slots.
    server
        .sse("channels=system", &token("bob"))
        .await
        .subscription()
        .await;

    drop(streams.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = server.get("/realtime/sse?channels=system", &alice).await;
        if res.status() == 200 {
            break;
        }
        assert_eq!(res.status(), 429);
        assert!(
            Instant::now() < deadline,
            "the closed stream's slot was freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn service_tokens_are_not_limited(backend: Backend) {
    let server = Server::start_with(&backend, &[ON]).await;
    let service = service_token();
    for _ in 0..40 {
        let res = server.get(poll_path(), &service).await;
        assert_eq!(res.status(), 200);
        assert!(
            header(&res, "x-ratelimit-limit").is_none(),
            "no limit applies, so no limit headers"
        );
    }
}

async fn limits_off_lets_everything_through(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_RATE_LIMITS", "off")]).await;
    for _ in 0..40 {
        assert_eq!(server.get(poll_path(), &token("alice")).await.status(), 200);
    }
}

async fn an_expiring_token_gets_expiring_then_expired_then_the_stream_closes(backend: Backend) {
    let server = Server::start(&backend).await;
    let short = sign(&json!({"sub": "alice", "exp": exp_in(3)}));
    let mut stream = server.sse("channels=system", &short).await;
    stream.subscription().await;
    let expiring = stream
        .next_frame_within(Duration::from_secs(5))
        .await
        .expect("token.expiring");
    let message: Value = expiring.json();
    assert_eq!(message["type"], "system");
    assert_eq!(message["event"], "token.expiring");
    let left = message["data"]["expires_in"].as_u64().unwrap();
    assert!(
        (1..=3).contains(&left),
        "less than 300 s remain, so the warning is immediate: {message}"
    );
    let expired = stream
        .next_frame_within(Duration::from_secs(10))
        .await
        .expect("token.expired");
    assert_eq!(
        expired.json(),
        json!({"type": "system", "event": "token.expired"})
    );
    assert!(
        stream
            .next_frame_within(Duration::from_secs(5))
            .await
            .is_none(),
        "then the stream closes"
    );
}

on_both_backends!(
    polls_trip_at_30_a_minute_per_user,
    client_actions_trip_at_100_a_minute_per_user,
    client_actions_are_also_limited_per_tenant,
    new_connections_trip_at_10_a_minute,
    the_eleventh_open_stream_is_refused_and_closing_one_frees_a_slot,
    service_tokens_are_not_limited,
    limits_off_lets_everything_through,
    an_expiring_token_gets_expiring_then_expired_then_the_stream_closes,
);
