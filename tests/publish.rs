//! Writing (PROTOCOL §6): `POST /realtime/broadcast`, `POST /realtime/publish`
//! and `GET /realtime/activity`, proven over HTTP and read back by polling.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// 64 KiB: the largest encoded `data` a publish may carry.
const DATA_LIMIT: usize = 64 * 1024;

/// Status and JSON body of a response.
async fn answer(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body = res.json().await.expect("JSON body");
    (status, body)
}

/// Every retained event of `channels` readable with `token` (poll from 0, no wait).
async fn poll_all(server: &Server, token: &str, channels: &str) -> Vec<Value> {
    let res = server
        .get(
            &format!("/realtime/poll?channels={channels}&last_poll_id=0&timeout=0&limit=1000"),
            token,
        )
        .await;
    let (status, body) = answer(res).await;
    assert_eq!(status, 200, "poll answered {body}");
    body["events"].as_array().expect("events array").clone()
}

/// `2026-11-22T14:30:45.123Z`: RFC 3339, UTC, milliseconds.
fn assert_timestamp(value: &Value) -> i64 {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is a string: {value}"));
    assert_eq!(s.len(), 24, "timestamp {s} has millisecond precision");
    assert!(s.ends_with('Z'), "timestamp {s} is UTC with Z");
    assert_eq!(&s[19..20], ".", "timestamp {s} has a fractional part");
    assert!(
        s[20..23].bytes().all(|b| b.is_ascii_digit()),
        "timestamp {s} has 3 fraction digits"
    );
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s} is RFC 3339: {e}"))
        .timestamp_millis()
}

fn ids_of(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["id"].as_u64().expect("numeric id"))
        .collect()
}

// The receipt is `{"status":"sent","id","ids","recipients","timestamp"}` and
// the event then reads back by poll with the exact envelope of §3 (data
// round-trips whole: floats, escapes, non-ASCII).
async fn broadcast_answers_202_with_a_receipt_and_the_event_is_readable(backend: Backend) {
    let server = Server::start(&backend).await;
    let before = chrono::Utc::now().timestamp_millis();
    let res = server
        .post("/realtime/broadcast", &service_token(), &json!({"channel": "system", "event": "maintenance.scheduled", "data": {"at": "02:00", "n": [1, 2.5], "text": "h\u{e9}llo \u{2713} \"q\"\n"}}))
        .await;
    assert_eq!(res.status(), 202);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let receipt: Value = res.json().await.unwrap();
    let after = chrono::Utc::now().timestamp_millis();

    let id = receipt["id"].as_u64().expect("numeric id");
    let at = assert_timestamp(&receipt["timestamp"]);
    assert!(
        (before..=after).contains(&at),
        "receipt timestamp is the time of the publish"
    );
    assert_eq!(
        receipt,
        json!({"status": "sent", "id": id, "ids": [id], "recipients": 0, "timestamp": receipt["timestamp"]})
    );

    let res = server
        .get("/realtime/poll?channels=system&timeout=0", &token("alice"))
        .await;
    let (status, body) = answer(res).await;
    assert_eq!(status, 200);
    let event = &body["events"][0];
    assert_timestamp(&event["timestamp"]);
    assert_eq!(
        body,
        json!({
            "events": [{
                "type": "event", "id": id, "channel": "system", "event": "maintenance.scheduled",
                "data": {"at": "02:00", "n": [1, 2.5], "text": "h\u{e9}llo \u{2713} \"q\"\n"}, "user_id": "backend", "timestamp": event["timestamp"],
            }],
            "last_poll_id": id,
            "has_more": false,
        })
    );
}

// A client may publish to channels matching its `publish` claim; the event
// carries the publisher's sub as user_id.
async fn client_publishes_to_channels_matching_its_publish_claim(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"publish": ["project:*"]}));
    let res = server
        .post(
            "/realtime/publish",
            &alice,
            &json!({"channel": "project:456", "event": "announcement", "data": {"m": "hi"}}),
        )
        .await;
    let (status, receipt) = answer(res).await;
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["status"], "sent");

    let events = poll_all(&server, &service_token(), "project:456").await;
    assert_eq!(ids_of(&events), vec![receipt["id"].as_u64().unwrap()]);
    assert_eq!(events[0]["channel"], "project:456");
    assert_eq!(events[0]["event"], "announcement");
    assert_eq!(events[0]["data"], json!({"m": "hi"}));
    assert_eq!(events[0]["user_id"], "alice");
}

// A client whose publish claim does not match, or that may only read a
// channel, gets 403 and nothing is appended.
async fn client_without_publish_right_is_denied_and_nothing_is_appended(backend: Backend) {
    let server = Server::start(&backend).await;
    let bob = token_with(
        "bob",
        json!({"publish": ["project:1"], "channels": ["project:*"]}),
    );
    let res = server
        .post(
            "/realtime/publish",
            &bob,
            &json!({"channel": "project:2", "event": "x", "data": 1}),
        )
        .await;
    let body = expect_error(res, 403, "permission_denied").await;
    assert_eq!(body["details"]["channel"], "project:2");
    // `system` is readable by everyone but not client-publishable.
    let res = server
        .post(
            "/realtime/publish",
            &bob,
            &json!({"channel": "system", "event": "x", "data": 1}),
        )
        .await;
    expect_error(res, 403, "permission_denied").await;

    assert!(
        poll_all(&server, &service_token(), "project:2,system")
            .await
            .is_empty()
    );
}

// `conversation` is client-publishable for its members: a user whose
// `channels` claim matches may publish; a non-member may not.
async fn conversation_member_may_publish_to_the_conversation(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"channels": ["conversation:*"]}));
    let res = server
        .post("/realtime/publish", &alice, &json!({"channel": "conversation:42", "event": "message.created", "data": {"text": "hi"}}))
        .await;
    let (status, receipt) = answer(res).await;
    assert_eq!(status, 202, "{receipt}");

    let carol = token_with("carol", json!({"channels": ["conversation:7"]}));
    let res = server
        .post("/realtime/publish", &carol, &json!({"channel": "conversation:42", "event": "message.created", "data": {"text": "intruder"}}))
        .await;
    expect_error(res, 403, "permission_denied").await;

    // Read as the service: a member's own read would announce her presence
    // (user.connected) on the conversation, §7.
    let events = poll_all(&server, &service_token(), "conversation:42").await;
    assert_eq!(ids_of(&events), vec![receipt["id"].as_u64().unwrap()]);
    assert_eq!(events[0]["user_id"], "alice");
}

// /realtime/broadcast is for service tokens only, whatever the client's claims.
async fn broadcast_refuses_non_service_tokens(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"publish": ["*"], "channels": ["*"]}));
    let res = server
        .post(
            "/realtime/broadcast",
            &alice,
            &json!({"channel": "system", "event": "x", "data": 1}),
        )
        .await;
    expect_error(res, 403, "permission_denied").await;
    assert!(
        poll_all(&server, &service_token(), "system")
            .await
            .is_empty()
    );
}

// `channels: [...]` appends one event with one id, visible on each of its
// channels: a reader of several of them gets it once; its envelope lists
// every channel, `channel` being the first.
async fn multi_channel_publish_appends_one_event_on_every_channel(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .post("/realtime/broadcast", &service_token(), &json!({"channels": ["task:3", "task:1", "task:2", "task:1"], "event": "task.updated", "data": {"k": 1}}))
        .await;
    let (status, receipt) = answer(res).await;
    assert_eq!(status, 202, "{receipt}");
    let id = receipt["id"].as_u64().unwrap();
    assert_eq!(receipt["ids"], json!([id]), "one event");

    let events = poll_all(&server, &service_token(), "task:1,task:2,task:3").await;
    assert_eq!(ids_of(&events), vec![id], "once for a reader of all three");
    let event = &events[0];
    assert_eq!(event["channel"], "task:3");
    assert_eq!(
        event["channels"],
        json!(["task:3", "task:1", "task:2"]),
        "named twice, listed once"
    );
    assert_eq!(
        (event["event"].clone(), event["data"].clone()),
        (json!("task.updated"), json!({"k": 1}))
    );
    for one in ["task:1", "task:2", "task:3"] {
        let got = poll_all(&server, &service_token(), one).await;
        assert_eq!(got, events, "{one} sees the same event");
    }
    // A single-channel event lists no `channels`.
    let single = server.broadcast("task:1", "solo", json!(null)).await;
    let got = poll_all(&server, &service_token(), "task:1").await;
    let solo = got.iter().find(|e| e["id"] == single).unwrap();
    assert!(solo.get("channels").is_none(), "{solo}");
}

// `events: [...]` is one atomic append: ids consecutive, in batch order
// (an item on several channels is one event).
async fn batch_is_appended_with_consecutive_ids(backend: Backend) {
    let server = Server::start(&backend).await;
    let body = json!({"events": [
        {"channel": "task:1", "event": "a", "data": 1},
        {"channels": ["task:2", "task:3"], "event": "b", "data": 2},
        {"channel": "task:1", "event": "c"},
    ]});
    let res = server
        .post("/realtime/broadcast", &service_token(), &body)
        .await;
    let (status, receipt) = answer(res).await;
    assert_eq!(status, 202, "{receipt}");
    let ids: Vec<u64> = receipt["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let first = ids[0];
    assert_eq!(ids, vec![first, first + 1, first + 2], "one id per event");
    assert_eq!(receipt["id"], first + 2);

    let events = poll_all(&server, &service_token(), "task:1,task:2,task:3").await;
    assert_eq!(ids_of(&events), ids);
    let shape: Vec<(String, String, Value)> = events
        .iter()
        .map(|e| {
            (
                e["channel"].as_str().unwrap().into(),
                e["event"].as_str().unwrap().into(),
                e["data"].clone(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("task:1".into(), "a".into(), json!(1)),
            // One event on task:2 and task:3, read once.
            ("task:2".into(), "b".into(), json!(2)),
            // `data` defaults to null.
            ("task:1".into(), "c".into(), Value::Null),
        ]
    );
}

// A batch is validated whole: one bad channel name refuses it and appends
// none of its events.
async fn batch_with_one_bad_channel_appends_nothing(backend: Backend) {
    let server = Server::start(&backend).await;
    let body = json!({"events": [
        {"channel": "task:1", "event": "a", "data": 1},
        {"channel": "Task:1", "event": "b", "data": 2},
    ]});
    let res = server
        .post("/realtime/broadcast", &service_token(), &body)
        .await;
    expect_error(res, 400, "invalid_channel").await;
    assert!(
        poll_all(&server, &service_token(), "task:1")
            .await
            .is_empty()
    );
}

// Same idempotency_key from the same user: the first answer byte for byte,
// nothing appended. Another user's identical key is a different publish.
async fn idempotent_retry_returns_the_first_answer_and_appends_nothing(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"publish": ["feed:*"]}));
    let bob = token_with("bob", json!({"publish": ["feed:*"]}));
    let body = json!({"channel": "feed:updates", "event": "count", "data": {"n": 1}, "idempotency_key": "b7c1e2d4"});

    let first = server.post("/realtime/publish", &alice, &body).await;
    assert_eq!(first.status(), 202);
    let first = first.text().await.unwrap();
    let retry = server.post("/realtime/publish", &alice, &body).await;
    assert_eq!(retry.status(), 202);
    assert_eq!(
        retry.text().await.unwrap(),
        first,
        "the retry answers the first body, byte for byte"
    );
    assert_eq!(
        poll_all(&server, &alice, "feed:updates").await.len(),
        1,
        "the retry appended nothing"
    );

    let other = server.post("/realtime/publish", &bob, &body).await;
    let (status, receipt) = answer(other).await;
    assert_eq!(status, 202);
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_ne!(receipt["id"], first["id"], "bob's publish is not alice's");
    let events = poll_all(&server, &alice, "feed:updates").await;
    assert_eq!(
        ids_of(&events),
        vec![
            first["id"].as_u64().unwrap(),
            receipt["id"].as_u64().unwrap()
        ]
    );
    assert_eq!(events[1]["user_id"], "bob");
}

// expected_last_id equal to the channel's last id appends (0 for an empty channel).
async fn expected_last_id_matching_the_channel_appends(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    // Another channel's events do not count toward this channel's last id.
    server
        .broadcast("project:other", "noise", json!(null))
        .await;
    let res = server
        .post(
            "/realtime/broadcast",
            &service,
            &json!({"channel": "project:9", "event": "v", "data": 1, "expected_last_id": 0}),
        )
        .await;
    let (status, first) = answer(res).await;
    assert_eq!(status, 202, "{first}");
    let res = server
        .post("/realtime/broadcast", &service, &json!({"channel": "project:9", "event": "v", "data": 2, "expected_last_id": first["id"]}))
        .await;
    let (status, second) = answer(res).await;
    assert_eq!(status, 202, "{second}");
    assert_eq!(
        ids_of(&poll_all(&server, &service, "project:9").await),
        vec![
            first["id"].as_u64().unwrap(),
            second["id"].as_u64().unwrap()
        ]
    );
}

// A stale expected_last_id is 409 conflict naming the channel and its
// actual last id, and appends nothing.
async fn stale_expected_last_id_is_a_conflict_and_appends_nothing(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    let a = server.broadcast("project:9", "v", json!(1)).await;
    let b = server.broadcast("project:9", "v", json!(2)).await;
    let res = server
        .post(
            "/realtime/broadcast",
            &service,
            &json!({"channel": "project:9", "event": "v", "data": 3, "expected_last_id": a}),
        )
        .await;
    let body = expect_error(res, 409, "conflict").await;
    assert_eq!(
        body["details"],
        json!({"channel": "project:9", "last_id": b})
    );
    assert_eq!(
        ids_of(&poll_all(&server, &service, "project:9").await),
        vec![a, b]
    );
}

// In a batch, one conflicting item refuses the whole batch.
async fn conflict_in_a_batch_appends_nothing_of_the_batch(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    let a = server.broadcast("project:9", "v", json!(1)).await;
    let body = json!({"events": [
        {"channel": "project:1", "event": "v", "data": 1},
        {"channel": "project:9", "event": "v", "data": 2, "expected_last_id": a - 1},
    ]});
    let res = server.post("/realtime/broadcast", &service, &body).await;
    let err = expect_error(res, 409, "conflict").await;
    assert_eq!(
        err["details"],
        json!({"channel": "project:9", "last_id": a})
    );
    assert_eq!(
        ids_of(&poll_all(&server, &service, "project:1,project:9").await),
        vec![a]
    );
}

// expected_last_id is per channel: with several channels it is refused.
async fn expected_last_id_with_several_channels_is_refused(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .post("/realtime/broadcast", &service_token(), &json!({"channels": ["task:1", "task:2"], "event": "v", "data": 1, "expected_last_id": 0}))
        .await;
    expect_error(res, 400, "invalid_message").await;
    assert!(
        poll_all(&server, &service_token(), "task:1,task:2")
            .await
            .is_empty()
    );
}

// Event names are `[A-Za-z0-9_.:-]{1,64}`; anything else is 400.
async fn event_name_outside_the_grammar_is_refused(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    let longest = "e".repeat(64);
    let too_long = "e".repeat(65);
    for bad in [
        "",
        "task updated",
        "task/updated",
        "tâche",
        too_long.as_str(),
    ] {
        let res = server
            .post(
                "/realtime/broadcast",
                &service,
                &json!({"channel": "system", "event": bad, "data": 1}),
            )
            .await;
        expect_error(res, 400, "invalid_message").await;
    }
    assert!(poll_all(&server, &service, "system").await.is_empty());
    let res = server
        .post(
            "/realtime/broadcast",
            &service,
            &json!({"channel": "system", "event": format!("A-z_0.9:{}", &longest[8..]), "data": 1}),
        )
        .await;
    assert_eq!(
        res.status(),
        202,
        "a 64-character name of every allowed kind is fine"
    );
}

// `data` of 64 KiB + 1 byte encoded is 413 and appends nothing.
async fn data_over_64_kib_is_payload_too_large(backend: Backend) {
    let server = Server::start(&backend).await;
    // A JSON string encodes as its characters plus two quotes.
    let data = "x".repeat(DATA_LIMIT + 1 - 2);
    let res = server
        .post(
            "/realtime/broadcast",
            &service_token(),
            &json!({"channel": "system", "event": "big", "data": data}),
        )
        .await;
    expect_error(res, 413, "payload_too_large").await;
    assert!(
        poll_all(&server, &service_token(), "system")
            .await
            .is_empty()
    );
}

// `data` of exactly 64 KiB encoded is accepted and reads back whole.
async fn data_of_exactly_64_kib_is_accepted(backend: Backend) {
    let server = Server::start(&backend).await;
    let data = "x".repeat(DATA_LIMIT - 2);
    let id = server.broadcast("system", "big", json!(data)).await;
    let events = poll_all(&server, &service_token(), "system").await;
    assert_eq!(ids_of(&events), vec![id]);
    assert_eq!(events[0]["data"].as_str().unwrap().len(), DATA_LIMIT - 2);
}

// `recipients` counts the live streams reading the event's channel.
async fn recipients_counts_open_streams(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut alice = server.sse("channels=system", &token("alice")).await;
    let mut bob = server.sse("channels=system", &token("bob")).await;
    // Same channel name, other tenant: not a recipient.
    let acme = token_with("carol", json!({"tenant_id": "acme"}));
    let mut carol = server.sse("channels=system", &acme).await;
    alice.subscription().await;
    bob.subscription().await;
    carol.subscription().await;

    let res = server
        .post(
            "/realtime/broadcast",
            &service_token(),
            &json!({"channel": "system", "event": "hello", "data": null}),
        )
        .await;
    let (status, receipt) = answer(res).await;
    assert_eq!(status, 202);
    assert_eq!(receipt["recipients"], 2);

    let res = server
        .post(
            "/realtime/broadcast",
            &service_token(),
            &json!({"channel": "task:99", "event": "hello", "data": null}),
        )
        .await;
    let (status, receipt) = answer(res).await;
    assert_eq!(status, 202);
    assert_eq!(receipt["recipients"], 0, "nobody reads task:99");

    // Both streams did get the system event.
    assert_eq!(
        alice.next_event(Duration::from_secs(5)).await["event"],
        "hello"
    );
    assert_eq!(
        bob.next_event(Duration::from_secs(5)).await["event"],
        "hello"
    );
}

// Tenants never see each other's events, even on the same channel name.
async fn tenants_do_not_see_each_others_events(backend: Backend) {
    let server = Server::start(&backend).await;
    let acme_service = token_with("backend", json!({"role": "service", "tenant_id": "acme"}));
    let res = server
        .post(
            "/realtime/broadcast",
            &acme_service,
            &json!({"channel": "system", "event": "acme.only", "data": 1}),
        )
        .await;
    let (status, acme_receipt) = answer(res).await;
    assert_eq!(status, 202);
    let default_id = server.broadcast("system", "default.only", json!(2)).await;

    let seen = poll_all(&server, &token("alice"), "system").await;
    assert_eq!(
        ids_of(&seen),
        vec![default_id],
        "the default tenant sees only its own event"
    );
    let seen = poll_all(
        &server,
        &token_with("alice", json!({"tenant_id": "acme"})),
        "system",
    )
    .await;
    assert_eq!(
        ids_of(&seen),
        vec![acme_receipt["id"].as_u64().unwrap()],
        "acme sees only its own event"
    );
    assert_eq!(seen[0]["event"], "acme.only");
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// /realtime/activity returns the events stamped at or after `since`.
async fn activity_returns_events_since_a_time(backend: Backend) {
    let server = Server::start(&backend).await;
    let before = rfc3339(chrono::Utc::now().timestamp_millis() - 5_000);
    let id = server
        .broadcast("system", "announce", json!({"v": 1}))
        .await;
    let alice = token("alice");

    let res = server
        .get(
            &format!("/realtime/activity?since={before}&channels=system"),
            &alice,
        )
        .await;
    let (status, body) = answer(res).await;
    assert_eq!(status, 200, "{body}");
    let ts = &body["events"][0]["timestamp"];
    assert_timestamp(ts);
    assert_eq!(
        body,
        json!({"events": [{"type": "event", "id": id, "channel": "system", "event": "announce", "data": {"v": 1}, "user_id": "backend", "timestamp": ts}]})
    );

    // `since` is inclusive: the event's own timestamp finds it, 1 ms later does not.
    let at = assert_timestamp(ts);
    let res = server
        .get(
            &format!("/realtime/activity?since={}&channels=system", rfc3339(at)),
            &alice,
        )
        .await;
    assert_eq!(
        ids_of(answer(res).await.1["events"].as_array().unwrap()),
        vec![id]
    );
    let res = server
        .get(
            &format!(
                "/realtime/activity?since={}&channels=system",
                rfc3339(at + 1)
            ),
            &alice,
        )
        .await;
    assert_eq!(answer(res).await.1, json!({"events": []}));

    // The same as milliseconds since the epoch.
    for (since, want) in [(at, vec![id]), (at + 1, vec![])] {
        let res = server
            .get(
                &format!("/realtime/activity?since={since}&channels=system"),
                &alice,
            )
            .await;
        let (status, body) = answer(res).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            ids_of(body["events"].as_array().unwrap()),
            want,
            "since={since}"
        );
    }

    let later = rfc3339(chrono::Utc::now().timestamp_millis() + 3_600_000);
    let res = server
        .get(
            &format!("/realtime/activity?since={later}&channels=system"),
            &alice,
        )
        .await;
    let (status, body) = answer(res).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"events": []}));
}

// `since` is required and must be RFC 3339.
async fn activity_without_a_valid_since_is_refused(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let res = server
        .get("/realtime/activity?channels=system", &alice)
        .await;
    expect_error(res, 400, "invalid_message").await;
    let res = server
        .get("/realtime/activity?since=yesterday&channels=system", &alice)
        .await;
    expect_error(res, 400, "invalid_message").await;
}

// Ids strictly increase from one publish to the next, whatever the channel
// or endpoint.
async fn ids_strictly_increase_across_publishes(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with(
        "alice",
        json!({"publish": ["task:*"], "channels": ["task:*"]}),
    );
    let mut ids = Vec::new();
    for i in 0..6 {
        if i % 2 == 0 {
            ids.push(server.broadcast(&format!("task:{i}"), "e", json!(i)).await);
        } else {
            let res = server
                .post(
                    "/realtime/publish",
                    &alice,
                    &json!({"channel": format!("task:{i}"), "event": "e", "data": i}),
                )
                .await;
            let (status, receipt) = answer(res).await;
            assert_eq!(status, 202);
            ids.push(receipt["id"].as_u64().unwrap());
        }
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids strictly increase: {ids:?}"
    );
    // Read as the service, so no presence events (§7) join the task channels.
    let events = poll_all(
        &server,
        &service_token(),
        "task:0,task:1,task:2,task:3,task:4,task:5",
    )
    .await;
    assert_eq!(ids_of(&events), ids, "readers see them in id order");
}

// Activity checks channels as poll does: unreadable ones are left out and
// listed in `errors`.
async fn activity_lists_refused_channels_in_errors(backend: Backend) {
    let server = Server::start(&backend).await;
    let since = rfc3339(chrono::Utc::now().timestamp_millis() - 5_000);
    let id = server.broadcast("system", "announce", json!(1)).await;
    server.broadcast("task:1", "secret", json!(2)).await;
    let res = server
        .get(
            &format!("/realtime/activity?since={since}&channels=system,task:1"),
            &token("alice"),
        )
        .await;
    let (status, body) = answer(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids_of(body["events"].as_array().unwrap()), vec![id]);
    assert_eq!(
        body["errors"],
        json!([{"channel": "task:1", "code": "permission_denied"}])
    );
}

// expected_last_id compares with the caller's tenant's events only.
async fn expected_last_id_ignores_other_tenants_events(backend: Backend) {
    let server = Server::start(&backend).await;
    let acme = token_with("backend", json!({"role": "service", "tenant_id": "acme"}));
    let res = server
        .post(
            "/realtime/broadcast",
            &acme,
            &json!({"channel": "project:9", "event": "v", "data": 1}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let res = server
        .post(
            "/realtime/broadcast",
            &service_token(),
            &json!({"channel": "project:9", "event": "v", "data": 2, "expected_last_id": 0}),
        )
        .await;
    let (status, body) = answer(res).await;
    assert_eq!(
        status, 202,
        "the default tenant's project:9 is still empty: {body}"
    );
}

// Bodies that are ambiguous or empty are refused whole, nothing appended.
async fn ambiguous_or_empty_publish_bodies_are_refused(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    for body in [
        json!({"channel": "task:1", "channels": ["task:2"], "event": "e", "data": 1}),
        json!({"channels": [], "event": "e", "data": 1}),
        json!({"event": "e", "data": 1}),
        json!({"events": []}),
        json!({"events": [{"channel": "task:1", "event": "e"}], "channel": "task:2", "event": "e"}),
        json!({"events": [{"event": "e", "data": 1}]}),
        json!({"channel": "task:1", "event": "e", "data": 1, "idempotency_key": ""}),
    ] {
        let res = server.post("/realtime/broadcast", &service, &body).await;
        expect_error(res, 400, "invalid_message").await;
    }
    assert!(
        poll_all(&server, &service, "task:1,task:2")
            .await
            .is_empty()
    );
}

// A batch holds at most 1000 events: 1000 are appended, 1001 refused.
async fn batch_holds_at_most_1000_events(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    let batch = |n: usize| json!({"events": (0..n).map(|i| json!({"channel": "feed:bulk", "event": "e", "data": i})).collect::<Vec<_>>()});
    let res = server
        .post("/realtime/broadcast", &service, &batch(1001))
        .await;
    expect_error(res, 400, "invalid_message").await;
    assert!(poll_all(&server, &service, "feed:bulk").await.is_empty());

    let res = server
        .post("/realtime/broadcast", &service, &batch(1000))
        .await;
    let (status, receipt) = answer(res).await;
    assert_eq!(status, 202);
    let ids: Vec<u64> = receipt["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let first = ids[0];
    assert_eq!(ids, (first..first + 1000).collect::<Vec<_>>());
    let events = poll_all(&server, &service, "feed:bulk").await;
    assert_eq!(ids_of(&events), ids);
    assert_eq!(events[999]["data"], 999);
}

// A stream reading several of the event's channels is one recipient.
async fn recipients_counts_each_stream_once_across_channels(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"channels": ["task:*"]}));
    let mut stream = server.sse("channels=task:1,task:2", &alice).await;
    stream.subscription().await;
    let res = server
        .post(
            "/realtime/broadcast",
            &service_token(),
            &json!({"channels": ["task:1", "task:2"], "event": "e", "data": null}),
        )
        .await;
    let (status, receipt) = answer(res).await;
    assert_eq!(status, 202);
    assert_eq!(receipt["recipients"], 1);
}

// A poll waiting for events is a live reader: it counts as a recipient and
// the publish wakes it with the event.
async fn waiting_poll_counts_as_a_recipient_and_is_woken(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    // Start at the current end: an immediate poll tells the head.
    let res = server
        .get("/realtime/poll?channels=system&timeout=0", &alice)
        .await;
    let head = answer(res).await.1["last_poll_id"].as_u64().unwrap();
    let request = server
        .client
        .get(server.url(&format!(
            "/realtime/poll?channels=system&timeout=20&last_poll_id={head}"
        )))
        .bearer_auth(&alice)
        .send();
    let waiting = tokio::spawn(request);
    // Wait until the server holds the poll (its gauge in /metrics says so).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.lines().any(|l| l == "switchyard_polls_waiting 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the poll never waited:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let res = server
        .post(
            "/realtime/broadcast",
            &service_token(),
            &json!({"channel": "system", "event": "wake", "data": null}),
        )
        .await;
    let (status, receipt) = answer(res).await;
    assert_eq!(status, 202);
    assert_eq!(receipt["recipients"], 1, "the waiting poll is a recipient");

    let res = waiting.await.unwrap().unwrap();
    let (status, body) = answer(res).await;
    assert_eq!(status, 200);
    assert_eq!(
        ids_of(body["events"].as_array().unwrap()),
        vec![receipt["id"].as_u64().unwrap()]
    );
    assert_eq!(body["last_poll_id"], receipt["id"]);
}

// Retries racing each other with one idempotency_key still append once and
// all answer the same body.
async fn concurrent_retries_with_one_idempotency_key_append_once(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    let body = json!({"channel": "feed:x", "event": "e", "data": 1, "idempotency_key": "race-1"});
    let sends = (0..8).map(|_| async {
        let res = server.post("/realtime/broadcast", &service, &body).await;
        assert_eq!(res.status(), 202);
        res.text().await.unwrap()
    });
    let answers = futures_util::future::join_all(sends).await;
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "one answer for all: {answers:?}"
    );
    assert_eq!(poll_all(&server, &service, "feed:x").await.len(), 1);
}

// `limit` caps an activity answer to the first events by id; 0 is refused.
async fn activity_limit_caps_the_answer_in_id_order(backend: Backend) {
    let server = Server::start(&backend).await;
    let since = rfc3339(chrono::Utc::now().timestamp_millis() - 5_000);
    let a = server.broadcast("system", "e", json!(1)).await;
    let b = server.broadcast("system", "e", json!(2)).await;
    server.broadcast("system", "e", json!(3)).await;
    let alice = token("alice");
    let res = server
        .get(
            &format!("/realtime/activity?since={since}&channels=system&limit=2"),
            &alice,
        )
        .await;
    let (status, body) = answer(res).await;
    assert_eq!(status, 200);
    assert_eq!(ids_of(body["events"].as_array().unwrap()), vec![a, b]);
    let res = server
        .get(
            &format!("/realtime/activity?since={since}&channels=system&limit=0"),
            &alice,
        )
        .await;
    expect_error(res, 400, "invalid_message").await;
}

// An idempotency key is any 1-255 character string chosen by the client: an
// unusual character (here NUL) is stored and replayed, or refused as
// invalid_message, but never a server error.
async fn idempotency_key_with_a_nul_character_is_not_a_server_error(backend: Backend) {
    let server = Server::start(&backend).await;
    let body =
        json!({"channel": "feed:x", "event": "e", "data": 1, "idempotency_key": "key\u{0}1"});
    let res = server
        .post("/realtime/broadcast", &service_token(), &body)
        .await;
    match res.status().as_u16() {
        202 => {
            let first = res.text().await.unwrap();
            let retry = server
                .post("/realtime/broadcast", &service_token(), &body)
                .await;
            assert_eq!(retry.status(), 202);
            assert_eq!(
                retry.text().await.unwrap(),
                first,
                "the retry replays the first answer"
            );
            assert_eq!(poll_all(&server, &service_token(), "feed:x").await.len(), 1);
        }
        400 => {
            expect_error(res, 400, "invalid_message").await;
        }
        other => panic!(
            "a client's idempotency key made {other}: {}",
            res.text().await.unwrap()
        ),
    }
}

// Publishes are committed in groups; a publish that fails for its own input
// must not fail the well-formed publishes of other callers sent at the same time.
async fn one_bad_publish_does_not_fail_concurrent_publishes(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    let good = json!({"channel": "feed:x", "event": "e", "data": 1});
    let bad = json!({"channel": "feed:x", "event": "e", "data": 1, "idempotency_key": "key\u{0}1"});
    let sends = (0..40).map(|i| {
        let body = if i == 20 { bad.clone() } else { good.clone() };
        let (server, service) = (&server, &service);
        async move {
            (
                i,
                server
                    .post("/realtime/broadcast", service, &body)
                    .await
                    .status()
                    .as_u16(),
            )
        }
    });
    let statuses = futures_util::future::join_all(sends).await;
    let failed: Vec<&(usize, u16)> = statuses
        .iter()
        .filter(|(i, s)| *i != 20 && *s != 202)
        .collect();
    assert!(
        failed.is_empty(),
        "well-formed publishes failed (index, status): {failed:?}"
    );
}

on_both_backends!(
    broadcast_answers_202_with_a_receipt_and_the_event_is_readable,
    client_publishes_to_channels_matching_its_publish_claim,
    client_without_publish_right_is_denied_and_nothing_is_appended,
    conversation_member_may_publish_to_the_conversation,
    broadcast_refuses_non_service_tokens,
    multi_channel_publish_appends_one_event_on_every_channel,
    batch_is_appended_with_consecutive_ids,
    batch_with_one_bad_channel_appends_nothing,
    idempotent_retry_returns_the_first_answer_and_appends_nothing,
    expected_last_id_matching_the_channel_appends,
    stale_expected_last_id_is_a_conflict_and_appends_nothing,
    conflict_in_a_batch_appends_nothing_of_the_batch,
    expected_last_id_with_several_channels_is_refused,
    event_name_outside_the_grammar_is_refused,
    data_over_64_kib_is_payload_too_large,
    data_of_exactly_64_kib_is_accepted,
    recipients_counts_open_streams,
    tenants_do_not_see_each_others_events,
    activity_returns_events_since_a_time,
    activity_without_a_valid_since_is_refused,
    ids_strictly_increase_across_publishes,
    activity_lists_refused_channels_in_errors,
    expected_last_id_ignores_other_tenants_events,
    ambiguous_or_empty_publish_bodies_are_refused,
    batch_holds_at_most_1000_events,
    recipients_counts_each_stream_once_across_channels,
    waiting_poll_counts_as_a_recipient_and_is_woken,
    concurrent_retries_with_one_idempotency_key_append_once,
    activity_limit_caps_the_answer_in_id_order,
    idempotency_key_with_a_nul_character_is_not_a_server_error,
    one_bad_publish_does_not_fail_concurrent_publishes,
);
