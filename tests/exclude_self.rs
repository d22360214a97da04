//! Echo control (PROTOCOL §6): a publish with `exclude_self` is in the log
//! for everyone, and only the sending connection's stream skips it, its
//! cursor moving past. A WebSocket publish comes from its socket; an HTTP
//! one names the connection: the SSE stream's (its subscription message
//! says it, or the client chose it with `connection_id`) or the one a
//! polling client sends with its polls. Only the user's own connections
//! can be named.

mod common;

use std::time::Duration;

use common::ws::Ws;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn alice() -> String {
    token_with("alice", json!({"publish": ["feed:*"]}))
}

async fn publish(server: &Server, token: &str, body: Value) -> reqwest::Response {
    server.post("/realtime/publish", token, &body).await
}

async fn a_websocket_does_not_get_back_what_it_sent(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut sender = Ws::connect(&server, &alice()).await;
    sender.expect().await;
    sender
        .ok(json!({"type": "subscribe", "channels": ["feed:a"]}))
        .await;
    let mut other_tab = Ws::connect(&server, &alice()).await;
    other_tab.expect().await;
    other_tab
        .ok(json!({"type": "subscribe", "channels": ["feed:a"]}))
        .await;
    let mut watcher = server.sse("channels=feed:a", &token("bob")).await;
    watcher.subscription().await;

    let receipt = sender
        .ok(json!({"type": "publish", "channel": "feed:a", "event": "typed", "data": 1, "exclude_self": true}))
        .await;
    let skipped = receipt["id"].as_u64().unwrap();
    let marker = server.broadcast("feed:a", "marker", json!(2)).await;
    assert_eq!(
        sender.next_event().await["id"],
        marker,
        "its own event skipped"
    );
    assert_eq!(
        other_tab.next_event().await["id"],
        skipped,
        "the user's other tab gets it"
    );
    assert_eq!(watcher.next_event(WAIT).await["id"], skipped);
    // In the log for everyone.
    let polled: Value = server
        .get("/realtime/poll?channels=feed:a&timeout=0", &token("carol"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(polled["events"][0]["id"], skipped);
    // Naming a connection over WebSocket is refused: it is the socket's.
    let refused = sender
        .call(json!({"type": "publish", "channel": "feed:a", "event": "x", "exclude_self": true, "connection_id": "c"}))
        .await;
    assert_eq!(refused["code"], "invalid_message", "{refused}");
}

async fn an_sse_stream_skips_what_its_connection_published_over_http(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut stream = server.sse("channels=feed:a", &alice()).await;
    let sub = stream.subscription().await;
    let connection = sub["connection_id"]
        .as_str()
        .expect("connection_id")
        .to_string();
    let mut chosen = server
        .sse("channels=feed:a&connection_id=tab-2", &alice())
        .await;
    assert_eq!(chosen.subscription().await["connection_id"], "tab-2");

    let res = publish(
        &server,
        &alice(),
        json!({"channel": "feed:a", "event": "e", "data": 1, "exclude_self": true, "connection_id": connection}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let skipped = res.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let res = publish(
        &server,
        &alice(),
        json!({"channel": "feed:a", "event": "e", "data": 2, "exclude_self": true, "connection_id": "tab-2"}),
    )
    .await;
    let skipped_2 = res.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let marker = server.broadcast("feed:a", "marker", json!(3)).await;
    assert_eq!(stream.next_event(WAIT).await["id"], skipped_2);
    assert_eq!(stream.next_event(WAIT).await["id"], marker);
    assert_eq!(chosen.next_event(WAIT).await["id"], skipped);
    assert_eq!(chosen.next_event(WAIT).await["id"], marker);

    // Another user naming alice's connection hides nothing from her.
    let bob = token_with("bob", json!({"publish": ["feed:*"]}));
    let res = publish(
        &server,
        &bob,
        json!({"channel": "feed:a", "event": "e", "exclude_self": true, "connection_id": connection}),
    )
    .await;
    let bobs = res.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    assert_eq!(stream.next_event(WAIT).await["id"], bobs);

    // exclude_self over HTTP needs the connection; a bad one is refused.
    for body in [
        json!({"channel": "feed:a", "event": "e", "exclude_self": true}),
        json!({"channel": "feed:a", "event": "e", "exclude_self": true, "connection_id": ""}),
        json!({"channel": "feed:a", "event": "e", "exclude_self": true, "connection_id": "x".repeat(129)}),
    ] {
        expect_error(
            publish(&server, &alice(), body).await,
            400,
            "invalid_message",
        )
        .await;
    }
    let res = server
        .get("/realtime/sse?channels=feed:a&connection_id=", &alice())
        .await;
    expect_error(res, 400, "invalid_message").await;
}

async fn a_polling_client_skips_what_it_published_and_moves_past_it(backend: Backend) {
    let server = Server::start(&backend).await;
    let start: Value = server
        .get(
            "/realtime/poll?channels=feed:a&timeout=0&connection_id=phone-1",
            &alice(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(start["connection_id"], "phone-1", "echoed");
    let cursor = start["last_poll_id"].as_u64().unwrap();
    let res = publish(
        &server,
        &alice(),
        json!({"channel": "feed:a", "event": "mine", "exclude_self": true, "connection_id": "phone-1"}),
    )
    .await;
    let mine = res.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let answer: Value = server
        .get(
            &format!("/realtime/poll?channels=feed:a&timeout=0&last_poll_id={cursor}&connection_id=phone-1"),
            &alice(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["events"], json!([]));
    assert_eq!(answer["last_poll_id"], mine, "the cursor moved past it");
    // Without the connection id (another device), it is there.
    let answer: Value = server
        .post(
            "/realtime/poll",
            &alice(),
            &json!({"channels": ["feed:a"], "timeout": 0, "last_poll_id": cursor}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["events"][0]["id"], mine);
    assert!(answer.get("connection_id").is_none());
}

on_both_backends!(
    a_websocket_does_not_get_back_what_it_sent,
    an_sse_stream_skips_what_its_connection_published_over_http,
    a_polling_client_skips_what_it_published_and_moves_past_it,
);
