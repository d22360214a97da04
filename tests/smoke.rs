mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn broadcast_reaches_sse_and_poll(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let mut stream = server.sse("channels=system", &alice).await;
    stream.subscription().await;
    let id = server.broadcast("system", "hello", json!({"n": 1})).await;
    let event = stream.next_event(Duration::from_secs(5)).await;
    assert_eq!(event["id"], id);
    let res = server
        .get("/realtime/poll?channels=system&timeout=0", &alice)
        .await;
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["events"][0]["id"], id);
}

on_both_backends!(broadcast_reaches_sse_and_poll);
