//! WebSocket (PROTOCOL §10): the same token rules, messages, envelopes and
//! cursors as HTTP, acks and errors by `ack_id`, malformed frames answered
//! without closing, and silent clients closed after two missed pings.

mod common;

use std::time::Duration;

use common::ws::Ws;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

async fn handshake_status(server: &Server, path: &str) -> u16 {
    match Ws::try_connect(server, path).await {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected the handshake to be refused"),
    }
}

async fn bad_or_missing_tokens_are_refused_at_the_handshake(backend: Backend) {
    let server = Server::start(&backend).await;
    assert_eq!(handshake_status(&server, "/realtime/connect").await, 401);
    assert_eq!(
        handshake_status(&server, "/realtime/connect?token=not-a-jwt").await,
        401
    );
    let expired = sign(&json!({"sub": "alice", "exp": exp_in(-10)}));
    assert_eq!(
        handshake_status(&server, &format!("/ws?token={expired}")).await,
        401
    );
    // The body is the protocol's error, before any upgrade.
    let res = server
        .client
        .get(server.url("/realtime/connect"))
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "missing_token").await;
}

async fn the_first_message_is_connected_with_a_connection_id(backend: Backend) {
    let server = Server::start(&backend).await;
    for path in ["/realtime/connect", "/ws"] {
        let mut ws = Ws::try_connect(&server, &format!("{path}?token={}", token("alice")))
            .await
            .unwrap();
        let connected = ws.expect().await;
        assert_eq!(connected["type"], "connected");
        assert_eq!(connected["user_id"], "alice");
        assert!(
            connected["connection_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty())
        );
    }
}

async fn subscribe_receive_and_unsubscribe(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut ws = Ws::connect(&server, &token("alice")).await;
    ws.expect().await;
    ws.send(json!({"type": "subscribe", "channels": ["system", "task:1"], "ack_id": "a1"}))
        .await;
    let ack = ws.expect().await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["ack_id"], "a1");
    assert_eq!(ack["status"], "success");
    assert_eq!(
        ack["data"]["errors"],
        json!([{"channel": "task:1", "code": "permission_denied"}])
    );
    let subscription = ws.expect().await;
    assert_eq!(subscription["type"], "subscription");
    assert_eq!(subscription["channels"], json!(["user:alice", "system"]));

    let id = server.broadcast("system", "hello", json!({"n": 1})).await;
    let event = ws.next_event().await;
    assert_eq!(event["id"].as_u64(), Some(id));
    assert_eq!(event["channel"], "system");
    assert_eq!(event["event"], "hello");
    assert_eq!(event["data"], json!({"n": 1}));
    assert_eq!(event["user_id"], "backend");

    ws.send(json!({"type": "unsubscribe", "channels": ["system"], "ack_id": "a2"}))
        .await;
    let ack = ws.expect().await;
    assert_eq!(ack["ack_id"], "a2");
    assert_eq!(ack["data"]["channels"], json!(["user:alice"]));
    server.broadcast("system", "unheard", json!({})).await;
    let marker = server.broadcast("user:alice", "marker", json!({})).await;
    assert_eq!(
        ws.next_event().await["id"].as_u64(),
        Some(marker),
        "nothing from system after unsubscribing"
    );
}

async fn resume_with_last_event_id_gets_exactly_the_missed_events(backend: Backend) {
    let server = Server::start(&backend).await;
    let seen = server.broadcast("feed:a", "one", json!({})).await;
    let missed: Vec<u64> = vec![
        server.broadcast("feed:a", "two", json!({})).await,
        server.broadcast("feed:a", "three", json!({})).await,
    ];
    let mut ws = Ws::connect(&server, &token("alice")).await;
    ws.expect().await;
    ws.send(json!({"type": "subscribe", "channels": ["feed:a"], "last_event_id": seen}))
        .await;
    assert_eq!(ws.expect().await["type"], "subscription");
    for id in &missed {
        assert_eq!(ws.next_event().await["id"].as_u64(), Some(*id));
    }
    let next = server.broadcast("feed:a", "four", json!({})).await;
    assert_eq!(
        ws.next_event().await["id"].as_u64(),
        Some(next),
        "no duplicates after the missed ones"
    );
}

async fn publish_is_acked_and_seen_by_sse_and_poll(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"publish": ["feed:*"]}));
    let mut sse = server.sse("channels=feed:news", &token("bob")).await;
    sse.subscription().await;
    let mut ws = Ws::connect(&server, &alice).await;
    ws.expect().await;
    ws.send(json!({"type": "publish", "channel": "feed:news", "event": "story", "data": {"t": "hi"}, "ack_id": 7})).await;
    let ack = ws.expect().await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["ack_id"], 7);
    assert_eq!(ack["data"]["status"], "sent");
    let id = ack["data"]["id"].as_u64().unwrap();
    assert_eq!(
        sse.next_event(Duration::from_secs(5)).await["id"].as_u64(),
        Some(id)
    );
    let polled: Value = server
        .get("/realtime/poll?channels=feed:news&timeout=0", &token("bob"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(polled["events"][0]["id"].as_u64(), Some(id));
    assert_eq!(polled["events"][0]["user_id"], "alice");
}

async fn presence_messages_are_acked_and_seen_on_streams(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut sse = server.sse("channels=presence:alice", &token("bob")).await;
    sse.subscription().await;
    let mut ws = Ws::connect(&server, &token("alice")).await;
    ws.expect().await;
    ws.send(json!({"type": "presence", "action": "update", "data": {"status": "busy", "status_message": "Focus"}, "ack_id": "p1"})).await;
    let ack = ws.expect().await;
    assert_eq!(ack["ack_id"], "p1");
    assert_eq!(ack["data"]["status"], "busy");
    loop {
        let event = sse.next_event(Duration::from_secs(10)).await;
        if event["data"]["status"] == "busy" {
            assert_eq!(event["data"]["status_message"], "Focus");
            break;
        }
    }
    let polled: Value = server
        .get(
            "/realtime/poll?channels=presence:alice&timeout=0",
            &token("bob"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(
        polled["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["data"]["status"] == "busy")
    );
}

async fn errors_carry_the_ack_id_and_malformed_frames_keep_the_socket_open(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut ws = Ws::connect(&server, &token("alice")).await;
    ws.expect().await;
    let cases = [
        (
            json!({"type": "subscribe", "channels": ["Bad Name"], "ack_id": "e1"}),
            "invalid_channel",
        ),
        (
            json!({"type": "subscribe", "channels": ["nope:1"], "ack_id": "e2"}),
            "channel_not_found",
        ),
        (
            json!({"type": "subscribe", "channels": ["task:1"], "ack_id": "e3"}),
            "permission_denied",
        ),
        (
            json!({"type": "publish", "channel": "system", "event": "x", "data": {}, "ack_id": "e4"}),
            "permission_denied",
        ),
        (
            json!({"type": "teleport", "ack_id": "e5"}),
            "invalid_message",
        ),
        (
            json!({"type": "presence", "action": "dance", "data": {}, "ack_id": "e6"}),
            "invalid_message",
        ),
    ];
    for (message, code) in cases {
        let ack_id = message["ack_id"].clone();
        ws.send(message).await;
        let error = ws.expect().await;
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["code"], code, "{error}");
        assert_eq!(error["ack_id"], ack_id);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(error["details"].is_object() && error["request_id"].is_string());
    }
    let too_many: Vec<String> = (0..51).map(|i| format!("feed:c{i}")).collect();
    ws.send(json!({"type": "subscribe", "channels": too_many, "ack_id": "e7"}))
        .await;
    assert_eq!(ws.expect().await["code"], "subscription_limit_exceeded");

    ws.socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    assert_eq!(ws.expect().await["code"], "invalid_message");
    ws.socket.send(Message::Text("[1,2]".into())).await.unwrap();
    assert_eq!(ws.expect().await["code"], "invalid_message");
    ws.socket
        .send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(ws.expect().await["code"], "invalid_message");
    // Still open: a ping gets its pong.
    ws.send(json!({"type": "ping", "ack_id": "still-here"}))
        .await;
    let pong = ws.expect().await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["ack_id"], "still-here");
}

async fn a_silent_client_is_closed_after_two_missed_pings(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_WS_PING_SECS", "1")]).await;
    let url = format!(
        "{}/realtime/connect?token={}",
        server.base.replacen("http://", "ws://", 1),
        token("alice")
    );
    let (mut silent, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut pings = 0;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = silent.next().await {
            match message {
                Ok(Message::Text(text)) if text.contains("\"ping\"") => pings += 1,
                Ok(Message::Close(_)) | Err(_) => break,
                _ => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the silent client was closed");
    assert_eq!(pings, 2, "closed after two unanswered pings");

    // A client that answers stays connected past that.
    let mut polite = Ws::connect(&server, &token("bob")).await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let message = tokio::time::timeout(Duration::from_secs(3), polite.socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message
            && text.contains("\"ping\"")
        {
            polite.send(json!({"type": "pong"})).await;
        }
    }
    polite.send(json!({"type": "ping", "ack_id": 1})).await;
    assert_eq!(polite.expect().await["type"], "pong");
}

async fn subscription_changes_are_limited_per_connection(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_RATE_LIMITS", "on")]).await;
    let mut ws = Ws::connect(&server, &token("alice")).await;
    ws.expect().await;
    for n in 0..10 {
        ws.send(json!({"type": "subscribe", "channels": [format!("feed:f{n}")], "ack_id": n}))
            .await;
        assert_eq!(ws.expect().await["type"], "ack");
        assert_eq!(ws.expect().await["type"], "subscription");
    }
    ws.send(json!({"type": "subscribe", "channels": ["feed:one-too-many"], "ack_id": "x"}))
        .await;
    let error = ws.expect().await;
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(error["ack_id"], "x");
    assert_eq!(error["details"]["limit"], 10);
}

async fn open_streams_are_counted_across_sse_and_websocket(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, "[limits]\nnew_connections_per_minute = 100\n").unwrap();
    let server = Server::start_with(
        &backend,
        &[
            ("SWITCHYARD_RATE_LIMITS", "on"),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
        ],
    )
    .await;
    let alice = token("alice");
    let mut streams = Vec::new();
    for _ in 0..9 {
        let mut s = server.sse("channels=system", &alice).await;
        s.subscription().await;
        streams.push(s);
    }
    let mut ws = Ws::connect(&server, &alice).await;
    ws.expect().await;
    assert_eq!(
        handshake_status(&server, &format!("/realtime/connect?token={alice}")).await,
        429
    );
    let res = server.get("/realtime/sse?channels=system", &alice).await;
    expect_error(res, 429, "max_connections").await;
    // Closing the socket frees its slot.
    ws.socket.close(None).await.unwrap();
    drop(ws);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server
        .get("/realtime/sse?channels=system", &alice)
        .await
        .status()
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed socket's slot was freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_expiring_token_closes_the_socket_after_telling_the_client(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut ws = Ws::connect(&server, &sign(&json!({"sub": "alice", "exp": exp_in(3)}))).await;
    ws.expect().await;
    let expiring = ws.expect().await;
    assert_eq!(
        (expiring["type"].as_str(), expiring["event"].as_str()),
        (Some("system"), Some("token.expiring"))
    );
    assert_eq!(
        ws.expect().await,
        json!({"type": "system", "event": "token.expired"})
    );
    assert!(ws.next().await.is_none(), "then the socket closes");
}

async fn edit_messages_are_acked_and_seen_by_sse_and_poll(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"channels": ["task:*"]}));
    let bob = token_with("bob", json!({"channels": ["task:*"]}));
    let mut sse = server.sse("channels=task:5", &bob).await;
    sse.subscription().await;
    let mut ws = Ws::connect(&server, &alice).await;
    ws.expect().await;
    let target = json!({"resource_type": "task", "resource_id": "5", "field": "description"});
    ws.send(json!({"type": "edit", "action": "start", "data": target, "ack_id": "e1"}))
        .await;
    let started = ws.expect().await;
    assert_eq!(
        (started["type"].as_str(), started["ack_id"].as_str()),
        (Some("ack"), Some("e1")),
        "{started}"
    );
    assert_eq!(started["data"]["content"], "");
    assert_eq!(started["data"]["revision"], 0);
    let session_id = started["data"]["session_id"].as_str().unwrap().to_string();

    ws.send(json!({"type": "edit", "action": "operation", "ack_id": "e2",
                   "data": {"session_id": session_id, "revision": 0, "ops": [{"insert": "héllo"}], "client_op_id": "c1"}}))
        .await;
    let applied = ws.expect().await;
    assert_eq!(applied["ack_id"], "e2", "{applied}");
    assert_eq!(
        applied["data"],
        json!({"revision": 1, "ops": [{"insert": "héllo"}]})
    );
    let operation = loop {
        let event = sse.next_event(Duration::from_secs(10)).await;
        if event["event"] == "edit.operation" {
            break event;
        }
    };
    assert_eq!(operation["data"]["revision"], 1);
    assert_eq!(operation["data"]["session_id"], session_id.as_str());
    assert_eq!(operation["data"]["client_op_id"], "c1");
    let polled: Value = server
        .get("/realtime/poll?channels=task:5&timeout=0", &bob)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        polled["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "edit.operation")
    );

    ws.send(json!({"type": "edit", "action": "save", "data": {"session_id": session_id}, "ack_id": "e3"})).await;
    assert_eq!(ws.expect().await["data"]["revision"], 1);
    ws.send(json!({"type": "edit", "action": "lock", "data": {"resource_type": "task", "resource_id": "5", "field": "title", "ttl_seconds": 30}, "ack_id": "e4"})).await;
    let lock = ws.expect().await;
    let lock_id = lock["data"]["lock_id"]
        .as_str()
        .expect("lock_id")
        .to_string();
    assert_eq!(lock["data"]["locked_by"]["user_id"], "alice");
    // Bob cannot take it: the error carries his ack_id.
    let mut bob_ws = Ws::connect(&server, &bob).await;
    bob_ws.expect().await;
    bob_ws.send(json!({"type": "edit", "action": "lock", "data": {"resource_type": "task", "resource_id": "5", "field": "title"}, "ack_id": "b1"})).await;
    let refused = bob_ws.expect().await;
    assert_eq!(
        (refused["code"].as_str(), refused["ack_id"].as_str()),
        (Some("resource_locked"), Some("b1")),
        "{refused}"
    );
    ws.send(
        json!({"type": "edit", "action": "unlock", "data": {"lock_id": lock_id}, "ack_id": "e5"}),
    )
    .await;
    assert_eq!(ws.expect().await["ack_id"], "e5");
    // A bad operation is an error with the ack_id, and the socket stays open.
    ws.send(
        json!({"type": "edit", "action": "operation", "ack_id": "e6",
                   "data": {"session_id": session_id, "revision": 1, "ops": [{"retain": 99}]}}),
    )
    .await;
    assert_eq!(ws.expect().await["code"], "invalid_operation");
    // A backend sets another field's content (no session is live on it).
    let mut service = Ws::connect(&server, &service_token()).await;
    service.expect().await;
    let set = service
        .ok(
            json!({"type": "edit", "action": "set", "data": {"resource_type": "task",
                   "resource_id": "5", "field": "summary", "content": "Seeded by the app"}}),
        )
        .await;
    assert_eq!(
        (set["content"].as_str(), set["revision"].as_u64()),
        (Some("Seeded by the app"), Some(0))
    );
}

async fn frames_are_limited_to_100_a_second_per_connection(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_RATE_LIMITS", "on")]).await;
    let mut ws = Ws::connect(&server, &token("alice")).await;
    ws.expect().await;
    // Far more frames than a second's quota, back to back: the quota refills
    // one frame per 10 ms, so however slow the machine, some are refused.
    let started = std::time::Instant::now();
    for n in 0..300 {
        ws.send(json!({"type": "ping", "ack_id": n})).await;
    }
    let sent_in = started.elapsed();
    let mut pongs = 0;
    let refused = loop {
        let message = ws.expect().await;
        match message["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => break message,
            other => panic!("unexpected {other:?}: {message}"),
        }
    };
    let refill = (sent_in.as_millis() / 10) as i32 + 1;
    assert!(
        (100..=100 + refill).contains(&pongs),
        "{pongs} frames passed before the first refusal; the limit is 100 a second"
    );
    assert_eq!(refused["code"], "rate_limit_exceeded");
    assert_eq!(refused["details"]["limit"], 100);
    // Still open: once the quota refills, a frame is answered again.
    let mut answered = false;
    for attempt in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ack = format!("after-{attempt}");
        ws.send(json!({"type": "ping", "ack_id": ack})).await;
        let reply = loop {
            let message = ws.expect().await;
            if message["ack_id"] == ack.as_str() {
                break message;
            }
        };
        if reply["type"] == "pong" {
            answered = true;
            break;
        }
    }
    assert!(
        answered,
        "the socket stayed open and answered once the quota refilled"
    );
}

/// Events of the user's own channel published while the socket was down
/// are replayed by the first subscription's cursor, in one id order with
/// the rest.
async fn the_first_subscription_replays_the_users_own_channel(backend: Backend) {
    let server = Server::start(&backend).await;
    let seen = server.broadcast("user:alice", "seen", json!(1)).await;
    let missed = server.broadcast("user:alice", "missed", json!(2)).await;
    let system = server.broadcast("system", "news", json!(3)).await;
    let later = server.broadcast("user:alice", "later", json!(4)).await;
    let mut ws = Ws::connect(&server, &token("alice")).await;
    ws.expect().await;
    ws.send(json!({"type": "subscribe", "channels": ["system"], "last_event_id": seen}))
        .await;
    let subscription = ws.expect().await;
    assert_eq!(subscription["channels"], json!(["user:alice", "system"]));
    let ids: Vec<u64> = [
        ws.next_event().await,
        ws.next_event().await,
        ws.next_event().await,
    ]
    .iter()
    .map(|e| e["id"].as_u64().unwrap())
    .collect();
    assert_eq!(ids, [missed, system, later]);
}

on_both_backends!(
    the_first_subscription_replays_the_users_own_channel,
    bad_or_missing_tokens_are_refused_at_the_handshake,
    the_first_message_is_connected_with_a_connection_id,
    subscribe_receive_and_unsubscribe,
    resume_with_last_event_id_gets_exactly_the_missed_events,
    publish_is_acked_and_seen_by_sse_and_poll,
    presence_messages_are_acked_and_seen_on_streams,
    errors_carry_the_ack_id_and_malformed_frames_keep_the_socket_open,
    a_silent_client_is_closed_after_two_missed_pings,
    subscription_changes_are_limited_per_connection,
    open_streams_are_counted_across_sse_and_websocket,
    an_expiring_token_closes_the_socket_after_telling_the_client,
    edit_messages_are_acked_and_seen_by_sse_and_poll,
    frames_are_limited_to_100_a_second_per_connection,
);
