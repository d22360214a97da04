//! What the server takes as input, the same on both backends and as
//! `openapi.yaml` says: text that storage cannot hold (NUL, which Postgres
//! `text` refuses) is a 4xx everywhere and JSON keeps it escaped;
//! whole-number floats are integers; an empty optional body is no body;
//! `null` for an optional field is the field left out.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// A user who may read and edit every task channel.
fn editor(sub: &str) -> String {
    token_with(sub, json!({"channels": ["task:*"]}))
}

async fn status_and_body(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON ({e}): {text}"))
    };
    (status, body)
}

/// Starts a session on `task:{id}` `description`; returns its id.
async fn session(server: &Server, token: &str, id: &str) -> String {
    let res = server
        .post(
            "/realtime/edit/sessions",
            token,
            &json!({"resource_type": "task", "resource_id": id, "field": "description"}),
        )
        .await;
    let (status, body) = status_and_body(res).await;
    assert_eq!(status, 201, "{body}");
    body["session_id"].as_str().unwrap().to_string()
}

// NUL in any client text that reaches storage is refused with the same 4xx
// on SQLite (which could store it) and Postgres (which cannot): edit
// inserts (422, like any bad operation), client_op_id, status messages and
// idempotency keys (400); ids in paths are 404 like any unknown id. Nothing
// is applied: the document is unchanged.
async fn nul_in_stored_text_is_a_4xx_on_both_backends(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = editor("alice");
    let sid = session(&server, &alice, "1").await;
    let ops = |ops: Value, id: &str| json!({"revision": 0, "ops": ops, "client_op_id": id});
    let path = format!("/realtime/edit/sessions/{sid}/operations");

    let res = server
        .post(&path, &alice, &ops(json!([{"insert": "a\u{0}b"}]), "c1"))
        .await;
    let body = expect_error(res, 422, "invalid_operation").await;
    assert!(body["message"].as_str().unwrap().contains("NUL"), "{body}");
    let res = server
        .post(&path, &alice, &ops(json!([{"insert": "ab"}]), "c\u{0}2"))
        .await;
    expect_error(res, 400, "invalid_message").await;
    let res = server
        .post(
            "/realtime/presence",
            &alice,
            &json!({"status": "busy", "status_message": "in\u{0}meeting"}),
        )
        .await;
    expect_error(res, 400, "invalid_message").await;
    let res = server
        .post(
            "/realtime/publish",
            &token_with("alice", json!({"publish": ["task:*"]})),
            &json!({"channel": "task:1", "event": "e", "data": 1, "idempotency_key": "k\u{0}"}),
        )
        .await;
    expect_error(res, 400, "invalid_message").await;
    for (path, body) in [
        ("/realtime/edit/sessions/%00/save", json!({})),
        (
            "/realtime/edit/sessions/a%00b/operations",
            json!({"revision": 0, "ops": []}),
        ),
        ("/realtime/edit/locks/%00/renew", json!({})),
    ] {
        let res = server.post(path, &alice, &body).await;
        expect_error(res, 404, "not_found").await;
    }
    let res = server
        .client
        .delete(server.url("/realtime/edit/locks/%00"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    expect_error(res, 404, "not_found").await;
    // Message ids: not a message's id is 404 in a path or a read position,
    // 400 as a page cursor.
    let opened = server
        .post(
            "/realtime/conversations",
            &alice,
            &json!({"type": "direct", "user_id": "bob"}),
        )
        .await;
    assert_eq!(opened.status(), 201);
    let conversation = opened.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let messages = format!("/realtime/conversations/{conversation}/messages");
    for bad in ["%00", "a%00b", "xyz"] {
        let res = server
            .client
            .delete(server.url(&format!("{messages}/{bad}")))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        expect_error(res, 404, "not_found").await;
        let res = server
            .get(&format!("{messages}?before={bad}"), &alice)
            .await;
        expect_error(res, 400, "invalid_message").await;
    }
    let res = server
        .post(
            &format!("/realtime/conversations/{conversation}/read"),
            &alice,
            &json!({"message_id": "m\u{0}1"}),
        )
        .await;
    expect_error(res, 404, "not_found").await;

    // Text with other control characters is content, on both backends.
    let text = "line\n\ttab\u{1}\u{7f}";
    let res = server
        .post(&path, &alice, &ops(json!([{"insert": text}]), "c3"))
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let doc: Value = server
        .get(
            "/realtime/edit/documents?resource_type=task&resource_id=1&field=description",
            &alice,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["content"], text);
    assert_eq!(doc["revision"], 1);
}

// Event data is JSON, stored as its encoding, where NUL is the escape
// `\u0000`: data with NUL and other control characters in its strings (and
// keys) is accepted on both backends and read back exactly, on SSE and by
// polling, before and after a restart (from storage, not memory).
async fn json_data_with_nul_round_trips_exactly(backend: Backend) {
    let server = Server::start(&backend).await;
    let reader = token("reader");
    let mut stream = server.sse("channels=feed:x&last_event_id=0", &reader).await;
    stream.subscription().await;
    let data = json!({"text": "a\u{0}b\u{1}\n\"q\"", "k\u{0}ey": ["\u{0}", 1.5, null]});
    let id = server.broadcast("feed:x", "e", data.clone()).await;

    let event = stream.next_event(WAIT).await;
    assert_eq!(event["id"], id);
    assert_eq!(event["data"], data, "SSE");
    let poll = |server: &Server| {
        let url = "/realtime/poll?channels=feed:x&last_poll_id=0&timeout=0";
        let reader = reader.clone();
        let req = server.client.get(server.url(url)).bearer_auth(reader);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let before = poll(&server).await;
    let polled: Value = serde_json::from_str(&before).unwrap();
    assert_eq!(
        polled["events"][0], event,
        "poll and SSE carry one envelope"
    );
    assert!(
        before.contains(r#"a\u0000b"#),
        "NUL travels escaped: {before}"
    );

    let db = server.db.clone();
    drop(stream);
    drop(server);
    let server = Server::start_on(db, &[]);
    assert_eq!(
        poll(&server).await,
        before,
        "the same bytes after a restart"
    );
}

/// POSTs `body` to `path`; status and JSON body.
async fn post(server: &Server, path: &str, token: &str, body: Value) -> (u16, Value) {
    status_and_body(server.post(path, token, &body).await).await
}

// JSON Schema counts 60.0 as the integer 60, and many encoders write whole
// numbers so: every integer of every body takes it (lock TTLs, poll
// cursors, timeouts and limits, revisions, operation lengths,
// expected_last_id, a WebSocket subscribe's last_event_id). A fraction is
// still refused.
async fn whole_number_floats_are_integers(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with(
        "alice",
        json!({"channels": ["task:*"], "publish": ["task:*"]}),
    );
    let (status, lock) = post(
        &server,
        "/realtime/edit/locks",
        &alice,
        json!({"resource_type": "task", "resource_id": "1", "field": "title", "ttl_seconds": 60.0}),
    )
    .await;
    assert_eq!(status, 201, "{lock}");
    let renew = format!(
        "/realtime/edit/locks/{}/renew",
        lock["lock_id"].as_str().unwrap()
    );
    let (status, body) = post(&server, &renew, &alice, json!({"ttl_seconds": 120.0})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&server, &renew, &alice, json!({"ttl_seconds": 120.5})).await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("invalid_message")),
        "{body}"
    );

    let sid = session(&server, &alice, "2").await;
    let ops = format!("/realtime/edit/sessions/{sid}/operations");
    let (status, body) = post(
        &server,
        &ops,
        &alice,
        json!({"revision": 0.0, "ops": [{"insert": "hello"}]}),
    )
    .await;
    assert_eq!((status, &body["revision"]), (200, &json!(1)), "{body}");
    let (status, body) = post(
        &server,
        &ops,
        &alice,
        json!({"revision": 1.0, "ops": [{"retain": 2.0}, {"delete": 1.0}, {"retain": 2}]}),
    )
    .await;
    assert_eq!(
        (status, &body["ops"]),
        (200, &json!([{"retain": 2}, {"delete": 1}, {"retain": 2}])),
        "{body}"
    );
    let (status, body) = post(
        &server,
        &ops,
        &alice,
        json!({"revision": 2, "ops": [{"retain": 3.5}]}),
    )
    .await;
    assert_eq!(
        (status, &body["code"]),
        (422, &json!("invalid_operation")),
        "{body}"
    );
    let (status, body) = post(&server, &ops, &alice, json!({"revision": 1.5, "ops": []})).await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("invalid_message")),
        "{body}"
    );

    let id = server.broadcast("task:3", "e", json!(1)).await;
    let publish = |expected: Value| json!({"channel": "task:3", "event": "e", "data": 2, "expected_last_id": expected});
    let (status, body) = post(
        &server,
        "/realtime/publish",
        &alice,
        publish(json!(id as f64)),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = post(
        &server,
        "/realtime/publish",
        &alice,
        publish(json!(id as f64)),
    )
    .await;
    assert_eq!((status, &body["code"]), (409, &json!("conflict")), "{body}");
    // A large whole float is read exactly, not rounded to a fraction.
    let (status, body) = post(
        &server,
        "/realtime/publish",
        &alice,
        publish(json!(4_425_569_391_855_582.0_f64)),
    )
    .await;
    assert_eq!((status, &body["code"]), (409, &json!("conflict")), "{body}");

    let (status, body) = post(
        &server,
        "/realtime/poll",
        &alice,
        json!({"channels": ["task:3"], "last_poll_id": 0.0, "timeout": 0.0, "limit": 1.0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    assert_eq!(body["has_more"], true);
    let (status, body) = post(
        &server,
        "/realtime/poll",
        &alice,
        json!({"channels": ["task:3"], "limit": 1.5}),
    )
    .await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("invalid_message")),
        "{body}"
    );

    // The WebSocket subscribe's cursor, too.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!(
        "{}/realtime/connect?token={alice}",
        server.base.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let subscribe = json!({"type": "subscribe", "channels": ["task:3"], "last_event_id": 0.0});
    ws.send(Message::Text(subscribe.to_string().into()))
        .await
        .unwrap();
    let event = loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let value: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        assert_ne!(value["type"], "error", "{value}");
        if value["type"] == "event" {
            break value;
        }
    };
    assert_eq!(event["id"], id);
}

// A body the route takes as optional (renewing a lock) may be left out
// with or without `Content-Type: application/json`: an empty body is no
// body. A body that is there is read as JSON as always.
async fn an_empty_optional_body_is_no_body(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = editor("alice");
    let (status, lock) = post(
        &server,
        "/realtime/edit/locks",
        &alice,
        json!({"resource_type": "task", "resource_id": "1", "field": "title"}),
    )
    .await;
    assert_eq!(status, 201);
    let renew = server.url(&format!(
        "/realtime/edit/locks/{}/renew",
        lock["lock_id"].as_str().unwrap()
    ));
    let send = |content_type: Option<&'static str>, body: &'static str| {
        let mut req = server.client.post(&renew).bearer_auth(&alice).body(body);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        req.send()
    };
    for (content_type, body) in [
        (Some("application/json"), ""),
        (Some("application/json"), " \n"),
        (None, ""),
        (Some("application/json"), "{}"),
        (Some("application/json"), "{\"ttl_seconds\":null}"),
    ] {
        let res = send(content_type, body).await.unwrap();
        assert_eq!(res.status(), 200, "{content_type:?} {body:?}");
    }
    for (content_type, body) in [
        (Some("application/json"), "{"),
        (Some("text/plain"), "{}"),
        (None, "{}"),
        (Some("application/json"), "{\"ttl\":1}"),
    ] {
        let res = send(content_type, body).await.unwrap();
        expect_error(res, 400, "invalid_message").await;
    }
}

// `null` for an optional field is the field left out, as openapi.yaml
// says (`type: [..., 'null']`); `null` for a required one is refused.
async fn null_is_an_optional_field_left_out(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with(
        "alice",
        json!({"channels": ["task:*"], "publish": ["task:*"]}),
    );
    let sid = session(&server, &alice, "1").await;
    let accepted = [
        (
            "/realtime/publish".to_string(),
            json!({"channel": "task:1", "channels": null, "event": "e", "data": null,
                   "idempotency_key": null, "expected_last_id": null, "user_id": null, "events": null}),
        ),
        (
            "/realtime/publish".to_string(),
            json!({"events": [{"channel": "task:1", "channels": null, "event": "e", "data": null, "expected_last_id": null}],
                   "channel": null, "event": null, "data": null}),
        ),
        (
            "/realtime/poll".to_string(),
            json!({"channels": ["task:1"], "last_poll_id": null, "timeout": null, "limit": null, "user_id": null}),
        ),
        (
            "/realtime/presence".to_string(),
            json!({"status": "busy", "status_message": null, "user_id": null}),
        ),
        (
            "/realtime/presence/viewing".to_string(),
            json!({"resource_type": null, "resource_id": null, "user_id": null}),
        ),
        (
            "/realtime/typing".to_string(),
            json!({"resource_type": "task", "resource_id": "1", "field": "f", "is_typing": false, "user_id": null}),
        ),
        (
            format!("/realtime/edit/sessions/{sid}/operations"),
            json!({"revision": 0, "ops": [], "client_op_id": null}),
        ),
        (
            "/realtime/edit/locks".to_string(),
            json!({"resource_type": "task", "resource_id": "1", "field": "f", "ttl_seconds": null}),
        ),
    ];
    for (path, body) in accepted {
        let (status, answer) = post(&server, &path, &alice, body.clone()).await;
        assert!(
            (200..300).contains(&status),
            "{path} {body}: {status} {answer}"
        );
    }
    let refused = [
        ("/realtime/publish", json!({"channel": null, "event": "e"})),
        (
            "/realtime/publish",
            json!({"channel": "task:1", "event": null}),
        ),
        ("/realtime/poll", json!({"channels": null})),
        ("/realtime/presence", json!({"status": null})),
        (
            "/realtime/typing",
            json!({"resource_type": "task", "resource_id": "1", "field": "f", "is_typing": null}),
        ),
        (
            "/realtime/edit/locks",
            json!({"resource_type": null, "resource_id": "1", "field": "f"}),
        ),
        // A batch carries its data per event; data beside `events` is refused, not ignored.
        (
            "/realtime/publish",
            json!({"events": [{"channel": "task:1", "event": "e"}], "data": {"lost": true}}),
        ),
    ];
    for (path, body) in refused {
        let (status, answer) = post(&server, path, &alice, body.clone()).await;
        assert_eq!(
            (status, &answer["code"]),
            (400, &json!("invalid_message")),
            "{path} {body}: {answer}"
        );
    }
}

// The `channels` list of a query: names separated by commas, spaces
// around them and empty entries dropped, nothing else; at most 50 entries,
// counted as named. A body's list: at most 50, and an empty name is a
// malformed one.
async fn channel_lists_are_read_as_openapi_says(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let res = server
        .get(
            "/realtime/poll?channels=%20system%20,,feed:x,&timeout=0",
            &alice,
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = server
        .get("/realtime/poll?channels=%09system&timeout=0", &alice)
        .await;
    expect_error(res, 400, "invalid_channel").await;
    let many = vec!["system"; 51].join(",");
    let res = server
        .get(&format!("/realtime/poll?channels={many}&timeout=0"), &alice)
        .await;
    expect_error(res, 400, "subscription_limit_exceeded").await;
    let res = server
        .post(
            "/realtime/poll",
            &alice,
            &json!({"channels": vec!["system"; 51], "timeout": 0}),
        )
        .await;
    expect_error(res, 400, "subscription_limit_exceeded").await;
    let res = server
        .post(
            "/realtime/poll",
            &alice,
            &json!({"channels": vec!["system"; 50], "timeout": 0}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = server
        .post(
            "/realtime/poll",
            &alice,
            &json!({"channels": ["system", ""], "timeout": 0}),
        )
        .await;
    expect_error(res, 400, "invalid_channel").await;
    // An empty name alone is as malformed: only an empty list is the inbox.
    let res = server
        .post(
            "/realtime/poll",
            &alice,
            &json!({"channels": [""], "timeout": 0}),
        )
        .await;
    expect_error(res, 400, "invalid_channel").await;
    let res = server
        .post(
            "/realtime/poll",
            &alice,
            &json!({"channels": [], "timeout": 0}),
        )
        .await;
    assert_eq!(res.status(), 200);
}

// Every body is a JSON object: serde would fill a request from an array
// (`[null, null]` cleared one's viewing), which openapi.yaml does not allow.
// The same for a WebSocket message's `data`.
async fn a_body_is_a_json_object(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = editor("alice");
    for (path, body) in [
        ("/realtime/presence/viewing", json!([null, null])),
        ("/realtime/presence/viewing", json!(["task", "1"])),
        ("/realtime/presence", json!(["busy"])),
        ("/realtime/poll", json!([["system"]])),
    ] {
        let res = server.post(path, &alice, &body).await;
        expect_error(res, 400, "invalid_message").await;
    }
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!(
        "{}/realtime/connect?token={alice}",
        server.base.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let message =
        json!({"type": "presence", "action": "viewing", "data": ["task", "1"], "ack_id": "a1"});
    ws.send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
    let answer = loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let value: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        if value["ack_id"] == "a1" {
            break value;
        }
    };
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], "invalid_message", "{answer}");
}

// Last-Event-ID is digits, as openapi.yaml says (`+5` used to pass as 5);
// one past what a u64 holds is a cursor past the end like any other: the
// stream starts with a reset.
async fn last_event_id_is_digits(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let open = |value: &'static str| {
        server
            .client
            .get(server.url("/realtime/sse?channels=system"))
            .bearer_auth(&alice)
            .header("last-event-id", value)
            .send()
    };
    for bad in ["+5", "-1", "5x", "0x10"] {
        expect_error(open(bad).await.unwrap(), 400, "invalid_message").await;
    }
    let mut stream = SseStream::new(open("99999999999999999999999").await.unwrap());
    stream.subscription().await;
    let reset = stream.next_frame_within(WAIT).await.expect("reset").json();
    assert_eq!(reset["type"], "reset", "{reset}");
    assert_eq!(reset["reason"], "cursor_expired", "{reset}");
}

on_both_backends!(
    last_event_id_is_digits,
    a_body_is_a_json_object,
    nul_in_stored_text_is_a_4xx_on_both_backends,
    json_data_with_nul_round_trips_exactly,
    whole_number_floats_are_integers,
    an_empty_optional_body_is_no_body,
    null_is_an_optional_field_left_out,
    channel_lists_are_read_as_openapi_says,
);
