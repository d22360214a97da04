//! Shutdown and durability (PROTOCOL §3 durability, §13 shutdown): SIGTERM
//! answers waiting polls with 200, ends SSE streams cleanly, exits within
//! 10 s, and what was acknowledged is there after a restart.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

async fn metric(server: &Server, name: &str) -> i64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("metric {name} in {text}"))
}

async fn sigterm_answers_polls_ends_streams_and_events_survive_restart(backend: Backend) {
    let mut server = Server::start(&backend).await;
    let alice = token("alice");
    let before = server
        .broadcast("system", "before.restart", json!({"n": 1}))
        .await;

    let mut stream = server.sse("channels=system", &alice).await;
    stream.subscription().await;
    let poll = {
        let request = server
            .client
            .get(server.url(&format!(
                "/realtime/poll?channels=system&last_poll_id={before}&timeout=30"
            )))
            .bearer_auth(&alice);
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    // Wait until the poll is really waiting inside the server.
    for _ in 0..200 {
        if metric(&server, "switchyard_polls_waiting").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(metric(&server, "switchyard_polls_waiting").await, 1);

    server.sigterm();
    let answered = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("poll answered")
        .unwrap();
    assert_eq!(
        answered.status(),
        200,
        "a client that did nothing wrong gets 200 at shutdown"
    );
    let body: Value = answered.json().await.unwrap();
    assert_eq!(body["events"], json!([]));
    // Not below the request's cursor; it may have moved past the user's own
    // presence events, which are on other channels.
    assert!(
        body["last_poll_id"].as_u64() >= Some(before),
        "the cursor never moves back: {body}"
    );

    let goodbye = stream
        .next_frame_within(Duration::from_secs(10))
        .await
        .expect("a last frame");
    assert_eq!(
        goodbye.json(),
        json!({"type": "system", "event": "server.shutdown"})
    );
    assert!(
        stream
            .next_frame_within(Duration::from_secs(10))
            .await
            .is_none(),
        "the stream ends cleanly"
    );

    let (took, status) = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "clean exit, got {status}");
    assert!(took < Duration::from_secs(10));

    let db = server.db.clone();
    drop(server);
    let server = Server::start_on(db, &[]);
    let body: Value = server
        .get(
            "/realtime/poll?channels=system&last_poll_id=0&timeout=0",
            &alice,
        )
        .await
        .json()
        .await
        .unwrap();
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["id"].as_u64(), Some(before));
    assert_eq!(events[0]["event"], "before.restart");
    let after = server.broadcast("system", "after.restart", json!({})).await;
    assert!(
        after > before,
        "ids keep increasing across restarts: {before} then {after}"
    );
}

async fn a_stream_resumes_after_restart_with_its_cursor(backend: Backend) {
    let mut server = Server::start(&backend).await;
    let alice = token("alice");
    let mut stream = server.sse("channels=system", &alice).await;
    stream.subscription().await;
    let first = server.broadcast("system", "one", json!({})).await;
    let seen = stream.next_event(Duration::from_secs(5)).await;
    assert_eq!(seen["id"].as_u64(), Some(first));

    server.sigterm();
    server.wait_exit(Duration::from_secs(10));
    let db = server.db.clone();
    drop(server);
    let server = Server::start_on(db, &[]);
    let second = server.broadcast("system", "two", json!({})).await;
    // The browser's EventSource sends its last id back on reconnect.
    let res = server
        .client
        .get(server.url("/realtime/sse?channels=system"))
        .bearer_auth(&alice)
        .header("Last-Event-ID", first.to_string())
        .send()
        .await
        .unwrap();
    let mut stream = SseStream::new(res);
    stream.subscription().await;
    assert_eq!(
        stream.next_event(Duration::from_secs(5)).await["id"].as_u64(),
        Some(second)
    );
}

on_both_backends!(
    sigterm_answers_polls_ends_streams_and_events_survive_restart,
    a_stream_resumes_after_restart_with_its_cursor
);
