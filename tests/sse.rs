//! SSE reading (PROTOCOL §4): headers, the opening frames, event frames,
//! which events a stream gets, resuming with a cursor, resets, keep-alive,
//! and the errors that refuse a stream.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// Opens `/realtime/sse?{query}` with extra headers, without judging the answer.
async fn sse_request(
    server: &Server,
    query: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = server
        .client
        .get(server.url(&format!("/realtime/sse?{query}")))
        .bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("SSE request")
}

/// Opens a stream with headers; panics unless 200.
async fn sse_with_headers(
    server: &Server,
    query: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> SseStream {
    let res = sse_request(server, query, token, headers).await;
    assert_eq!(res.status(), 200, "SSE answered {}", res.status());
    SseStream::new(res)
}

/// Publishes with any token through `/realtime/broadcast`; returns the receipt.
async fn broadcast_as(
    server: &Server,
    token: &str,
    channel: &str,
    event: &str,
    data: Value,
) -> Value {
    let res = server
        .post(
            "/realtime/broadcast",
            token,
            &json!({"channel": channel, "event": event, "data": data}),
        )
        .await;
    let status = res.status();
    let body: Value = res.json().await.expect("receipt JSON");
    assert_eq!(status, 202, "broadcast answered {body}");
    body
}

/// The ids of the next `n` events on a stream.
async fn next_ids(stream: &mut SseStream, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            stream.next_event(WAIT).await["id"]
                .as_u64()
                .expect("event id"),
        );
    }
    ids
}

/// A server whose `feed` namespace keeps events for 1 s, pruned every second.
async fn start_with_short_feed_retention(backend: &Backend) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("switchyard.toml");
    std::fs::write(
        &path,
        "[namespaces.feed]\nsubscribe = \"everyone\"\nretention_secs = 1\n",
    )
    .expect("write config");
    let server = Server::start_with(
        backend,
        &[
            ("SWITCHYARD_CONFIG", path.to_str().unwrap()),
            ("SWITCHYARD_PRUNE_INTERVAL_SECS", "1"),
        ],
    )
    .await;
    (server, dir)
}

/// Polls `channel` from the start until none of `ids` is retained (bounded).
async fn wait_until_pruned(server: &Server, channel: &str, ids: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body: Value = server
            .get(
                &format!("/realtime/poll?channels={channel}&last_poll_id=0&timeout=0"),
                &service_token(),
            )
            .await
            .json()
            .await
            .expect("poll body");
        let left: Vec<u64> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect();
        if !ids.iter().any(|id| left.contains(id)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "events {ids:?} still retained after 10 s: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `connections` from `/realtime/status`.
async fn status_connections(server: &Server) -> i64 {
    let res = server
        .client
        .get(server.url("/realtime/status"))
        .send()
        .await
        .expect("status");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("status JSON");
    body["connections"].as_i64().expect("connections")
}

/// Waits (bounded) until `/realtime/status` reports `expected` connections.
async fn wait_for_connections(server: &Server, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = status_connections(server).await;
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "connections stayed {got}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn response_has_event_stream_headers(backend: Backend) {
    let server = Server::start(&backend).await;
    let stream = server.sse("channels=system", &token("alice")).await;
    let header = |name: &str| {
        stream
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(header("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(header("x-accel-buffering").as_deref(), Some("no"));
}

async fn stream_opens_with_retry_then_subscription_including_own_user_channel(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut stream = server
        .sse("channels=feed:updates,system", &token("alice"))
        .await;
    let retry = stream.next_frame_within(WAIT).await.expect("retry frame");
    assert_eq!(retry.retry, Some(2000));
    assert!(retry.data.is_none() && retry.id.is_none(), "{retry:?}");
    let sub = stream
        .next_frame_within(WAIT)
        .await
        .expect("subscription frame");
    assert_eq!(sub.id, None, "control messages have no id");
    assert_eq!(sub.event, None);
    // user:{sub} is added last, unrequested; the connection id is what an
    // `exclude_self` publish names.
    let mut sub = sub.json();
    let connection = sub
        .as_object_mut()
        .unwrap()
        .remove("connection_id")
        .expect("the opening subscription names the connection");
    assert!(connection.as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(
        sub,
        json!({"type": "subscription", "status": "success", "channels": ["feed:updates", "system", "user:alice"], "errors": []})
    );
}

async fn event_frame_is_id_and_data_envelope_without_event_line(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut stream = server.sse("channels=feed:updates", &token("alice")).await;
    stream.subscription().await;
    let data = json!({"task_id": "123", "changes": [{"field": "status", "new_value": "done"}]});
    let id = server
        .broadcast("feed:updates", "task.updated", data.clone())
        .await;

    let frame = stream.next_frame_within(WAIT).await.expect("event frame");
    assert_eq!(frame.id, Some(id));
    assert_eq!(
        frame.event, None,
        "no event: line, so EventSource.onmessage sees it"
    );
    assert_eq!(frame.retry, None);
    assert_eq!(frame.comment, None);
    let envelope = frame.json();
    let timestamp = envelope["timestamp"]
        .as_str()
        .expect("timestamp string")
        .to_string();
    assert_eq!(
        envelope,
        json!({"type": "event", "id": id, "channel": "feed:updates", "event": "task.updated",
               "data": data, "user_id": "backend", "timestamp": timestamp})
    );
    // RFC 3339 UTC with milliseconds: 2026-11-22T15:05:42.123Z
    assert_eq!(timestamp.len(), 24, "{timestamp}");
    assert!(
        timestamp.ends_with('Z') && timestamp.as_bytes()[19] == b'.',
        "{timestamp}"
    );
    chrono::DateTime::parse_from_rfc3339(&timestamp).expect("RFC 3339 timestamp");
}

async fn events_of_unsubscribed_channels_and_other_tenants_are_not_delivered(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut stream = server.sse("channels=feed:updates", &token("alice")).await;
    stream.subscription().await;
    let other_tenant = token_with("backend", json!({"role": "service", "tenant_id": "acme"}));
    broadcast_as(&server, &other_tenant, "feed:updates", "leak", json!(1)).await;
    broadcast_as(&server, &other_tenant, "user:alice", "leak", json!(2)).await;
    server.broadcast("feed:other", "leak", json!(3)).await;
    server.broadcast("system", "leak", json!(4)).await;
    server.broadcast("user:bob", "leak", json!(5)).await;
    let mine = server.broadcast("feed:updates", "marker", json!(6)).await;
    // Events arrive in id order: anything leaked would come before the marker.
    let event = stream.next_event(WAIT).await;
    assert_eq!(event["id"], mine, "{event}");
    assert_eq!(event["event"], "marker");
}

async fn notifications_alias_receives_events_on_own_user_channel(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut stream = server.sse("channels=notifications", &token("alice")).await;
    let sub = stream.subscription().await;
    assert_eq!(
        sub["channels"],
        json!(["user:alice"]),
        "notifications resolves to user:alice"
    );
    let id = server
        .broadcast("user:alice", "notification", json!({"title": "hi"}))
        .await;
    let event = stream.next_event(WAIT).await;
    assert_eq!(event["id"], id);
    assert_eq!(event["channel"], "user:alice");
}

async fn last_event_id_header_resumes_with_exactly_the_missed_events(backend: Backend) {
    let server = Server::start(&backend).await;
    let seen = server.broadcast("feed:updates", "e", json!(1)).await;
    let missed = [
        server.broadcast("feed:updates", "e", json!(2)).await,
        server.broadcast("feed:updates", "e", json!(3)).await,
    ];
    let mut stream = sse_with_headers(
        &server,
        "channels=feed:updates",
        &token("alice"),
        &[("Last-Event-ID", &seen.to_string())],
    )
    .await;
    stream.subscription().await;
    assert_eq!(next_ids(&mut stream, 2).await, missed);
    // Then live events, with nothing repeated.
    let live = server.broadcast("feed:updates", "e", json!(4)).await;
    assert_eq!(next_ids(&mut stream, 1).await, [live]);
}

async fn last_event_id_query_resumes_with_exactly_the_missed_events(backend: Backend) {
    let server = Server::start(&backend).await;
    let seen = server.broadcast("feed:updates", "e", json!(1)).await;
    let missed = [
        server.broadcast("feed:updates", "e", json!(2)).await,
        server.broadcast("feed:updates", "e", json!(3)).await,
    ];
    let mut stream = server
        .sse(
            &format!("channels=feed:updates&last_event_id={seen}"),
            &token("alice"),
        )
        .await;
    stream.subscription().await;
    assert_eq!(next_ids(&mut stream, 2).await, missed);
    let live = server.broadcast("feed:updates", "e", json!(4)).await;
    assert_eq!(next_ids(&mut stream, 1).await, [live]);
}

async fn last_event_id_header_wins_over_query(backend: Backend) {
    let server = Server::start(&backend).await;
    let first = server.broadcast("feed:updates", "e", json!(1)).await;
    let second = server.broadcast("feed:updates", "e", json!(2)).await;
    let third = server.broadcast("feed:updates", "e", json!(3)).await;
    let query = format!("channels=feed:updates&last_event_id={second}");
    let mut stream = sse_with_headers(
        &server,
        &query,
        &token("alice"),
        &[("Last-Event-ID", &first.to_string())],
    )
    .await;
    stream.subscription().await;
    // From the header's cursor: the second event comes first (the query's would skip it).
    assert_eq!(next_ids(&mut stream, 2).await, [second, third]);
}

async fn last_event_id_zero_replays_all_retained_events(backend: Backend) {
    let server = Server::start(&backend).await;
    let ids = [
        server.broadcast("feed:updates", "e", json!(1)).await,
        server.broadcast("system", "other", json!(2)).await,
        server.broadcast("feed:updates", "e", json!(3)).await,
        server.broadcast("user:alice", "n", json!(4)).await,
    ];
    let mut stream = server
        .sse("channels=feed:updates&last_event_id=0", &token("alice"))
        .await;
    stream.subscription().await;
    // feed:updates and the automatic user:alice, not system.
    assert_eq!(next_ids(&mut stream, 3).await, [ids[0], ids[2], ids[3]]);
}

async fn without_cursor_stream_starts_at_current_end(backend: Backend) {
    let server = Server::start(&backend).await;
    server.broadcast("feed:updates", "before", json!(1)).await;
    let mut stream = server.sse("channels=feed:updates", &token("alice")).await;
    stream.subscription().await;
    let after = server.broadcast("feed:updates", "after", json!(2)).await;
    let event = stream.next_event(WAIT).await;
    assert_eq!(
        event["id"], after,
        "the event published before connecting is not delivered: {event}"
    );
}

async fn idle_stream_sends_ping_comment(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_KEEPALIVE_SECS", "1")]).await;
    let mut stream = server.sse("channels=feed:updates", &token("alice")).await;
    stream.subscription().await;
    let frame = stream
        .next_frame_within(Duration::from_secs(5))
        .await
        .expect("ping frame");
    assert_eq!(frame.comment.as_deref(), Some("ping"), "{frame:?}");
    assert!(frame.data.is_none() && frame.id.is_none(), "{frame:?}");
    // The stream still carries events after a ping.
    let id = server.broadcast("feed:updates", "e", json!(1)).await;
    assert_eq!(stream.next_event(WAIT).await["id"], id);
}

async fn unreadable_channels_are_listed_in_subscription_errors(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"channels": ["task:*"]}));
    let mut stream = server
        .sse("channels=task:1,project:2,system,user:bob", &alice)
        .await;
    let mut sub = stream.subscription().await;
    sub.as_object_mut().unwrap().remove("connection_id");
    assert_eq!(
        sub,
        json!({"type": "subscription", "status": "success",
               "channels": ["task:1", "system", "user:alice"],
               "errors": [{"channel": "project:2", "code": "permission_denied"},
                          {"channel": "user:bob", "code": "permission_denied"}]})
    );
    // The refused channel really is left out. (Alice's own `user.connected`
    // on task:1, a presence-enabled namespace, may come first.)
    server.broadcast("project:2", "leak", json!(1)).await;
    let id = server.broadcast("task:1", "e", json!(2)).await;
    let next = loop {
        let event = stream.next_event(WAIT).await;
        if event["event"] != "user.connected" {
            break event;
        }
    };
    assert_eq!(next["id"], id);
}

async fn no_readable_channel_is_403(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = sse_request(&server, "channels=task:1,user:bob", &token("alice"), &[]).await;
    let body = expect_error(res, 403, "permission_denied").await;
    assert_eq!(
        body["details"]["errors"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
}

async fn bad_channel_name_is_400_invalid_channel(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = sse_request(&server, "channels=system,Task:1", &token("alice"), &[]).await;
    expect_error(res, 400, "invalid_channel").await;
}

async fn unknown_namespace_is_404_channel_not_found(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = sse_request(&server, "channels=system,nope:1", &token("alice"), &[]).await;
    expect_error(res, 404, "channel_not_found").await;
}

async fn more_than_fifty_channels_is_subscription_limit_exceeded(backend: Backend) {
    let server = Server::start(&backend).await;
    let names = |n: usize| {
        (0..n)
            .map(|i| format!("feed:c{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let res = sse_request(
        &server,
        &format!("channels={}", names(51)),
        &token("alice"),
        &[],
    )
    .await;
    let body = expect_error(res, 400, "subscription_limit_exceeded").await;
    assert_eq!(body["details"]["limit"], 50, "{body}");
    // Fifty are allowed, and the automatic user channel does not count.
    let mut stream = server
        .sse(&format!("channels={}", names(50)), &token("alice"))
        .await;
    let sub = stream.subscription().await;
    assert_eq!(sub["channels"].as_array().map(Vec::len), Some(51), "{sub}");
    assert_eq!(sub["channels"][50], "user:alice");
}

async fn non_numeric_last_event_id_is_400(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = sse_request(
        &server,
        "channels=system",
        &token("alice"),
        &[("Last-Event-ID", "abc")],
    )
    .await;
    expect_error(res, 400, "invalid_message").await;
}

async fn user_id_other_than_token_subject_is_403(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = sse_request(&server, "channels=system&user_id=bob", &token("alice"), &[]).await;
    expect_error(res, 403, "permission_denied").await;
    // The matching user_id is accepted.
    let mut stream = server
        .sse("channels=system&user_id=alice", &token("alice"))
        .await;
    stream.subscription().await;
}

async fn pruned_cursor_gets_reset_before_first_event(backend: Backend) {
    let (server, _config) = start_with_short_feed_retention(&backend).await;
    let seen = server.broadcast("feed:updates", "e", json!(1)).await;
    let lost = server.broadcast("feed:updates", "e", json!(2)).await;
    wait_until_pruned(&server, "feed:updates", &[seen, lost]).await;
    // Retained for 24 h on system, so it cannot be pruned while the test reads it.
    let kept = server.broadcast("system", "e", json!(3)).await;

    let mut stream = server
        .sse(
            &format!("channels=feed:updates,system&last_event_id={seen}"),
            &token("alice"),
        )
        .await;
    stream.subscription().await;
    let reset = stream.next_frame_within(WAIT).await.expect("reset frame");
    assert_eq!(reset.id, None, "control messages have no id");
    assert_eq!(
        reset.json(),
        json!({"type": "reset", "reason": "cursor_expired", "oldest_id": kept})
    );
    assert_eq!(next_ids(&mut stream, 1).await, [kept]);
}

async fn cursor_beyond_end_gets_reset_then_new_events(backend: Backend) {
    let server = Server::start(&backend).await;
    let head = server.broadcast("feed:updates", "e", json!(1)).await;
    let mut stream = server
        .sse(
            &format!("channels=feed:updates&last_event_id={}", head + 100),
            &token("alice"),
        )
        .await;
    stream.subscription().await;
    let reset = stream.next_frame_within(WAIT).await.expect("reset frame");
    assert_eq!(
        reset.json(),
        json!({"type": "reset", "reason": "cursor_expired", "oldest_id": head + 1})
    );
    // The stream follows the real log from its current end.
    let next = server.broadcast("feed:updates", "e", json!(2)).await;
    assert_eq!(next_ids(&mut stream, 1).await, [next]);
}

async fn publish_reaches_every_open_stream_exactly_once(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut streams = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let mut stream = server.sse("channels=feed:updates", &token(user)).await;
        stream.subscription().await;
        streams.push(stream);
    }
    let receipt = broadcast_as(&server, &service_token(), "feed:updates", "e", json!(1)).await;
    assert_eq!(receipt["recipients"], 3, "{receipt}");
    let id = receipt["id"].as_u64().unwrap();
    let marker = server.broadcast("feed:updates", "marker", json!(2)).await;
    for stream in &mut streams {
        // The event, then the marker: no duplicate in between.
        assert_eq!(next_ids(stream, 2).await, [id, marker]);
    }
}

async fn status_connections_counts_open_streams(backend: Backend) {
    let server = Server::start(&backend).await;
    assert_eq!(status_connections(&server).await, 0);
    let mut first = server.sse("channels=system", &token("alice")).await;
    first.subscription().await;
    let mut second = server.sse("channels=system", &token("bob")).await;
    second.subscription().await;
    wait_for_connections(&server, 2).await;
    drop(first);
    wait_for_connections(&server, 1).await;
    drop(second);
    wait_for_connections(&server, 0).await;
}

on_both_backends!(
    response_has_event_stream_headers,
    stream_opens_with_retry_then_subscription_including_own_user_channel,
    event_frame_is_id_and_data_envelope_without_event_line,
    events_of_unsubscribed_channels_and_other_tenants_are_not_delivered,
    notifications_alias_receives_events_on_own_user_channel,
    last_event_id_header_resumes_with_exactly_the_missed_events,
    last_event_id_query_resumes_with_exactly_the_missed_events,
    last_event_id_header_wins_over_query,
    last_event_id_zero_replays_all_retained_events,
    without_cursor_stream_starts_at_current_end,
    idle_stream_sends_ping_comment,
    unreadable_channels_are_listed_in_subscription_errors,
    no_readable_channel_is_403,
    bad_channel_name_is_400_invalid_channel,
    unknown_namespace_is_404_channel_not_found,
    more_than_fifty_channels_is_subscription_limit_exceeded,
    non_numeric_last_event_id_is_400,
    user_id_other_than_token_subject_is_403,
    pruned_cursor_gets_reset_before_first_event,
    cursor_beyond_end_gets_reset_then_new_events,
    publish_reaches_every_open_stream_exactly_once,
    status_connections_counts_open_streams,
);
