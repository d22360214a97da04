//! The inbox (PROTOCOL §9, §9a): notifications with a read state, members
//! kept by the server, direct and group conversations, read receipts, and
//! one stream (or poll) for all of it, on SSE, long polling and WebSocket,
//! both backends and across the nodes of a cluster.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::ws::Ws;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// The next event named `name` on an SSE stream, skipping everything else.
async fn next_named(stream: &mut SseStream, name: &str) -> Value {
    loop {
        let frame = stream.next_frame_within(WAIT).await.expect("stream open");
        if frame.data.is_none() {
            continue;
        }
        let json = frame.json();
        if json["type"] == "event" && json["event"] == name {
            return json;
        }
    }
}

/// The next control message of `kind` (e.g. `subscription`), skipping events.
async fn next_control(stream: &mut SseStream, kind: &str) -> Value {
    loop {
        let frame = stream.next_frame_within(WAIT).await.expect("stream open");
        if frame.data.is_none() {
            continue;
        }
        let json = frame.json();
        if json["type"] == kind {
            return json;
        }
    }
}

/// The next event named `name` on a WebSocket, skipping everything else.
async fn ws_named(ws: &mut Ws, name: &str) -> Value {
    loop {
        let message = ws.expect().await;
        if message["type"] == "event" && message["event"] == name {
            return message;
        }
    }
}

async fn json_of(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let body: Value = res.json().await.expect("JSON body");
    assert_eq!(got, status, "{body}");
    body
}

async fn get_ok(server: &Server, path: &str, token: &str) -> Value {
    json_of(server.get(path, token).await, 200).await
}

/// The `id`s of a listing's items under `key`, in order.
fn ids_of(page: &Value, key: &str) -> Vec<Value> {
    page[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {page}"))
        .iter()
        .map(|item| item["id"].clone())
        .collect()
}

async fn notify(server: &Server, user: &str, title: &str) -> Value {
    let res = server
        .post(
            "/realtime/notifications",
            &service_token(),
            &json!({"user_id": user, "type": "task.assigned", "title": title,
                    "body": "Ship it", "data": {"task_id": 7}}),
        )
        .await;
    json_of(res, 201).await
}

async fn open(server: &Server, token: &str, body: Value) -> (u16, Value) {
    let res = server.post("/realtime/conversations", token, &body).await;
    let status = res.status().as_u16();
    (status, res.json().await.expect("JSON"))
}

async fn direct(server: &Server, from: &str, to: &str) -> Value {
    let (status, body) = open(
        server,
        &token(from),
        json!({"type": "direct", "user_id": to}),
    )
    .await;
    assert!(status == 201 || status == 200, "{status} {body}");
    body
}

async fn group(server: &Server, by: &str, members: &[&str]) -> Value {
    let (status, body) = open(
        server,
        &token(by),
        json!({"type": "group", "title": "Launch crew", "members": members}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn send(server: &Server, from: &str, conversation: &str, content: &str) -> Value {
    let res = server
        .post(
            &format!("/realtime/conversations/{conversation}/messages"),
            &token(from),
            &json!({ "content": content }),
        )
        .await;
    json_of(res, 201).await
}

async fn conversations_of(server: &Server, user: &str) -> Vec<Value> {
    let res = server.get("/realtime/conversations", &token(user)).await;
    json_of(res, 200).await["conversations"]
        .as_array()
        .unwrap()
        .clone()
}

async fn unread_in(server: &Server, user: &str, conversation: &str) -> u64 {
    conversations_of(server, user)
        .await
        .iter()
        .find(|c| c["id"] == conversation)
        .expect("listed")["unread_count"]
        .as_u64()
        .unwrap()
}

async fn notifications_are_created_both_ways_and_read_state_reaches_other_devices(
    backend: Backend,
) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    // Alice's other device: a stream naming no channel is her inbox.
    let mut device = server.sse("", &alice).await;
    assert_eq!(
        device.subscription().await["channels"],
        json!(["user:alice"])
    );

    let first = notify(&server, "alice", "Task 7 is yours").await;
    assert_eq!(first["type"], "task.assigned");
    assert_eq!(first["title"], "Task 7 is yours");
    assert_eq!(first["body"], "Ship it");
    assert_eq!(first["data"], json!({"task_id": 7}));
    assert!(first["created_at"].is_string());
    assert_eq!(first["read_at"], Value::Null);
    let event = next_named(&mut device, "notification").await;
    assert_eq!(event["channel"], "user:alice");
    assert_eq!(event["data"], first);

    // A backend's `notification` broadcast on user:{id} stores one too.
    server
        .broadcast(
            "user:alice",
            "notification",
            json!({"type": "comment.added", "title": "Bob commented", "data": {"comment": 3}}),
        )
        .await;
    let second = next_named(&mut device, "notification").await["data"].clone();
    assert_eq!(second["title"], "Bob commented");
    assert_eq!(second["body"], Value::Null);
    assert!(second["id"].is_string());

    // Listed newest first, paged with the cursor, counted.
    let page = get_ok(&server, "/realtime/notifications", &alice).await;
    assert_eq!(page["unread_count"], 2);
    assert_eq!(page["next_before"], Value::Null);
    let ids: Vec<&Value> = page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["id"])
        .collect();
    assert_eq!(ids, vec![&second["id"], &first["id"]]);
    let one = get_ok(&server, "/realtime/notifications?limit=1", &alice).await;
    assert_eq!(one["notifications"][0]["id"], second["id"]);
    let before = one["next_before"].as_str().expect("a next page");
    let rest = get_ok(
        &server,
        &format!("/realtime/notifications?limit=1&before={before}"),
        &alice,
    )
    .await;
    assert_eq!(rest["notifications"][0]["id"], first["id"]);
    assert_eq!(rest["next_before"], Value::Null);
    let count = get_ok(&server, "/realtime/notifications/unread-count", &alice).await;
    assert_eq!(count, json!({"unread_count": 2}));

    // Reading one: answered with the new count, and the other device hears it.
    let id = first["id"].as_str().unwrap();
    let read = json_of(
        server
            .post(
                &format!("/realtime/notifications/{id}/read"),
                &alice,
                &json!({}),
            )
            .await,
        200,
    )
    .await;
    assert_eq!(read["id"], id);
    assert_eq!(read["unread_count"], 1);
    let event = next_named(&mut device, "notification.read").await;
    assert_eq!(event["data"]["id"], id);
    assert_eq!(event["data"]["unread_count"], 1);
    assert_eq!(event["data"]["read_at"], read["read_at"]);
    let unread = get_ok(&server, "/realtime/notifications?unread=true", &alice).await;
    assert_eq!(unread["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(unread["notifications"][0]["id"], second["id"]);
    // Reading it again changes nothing.
    let again = json_of(
        server
            .post(
                &format!("/realtime/notifications/{id}/read"),
                &alice,
                &json!({}),
            )
            .await,
        200,
    )
    .await;
    assert_eq!(again["read_at"], read["read_at"]);
    assert_eq!(again["unread_count"], 1);

    let all = json_of(
        server
            .post("/realtime/notifications/read-all", &alice, &json!({}))
            .await,
        200,
    )
    .await;
    assert_eq!(all["unread_count"], 0);
    let event = next_named(&mut device, "notification.read_all").await;
    assert_eq!(event["data"]["unread_count"], 0);
    let listed = get_ok(&server, "/realtime/notifications", &alice).await;
    assert!(
        listed["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["read_at"].is_string()),
        "{listed}"
    );

    // Nobody else sees them: not bob, not alice of another tenant.
    let bob = get_ok(&server, "/realtime/notifications", &token("bob")).await;
    assert_eq!(bob["notifications"], json!([]));
    expect_error(
        server
            .post(
                &format!("/realtime/notifications/{id}/read"),
                &token("bob"),
                &json!({}),
            )
            .await,
        404,
        "not_found",
    )
    .await;
    let other = token_with("alice", json!({"tenant_id": "other"}));
    let theirs = get_ok(&server, "/realtime/notifications", &other).await;
    assert_eq!(theirs["notifications"], json!([]));
    assert_eq!(theirs["unread_count"], 0);
}

async fn bad_notifications_are_refused_and_nothing_is_stored(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let service = service_token();
    let good = json!({"user_id": "alice", "type": "t", "title": "Hi"});
    expect_error(
        server.post("/realtime/notifications", &alice, &good).await,
        403,
        "permission_denied",
    )
    .await;
    for bad in [
        json!({"user_id": "alice", "type": "t"}),
        json!({"user_id": "alice", "type": "t", "title": ""}),
        json!({"user_id": "no spaces", "type": "t", "title": "Hi"}),
        json!({"user_id": "alice", "type": "bad type", "title": "Hi"}),
        json!({"user_id": "alice", "type": "t", "title": "Hi", "extra": 1}),
        json!({"user_id": "alice", "type": "t", "title": "x".repeat(300)}),
    ] {
        expect_error(
            server.post("/realtime/notifications", &service, &bad).await,
            400,
            "invalid_message",
        )
        .await;
    }
    // A `notification` broadcast must be one, or nothing is appended.
    let res = server
        .post(
            "/realtime/broadcast",
            &service,
            &json!({"channel": "user:alice", "event": "notification", "data": {"text": "no title"}}),
        )
        .await;
    expect_error(res, 400, "invalid_message").await;
    let poll = get_ok(&server, "/realtime/poll?last_poll_id=0&timeout=0", &alice).await;
    assert_eq!(poll["events"], json!([]));
    let page = get_ok(&server, "/realtime/notifications", &alice).await;
    assert_eq!(page["notifications"], json!([]));

    for (path, status, code) in [
        ("/realtime/notifications?limit=0", 400, "invalid_message"),
        (
            "/realtime/notifications?before=nope",
            400,
            "invalid_message",
        ),
        (
            "/realtime/notifications?unread=maybe",
            400,
            "invalid_message",
        ),
    ] {
        expect_error(server.get(path, &alice).await, status, code).await;
    }
    expect_error(
        server
            .post("/realtime/notifications/nope/read", &alice, &json!({}))
            .await,
        404,
        "not_found",
    )
    .await;
}

async fn members_kept_by_the_server_read_and_write_and_a_removed_one_stops_at_once(
    backend: Backend,
) {
    let server = Server::start(&backend).await;
    let service = service_token();
    let alice = token("alice");
    let path = "/realtime/channels/project:p1/members/alice";
    // Before: alice may not read project:p1.
    let res = server
        .get("/realtime/sse?channels=project:p1", &alice)
        .await;
    expect_error(res, 403, "permission_denied").await;
    let typing = json!({"resource_type": "project", "resource_id": "p1", "field": "comment", "is_typing": true});
    expect_error(
        server.post("/realtime/typing", &alice, &typing).await,
        403,
        "permission_denied",
    )
    .await;
    // Only backends keep members.
    expect_error(
        server.call(Method::PUT, path, &alice, None).await,
        403,
        "permission_denied",
    )
    .await;

    let mut watcher = server.sse("channels=project:p1", &service).await;
    watcher.subscription().await;
    let added = json_of(server.call(Method::PUT, path, &service, None).await, 201).await;
    assert_eq!(added["channel"], "project:p1");
    assert_eq!(added["user_id"], "alice");
    let again = json_of(server.call(Method::PUT, path, &service, None).await, 200).await;
    assert_eq!(again["added_at"], added["added_at"]);
    let event = next_named(&mut watcher, "member.added").await;
    assert_eq!(event["data"]["user_id"], "alice");
    assert_eq!(event["data"]["channel"], "project:p1");

    let list = get_ok(&server, "/realtime/channels/project:p1/members", &alice).await;
    assert_eq!(list["members"][0]["user_id"], "alice");
    assert_eq!(list["members"].as_array().unwrap().len(), 1);
    expect_error(
        server
            .get("/realtime/channels/project:p1/members", &token("bob"))
            .await,
        403,
        "permission_denied",
    )
    .await;

    // A member reads and writes as if the token named the channel.
    let mut stream = server.sse("channels=project:p1", &alice).await;
    let sub = stream.subscription().await;
    assert!(
        sub["channels"]
            .as_array()
            .unwrap()
            .contains(&json!("project:p1")),
        "{sub}"
    );
    assert_eq!(
        server
            .post("/realtime/typing", &alice, &typing)
            .await
            .status(),
        200
    );
    let id = server
        .broadcast("project:p1", "task.updated", json!({"n": 1}))
        .await;
    let seen = next_named(&mut stream, "task.updated").await;
    assert_eq!(seen["id"].as_u64(), Some(id));

    // Removed: the open stream is told and stops receiving the channel.
    let res = server.call(Method::DELETE, path, &service, None).await;
    assert_eq!(res.status(), 204);
    let event = next_named(&mut watcher, "member.removed").await;
    assert_eq!(event["data"]["user_id"], "alice");
    let sub = next_control(&mut stream, "subscription").await;
    assert_eq!(sub["removed"], json!(["project:p1"]), "{sub}");
    assert!(
        !sub["channels"]
            .as_array()
            .unwrap()
            .contains(&json!("project:p1")),
        "{sub}"
    );
    server
        .broadcast("project:p1", "task.updated", json!({"n": 2}))
        .await;
    let marker = server.broadcast("user:alice", "marker", json!({})).await;
    loop {
        let frame = stream.next_frame_within(WAIT).await.expect("stream open");
        let Some(_) = frame.data else { continue };
        let json = frame.json();
        assert_ne!(json["channel"], "project:p1", "after removal: {json}");
        if json["id"].as_u64() == Some(marker) {
            break;
        }
    }
    expect_error(
        server.post("/realtime/typing", &alice, &typing).await,
        403,
        "permission_denied",
    )
    .await;
    expect_error(
        server.call(Method::DELETE, path, &service, None).await,
        404,
        "not_found",
    )
    .await;
    // Token claims work as before.
    let claimed = token_with("alice", json!({"channels": ["project:p1"]}));
    let mut by_claim = server.sse("channels=project:p1", &claimed).await;
    by_claim.subscription().await;
}

async fn direct_conversations_are_one_per_pair_under_concurrent_opens(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(&backend).await);
    let mut opens = Vec::new();
    for i in 0..16 {
        let server = server.clone();
        let (from, to) = if i % 2 == 0 {
            ("alice", "bob")
        } else {
            ("bob", "alice")
        };
        opens.push(tokio::spawn(async move {
            open(
                &server,
                &token(from),
                json!({"type": "direct", "user_id": to}),
            )
            .await
        }));
    }
    let mut ids = BTreeSet::new();
    let mut created = 0;
    for open in opens {
        let (status, body) = open.await.unwrap();
        assert!(status == 201 || status == 200, "{status} {body}");
        created += usize::from(status == 201);
        ids.insert(body["id"].as_str().unwrap().to_string());
        assert_eq!(body["type"], "direct");
        let members: Vec<&Value> = body["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["user_id"])
            .collect();
        assert_eq!(members, vec!["alice", "bob"]);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(created, 1);
    assert_eq!(conversations_of(&server, "alice").await.len(), 1);
    assert_eq!(conversations_of(&server, "bob").await.len(), 1);
    // Another pair, another conversation.
    let other = direct(&server, "alice", "carol").await;
    assert!(!ids.contains(other["id"].as_str().unwrap()));
    // With oneself: one member, the user's own notes, and again the same.
    let notes = direct(&server, "alice", "alice").await;
    assert!(!ids.contains(notes["id"].as_str().unwrap()));
    assert_eq!(notes["members"].as_array().unwrap().len(), 1, "{notes}");
    assert_eq!(notes["members"][0]["user_id"], "alice");
    let again = direct(&server, "alice", "alice").await;
    assert_eq!(again["id"], notes["id"]);
    let id = notes["id"].as_str().unwrap();
    send(&server, "alice", id, "buy milk").await;
    let page = get_ok(
        &server,
        &format!("/realtime/conversations/{id}/messages"),
        &token("alice"),
    )
    .await;
    assert_eq!(page["messages"][0]["content"], "buy milk");
    let res = server
        .get(
            &format!("/realtime/conversations/{id}/messages"),
            &token("bob"),
        )
        .await;
    assert_eq!(res.status().as_u16(), 403);
    // A service may start a group empty, then add its members.
    let (status, empty) = open(
        &server,
        &service_token(),
        json!({"type": "group", "title": "Later", "members": []}),
    )
    .await;
    assert_eq!(status, 201, "{empty}");
    assert_eq!(empty["members"], json!([]));
    let channel = empty["channel"].as_str().unwrap();
    let path = format!("/realtime/channels/{channel}/members/bob");
    json_of(
        server
            .call(Method::PUT, &path, &service_token(), None)
            .await,
        201,
    )
    .await;
    let listed = conversations_of(&server, "bob").await;
    assert!(listed.iter().any(|c| c["id"] == empty["id"]), "{listed:?}");
    // More than 256 members is refused.
    let crowd: Vec<String> = (0..256).map(|i| format!("u{i}")).collect();
    let (status, body) = open(
        &server,
        &token("alice"),
        json!({"type": "group", "title": "Crowd", "members": crowd}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_message")),
        "{body}"
    );
}

async fn members_talk_outsiders_get_403_and_senders_alone_edit_or_delete(backend: Backend) {
    let server = Server::start(&backend).await;
    let convo = group(&server, "alice", &["bob", "carol"]).await;
    let id = convo["id"].as_str().unwrap();
    assert_eq!(convo["type"], "group");
    assert_eq!(convo["title"], "Launch crew");
    assert_eq!(convo["channel"], format!("conversation:{id}"));
    assert_eq!(convo["members"].as_array().unwrap().len(), 3);

    let mut bob = server.sse("", &token("bob")).await;
    let sub = bob.subscription().await;
    assert!(
        sub["channels"]
            .as_array()
            .unwrap()
            .contains(&convo["channel"]),
        "{sub}"
    );

    let named = token_with(
        "alice",
        json!({"name": "Alice A.", "avatar": "https://img.example/a.png"}),
    );
    let res = server
        .post(
            &format!("/realtime/conversations/{id}/messages"),
            &named,
            &json!({"content": "Launch at noon", "client_message_id": "m-1"}),
        )
        .await;
    let message = json_of(res, 201).await;
    assert_eq!(message["conversation_id"], id);
    assert_eq!(message["content"], "Launch at noon");
    assert_eq!(
        message["sender"],
        json!({"user_id": "alice", "name": "Alice A.", "avatar": "https://img.example/a.png"})
    );
    assert_eq!(message["client_message_id"], "m-1");
    assert_eq!(message["edited_at"], Value::Null);
    let event = next_named(&mut bob, "message.created").await;
    assert_eq!(event["channel"], convo["channel"]);
    assert_eq!(event["data"], message);

    // Outsiders: no history, no sending, no reading position, no typing.
    let dave = token("dave");
    let messages = format!("/realtime/conversations/{id}/messages");
    expect_error(server.get(&messages, &dave).await, 403, "permission_denied").await;
    expect_error(
        server
            .post(&messages, &dave, &json!({"content": "hi"}))
            .await,
        403,
        "permission_denied",
    )
    .await;
    expect_error(
        server
            .post(
                &format!("/realtime/conversations/{id}/read"),
                &dave,
                &json!({"message_id": message["id"]}),
            )
            .await,
        403,
        "permission_denied",
    )
    .await;
    let res = server
        .get(&format!("/realtime/sse?channels=conversation:{id}"), &dave)
        .await;
    expect_error(res, 403, "permission_denied").await;
    assert!(conversations_of(&server, "dave").await.is_empty());
    // Another tenant's bob is not this bob.
    let other_bob = token_with("bob", json!({"tenant_id": "other"}));
    expect_error(
        server.get(&messages, &other_bob).await,
        403,
        "permission_denied",
    )
    .await;

    // Typing in a conversation is a user.typing on its channel.
    let typing = json!({"resource_type": "conversation", "resource_id": id, "field": "message", "is_typing": true});
    assert_eq!(
        server
            .post("/realtime/typing", &token("carol"), &typing)
            .await
            .status(),
        200
    );
    let event = next_named(&mut bob, "user.typing").await;
    assert_eq!(event["channel"], convo["channel"]);
    assert_eq!(event["data"]["user_id"], "carol");

    // Only the sender edits or deletes.
    let mid = message["id"].as_str().unwrap();
    let one = format!("/realtime/conversations/{id}/messages/{mid}");
    expect_error(
        server
            .call(
                Method::PATCH,
                &one,
                &token("bob"),
                Some(&json!({"content": "mine now"})),
            )
            .await,
        403,
        "permission_denied",
    )
    .await;
    expect_error(
        server.call(Method::DELETE, &one, &token("bob"), None).await,
        403,
        "permission_denied",
    )
    .await;
    let edited = json_of(
        server
            .call(
                Method::PATCH,
                &one,
                &token("alice"),
                Some(&json!({"content": "Launch at one"})),
            )
            .await,
        200,
    )
    .await;
    assert_eq!(edited["content"], "Launch at one");
    assert!(edited["edited_at"].is_string());
    let event = next_named(&mut bob, "message.updated").await;
    assert_eq!(event["data"]["content"], "Launch at one");
    let deleted = json_of(
        server
            .call(Method::DELETE, &one, &token("alice"), None)
            .await,
        200,
    )
    .await;
    // Deleting again is a retry: the same deleted message.
    let again = json_of(
        server
            .call(Method::DELETE, &one, &token("alice"), None)
            .await,
        200,
    )
    .await;
    assert_eq!(again, deleted);
    assert_eq!(deleted["content"], "");
    assert!(deleted["deleted_at"].is_string());
    let event = next_named(&mut bob, "message.deleted").await;
    assert_eq!(event["data"]["id"], mid);
    assert_eq!(event["data"]["content"], "");
    expect_error(
        server
            .call(
                Method::PATCH,
                &one,
                &token("alice"),
                Some(&json!({"content": "back"})),
            )
            .await,
        404,
        "not_found",
    )
    .await;
    let history = get_ok(&server, &messages, &token("carol")).await;
    assert_eq!(history["messages"][0]["deleted_at"], deleted["deleted_at"]);
    assert_eq!(
        unread_in(&server, "carol", id).await,
        0,
        "a deleted message is not unread"
    );

    // Bad input.
    expect_error(
        server
            .post(&messages, &token("bob"), &json!({"content": ""}))
            .await,
        400,
        "invalid_message",
    )
    .await;
    expect_error(
        server
            .post(
                &messages,
                &token("bob"),
                &json!({"content": "x".repeat(64 * 1024 + 1)}),
            )
            .await,
        413,
        "payload_too_large",
    )
    .await;
    expect_error(
        server
            .get("/realtime/conversations/no%20such/messages", &token("bob"))
            .await,
        400,
        "invalid_channel",
    )
    .await;
    let (status, body) = open(
        &server,
        &token("alice"),
        json!({"type": "group", "title": "", "members": ["bob"]}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_message")),
        "{body}"
    );
    let (status, body) = open(&server, &token("alice"), json!({"type": "channel"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_message")),
        "{body}"
    );
}

async fn history_pages_newest_first(backend: Backend) {
    let server = Server::start(&backend).await;
    let convo = direct(&server, "alice", "bob").await;
    let id = convo["id"].as_str().unwrap();
    let mut sent = Vec::new();
    for n in 0..5 {
        sent.push(send(&server, "alice", id, &format!("message {n}")).await["id"].clone());
    }
    let path = format!("/realtime/conversations/{id}/messages?limit=2");
    let first = get_ok(&server, &path, &token("bob")).await;
    let ids = ids_of(&first, "messages");
    assert_eq!(ids, vec![sent[4].clone(), sent[3].clone()]);
    let before = first["next_before"].as_str().unwrap();
    let second = get_ok(&server, &format!("{path}&before={before}"), &token("bob")).await;
    let ids = ids_of(&second, "messages");
    assert_eq!(ids, vec![sent[2].clone(), sent[1].clone()]);
    let before = second["next_before"].as_str().unwrap();
    let last = get_ok(&server, &format!("{path}&before={before}"), &token("bob")).await;
    assert_eq!(last["messages"].as_array().unwrap().len(), 1);
    assert_eq!(last["next_before"], Value::Null);

    let listed = conversations_of(&server, "bob").await;
    assert_eq!(listed[0]["last_message"]["id"], sent[4]);
    assert_eq!(listed[0]["unread_count"], 5);
    assert_eq!(
        conversations_of(&server, "alice").await[0]["unread_count"],
        0
    );
}

async fn a_retried_client_message_id_stores_one_message(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(&backend).await);
    let convo = direct(&server, "alice", "bob").await;
    let id = convo["id"].as_str().unwrap().to_string();
    let mut retries = Vec::new();
    for _ in 0..8 {
        let (server, id) = (server.clone(), id.clone());
        retries.push(tokio::spawn(async move {
            let res = server
                .post(
                    &format!("/realtime/conversations/{id}/messages"),
                    &token("alice"),
                    &json!({"content": "only once", "client_message_id": "retry-1"}),
                )
                .await;
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }));
    }
    let mut ids = BTreeSet::new();
    let mut created = 0;
    for retry in retries {
        let (status, body) = retry.await.unwrap();
        assert!(status == 201 || status == 200, "{status} {body}");
        created += usize::from(status == 201);
        ids.insert(body["id"].as_str().unwrap().to_string());
    }
    assert_eq!((ids.len(), created), (1, 1), "{ids:?}");
    let history = get_ok(
        &server,
        &format!("/realtime/conversations/{id}/messages"),
        &token("bob"),
    )
    .await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    let poll = get_ok(
        &server,
        "/realtime/poll?last_poll_id=0&timeout=0",
        &token("bob"),
    )
    .await;
    let created_events = poll["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "message.created")
        .count();
    assert_eq!(created_events, 1, "{poll}");
    // The same id from another sender is another message.
    let res = server
        .post(
            &format!("/realtime/conversations/{id}/messages"),
            &token("bob"),
            &json!({"content": "mine", "client_message_id": "retry-1"}),
        )
        .await;
    let theirs = json_of(res, 201).await;
    assert!(!ids.contains(theirs["id"].as_str().unwrap()));
}

async fn read_positions_move_forward_and_unread_counts_stay_exact_under_concurrency(
    backend: Backend,
) {
    let server = std::sync::Arc::new(Server::start(&backend).await);
    let convo = group(&server, "alice", &["bob", "carol"]).await;
    let id = convo["id"].as_str().unwrap().to_string();
    let mut alice_device = server.sse("", &token("alice")).await;
    alice_device.subscription().await;

    let mut sends = Vec::new();
    for n in 0..30 {
        let (server, id) = (server.clone(), id.clone());
        let from = if n % 2 == 0 { "alice" } else { "bob" };
        sends.push(tokio::spawn(async move {
            send(&server, from, &id, &format!("{from} {n}")).await
        }));
    }
    for s in sends {
        s.await.unwrap();
    }
    assert_eq!(unread_in(&server, "alice", &id).await, 15);
    assert_eq!(unread_in(&server, "bob", &id).await, 15);
    assert_eq!(unread_in(&server, "carol", &id).await, 30);

    // History is newest first: messages[k] has k newer ones.
    let history = get_ok(
        &server,
        &format!("/realtime/conversations/{id}/messages?limit=100"),
        &token("carol"),
    )
    .await;
    let messages = history["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 30);
    // Carol reads several positions at once, alice keeps sending: the
    // position ends at the furthest one read, never back.
    let mut tasks = Vec::new();
    for k in [20usize, 5, 12, 9] {
        let (server, id, mid) = (server.clone(), id.clone(), messages[k]["id"].clone());
        tasks.push(tokio::spawn(async move {
            let res = server
                .post(
                    &format!("/realtime/conversations/{id}/read"),
                    &token("carol"),
                    &json!({"message_id": mid}),
                )
                .await;
            json_of(res, 200).await
        }));
    }
    for n in 0..6 {
        let (server, id) = (server.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            send(&server, "alice", &id, &format!("more {n}")).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let furthest = &messages[5];
    let carol = conversations_of(&server, "carol").await;
    let convo_now = carol.iter().find(|c| c["id"] == id.as_str()).unwrap();
    assert_eq!(convo_now["unread_count"], 5 + 6, "{convo_now}");
    let position = convo_now["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == "carol")
        .unwrap();
    assert_eq!(position["last_read_message_id"], furthest["id"]);
    // Reading an older message changes nothing and says where she is.
    let back = json_of(
        server
            .post(
                &format!("/realtime/conversations/{id}/read"),
                &token("carol"),
                &json!({"message_id": messages[25]["id"]}),
            )
            .await,
        200,
    )
    .await;
    assert_eq!(back["message_id"], furthest["id"]);
    assert_eq!(back["unread_count"], 11);

    // Bob reads everything; alice's device sees the receipt.
    let newest = get_ok(
        &server,
        &format!("/realtime/conversations/{id}/messages?limit=1"),
        &token("bob"),
    )
    .await["messages"][0]["id"]
        .clone();
    let read = json_of(
        server
            .post(
                &format!("/realtime/conversations/{id}/read"),
                &token("bob"),
                &json!({"message_id": newest}),
            )
            .await,
        200,
    )
    .await;
    assert_eq!(read["unread_count"], 0);
    loop {
        let event = next_named(&mut alice_device, "message.read").await;
        if event["data"]["user_id"] == "bob" {
            assert_eq!(event["data"]["message_id"], newest);
            assert_eq!(event["data"]["conversation_id"], id.as_str());
            assert!(event["data"]["read_at"].is_string());
            break;
        }
    }
    assert_eq!(unread_in(&server, "bob", &id).await, 0);
    expect_error(
        server
            .post(
                &format!("/realtime/conversations/{id}/read"),
                &token("bob"),
                &json!({"message_id": "nope"}),
            )
            .await,
        404,
        "not_found",
    )
    .await;
}

async fn a_stream_and_a_poll_naming_no_channel_carry_the_whole_inbox(backend: Backend) {
    let server = Server::start(&backend).await;
    let bob = token("bob");
    // Opened before the conversation exists.
    let mut stream = server.sse("", &bob).await;
    stream.subscription().await;
    let start = get_ok(&server, "/realtime/poll?timeout=0", &bob).await;
    let cursor = start["last_poll_id"].as_u64().unwrap();

    let convo = group(&server, "alice", &["bob"]).await;
    let id = convo["id"].as_str().unwrap();
    let sub = next_control(&mut stream, "subscription").await;
    assert!(
        sub["channels"]
            .as_array()
            .unwrap()
            .contains(&convo["channel"]),
        "{sub}"
    );
    let message = send(&server, "alice", id, "welcome").await;
    let event = next_named(&mut stream, "message.created").await;
    assert_eq!(event["data"]["id"], message["id"]);
    notify(&server, "bob", "You were added").await;
    next_named(&mut stream, "notification").await;

    // GET and POST polls naming no channel read the same inbox.
    let got = get_ok(
        &server,
        &format!("/realtime/poll?last_poll_id={cursor}&timeout=0"),
        &bob,
    )
    .await;
    let posted = json_of(
        server
            .post(
                "/realtime/poll",
                &bob,
                &json!({"last_poll_id": cursor, "timeout": 0}),
            )
            .await,
        200,
    )
    .await;
    for answer in [&got, &posted] {
        let names: Vec<&str> = answer["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["channel"] == convo["channel"] || e["channel"] == "user:bob")
            .map(|e| e["event"].as_str().unwrap())
            .filter(|n| !n.starts_with("user."))
            .collect();
        assert_eq!(
            names,
            vec![
                "member.added",
                "member.added",
                "message.created",
                "notification"
            ],
            "{answer}"
        );
    }
    assert_eq!(got["events"], posted["events"]);
}

async fn a_waiting_poll_loses_nothing_of_a_conversation_joined_meanwhile(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(&backend).await);
    let bob = token("bob");
    let start = get_ok(&server, "/realtime/poll?timeout=0", &bob).await;
    let mut cursor = start["last_poll_id"].as_u64().unwrap();
    let waiting = {
        let server = server.clone();
        let bob = bob.clone();
        tokio::spawn(async move {
            server
                .get(
                    &format!("/realtime/poll?last_poll_id={cursor}&timeout=20"),
                    &bob,
                )
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let convo = group(&server, "alice", &["bob"]).await;
    let id = convo["id"].as_str().unwrap();
    let message = send(&server, "alice", id, "while you waited").await;
    let mut answer = json_of(waiting.await.unwrap(), 200).await;
    // Poll on from each answer's cursor until the message shows up.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let found = answer["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "message.created" && e["data"]["id"] == message["id"]);
        if found {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "message never polled: {answer}"
        );
        cursor = answer["last_poll_id"].as_u64().unwrap();
        answer = get_ok(
            &server,
            &format!("/realtime/poll?last_poll_id={cursor}&timeout=5"),
            &bob,
        )
        .await;
    }
}

async fn every_inbox_operation_works_over_websocket(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut bob = Ws::connect(&server, &token("bob")).await;
    assert_eq!(bob.expect().await["type"], "connected");
    let mut alice = Ws::connect(&server, &token("alice")).await;
    alice.expect().await;
    let mut service = Ws::connect(&server, &service_token()).await;
    service.expect().await;

    let convo = alice
        .ok(json!({"type": "conversations", "action": "open", "data": {"type": "direct", "user_id": "bob"}}))
        .await;
    let id = convo["id"].as_str().unwrap();
    let sent = alice
        .ok(json!({"type": "conversations", "action": "send",
                   "data": {"conversation_id": id, "content": "over the socket", "client_message_id": "w1"}}))
        .await;
    assert_eq!(sent["content"], "over the socket");
    // Bob's socket joined the conversation by itself.
    let event = ws_named(&mut bob, "message.created").await;
    assert_eq!(event["data"]["id"], sent["id"]);
    let listed = bob
        .ok(json!({"type": "conversations", "action": "list"}))
        .await;
    assert_eq!(listed["conversations"][0]["unread_count"], 1);
    let history = bob
        .ok(json!({"type": "conversations", "action": "messages", "data": {"conversation_id": id, "limit": 10}}))
        .await;
    assert_eq!(history["messages"][0]["id"], sent["id"]);
    let read = bob
        .ok(json!({"type": "conversations", "action": "read", "data": {"conversation_id": id, "message_id": sent["id"]}}))
        .await;
    assert_eq!(read["unread_count"], 0);
    let receipt = ws_named(&mut alice, "message.read").await;
    assert_eq!(receipt["data"]["user_id"], "bob");
    let edited = alice
        .ok(json!({"type": "conversations", "action": "edit",
                   "data": {"conversation_id": id, "message_id": sent["id"], "content": "edited"}}))
        .await;
    assert_eq!(edited["content"], "edited");
    assert_eq!(
        ws_named(&mut bob, "message.updated").await["data"]["content"],
        "edited"
    );
    let refused = bob
        .call(json!({"type": "conversations", "action": "delete", "data": {"conversation_id": id, "message_id": sent["id"]}}))
        .await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("permission_denied")),
        "{refused}"
    );
    alice
        .ok(json!({"type": "conversations", "action": "delete", "data": {"conversation_id": id, "message_id": sent["id"]}}))
        .await;
    ws_named(&mut bob, "message.deleted").await;

    // Notifications.
    let created = service
        .ok(json!({"type": "notifications", "action": "create", "data": {"user_id": "bob", "type": "t", "title": "Hello"}}))
        .await;
    assert_eq!(
        ws_named(&mut bob, "notification").await["data"]["id"],
        created["id"]
    );
    let count = bob
        .ok(json!({"type": "notifications", "action": "unread_count"}))
        .await;
    assert_eq!(count["unread_count"], 1);
    let page = bob
        .ok(json!({"type": "notifications", "action": "list", "data": {"unread": true}}))
        .await;
    assert_eq!(page["notifications"][0]["id"], created["id"]);
    let one = bob
        .ok(json!({"type": "notifications", "action": "read", "data": {"id": created["id"]}}))
        .await;
    assert_eq!(one["unread_count"], 0);
    ws_named(&mut bob, "notification.read").await;
    service
        .ok(json!({"type": "notifications", "action": "create", "data": {"user_id": "bob", "type": "t", "title": "Again"}}))
        .await;
    let all = bob
        .ok(json!({"type": "notifications", "action": "read_all"}))
        .await;
    assert_eq!(all["unread_count"], 0);
    assert_eq!(
        ws_named(&mut bob, "notification.read_all").await["data"]["unread_count"],
        0
    );
    let refused = bob
        .call(json!({"type": "notifications", "action": "create", "data": {"user_id": "bob", "type": "t", "title": "x"}}))
        .await;
    assert_eq!(refused["code"], "permission_denied", "{refused}");

    // Members, kept by a backend; the member's socket follows at once.
    let added = service
        .ok(json!({"type": "members", "action": "add", "data": {"channel": "project:p9", "user_id": "bob"}}))
        .await;
    assert_eq!(added["user_id"], "bob");
    let listed = bob
        .ok(json!({"type": "members", "action": "list", "data": {"channel": "project:p9"}}))
        .await;
    assert_eq!(listed["members"][0]["user_id"], "bob");
    bob.ok(json!({"type": "subscribe", "channels": ["project:p9"]}))
        .await;
    service
        .ok(json!({"type": "members", "action": "remove", "data": {"channel": "project:p9", "user_id": "bob"}}))
        .await;
    loop {
        let message = bob.expect().await;
        if message["type"] == "subscription" && message["removed"] == json!(["project:p9"]) {
            break;
        }
    }
    let unknown = bob
        .call(json!({"type": "conversations", "action": "shout"}))
        .await;
    assert_eq!(unknown["code"], "invalid_message", "{unknown}");
    let missing = bob
        .call(json!({"type": "conversations", "action": "send", "data": {"content": "x"}}))
        .await;
    assert_eq!(missing["code"], "invalid_message", "{missing}");
}

async fn a_message_is_a_client_action_under_the_rate_limits(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    std::fs::write(&config, "[limits]\nactions_per_minute_per_user = 3\n").unwrap();
    let server = Server::start_with(
        &backend,
        &[
            ("SWITCHYARD_RATE_LIMITS", "on"),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
        ],
    )
    .await;
    // Opening is the first action, two messages the next two.
    let convo = direct(&server, "alice", "bob").await;
    let id = convo["id"].as_str().unwrap();
    let path = format!("/realtime/conversations/{id}/messages");
    for n in 0..2 {
        let res = server
            .post(&path, &token("alice"), &json!({"content": format!("m{n}")}))
            .await;
        assert_eq!(res.status(), 201);
        assert!(res.headers().contains_key("x-ratelimit-remaining"));
    }
    let res = server
        .post(&path, &token("alice"), &json!({"content": "too many"}))
        .await;
    assert!(res.headers().contains_key("retry-after"));
    expect_error(res, 429, "rate_limit_exceeded").await;
    // Reading is free.
    assert_eq!(server.get(&path, &token("alice")).await.status(), 200);
}

/// A stream that joins a conversation while events keep coming gets every
/// event once and in increasing id order (the joined conversation's events
/// are merged in, not read by a second reader racing the first).
async fn a_stream_keeps_one_id_order_across_a_join(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(&backend).await);
    let mut bob = server.sse("", &token("bob")).await;
    bob.subscription().await;
    let convo = direct(&server, "alice", "bob").await;
    let id = convo["id"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for n in 0..20 {
        let (sender, id) = (server.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            send(&sender, "alice", &id, &format!("m{n}")).await["id"].clone()
        }));
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            notify(&server, "bob", &format!("n{n}")).await["id"].clone()
        }));
    }
    let mut expected = BTreeSet::new();
    for task in tasks {
        expected.insert(task.await.unwrap().as_str().unwrap().to_string());
    }
    let mut seen = BTreeSet::new();
    let mut last_id = 0;
    while seen.len() < expected.len() {
        let frame = bob.next_frame_within(WAIT).await.expect("stream open");
        let Some(_) = frame.data else { continue };
        let json = frame.json();
        if json["type"] != "event" {
            continue;
        }
        let event_id = json["id"].as_u64().unwrap();
        assert!(event_id > last_id, "{event_id} after {last_id}: {json}");
        last_id = event_id;
        if matches!(
            json["event"].as_str(),
            Some("message.created" | "notification")
        ) {
            assert!(
                seen.insert(json["data"]["id"].as_str().unwrap().to_string()),
                "twice: {json}"
            );
        }
    }
    assert_eq!(seen, expected);
}

/// A poll that names channels carries the inbox too, as a stream does.
async fn a_poll_naming_channels_carries_the_inbox_too(backend: Backend) {
    let server = Server::start(&backend).await;
    let convo = direct(&server, "alice", "bob").await;
    let message = send(&server, "alice", convo["id"].as_str().unwrap(), "hi").await;
    let answer = get_ok(
        &server,
        "/realtime/poll?channels=system&timeout=0",
        &token("bob"),
    )
    .await;
    let found = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "message.created" && e["data"]["id"] == message["id"]);
    assert!(found, "{answer}");
}

on_both_backends!(
    notifications_are_created_both_ways_and_read_state_reaches_other_devices,
    bad_notifications_are_refused_and_nothing_is_stored,
    members_kept_by_the_server_read_and_write_and_a_removed_one_stops_at_once,
    direct_conversations_are_one_per_pair_under_concurrent_opens,
    members_talk_outsiders_get_403_and_senders_alone_edit_or_delete,
    history_pages_newest_first,
    a_retried_client_message_id_stores_one_message,
    read_positions_move_forward_and_unread_counts_stay_exact_under_concurrency,
    a_stream_and_a_poll_naming_no_channel_carry_the_whole_inbox,
    a_waiting_poll_loses_nothing_of_a_conversation_joined_meanwhile,
    every_inbox_operation_works_over_websocket,
    a_message_is_a_client_action_under_the_rate_limits,
    a_stream_keeps_one_id_order_across_a_join,
    a_poll_naming_channels_carries_the_inbox_too,
);

/// Two nodes on one Postgres: a message through one reaches a member's
/// stream on the other, and a membership change made on one applies to
/// streams open on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_nodes_messages_and_membership_changes_reach_open_streams() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let a = Server::start(&backend).await;
    let b = Server::start_on(a.db.clone(), &[]);
    let mut bob_on_b = b.sse("", &token("bob")).await;
    bob_on_b.subscription().await;

    let convo = group(&a, "alice", &["bob"]).await;
    let id = convo["id"].as_str().unwrap();
    let sub = next_control(&mut bob_on_b, "subscription").await;
    assert!(
        sub["channels"]
            .as_array()
            .unwrap()
            .contains(&convo["channel"]),
        "{sub}"
    );
    let message = send(&a, "alice", id, "from node a").await;
    let event = next_named(&mut bob_on_b, "message.created").await;
    assert_eq!(event["data"]["id"], message["id"]);

    let mut ws_on_b = Ws::connect(&b, &token("bob")).await;
    ws_on_b.expect().await;
    let again = send(&a, "alice", id, "and again").await;
    assert_eq!(
        ws_named(&mut ws_on_b, "message.created").await["data"]["id"],
        again["id"]
    );

    // Bob leaves the group on node a: his stream on node b stops following it.
    let path = format!("/realtime/channels/conversation:{id}/members/bob");
    let res = a.call(Method::DELETE, &path, &service_token(), None).await;
    assert_eq!(res.status(), 204);
    let sub = next_control(&mut bob_on_b, "subscription").await;
    assert_eq!(sub["removed"], json!([convo["channel"]]), "{sub}");
    expect_error(
        b.get(
            &format!("/realtime/conversations/{id}/messages"),
            &token("bob"),
        )
        .await,
        403,
        "permission_denied",
    )
    .await;
}
