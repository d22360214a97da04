//! One event on several channels (PROTOCOL §6): one id, visible on each of
//! its channels, read once by a reader of several of them, on SSE, long
//! polling, WebSocket and activity, from memory and from storage, across
//! nodes; the envelope lists its `channels`; the publisher must be allowed
//! every one of them.

mod common;

use std::time::Duration;

use common::ws::Ws;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// Broadcasts one event on `channels`; returns its id.
async fn broadcast_to(server: &Server, channels: &[&str], event: &str) -> u64 {
    let res = server
        .post(
            "/realtime/broadcast",
            &service_token(),
            &json!({"channels": channels, "event": event, "data": {"n": 1}}),
        )
        .await;
    let status = res.status();
    let receipt: Value = res.json().await.unwrap();
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["ids"].as_array().unwrap().len(), 1, "{receipt}");
    receipt["id"].as_u64().unwrap()
}

/// The next event that is not presence's (opening a stream announces the
/// user on channels of namespaces with presence).
async fn next_app_event(stream: &mut SseStream) -> Value {
    loop {
        let event = stream.next_event(WAIT).await;
        if !event["event"].as_str().unwrap().starts_with("user.") {
            return event;
        }
    }
}

async fn next_app_ws_event(ws: &mut Ws) -> Value {
    loop {
        let event = ws.next_event().await;
        if !event["event"].as_str().unwrap().starts_with("user.") {
            return event;
        }
    }
}

fn app_ids(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| !e["event"].as_str().unwrap().starts_with("user."))
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

async fn poll(server: &Server, query: &str) -> Value {
    let res = server
        .get(&format!("/realtime/poll?{query}"), &service_token())
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn ids(events: &Value) -> Vec<u64> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect()
}

async fn every_transport_delivers_it_once(backend: Backend) {
    let server = Server::start(&backend).await;
    let reader = token_with("alice", json!({"channels": ["task:*", "project:*"]}));
    let mut both = server.sse("channels=task:1,project:9", &reader).await;
    both.subscription().await;
    let mut one = server.sse("channels=project:9", &reader).await;
    one.subscription().await;
    let mut ws = Ws::connect(&server, &reader).await;
    ws.expect().await;
    ws.ok(json!({"type": "subscribe", "channels": ["task:1", "project:9"]}))
        .await;

    let id = broadcast_to(&server, &["task:1", "project:9"], "task.moved").await;
    let marker = server.broadcast("task:1", "marker", json!(null)).await;
    for stream in [&mut both, &mut one] {
        let event = next_app_event(stream).await;
        assert_eq!(event["id"], id);
        assert_eq!(event["channel"], "task:1");
        assert_eq!(event["channels"], json!(["task:1", "project:9"]));
    }
    assert_eq!(
        next_app_event(&mut both).await["id"],
        marker,
        "no second copy on a stream of both channels"
    );
    let event = next_app_ws_event(&mut ws).await;
    assert_eq!(
        (event["id"].as_u64(), event["channels"].clone()),
        (Some(id), json!(["task:1", "project:9"]))
    );
    assert_eq!(next_app_ws_event(&mut ws).await["id"], marker);

    let answer = poll(
        &server,
        "channels=task:1,project:9&last_poll_id=0&timeout=0",
    )
    .await;
    assert_eq!(app_ids(&answer["events"]), vec![id, marker]);
    let answer = poll(&server, "channels=project:9&last_poll_id=0&timeout=0").await;
    assert_eq!(app_ids(&answer["events"]), vec![id]);
    // A limit of one from just before it: the event, once, and more to come.
    let answer = poll(
        &server,
        &format!(
            "channels=task:1,project:9&last_poll_id={}&timeout=0&limit=1",
            id - 1
        ),
    )
    .await;
    assert_eq!(
        (ids(&answer["events"]), answer["has_more"].clone()),
        (vec![id], json!(true))
    );
    let since = chrono::Utc::now().timestamp_millis() - 60_000;
    let res = server
        .get(
            &format!("/realtime/activity?since={since}&channels=task:1,project:9"),
            &service_token(),
        )
        .await;
    let activity: Value = res.json().await.unwrap();
    assert_eq!(app_ids(&activity["events"]), vec![id, marker], "{activity}");
}

/// Read back from storage (after a restart nothing is in memory): once per
/// reader, the same envelope, and a cursor between resumes correctly.
async fn storage_reads_deliver_it_once(backend: Backend) {
    let mut server = Server::start(&backend).await;
    let mut ids_sent = Vec::new();
    for n in 0..5 {
        ids_sent
            .push(broadcast_to(&server, &["feed:a", "feed:b", "feed:c"], &format!("e{n}")).await);
        ids_sent.push(server.broadcast("feed:b", "single", json!(n)).await);
    }
    server.sigterm();
    server.wait_exit(Duration::from_secs(10));
    let server = Server::start_on(server.db.clone(), &[]);
    let answer = poll(
        &server,
        "channels=feed:a,feed:b,feed:c&last_poll_id=0&timeout=0",
    )
    .await;
    assert_eq!(ids(&answer["events"]), ids_sent);
    assert_eq!(
        answer["events"][0]["channels"],
        json!(["feed:a", "feed:b", "feed:c"])
    );
    // Pages of two: rows of one event on three channels never shorten a
    // page into looking like the end.
    let mut cursor = 0;
    let mut paged = Vec::new();
    loop {
        let answer = poll(
            &server,
            &format!("channels=feed:a,feed:b,feed:c&last_poll_id={cursor}&timeout=0&limit=2"),
        )
        .await;
        paged.extend(ids(&answer["events"]));
        cursor = answer["last_poll_id"].as_u64().unwrap();
        if answer["has_more"] == false {
            break;
        }
    }
    assert_eq!(paged, ids_sent);
    let mut stream = server
        .sse(
            &format!("channels=feed:a,feed:c&last_event_id={}", ids_sent[3]),
            &token("reader"),
        )
        .await;
    stream.subscription().await;
    for expected in [ids_sent[4], ids_sent[6], ids_sent[8]] {
        assert_eq!(stream.next_event(WAIT).await["id"], expected);
    }
}

/// The publisher must be allowed every channel: one refused refuses all.
async fn every_channel_must_be_writable(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with(
        "alice",
        json!({"publish": ["task:*"], "channels": ["task:*"]}),
    );
    let res = server
        .post(
            "/realtime/publish",
            &alice,
            &json!({"channels": ["task:1", "project:2"], "event": "x", "data": 1}),
        )
        .await;
    expect_error(res, 403, "permission_denied").await;
    let answer = poll(
        &server,
        "channels=task:1,project:2&last_poll_id=0&timeout=0",
    )
    .await;
    assert_eq!(answer["events"], json!([]));
    let res = server
        .post(
            "/realtime/publish",
            &alice,
            &json!({"channels": ["task:1", "task:2"], "event": "x", "data": 1}),
        )
        .await;
    assert_eq!(res.status(), 202);
    // expected_last_id needs a single channel.
    let res = server
        .post(
            "/realtime/publish",
            &alice,
            &json!({"channels": ["task:1", "task:2"], "event": "x", "expected_last_id": 0}),
        )
        .await;
    expect_error(res, 400, "invalid_message").await;
}

/// `expected_last_id` on a channel counts events it is a further channel of.
async fn a_channels_last_id_counts_events_on_several(backend: Backend) {
    let server = Server::start(&backend).await;
    let id = broadcast_to(&server, &["task:1", "task:2"], "both").await;
    let service = service_token();
    let stale = json!({"channel": "task:2", "event": "x", "expected_last_id": 0});
    let res = server.post("/realtime/broadcast", &service, &stale).await;
    let body = expect_error(res, 409, "conflict").await;
    assert_eq!(body["details"]["last_id"], id);
    let fresh = json!({"channel": "task:2", "event": "x", "expected_last_id": id});
    assert_eq!(
        server
            .post("/realtime/broadcast", &service, &fresh)
            .await
            .status(),
        202
    );
}

on_both_backends!(
    every_transport_delivers_it_once,
    storage_reads_deliver_it_once,
    every_channel_must_be_writable,
    a_channels_last_id_counts_events_on_several,
);

/// Published on one node, read on another: once, listing its channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_nodes_a_reader_of_several_channels_gets_it_once() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let a = Server::start(&backend).await;
    let b = Server::start_on(a.db.clone(), &[]);
    let mut stream = b.sse("channels=feed:x,feed:y", &token("reader")).await;
    stream.subscription().await;
    let id = broadcast_to(&a, &["feed:y", "feed:x"], "cross").await;
    let marker = a.broadcast("feed:x", "marker", json!(null)).await;
    let event = stream.next_event(WAIT).await;
    assert_eq!(
        (event["id"].as_u64(), event["channels"].clone()),
        (Some(id), json!(["feed:y", "feed:x"]))
    );
    assert_eq!(stream.next_event(WAIT).await["id"], marker);
}
