//! Long polling (PROTOCOL §5): immediate and waiting answers, the
//! `last_poll_id` cursor, paging with `limit`/`has_more`, `/poll/missed`,
//! channel checks, body validation, resets and isolation.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// GET `path`; asserts 200 and returns the JSON body.
async fn get_json(server: &Server, path: &str, token: &str) -> Value {
    let res = server.get(path, token).await;
    let status = res.status();
    let body: Value = res.json().await.expect("JSON body");
    assert_eq!(status, 200, "GET {path} answered {body}");
    body
}

/// The ids of a poll answer's events.
fn ids(body: &Value) -> Vec<u64> {
    body["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["id"].as_u64().expect("id"))
        .collect()
}

/// Publishes with any token through `/realtime/broadcast`; returns the id.
async fn broadcast_as(
    server: &Server,
    token: &str,
    channel: &str,
    event: &str,
    data: Value,
) -> u64 {
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
    body["id"].as_u64().expect("receipt id")
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

async fn waiting_events_are_answered_at_once_same_for_get_and_post(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let first = server.broadcast("feed:updates", "e", json!({"n": 1})).await;
    let second = server.broadcast("feed:updates", "e", json!({"n": 2})).await;
    // Default timeout is 30 s: a quick answer means it did not wait.
    let start = Instant::now();
    let get = get_json(&server, "/realtime/poll?channels=feed:updates", &alice).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        start.elapsed()
    );
    assert_eq!(ids(&get), [first, second]);
    assert_eq!(get["last_poll_id"], second);
    assert_eq!(get["has_more"], false);
    assert_eq!(get["events"][0]["data"], json!({"n": 1}));
    assert_eq!(get["events"][0]["type"], "event");
    assert_eq!(get["events"][0]["channel"], "feed:updates");
    assert_eq!(get["events"][0]["user_id"], "backend");

    let res = server
        .post(
            "/realtime/poll",
            &alice,
            &json!({"channels": ["feed:updates"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let post: Value = res.json().await.unwrap();
    assert_eq!(post, get, "GET and POST forms give the same body");
}

async fn last_poll_id_is_id_of_last_event_returned(backend: Backend) {
    let server = Server::start(&backend).await;
    let first = server.broadcast("feed:updates", "e", json!(1)).await;
    server.broadcast("system", "other", json!(2)).await;
    let body = get_json(
        &server,
        "/realtime/poll?channels=feed:updates&timeout=0",
        &token("alice"),
    )
    .await;
    // Not the head (the system event is later): the last event returned.
    assert_eq!(ids(&body), [first]);
    assert_eq!(body["last_poll_id"], first);
}

async fn empty_answer_last_poll_id_is_head_and_skips_nothing(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let before = server.broadcast("system", "other", json!(1)).await;
    let head = server.broadcast("system", "other", json!(2)).await;
    let body = get_json(
        &server,
        &format!("/realtime/poll?channels=feed:updates&timeout=0&last_poll_id={before}"),
        &alice,
    )
    .await;
    assert_eq!(body["events"], json!([]));
    assert_eq!(body["has_more"], false);
    // At least the head when the poll began (the poll itself may append the
    // user's presence events, on other channels), never below the request's.
    let cursor = body["last_poll_id"].as_u64().unwrap();
    assert!(
        cursor >= head,
        "no events: the cursor moved up to the head ({cursor} < {head})"
    );
    // The next event published is exactly what the cursor yields.
    let next = server.broadcast("feed:updates", "e", json!(3)).await;
    let body = get_json(
        &server,
        &format!("/realtime/poll?channels=feed:updates&timeout=0&last_poll_id={cursor}"),
        &alice,
    )
    .await;
    assert_eq!(ids(&body), [next]);
    assert_eq!(body["last_poll_id"], next);
}

async fn waiting_poll_is_woken_by_publish(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(&backend).await);
    let head = server.broadcast("system", "other", json!(1)).await;
    let poller = {
        let server = server.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let path =
                format!("/realtime/poll?channels=feed:updates&timeout=10&last_poll_id={head}");
            let body = get_json(&server, &path, &token("alice")).await;
            (start.elapsed(), body)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poller.is_finished(),
        "with nothing to return the poll waits"
    );
    let id = server.broadcast("feed:updates", "wake", json!(2)).await;
    let (elapsed, body) = tokio::time::timeout(Duration::from_secs(15), poller)
        .await
        .expect("poll answered")
        .unwrap();
    assert!(
        elapsed < Duration::from_secs(8),
        "woken by the publish, not the 10 s timeout: {elapsed:?}"
    );
    assert_eq!(ids(&body), [id]);
    assert_eq!(body["last_poll_id"], id);
}

async fn timeout_with_nothing_answers_empty(backend: Backend) {
    let server = Server::start(&backend).await;
    let head = server.broadcast("system", "other", json!(1)).await;
    let start = Instant::now();
    let body = get_json(
        &server,
        &format!("/realtime/poll?channels=feed:updates&timeout=1&last_poll_id={head}"),
        &token("alice"),
    )
    .await;
    let elapsed = start.elapsed();
    assert_eq!(body["events"], json!([]));
    assert_eq!(body["has_more"], false);
    assert!(body["last_poll_id"].as_u64() >= Some(head), "{body}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "waited the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "answered at the 1 s timeout: {elapsed:?}"
    );
}

async fn limit_pages_with_has_more(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let mut published = Vec::new();
    for n in 0..5 {
        published.push(server.broadcast("feed:updates", "e", json!(n)).await);
    }
    let mut seen = Vec::new();
    let mut cursor = 0;
    for (len, more) in [(2, true), (2, true), (1, false)] {
        let body = get_json(
            &server,
            &format!(
                "/realtime/poll?channels=feed:updates&timeout=0&limit=2&last_poll_id={cursor}"
            ),
            &alice,
        )
        .await;
        assert_eq!(ids(&body).len(), len, "{body}");
        assert_eq!(body["has_more"], more, "{body}");
        seen.extend(ids(&body));
        cursor = body["last_poll_id"].as_u64().unwrap();
        assert_eq!(Some(&cursor), seen.last());
    }
    assert_eq!(seen, published);
}

async fn limit_zero_is_400(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .get(
            "/realtime/poll?channels=system&timeout=0&limit=0",
            &token("alice"),
        )
        .await;
    expect_error(res, 400, "invalid_message").await;
}

async fn limit_above_maximum_is_clamped(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut published = Vec::new();
    for n in 0..3 {
        published.push(server.broadcast("feed:updates", "e", json!(n)).await);
    }
    let body = get_json(
        &server,
        "/realtime/poll?channels=feed:updates&timeout=0&limit=5000",
        &token("alice"),
    )
    .await;
    assert_eq!(ids(&body), published);
    assert_eq!(body["has_more"], false);
}

async fn missed_answers_at_once_from_last_sequence(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let first = server.broadcast("feed:updates", "e", json!(1)).await;
    let second = server.broadcast("feed:updates", "e", json!(2)).await;
    let body = get_json(
        &server,
        &format!("/realtime/poll/missed?channels=feed:updates&last_sequence={first}"),
        &alice,
    )
    .await;
    assert_eq!(ids(&body), [second]);
    assert_eq!(body["last_poll_id"], second);
    // Nothing missed: still answered at once (timeout 0), not after the 30 s default.
    let start = Instant::now();
    let body = get_json(
        &server,
        &format!("/realtime/poll/missed?channels=feed:updates&last_sequence={second}"),
        &alice,
    )
    .await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        start.elapsed()
    );
    assert_eq!(body["events"], json!([]));
    assert_eq!(body["has_more"], false);
    assert!(body["last_poll_id"].as_u64() >= Some(second), "{body}");
}

async fn unreadable_channels_are_listed_in_errors(backend: Backend) {
    let server = Server::start(&backend).await;
    let id = server.broadcast("feed:updates", "e", json!(1)).await;
    server.broadcast("task:1", "leak", json!(2)).await;
    let body = get_json(
        &server,
        "/realtime/poll?channels=feed:updates,task:1&timeout=0",
        &token("alice"),
    )
    .await;
    assert_eq!(ids(&body), [id], "the refused channel is left out");
    assert_eq!(
        body["errors"],
        json!([{"channel": "task:1", "code": "permission_denied"}])
    );
}

async fn no_readable_channel_is_403(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .get(
            "/realtime/poll?channels=task:1,user:bob&timeout=0",
            &token("alice"),
        )
        .await;
    expect_error(res, 403, "permission_denied").await;
}

async fn bad_channel_name_is_400_invalid_channel(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .post(
            "/realtime/poll",
            &token("alice"),
            &json!({"channels": ["system", "a b"], "timeout": 0}),
        )
        .await;
    expect_error(res, 400, "invalid_channel").await;
}

async fn unknown_namespace_is_404_channel_not_found(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .get(
            "/realtime/poll?channels=system,nope:1&timeout=0",
            &token("alice"),
        )
        .await;
    expect_error(res, 404, "channel_not_found").await;
}

async fn malformed_json_body_is_400_invalid_message(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .client
        .post(server.url("/realtime/poll"))
        .bearer_auth(token("alice"))
        .header("content-type", "application/json")
        .body("{\"channels\": [\"system\"")
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "invalid_message").await;
}

async fn unknown_body_field_is_400_invalid_message(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .post(
            "/realtime/poll",
            &token("alice"),
            &json!({"channels": ["system"], "timeout": 0, "cursor": 5}),
        )
        .await;
    expect_error(res, 400, "invalid_message").await;
}

async fn token_in_query_is_accepted(backend: Backend) {
    let server = Server::start(&backend).await;
    let id = server.broadcast("user:alice", "n", json!(1)).await;
    let url = server.url(&format!(
        "/realtime/poll?channels=notifications&timeout=0&token={}",
        token("alice")
    ));
    let res = server.client.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(ids(&body), [id], "the query token identifies alice");
}

async fn user_id_other_than_token_subject_is_403(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let res = server
        .get(
            "/realtime/poll?channels=system&timeout=0&user_id=bob",
            &alice,
        )
        .await;
    expect_error(res, 403, "permission_denied").await;
    let res = server
        .post(
            "/realtime/poll",
            &alice,
            &json!({"channels": ["system"], "timeout": 0, "user_id": "bob"}),
        )
        .await;
    expect_error(res, 403, "permission_denied").await;
    // The matching user_id is accepted.
    get_json(
        &server,
        "/realtime/poll?channels=system&timeout=0&user_id=alice",
        &alice,
    )
    .await;
}

async fn pruned_cursor_gets_reset_in_body(backend: Backend) {
    let (server, _config) = start_with_short_feed_retention(&backend).await;
    let alice = token("alice");
    let seen = server.broadcast("feed:updates", "e", json!(1)).await;
    let lost = server.broadcast("feed:updates", "e", json!(2)).await;
    // Bounded wait for the pruner to remove both.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ids(&get_json(
        &server,
        "/realtime/poll?channels=feed:updates&timeout=0",
        &alice,
    )
    .await)
    .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "events {seen}, {lost} not pruned within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Retained for 24 h on system, so it cannot be pruned while the test reads it.
    let kept = server.broadcast("system", "e", json!(3)).await;

    let body = get_json(
        &server,
        &format!("/realtime/poll?channels=feed:updates,system&timeout=0&last_poll_id={seen}"),
        &alice,
    )
    .await;
    assert_eq!(
        body["reset"],
        json!({"reason": "cursor_expired", "oldest_id": kept}),
        "{body}"
    );
    assert_eq!(ids(&body), [kept]);
    assert_eq!(body["last_poll_id"], kept);
    // Cursor 0 asks for everything retained and never gets a reset.
    let body = get_json(
        &server,
        "/realtime/poll?channels=feed:updates,system&timeout=0&last_poll_id=0",
        &alice,
    )
    .await;
    assert!(body.get("reset").is_none(), "{body}");
    assert_eq!(ids(&body), [kept]);
}

async fn tenants_do_not_see_each_others_events(backend: Backend) {
    let server = Server::start(&backend).await;
    let acme_service = token_with("backend", json!({"role": "service", "tenant_id": "acme"}));
    let acme_event = broadcast_as(&server, &acme_service, "feed:updates", "e", json!("acme")).await;
    let default_event = server
        .broadcast("feed:updates", "e", json!("default"))
        .await;

    let body = get_json(
        &server,
        "/realtime/poll?channels=feed:updates&timeout=0",
        &token("alice"),
    )
    .await;
    assert_eq!(ids(&body), [default_event]);
    let acme_alice = token_with("alice", json!({"tenant_id": "acme"}));
    let body = get_json(
        &server,
        "/realtime/poll?channels=feed:updates&timeout=0",
        &acme_alice,
    )
    .await;
    assert_eq!(ids(&body), [acme_event]);
}

async fn other_user_does_not_see_user_channel(backend: Backend) {
    let server = Server::start(&backend).await;
    let bob = token("bob");
    server
        .broadcast("user:alice", "n", json!("for alice"))
        .await;
    let for_bob = server.broadcast("user:bob", "n", json!("for bob")).await;
    // Asking for it outright is refused...
    let res = server
        .get("/realtime/poll?channels=user:alice&timeout=0", &bob)
        .await;
    expect_error(res, 403, "permission_denied").await;
    // ...and alongside readable channels it is left out; bob gets his own channel.
    let body = get_json(
        &server,
        "/realtime/poll?channels=system,user:alice&timeout=0",
        &bob,
    )
    .await;
    assert_eq!(ids(&body), [for_bob]);
    assert_eq!(
        body["errors"],
        json!([{"channel": "user:alice", "code": "permission_denied"}])
    );
    let body = get_json(
        &server,
        "/realtime/poll?channels=notifications&timeout=0",
        &bob,
    )
    .await;
    assert_eq!(ids(&body), [for_bob]);
}

/// A cursor from beyond the end of the log (a replaced database, say) gets a
/// reset and a cursor at the current end, so the ids still to come are not skipped.
async fn cursor_beyond_end_gets_reset_and_skips_no_future_event(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let head = server.broadcast("feed:updates", "first", json!({})).await;
    let body = get_json(
        &server,
        "/realtime/poll?channels=feed:updates&timeout=0&last_poll_id=101",
        &alice,
    )
    .await;
    assert_eq!(
        body["reset"],
        json!({"reason": "cursor_expired", "oldest_id": head + 1})
    );
    // The cursor is back at the end of the log (the poll may add the user's
    // own presence events, on other channels), far below the bogus 101.
    let cursor = body["last_poll_id"].as_u64().unwrap();
    assert!(cursor >= head && cursor < 101, "{body}");
    let next = server.broadcast("feed:updates", "second", json!({})).await;
    let body = get_json(
        &server,
        &format!("/realtime/poll?channels=feed:updates&timeout=0&last_poll_id={cursor}"),
        &alice,
    )
    .await;
    assert_eq!(ids(&body), vec![next]);
}

/// Broadcasts `n` events alternating over `channels` in one batch; returns
/// their ids per channel.
async fn broadcast_batch(server: &Server, channels: &[&str], n: usize) -> Vec<Vec<u64>> {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"channel": channels[i % channels.len()], "event": "e", "data": i}))
        .collect();
    let res = server
        .post(
            "/realtime/broadcast",
            &service_token(),
            &json!({ "events": events }),
        )
        .await;
    let status = res.status();
    let body: Value = res.json().await.expect("receipt JSON");
    assert_eq!(status, 202, "broadcast answered {body}");
    let mut ids = vec![Vec::new(); channels.len()];
    for (i, id) in body["ids"].as_array().expect("ids").iter().enumerate() {
        ids[i % channels.len()].push(id.as_u64().expect("id"));
    }
    ids
}

/// Polls `channels` from `cursor` until an answer has no more; appends the
/// ids to `seen`, checks the cursor, and returns the new cursor.
async fn poll_through(
    server: &Server,
    channels: &str,
    mut cursor: u64,
    seen: &mut Vec<u64>,
) -> u64 {
    let alice = token("alice");
    loop {
        let body = get_json(
            server,
            &format!(
                "/realtime/poll?channels={channels}&last_poll_id={cursor}&timeout=0&limit=150"
            ),
            &alice,
        )
        .await;
        assert!(body.get("reset").is_none(), "unexpected reset: {body}");
        let got = ids(&body);
        let next = body["last_poll_id"].as_u64().expect("last_poll_id");
        assert!(next >= cursor, "cursor went back from {cursor} to {next}");
        if let Some(&last) = got.last() {
            assert_eq!(next, last);
        }
        seen.extend(got);
        cursor = next;
        if !body["has_more"].as_bool().expect("has_more") {
            return cursor;
        }
    }
}

async fn sequential_polls_see_every_event_once_across_more_than_memory_holds(backend: Backend) {
    let server = Server::start(&backend).await;
    let (mut cursor_a, mut cursor_ab) = (0, 0);
    let (mut seen_a, mut seen_ab) = (Vec::new(), Vec::new());
    let (mut published_a, mut published_ab) = (Vec::<u64>::new(), Vec::<u64>::new());
    // Small rounds (answered from memory) and bursts past a feed's ring
    // (512 events), so some polls must go back to storage.
    let rounds: [&[usize]; 10] = [
        &[1],
        &[3],
        &[1000, 1000],
        &[2],
        &[5],
        &[700],
        &[1],
        &[1],
        &[900, 900],
        &[4],
    ];
    for batches in rounds {
        for &n in batches {
            let ids = broadcast_batch(&server, &["feed:a", "feed:b"], n).await;
            published_a.extend(&ids[0]);
            published_ab.extend(ids.concat());
        }
        cursor_a = poll_through(&server, "feed:a", cursor_a, &mut seen_a).await;
        cursor_ab = poll_through(&server, "feed:a,feed:b", cursor_ab, &mut seen_ab).await;
    }
    published_ab.sort_unstable();
    assert_eq!(seen_a, published_a, "feed:a alone");
    assert_eq!(seen_ab, published_ab, "feed:a and feed:b merged");
}

async fn polls_racing_publishes_see_every_event_once_in_order(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(&backend).await);
    let publisher = tokio::spawn({
        let server = server.clone();
        async move {
            let mut published = Vec::new();
            for n in [1, 40, 3, 600, 7, 1, 900, 1000, 20, 2] {
                published.extend(broadcast_batch(&server, &["feed:r"], n).await.concat());
            }
            published
        }
    });
    let (mut cursor, mut seen) = (0, Vec::new());
    while !publisher.is_finished() {
        cursor = poll_through(&server, "feed:r", cursor, &mut seen).await;
    }
    let published = publisher.await.expect("publisher");
    poll_through(&server, "feed:r", cursor, &mut seen).await;
    assert_eq!(seen, published);
}

on_both_backends!(
    waiting_events_are_answered_at_once_same_for_get_and_post,
    last_poll_id_is_id_of_last_event_returned,
    empty_answer_last_poll_id_is_head_and_skips_nothing,
    waiting_poll_is_woken_by_publish,
    timeout_with_nothing_answers_empty,
    limit_pages_with_has_more,
    limit_zero_is_400,
    limit_above_maximum_is_clamped,
    missed_answers_at_once_from_last_sequence,
    unreadable_channels_are_listed_in_errors,
    no_readable_channel_is_403,
    bad_channel_name_is_400_invalid_channel,
    unknown_namespace_is_404_channel_not_found,
    malformed_json_body_is_400_invalid_message,
    unknown_body_field_is_400_invalid_message,
    token_in_query_is_accepted,
    user_id_other_than_token_subject_is_403,
    pruned_cursor_gets_reset_in_body,
    tenants_do_not_see_each_others_events,
    other_user_does_not_see_user_channel,
    cursor_beyond_end_gets_reset_and_skips_no_future_event,
    sequential_polls_see_every_event_once_across_more_than_memory_holds,
    polls_racing_publishes_see_every_event_once_in_order,
);
