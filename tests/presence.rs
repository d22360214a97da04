//! Presence, viewing and typing (PROTOCOL §7): online from streams and
//! polls, offline after the TTL, busy/away, viewing and typing events, the
//! REST views, tenant isolation and input errors.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Presence TTL of 1 s, so "offline after the TTL" takes a second or two.
const SHORT_TTL: (&str, &str) = ("SWITCHYARD_PRESENCE_TTL_SECS", "1");

async fn status_of(server: &Server, user: &str, asker: &str) -> Value {
    let res = server
        .get(&format!("/realtime/presence/users/{user}"), asker)
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Waits (bounded) until `user`'s REST status is `want`.
async fn wait_status(server: &Server, user: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = status_of(server, user, &token("observer")).await;
        if body["status"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user} never became {want}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next event on `stream` named `name` about alice, skipping others
/// (the watchers' own presence events among them).
async fn next_named(stream: &mut SseStream, name: &str) -> Value {
    loop {
        let event = stream.next_event(Duration::from_secs(15)).await;
        if event["event"] == name && event["data"]["user_id"] == "alice" {
            return event;
        }
    }
}

async fn a_stream_makes_its_user_online_and_announces_it(backend: Backend) {
    let server = Server::start_with(&backend, &[SHORT_TTL]).await;
    let mut watcher = server.sse("channels=presence:alice", &token("bob")).await;
    watcher.subscription().await;
    assert_eq!(
        status_of(&server, "alice", &token("bob")).await["status"],
        "offline"
    );

    let mut alice = server.sse("channels=system", &token("alice")).await;
    alice.subscription().await;
    let event = next_named(&mut watcher, "user.presence").await;
    assert_eq!(event["channel"], "presence:alice");
    assert_eq!(event["data"]["user_id"], "alice");
    assert_eq!(event["data"]["status"], "online");
    assert!(event["data"]["updated_at"].is_string());
    assert_eq!(
        status_of(&server, "alice", &token("bob")).await["status"],
        "online"
    );
}

async fn a_closed_stream_goes_offline_after_the_ttl(backend: Backend) {
    let server = Server::start_with(&backend, &[SHORT_TTL]).await;
    let mut watcher = server.sse("channels=presence:alice", &token("bob")).await;
    watcher.subscription().await;
    let mut alice = server.sse("channels=system", &token("alice")).await;
    alice.subscription().await;
    assert_eq!(
        next_named(&mut watcher, "user.presence").await["data"]["status"],
        "online"
    );
    let closed = Instant::now();
    drop(alice);
    let event = next_named(&mut watcher, "user.presence").await;
    assert_eq!(event["data"]["status"], "offline");
    assert!(
        closed.elapsed() >= Duration::from_millis(900),
        "offline only after the TTL of grace"
    );
    assert_eq!(
        status_of(&server, "alice", &token("bob")).await["status"],
        "offline"
    );
}

async fn polling_keeps_a_user_online(backend: Backend) {
    let server = Server::start_with(&backend, &[SHORT_TTL]).await;
    let alice = token("alice");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            server
                .get("/realtime/poll?channels=system&timeout=0", &alice)
                .await
                .status(),
            200
        );
        assert_eq!(
            status_of(&server, "alice", &token("bob")).await["status"],
            "online"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Polls stop: offline after the TTL.
    wait_status(&server, "alice", "offline").await;
}

async fn with_two_streams_closing_one_keeps_the_user_online(backend: Backend) {
    let server = Server::start_with(&backend, &[SHORT_TTL]).await;
    let mut phone = server.sse("channels=system", &token("alice")).await;
    phone.subscription().await;
    let mut laptop = server.sse("channels=system", &token("alice")).await;
    laptop.subscription().await;
    drop(phone);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        status_of(&server, "alice", &token("bob")).await["status"],
        "online"
    );
    drop(laptop);
    wait_status(&server, "alice", "offline").await;
}

async fn busy_with_a_message_shows_in_rest_and_events(backend: Backend) {
    let server = Server::start_with(&backend, &[SHORT_TTL]).await;
    let mut watcher = server.sse("channels=presence", &token("bob")).await;
    watcher.subscription().await;
    let mut alice = server.sse("channels=system", &token("alice")).await;
    alice.subscription().await;
    assert_eq!(
        next_named(&mut watcher, "user.presence").await["data"]["status"],
        "online"
    );

    let res = server
        .post(
            "/realtime/presence",
            &token("alice"),
            &json!({"status": "busy", "status_message": "In a meeting"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(
        (answer["status"].as_str(), answer["status_message"].as_str()),
        (Some("busy"), Some("In a meeting"))
    );

    let event = next_named(&mut watcher, "user.presence").await;
    assert_eq!(event["channel"], "presence");
    assert_eq!(event["data"]["status"], "busy");
    assert_eq!(event["data"]["status_message"], "In a meeting");
    let rest = status_of(&server, "alice", &token("bob")).await;
    assert_eq!(rest["status"], "busy");
    assert_eq!(rest["status_message"], "In a meeting");
    assert!(rest["last_activity"].is_string());

    // Back to online clears busy.
    server
        .post(
            "/realtime/presence",
            &token("alice"),
            &json!({"status": "online"}),
        )
        .await;
    assert_eq!(
        next_named(&mut watcher, "user.presence").await["data"]["status"],
        "online"
    );
}

/// A server whose users turn away after 1 s, bob watching alice, and alice
/// online through a stream opened with `alice` (her token).
async fn alice_watched_with_away_after_1s(
    backend: &Backend,
    alice: &str,
) -> (Server, SseStream, SseStream) {
    let server = Server::start_with(
        backend,
        &[SHORT_TTL, ("SWITCHYARD_PRESENCE_AWAY_SECS", "1")],
    )
    .await;
    let mut watcher = server.sse("channels=presence:alice", &token("bob")).await;
    watcher.subscription().await;
    let mut stream = server.sse("channels=system", alice).await;
    stream.subscription().await;
    assert_eq!(
        next_named(&mut watcher, "user.presence").await["data"]["status"],
        "online"
    );
    (server, watcher, stream)
}

async fn without_actions_a_user_shows_as_away(backend: Backend) {
    let (server, mut watcher, _alice) =
        alice_watched_with_away_after_1s(&backend, &token("alice")).await;
    assert_eq!(
        next_named(&mut watcher, "user.presence").await["data"]["status"],
        "away"
    );
    assert_eq!(
        status_of(&server, "alice", &token("bob")).await["status"],
        "away"
    );
    // An action brings the user back.
    server
        .post(
            "/realtime/presence",
            &token("alice"),
            &json!({"status": "online"}),
        )
        .await;
    assert_eq!(
        next_named(&mut watcher, "user.presence").await["data"]["status"],
        "online"
    );
}

async fn viewing_appears_on_the_resource_channel_and_in_active_users(backend: Backend) {
    let server = Server::start_with(&backend, &[SHORT_TTL]).await;
    let alice = token_with(
        "alice",
        json!({"channels": ["task:*"], "name": "Alice A.", "avatar": "https://example.test/a.png"}),
    );
    let bob = token_with("bob", json!({"channels": ["task:123"]}));
    let mut watcher = server.sse("channels=task:123", &bob).await;
    watcher.subscription().await;
    let mut stream = server.sse("channels=system", &alice).await;
    stream.subscription().await;

    let res = server
        .post(
            "/realtime/presence/viewing",
            &alice,
            &json!({"resource_type": "task", "resource_id": "123"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let event = next_named(&mut watcher, "user.viewing").await;
    assert_eq!(event["channel"], "task:123");
    assert_eq!(event["data"]["user_id"], "alice");
    assert_eq!(event["data"]["resource_type"], "task");
    assert_eq!(event["data"]["resource_id"], "123");
    assert!(event["data"]["started_at"].is_string());

    let body: Value = server
        .get("/realtime/presence?resource=task&id=123", &bob)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["resource"], json!({"type": "task", "id": "123"}));
    // Bob is in the room (his stream follows task:123), viewing nothing.
    let users = body["active_users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{body}");
    assert_eq!(
        (users[1]["user_id"].as_str(), users[1]["viewing"].as_bool()),
        (Some("bob"), Some(false))
    );
    assert_eq!(users[0]["user_id"], "alice");
    assert_eq!(users[0]["name"], "Alice A.");
    assert_eq!(users[0]["avatar"], "https://example.test/a.png");
    assert_eq!(users[0]["status"], "online");
    assert_eq!(users[0]["viewing"], true);
    assert_eq!(users[0]["typing"], false);
    assert!(users[0]["last_activity"].is_string());
    let rest = status_of(&server, "alice", &bob).await;
    assert_eq!(
        rest["currently_viewing"],
        json!({"resource_type": "task", "resource_id": "123"})
    );

    // Clearing leaves the resource, with an event where it was.
    server
        .post(
            "/realtime/presence/viewing",
            &alice,
            &json!({"resource_type": null, "resource_id": null}),
        )
        .await;
    let event = next_named(&mut watcher, "user.viewing").await;
    assert_eq!(event["data"]["viewing"], false);
    let body: Value = server
        .get("/realtime/presence?resource=task&id=123", &bob)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = body["active_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bob"], "alice viewed it and left; bob follows it");
}

async fn typing_coalesces_and_ends_by_itself(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"channels": ["task:*"]}));
    let mut watcher = server
        .sse(
            "channels=task:9",
            &token_with("bob", json!({"channels": ["task:9"]})),
        )
        .await;
    watcher.subscription().await;
    let typing =
        json!({"resource_type": "task", "resource_id": "9", "field": "comment", "is_typing": true});
    for _ in 0..3 {
        assert_eq!(
            server
                .post("/realtime/typing", &alice, &typing)
                .await
                .status(),
            200
        );
    }
    let started = Instant::now();
    let event = next_named(&mut watcher, "user.typing").await;
    assert_eq!(
        event["data"],
        json!({"user_id": "alice", "resource_type": "task", "resource_id": "9", "field": "comment", "is_typing": true})
    );
    // The next typing event is the automatic end: the repeats were coalesced.
    let ended = next_named(&mut watcher, "user.typing").await;
    assert_eq!(ended["data"]["is_typing"], false);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "typing lasts about 6 s without refresh"
    );
    // An explicit stop after that has nothing to end: no event.
    server.post("/realtime/typing", &alice, &json!({"resource_type": "task", "resource_id": "9", "field": "comment", "is_typing": false})).await;
    let marker = server.broadcast("task:9", "marker", json!({})).await;
    assert_eq!(
        watcher.next_event(Duration::from_secs(5)).await["id"].as_u64(),
        Some(marker)
    );
}

async fn an_explicit_stop_ends_typing_at_once(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"channels": ["task:*"]}));
    let mut watcher = server
        .sse(
            "channels=task:9",
            &token_with("bob", json!({"channels": ["task:9"]})),
        )
        .await;
    watcher.subscription().await;
    let body = |on: bool| json!({"resource_type": "task", "resource_id": "9", "field": "title", "is_typing": on});
    server.post("/realtime/typing", &alice, &body(true)).await;
    assert_eq!(
        next_named(&mut watcher, "user.typing").await["data"]["is_typing"],
        true
    );
    server.post("/realtime/typing", &alice, &body(false)).await;
    assert_eq!(
        next_named(&mut watcher, "user.typing").await["data"]["is_typing"],
        false
    );
}

/// Typing without a `field` is typing in the resource as a whole (a chat's
/// message box): `field: null` in the events, `typing` in the REST view.
async fn typing_without_a_field_is_the_whole_resource(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"channels": ["task:*"]}));
    let bob = token_with("bob", json!({"channels": ["task:9"]}));
    let mut watcher = server.sse("channels=task:9", &bob).await;
    watcher.subscription().await;
    // Online (the REST view lists online users only).
    let mut alice_stream = server.sse("channels=task:9", &alice).await;
    alice_stream.subscription().await;
    let body = |on: bool| json!({"resource_type": "task", "resource_id": "9", "is_typing": on});
    let res = server.post("/realtime/typing", &alice, &body(true)).await;
    assert_eq!(res.status(), 200);
    let event = next_named(&mut watcher, "user.typing").await;
    assert_eq!(event["data"]["field"], Value::Null, "{event}");
    assert_eq!(event["data"]["is_typing"], true);
    let view: Value = server
        .get("/realtime/presence?resource=task&id=9", &bob)
        .await
        .json()
        .await
        .unwrap();
    let alice_there = view["active_users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == "alice")
        .cloned()
        .unwrap_or_else(|| panic!("alice is active: {view}"));
    assert_eq!(alice_there["typing"], true);
    assert_eq!(alice_there["typing_fields"], json!([]));
    server.post("/realtime/typing", &alice, &body(false)).await;
    let event = next_named(&mut watcher, "user.typing").await;
    assert_eq!(
        (
            event["data"]["field"].clone(),
            event["data"]["is_typing"].clone()
        ),
        (Value::Null, json!(false))
    );
}

/// Rooms (PROTOCOL §7): a user whose open stream follows a channel is in
/// its room, listed by the resource view and announced there when they
/// enter (even if already online elsewhere) and leave, once per user, not
/// per tab.
async fn entering_and_leaving_a_room_is_announced_once_per_user(backend: Backend) {
    let server = Server::start_with(&backend, &[SHORT_TTL]).await;
    let alice = token_with("alice", json!({"channels": ["project:*"], "name": "Alice"}));
    let bob = token_with("bob", json!({"channels": ["project:rb"]}));
    let mut watcher = server.sse("channels=project:rb", &bob).await;
    watcher.subscription().await;
    // Online elsewhere first.
    let mut elsewhere = server.sse("channels=system", &alice).await;
    elsewhere.subscription().await;
    wait_status(&server, "alice", "online").await;

    let mut tab_1 = server.sse("channels=project:rb", &alice).await;
    tab_1.subscription().await;
    let event = next_named(&mut watcher, "user.connected").await;
    assert_eq!(event["channel"], "project:rb");
    assert_eq!(event["data"]["name"], "Alice");
    let view: Value = server
        .get("/realtime/presence?resource=project&id=rb", &bob)
        .await
        .json()
        .await
        .unwrap();
    let alice_there = view["active_users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == "alice")
        .cloned()
        .unwrap_or_else(|| panic!("alice is in the room: {view}"));
    assert_eq!(
        (
            alice_there["status"].as_str(),
            alice_there["viewing"].as_bool(),
            alice_there["name"].as_str()
        ),
        (Some("online"), Some(false), Some("Alice"))
    );

    // A second tab is no news; closing one of two neither.
    let mut tab_2 = server.sse("channels=project:rb", &alice).await;
    tab_2.subscription().await;
    drop(tab_1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let marker = server.broadcast("project:rb", "marker", json!(2)).await;
    loop {
        let event = watcher.next_event(Duration::from_secs(10)).await;
        let name = event["event"].as_str().unwrap().to_string();
        assert!(
            name != "user.connected" && name != "user.disconnected",
            "no news while a tab stays: {event}"
        );
        if event["id"].as_u64() == Some(marker) {
            break;
        }
    }
    // The last tab gone (and its TTL): left, once; still online elsewhere.
    drop(tab_2);
    let event = next_named(&mut watcher, "user.disconnected").await;
    assert_eq!(event["channel"], "project:rb");
    assert_eq!(status_of(&server, "alice", &bob).await["status"], "online");
}

/// A WebSocket entering and leaving a room by subscribing and
/// unsubscribing; a poll reading a channel is in its room.
async fn subscriptions_and_polls_move_users_between_rooms(backend: Backend) {
    let server = Server::start_with(&backend, &[SHORT_TTL]).await;
    let alice = token_with("alice", json!({"channels": ["project:*"]}));
    let bob = token_with("bob", json!({"channels": ["project:*"]}));
    let mut watcher = server.sse("channels=project:ws", &bob).await;
    watcher.subscription().await;
    let mut ws = common::ws::Ws::connect(&server, &alice).await;
    ws.expect().await;
    ws.ok(json!({"type": "subscribe", "channels": ["project:ws"]}))
        .await;
    assert_eq!(
        next_named(&mut watcher, "user.connected").await["channel"],
        "project:ws"
    );
    ws.ok(json!({"type": "unsubscribe", "channels": ["project:ws"]}))
        .await;
    assert_eq!(
        next_named(&mut watcher, "user.disconnected").await["channel"],
        "project:ws"
    );

    let carol = token_with("carol", json!({"channels": ["project:*"]}));
    let res = server
        .get("/realtime/poll?channels=project:polled&timeout=0", &carol)
        .await;
    assert_eq!(res.status(), 200);
    let view: Value = server
        .get("/realtime/presence?resource=project&id=polled", &bob)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = view["active_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["carol"], "{view}");
}

/// A crowd opening at once (their sessions are recorded in shared
/// batches): each user enters the room once, however many tabs they open
/// together, and each is online in the REST view once their stream is open.
async fn a_crowd_opening_at_once_is_announced_once_per_user(backend: Backend) {
    let server = Server::start(&backend).await;
    let reader = |user: &str| token_with(user, json!({"channels": ["project:crowd"]}));
    let mut watcher = server
        .sse("channels=project:crowd", &reader("watcher"))
        .await;
    watcher.subscription().await;
    let users: Vec<String> = (0..24).map(|i| format!("crowd{i}")).collect();
    // Every third user opens two tabs in the same moment.
    let tabs = users
        .iter()
        .enumerate()
        .flat_map(|(i, user)| std::iter::repeat_n(user, if i % 3 == 0 { 2 } else { 1 }));
    let opening = tabs.map(|user| {
        let (server, token) = (&server, reader(user));
        async move {
            let mut stream = server.sse("channels=project:crowd", &token).await;
            stream.subscription().await;
            stream
        }
    });
    let _streams = futures_util::future::join_all(opening).await;
    // Every open was answered after its announcements were committed: they
    // all come before this marker.
    let marker = server.broadcast("project:crowd", "marker", json!(1)).await;
    let mut entered: std::collections::BTreeMap<String, usize> = Default::default();
    loop {
        let event = watcher.next_event(Duration::from_secs(15)).await;
        if event["id"].as_u64() == Some(marker) {
            break;
        }
        let user = event["data"]["user_id"].as_str().unwrap_or_default();
        if event["event"] == "user.connected" && user != "watcher" {
            *entered.entry(user.to_string()).or_default() += 1;
        }
    }
    let once: std::collections::BTreeMap<String, usize> =
        users.iter().map(|u| (u.clone(), 1)).collect();
    assert_eq!(entered, once);
    for user in &users {
        assert_eq!(
            status_of(&server, user, &token("observer")).await["status"],
            "online",
            "{user}"
        );
    }
}

async fn connecting_is_announced_on_the_channels_the_user_reads(backend: Backend) {
    let server = Server::start_with(&backend, &[SHORT_TTL]).await;
    let mut watcher = server
        .sse(
            "channels=project:7",
            &token_with("bob", json!({"channels": ["project:7"]})),
        )
        .await;
    watcher.subscription().await;
    let alice = server
        .sse(
            "channels=project:7",
            &token_with("alice", json!({"channels": ["project:*"], "name": "Alice"})),
        )
        .await;
    let event = next_named(&mut watcher, "user.connected").await;
    assert_eq!(event["channel"], "project:7");
    assert_eq!(event["data"]["user_id"], "alice");
    assert_eq!(event["data"]["name"], "Alice");
    drop(alice);
    assert_eq!(
        next_named(&mut watcher, "user.disconnected").await["data"]["user_id"],
        "alice"
    );
}

async fn another_tenant_sees_nothing(backend: Backend) {
    let server = Server::start_with(&backend, &[SHORT_TTL]).await;
    let alice = token_with("alice", json!({"channels": ["task:*"]}));
    let mut stream = server.sse("channels=system", &alice).await;
    stream.subscription().await;
    server
        .post(
            "/realtime/presence/viewing",
            &alice,
            &json!({"resource_type": "task", "resource_id": "1"}),
        )
        .await;
    let outsider = token_with(
        "carol",
        json!({"tenant_id": "acme", "channels": ["task:*"]}),
    );
    let rest = status_of(&server, "alice", &outsider).await;
    assert_eq!(rest["status"], "offline");
    assert_eq!(rest["currently_viewing"], Value::Null);
    let body: Value = server
        .get("/realtime/presence?resource=task&id=1", &outsider)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["active_users"], json!([]));
    // The same-tenant view does show her.
    assert_eq!(
        status_of(&server, "alice", &token("dave")).await["status"],
        "online"
    );
}

async fn a_dead_nodes_users_go_offline_after_the_ttl(backend: Backend) {
    let node_a = Server::start_with(&backend, &[SHORT_TTL]).await;
    let node_b = Server::start_on(node_a.db.clone(), &[SHORT_TTL]);
    let mut alice = node_a.sse("channels=system", &token("alice")).await;
    alice.subscription().await;
    wait_status(&node_b, "alice", "online").await;
    // Let a few heartbeats pass: alice stays online while node A lives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        status_of(&node_b, "alice", &token("bob")).await["status"],
        "online"
    );
    let mut node_a = node_a;
    node_a.child.kill().unwrap();
    node_a.child.wait().unwrap();
    wait_status(&node_b, "alice", "offline").await;
}

async fn bad_presence_requests_get_400_with_the_error_body(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"channels": ["task:1"]}));
    let cases = [
        (
            "/realtime/presence",
            json!({"status": "sleeping"}),
            400,
            "invalid_message",
        ),
        (
            "/realtime/presence",
            json!({"status": "busy", "status_message": "x".repeat(300)}),
            400,
            "invalid_message",
        ),
        (
            "/realtime/presence",
            json!({"status_message": "no status"}),
            400,
            "invalid_message",
        ),
        (
            "/realtime/presence/viewing",
            json!({"resource_type": "task"}),
            400,
            "invalid_message",
        ),
        (
            "/realtime/presence/viewing",
            json!({"resource_type": "task", "resource_id": "2"}),
            403,
            "permission_denied",
        ),
        (
            "/realtime/presence/viewing",
            json!({"resource_type": "nope", "resource_id": "1"}),
            404,
            "channel_not_found",
        ),
        (
            "/realtime/presence/viewing",
            json!({"resource_type": "task", "resource_id": "a b"}),
            400,
            "invalid_channel",
        ),
        (
            "/realtime/typing",
            json!({"resource_type": "task", "resource_id": "1", "field": "bad field", "is_typing": true}),
            400,
            "invalid_message",
        ),
        (
            "/realtime/typing",
            json!({"resource_type": "task", "resource_id": "1", "field": "f"}),
            400,
            "invalid_message",
        ),
        (
            "/realtime/typing",
            json!({"resource_type": "task", "resource_id": "2", "field": "f", "is_typing": true}),
            403,
            "permission_denied",
        ),
    ];
    for (path, body, status, code) in cases {
        let res = server.post(path, &alice, &body).await;
        expect_error(res, status, code).await;
    }
    let res = server
        .client
        .post(server.url("/realtime/presence"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "invalid_message").await;
    expect_error(
        server.get("/realtime/presence?resource=task", &alice).await,
        400,
        "invalid_message",
    )
    .await;
    expect_error(
        server
            .get("/realtime/presence?resource=task&id=2", &alice)
            .await,
        403,
        "permission_denied",
    )
    .await;
    expect_error(
        server
            .get("/realtime/presence/users/bad%20id", &alice)
            .await,
        400,
        "invalid_message",
    )
    .await;
}

/// Back-to-back actions write the user's activity only now and then (the
/// sweep writes the rest before it looks for idle users): still, the user
/// turns away only a full away delay after the LAST action.
async fn away_counts_from_the_last_of_many_quick_actions(backend: Backend) {
    let alice = token_with("alice", json!({"publish": ["feed:*"]}));
    let (server, mut watcher, _stream) = alice_watched_with_away_after_1s(&backend, &alice).await;
    // Act every 50 ms for 2.5 s: past the away delay twice over.
    let until = Instant::now() + Duration::from_millis(2500);
    let mut last_sent = 0;
    while Instant::now() < until {
        last_sent = chrono::Utc::now().timestamp_millis();
        let res = server
            .post(
                "/realtime/publish",
                &alice,
                &json!({"channel": "feed:a", "event": "tick", "data": {}}),
            )
            .await;
        assert_eq!(res.status(), 202);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = next_named(&mut watcher, "user.presence").await;
    assert_eq!(event["data"]["status"], "away", "{event}");
    let at = chrono::DateTime::parse_from_rfc3339(event["data"]["updated_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert!(
        at >= last_sent + 1000,
        "away {} ms after the last action, before the 1 s delay",
        at - last_sent
    );
}

on_both_backends!(
    away_counts_from_the_last_of_many_quick_actions,
    a_stream_makes_its_user_online_and_announces_it,
    a_closed_stream_goes_offline_after_the_ttl,
    polling_keeps_a_user_online,
    with_two_streams_closing_one_keeps_the_user_online,
    busy_with_a_message_shows_in_rest_and_events,
    without_actions_a_user_shows_as_away,
    viewing_appears_on_the_resource_channel_and_in_active_users,
    typing_coalesces_and_ends_by_itself,
    an_explicit_stop_ends_typing_at_once,
    typing_without_a_field_is_the_whole_resource,
    entering_and_leaving_a_room_is_announced_once_per_user,
    subscriptions_and_polls_move_users_between_rooms,
    connecting_is_announced_on_the_channels_the_user_reads,
    a_crowd_opening_at_once_is_announced_once_per_user,
    another_tenant_sees_nothing,
    a_dead_nodes_users_go_offline_after_the_ttl,
    bad_presence_requests_get_400_with_the_error_body,
);
