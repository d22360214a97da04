//! The front door under attack: slow heads and bodies, idle and hoarded
//! connections, oversized and malformed requests, amplified publishes, and
//! shutdown against clients that do not cooperate. Each test performs the
//! attack (bounded in time and count, on loopback) and then shows the
//! service still serving, with the protocol's error body wherever it
//! answers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FAST: &[(&str, &str)] = &[
    ("SWITCHYARD_HEADER_TIMEOUT_SECS", "1"),
    ("SWITCHYARD_BODY_TIMEOUT_SECS", "1"),
    ("SWITCHYARD_IDLE_TIMEOUT_SECS", "2"),
];

fn addr(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(addr(server)).await.expect("connect")
}

/// Everything the server sends until it closes (or `limit` passes).
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// One response (head and a Content-Length body) off a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("a response within 5 s")
            .expect("read");
        assert!(
            n > 0,
            "closed before a response: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// The JSON body of a raw response, checked to be the protocol's error.
fn error_body(response: &str, status: u16, code: &str) -> Value {
    assert!(
        response.starts_with(&format!("HTTP/1.1 {status} ")),
        "expected {status}, got: {response}"
    );
    let body = &response[response.find("\r\n\r\n").expect("a head") + 4..];
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"));
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["request_id"].is_string(), "{body}");
    body
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn healthy(server: &Server) {
    let res = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(res.status(), 200);
}

/// A head that never completes is answered 408 with the error body after
/// the header deadline, on a new connection and on a kept-alive one.
async fn slow_heads_are_cut_with_408(backend: Backend) {
    let server = Server::start_with(&backend, FAST).await;
    let mut first = connect(&server).await;
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut first, Duration::from_secs(10)).await;
    error_body(&answer, 408, "request_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut after {:?}",
        started.elapsed()
    );

    let mut kept = connect(&server).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut kept).await.starts_with("HTTP/1.1 200"));
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let answer = read_to_close(&mut kept, Duration::from_secs(10)).await;
    error_body(&answer, 408, "request_timeout");
    healthy(&server).await;
}

/// A kept-alive connection with nothing to do is closed after the idle
/// deadline; so is a new one that never speaks.
async fn idle_connections_are_closed(backend: Backend) {
    let server = Server::start_with(&backend, FAST).await;
    let mut kept = connect(&server).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut kept).await.starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let rest = read_to_close(&mut kept, Duration::from_secs(10)).await;
    assert!(rest.is_empty(), "nothing more is sent: {rest}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed after {:?}",
        started.elapsed()
    );
    let mut silent = connect(&server).await;
    let started = Instant::now();
    assert!(
        read_to_close(&mut silent, Duration::from_secs(10))
            .await
            .is_empty()
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    healthy(&server).await;
}

/// A body that stops half way is answered 408 with the error body.
async fn a_half_sent_body_is_answered_408(backend: Backend) {
    let server = Server::start_with(&backend, FAST).await;
    let mut stream = connect(&server).await;
    let head = format!(
        "POST /realtime/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        token_with("alice", json!({"publish": ["feed:*"]}))
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut stream, Duration::from_secs(10)).await;
    error_body(&answer, 408, "request_timeout");
    healthy(&server).await;
}

/// A body refused for its size is answered 413 before it is read; the
/// client, still sending, must get that answer rather than a reset: the
/// server reads and discards what follows (for a bounded time) before it
/// closes.
async fn an_oversized_body_gets_its_answer_not_a_reset(backend: Backend) {
    let server = Server::start(&backend).await;
    for _ in 0..5 {
        let stream = connect(&server).await;
        let body_len = 2 * 1024 * 1024;
        let head = format!(
            "POST /realtime/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n",
            token_with("alice", json!({"publish": ["feed:*"]}))
        );
        // Like most clients: the whole request is written, then the answer read.
        let mut stream = stream;
        let mut sent = stream.write_all(head.as_bytes()).await;
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..body_len / chunk.len() {
            if sent.is_err() {
                break;
            }
            sent = stream.write_all(&chunk).await;
        }
        let mut out = Vec::new();
        let read_all = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
            .await
            .expect("the server closes within 10 s");
        let answer = String::from_utf8_lossy(&out).into_owned();
        assert!(
            sent.is_ok() && read_all.is_ok(),
            "the answer was lost to a reset: {sent:?} {read_all:?} after {answer:?}"
        );
        error_body(&answer, 413, "payload_too_large");
    }
    healthy(&server).await;
}

/// Heads hyper refuses (too large, too many headers, a bad length) carry
/// the protocol's error body too.
async fn refused_heads_carry_the_error_body(backend: Backend) {
    let server = Server::start(&backend).await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(9000)
            )
            .into_bytes(),
            431,
            "headers_too_large",
        ),
        (
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..120)
                    .map(|n| format!("X-H{n}: v\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
            431,
            "headers_too_large",
        ),
        (
            b"POST /realtime/publish HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
            "invalid_message",
        ),
    ];
    for (request, status, code) in cases {
        let mut stream = connect(&server).await;
        stream.write_all(&request).await.unwrap();
        let answer = read_to_close(&mut stream, Duration::from_secs(5)).await;
        error_body(&answer, status, code);
    }
    healthy(&server).await;
}

/// At the connection cap, the longest-idle connection makes room; when none
/// is idle, health checks are still answered and the rest get a 503.
async fn the_connection_cap_keeps_health_checks_answering(backend: Backend) {
    let mut env = FAST.to_vec();
    env.push(("SWITCHYARD_MAX_CONNECTIONS", "20"));
    env.push(("SWITCHYARD_IDLE_TIMEOUT_SECS", "60"));
    env.push(("SWITCHYARD_HEADER_TIMEOUT_SECS", "60"));
    let server = Server::start_with(&backend, &env).await;
    // 20 connections left idle after one request each.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut c = connect(&server).await;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut c).await.starts_with("HTTP/1.1 200"));
        idle.push(c);
    }
    // A newcomer is served: the longest-idle one was closed for it.
    let mut newcomer = connect(&server).await;
    newcomer
        .write_all(b"GET /realtime/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_response(&mut newcomer)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let oldest = read_to_close(&mut idle[0], Duration::from_secs(5)).await;
    assert!(
        oldest.is_empty(),
        "the longest-idle connection was closed: {oldest}"
    );
    // Hoarders: connections that never finish their head (never idle).
    let mut hoard = Vec::new();
    for _ in 0..40 {
        let mut c = connect(&server).await;
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost").await.unwrap();
        hoard.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    healthy(&server).await;
    let mut other = connect(&server).await;
    other
        .write_all(b"GET /realtime/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut other, Duration::from_secs(5)).await;
    error_body(&answer, 503, "unavailable");
    drop(hoard);
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = server
        .client
        .get(server.url("/realtime/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200, "room again once the hoarders left");
}

/// Big JSON is refused before it is walked, and a flood of refused requests
/// meets the user's limit like accepted ones would.
async fn refused_requests_are_charged(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_RATE_LIMITS", "on")]).await;
    let alice = token_with("alice", json!({"publish": ["feed:*"]}));
    let pad: Vec<Value> = (0..60_000).map(|_| json!({"a": 1})).collect();
    let big = json!({"channel": "feed:x", "event": "e", "data": pad});
    let res = server.post("/realtime/publish", &alice, &big).await;
    let body = expect_error(res, 413, "payload_too_large").await;
    assert_eq!(body["details"]["limit"], 65536);
    let mut statuses = Vec::new();
    for _ in 0..120 {
        let res = server
            .client
            .post(server.url("/realtime/publish"))
            .bearer_auth(&alice)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
        if res.status() == 429 {
            expect_error(res, 429, "rate_limit_exceeded").await;
            break;
        }
    }
    assert_eq!(statuses.first(), Some(&400));
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        statuses.len() <= 101,
        "{} bad requests before 429",
        statuses.len()
    );
    // Deep nesting is refused as malformed, not walked.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let res = server
        .client
        .post(server.url("/realtime/publish"))
        .bearer_auth(token_with("bob", json!({"publish": ["feed:*"]})))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"channel":"feed:x","event":"e","data":{deep}}}"#
        ))
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "invalid_message").await;
    healthy(&server).await;
}

/// One request cannot multiply into hundreds of events: events x channels
/// are charged one action each, and a request holds at most its caps.
async fn publishes_are_charged_per_event_and_byte(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_RATE_LIMITS", "on")]).await;
    let alice = token_with(
        "alice",
        json!({"publish": ["task:*"], "channels": ["task:*"]}),
    );
    let channels: Vec<String> = (0..50).map(|n| format!("task:{n}")).collect();
    let data = "x".repeat(62_000);
    let events: Vec<Value> = (0..16)
        .map(|_| json!({"channels": channels, "event": "x", "data": data}))
        .collect();
    let res = server
        .post("/realtime/publish", &alice, &json!({"events": events}))
        .await;
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert!(
        (status == 413 && body["code"] == "payload_too_large")
            || (status == 429 && body["code"] == "rate_limit_exceeded"),
        "{status} {body}"
    );
    // 120 events (2 x 60 channels... bounded to 50 a stream, so 3 x 40)
    // is more than the 100 actions a minute: refused at once.
    let bob = token_with("bob", json!({"publish": ["task:*"]}));
    let forty: Vec<String> = (0..40).map(|n| format!("task:{n}")).collect();
    let three: Vec<Value> = (0..3)
        .map(|_| json!({"channels": forty, "event": "x", "data": 1}))
        .collect();
    let res = server
        .post("/realtime/publish", &bob, &json!({"events": three}))
        .await;
    expect_error(res, 429, "rate_limit_exceeded").await;
    // A small batch passes and shows what it cost.
    let carol = token_with("carol", json!({"publish": ["task:*"]}));
    let ten: Vec<Value> = (0..10)
        .map(|n| json!({"channel": format!("task:{n}"), "event": "x", "data": 1}))
        .collect();
    let res = server
        .post("/realtime/publish", &carol, &json!({"events": ten}))
        .await;
    assert_eq!(res.status(), 202);
    assert_eq!(header(&res, "x-ratelimit-remaining").as_deref(), Some("90"));
    // Bytes: 1 MiB a minute of data per user.
    let dave = token_with("dave", json!({"publish": ["task:*"]}));
    let big = "y".repeat(60_000);
    let mut refused = None;
    for n in 0..30 {
        let res = server
            .post(
                "/realtime/publish",
                &dave,
                &json!({"channel": format!("task:{n}"), "event": "x", "data": big}),
            )
            .await;
        if res.status() == 429 {
            refused = Some((n, expect_error(res, 429, "rate_limit_exceeded").await));
            break;
        }
        assert_eq!(res.status(), 202);
    }
    let (n, body) = refused.expect("the byte budget tripped");
    assert!(
        (16..=18).contains(&n),
        "refused after {n} publishes of 60 KB: {body}"
    );
    healthy(&server).await;
}

/// SIGTERM finishes quickly and cleanly whatever clients do: a stream whose
/// reader stopped reading, and a request whose body never comes.
async fn shutdown_is_quick_whatever_clients_do(backend: Backend) {
    let mut server = Server::start(&backend).await;
    let alice = token("alice");
    // A reader that never reads, while 250 x 60 KB broadcasts pile up.
    let mut stalled = connect(&server).await;
    stalled
        .write_all(
            format!("GET /realtime/sse?channels=system HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let big = "z".repeat(60_000);
    for _ in 0..250 {
        server.broadcast("system", "big", json!(big)).await;
    }
    // A publish whose body never arrives.
    let mut half = connect(&server).await;
    half.write_all(
        format!(
            "POST /realtime/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\
             Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.sigterm();
    let (took, status) = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
    drop((stalled, half));
}

on_both_backends!(
    slow_heads_are_cut_with_408,
    idle_connections_are_closed,
    a_half_sent_body_is_answered_408,
    refused_heads_carry_the_error_body,
    an_oversized_body_gets_its_answer_not_a_reset,
    the_connection_cap_keeps_health_checks_answering,
    refused_requests_are_charged,
    publishes_are_charged_per_event_and_byte,
    shutdown_is_quick_whatever_clients_do,
);
