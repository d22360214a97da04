//! Collaborative editing (PROTOCOL §8) over HTTP: sessions, operations with
//! server-side transformation, retries, the 422 cases, documents, saves,
//! locks and their expiry, session expiry, the size cap, access, tenant
//! isolation, restarts, and five simulated ot.js clients that converge.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use switchyard_core::edit::ot::{Operation, compose, transform};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

/// A user who may read every task channel (so may edit tasks).
fn editor(sub: &str) -> String {
    let mut name = sub.to_string();
    name[..1].make_ascii_uppercase();
    token_with(sub, json!({"channels": ["task:*"], "name": name}))
}

/// Status and JSON body (`null` for an empty one).
async fn answer(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON body ({e}): {text}"))
    };
    (status, body)
}

async fn delete(server: &Server, path: &str, token: &str) -> reqwest::Response {
    server
        .client
        .delete(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("DELETE")
}

/// Starts a session on `task:{id}` `field`; asserts 201.
async fn start(server: &Server, token: &str, id: &str, field: &str) -> Value {
    let res = server
        .post(
            "/realtime/edit/sessions",
            token,
            &json!({"resource_type": "task", "resource_id": id, "field": field}),
        )
        .await;
    let (status, body) = answer(res).await;
    assert_eq!(status, 201, "start session answered {body}");
    body
}

fn sid(session: &Value) -> &str {
    session["session_id"].as_str().expect("session_id")
}

async fn submit(
    server: &Server,
    token: &str,
    session: &str,
    revision: i64,
    ops: Value,
    client_op_id: Option<&str>,
) -> reqwest::Response {
    let mut body = json!({"revision": revision, "ops": ops});
    if let Some(id) = client_op_id {
        body["client_op_id"] = json!(id);
    }
    server
        .post(
            &format!("/realtime/edit/sessions/{session}/operations"),
            token,
            &body,
        )
        .await
}

/// Submits; asserts 200 and returns the answer.
async fn submit_ok(
    server: &Server,
    token: &str,
    session: &str,
    revision: i64,
    ops: Value,
) -> Value {
    let (status, body) = answer(submit(server, token, session, revision, ops, None).await).await;
    assert_eq!(status, 200, "operation answered {body}");
    body
}

async fn document(server: &Server, token: &str, id: &str, field: &str) -> reqwest::Response {
    server
        .get(
            &format!("/realtime/edit/documents?resource_type=task&resource_id={id}&field={field}"),
            token,
        )
        .await
}

/// The document; asserts 200.
async fn document_ok(server: &Server, token: &str, id: &str, field: &str) -> Value {
    let (status, body) = answer(document(server, token, id, field).await).await;
    assert_eq!(status, 200, "document answered {body}");
    body
}

/// The envelopes of every retained `event` on `channel` readable with `token`.
async fn events_named(server: &Server, token: &str, channel: &str, event: &str) -> Vec<Value> {
    let res = server
        .get(
            &format!("/realtime/poll?channels={channel}&last_poll_id=0&timeout=0&limit=1000"),
            token,
        )
        .await;
    let (status, body) = answer(res).await;
    assert_eq!(status, 200, "poll answered {body}");
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event"] == event && e["channel"] == channel)
        .cloned()
        .collect()
}

async fn lock(server: &Server, token: &str, id: &str, field: &str, ttl: u64) -> reqwest::Response {
    server
        .post(
            "/realtime/edit/locks",
            token,
            &json!({"resource_type": "task", "resource_id": id, "field": field, "ttl_seconds": ttl}),
        )
        .await
}

/// The next `edit.*` event of a stream (other features, such as presence,
/// share the resource channels).
async fn next_edit_event(stream: &mut SseStream) -> Value {
    loop {
        let event = stream.next_event(WAIT).await;
        if event["event"]
            .as_str()
            .is_some_and(|e| e.starts_with("edit."))
        {
            return event;
        }
    }
}

fn millis(ts: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts.as_str().expect("timestamp string"))
        .expect("RFC 3339")
        .timestamp_millis()
}

// ---------------------------------------------------------------------------
// Sessions, operations, documents, saves

// A session answers with the document and the editors, and is announced
// with `edit.started`; the document starts empty at revision 0.
async fn start_session_returns_document_and_editors_and_appends_edit_started(backend: Backend) {
    let server = Server::start(&backend).await;
    let (alice, bob) = (editor("alice"), editor("bob"));
    let a = start(&server, &alice, "1", "description").await;
    assert_eq!(
        a,
        json!({
            "session_id": sid(&a), "resource_type": "task", "resource_id": "1",
            "field": "description", "content": "", "revision": 0,
            "active_editors": [{"user_id": "alice", "name": "Alice"}],
        })
    );
    submit_ok(&server, &alice, sid(&a), 0, json!([{"insert": "Hi 👋"}])).await;
    let b = start(&server, &bob, "1", "description").await;
    assert_eq!(b["content"], "Hi 👋");
    assert_eq!(b["revision"], 1);
    assert_eq!(
        b["active_editors"],
        json!([{"user_id": "alice", "name": "Alice"}, {"user_id": "bob", "name": "Bob"}])
    );
    assert_ne!(sid(&a), sid(&b));

    let started = events_named(&server, &alice, "task:1", "edit.started").await;
    assert_eq!(started.len(), 2);
    assert_eq!(started[1]["user_id"], "bob");
    assert_eq!(
        started[1]["data"],
        json!({
            "session_id": sid(&b), "user_id": "bob", "name": "Bob", "resource_type": "task",
            "resource_id": "1", "field": "description", "revision": 1,
        })
    );
    let doc = document_ok(&server, &bob, "1", "description").await;
    assert_eq!(doc["content"], "Hi 👋");
    assert_eq!(doc["revision"], 1);
    millis(&doc["updated_at"]);
}

// Two users insert at the same place from the same revision: the later one
// is transformed past the earlier and, on the tie, inserts first (ot.js).
// The answer and the `edit.operation` event carry the operation as applied.
async fn concurrent_inserts_are_transformed_the_later_one_first(backend: Backend) {
    let server = Server::start(&backend).await;
    let (alice, bob) = (editor("alice"), editor("bob"));
    let a = start(&server, &alice, "7", "title").await;
    let b = start(&server, &bob, "7", "title").await;
    submit_ok(
        &server,
        &alice,
        sid(&a),
        0,
        json!([{"insert": "Hello world"}]),
    )
    .await;

    let first = submit_ok(
        &server,
        &alice,
        sid(&a),
        1,
        json!([{"retain": 6}, {"insert": "big "}, {"retain": 5}]),
    )
    .await;
    assert_eq!(
        first,
        json!({"revision": 2, "ops": [{"retain": 6}, {"insert": "big "}, {"retain": 5}]})
    );
    // Bob has not seen revision 2 yet.
    let (status, second) = answer(
        submit(
            &server,
            &bob,
            sid(&b),
            1,
            json!([{"retain": 6}, {"insert": "small "}, {"retain": 5}]),
            Some("bob-1"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second,
        json!({"revision": 3, "ops": [{"retain": 6}, {"insert": "small "}, {"retain": 9}]})
    );
    let doc = document_ok(&server, &alice, "7", "title").await;
    assert_eq!(doc["content"], "Hello small big world");
    assert_eq!(doc["revision"], 3);

    let ops = events_named(&server, &alice, "task:7", "edit.operation").await;
    let revisions: Vec<&Value> = ops.iter().map(|e| &e["data"]["revision"]).collect();
    assert_eq!(revisions, [1, 2, 3], "one event per revision, in order");
    assert_eq!(ops[2]["user_id"], "bob");
    assert_eq!(
        ops[2]["data"],
        json!({
            "session_id": sid(&b), "user_id": "bob", "resource_type": "task", "resource_id": "7",
            "field": "title", "revision": 3,
            "ops": [{"retain": 6}, {"insert": "small "}, {"retain": 9}], "client_op_id": "bob-1",
        })
    );
    assert_eq!(ops[1]["data"]["client_op_id"], Value::Null);
}

// A retried client_op_id gets the first answer and applies nothing, even
// when retries race each other; another session's same id is its own.
async fn a_retried_client_op_id_gets_the_first_answer_and_applies_once(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(&backend).await);
    let (alice, bob) = (editor("alice"), editor("bob"));
    let a = start(&server, &alice, "2", "body").await;
    let b = start(&server, &bob, "2", "body").await;
    let ins = json!([{"insert": "héllo"}]);
    let first = answer(submit(&server, &alice, sid(&a), 0, ins.clone(), Some("op-1")).await).await;
    assert_eq!(first, (200, json!({"revision": 1, "ops": ins})));
    let again = answer(submit(&server, &alice, sid(&a), 0, ins.clone(), Some("op-1")).await).await;
    assert_eq!(again, first, "same answer");
    // Even a retry whose body changed: the id names the operation.
    let changed = json!([{"insert": "other"}]);
    let again = answer(submit(&server, &alice, sid(&a), 0, changed, Some("op-1")).await).await;
    assert_eq!(again, first);

    // Ten concurrent copies of one operation: one revision.
    let mut copies = Vec::new();
    for _ in 0..10 {
        let (server, alice, session) = (server.clone(), alice.clone(), sid(&a).to_string());
        copies.push(tokio::spawn(async move {
            let op = json!([{"retain": 5}, {"insert": "!"}]);
            answer(submit(&server, &alice, &session, 1, op, Some("op-2")).await).await
        }));
    }
    let mut answers = Vec::new();
    for copy in copies {
        answers.push(copy.await.unwrap());
    }
    let expected = (
        200,
        json!({"revision": 2, "ops": [{"retain": 5}, {"insert": "!"}]}),
    );
    assert!(answers.iter().all(|a| *a == expected), "{answers:?}");

    // Bob's "op-1" is a different operation.
    let bobs = answer(
        submit(
            &server,
            &bob,
            sid(&b),
            2,
            json!([{"retain": 6}, {"insert": "?"}]),
            Some("op-1"),
        )
        .await,
    )
    .await;
    assert_eq!(bobs.0, 200, "{bobs:?}");
    assert_eq!(bobs.1["revision"], 3);

    let doc = document_ok(&server, &alice, "2", "body").await;
    assert_eq!(
        (doc["content"].as_str(), doc["revision"].as_u64()),
        (Some("héllo!?"), Some(3))
    );
    let ops = events_named(&server, &alice, "task:2", "edit.operation").await;
    assert_eq!(
        ops.len(),
        3,
        "one event per applied operation, none for retries"
    );
}

// Every malformed or inconsistent operation is 422 invalid_operation and
// leaves the document as it was.
async fn malformed_or_inconsistent_operations_are_422_and_change_nothing(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = editor("alice");
    let a = start(&server, &alice, "3", "notes").await;
    let s = sid(&a);
    submit_ok(&server, &alice, s, 0, json!([{"insert": "héllo wörld"}])).await; // 11 chars
    let cases: Vec<(&str, i64, Value)> = vec![
        ("wrong base length", 1, json!([{"retain": 5}])),
        (
            "wrong base length (bytes, not chars)",
            1,
            json!([{"retain": 13}]),
        ),
        (
            "wrong base length at an old revision",
            0,
            json!([{"retain": 3}, {"insert": "x"}]),
        ),
        ("future revision", 2, json!([{"retain": 11}])),
        ("far future revision", 99, json!([{"retain": 11}])),
        ("negative revision", -1, json!([{"retain": 11}])),
        (
            "zero retain",
            1,
            json!([{"retain": 0}, {"insert": "x"}, {"retain": 11}]),
        ),
        ("zero delete", 1, json!([{"delete": 0}, {"retain": 11}])),
        (
            "negative retain",
            1,
            json!([{"retain": -1}, {"retain": 12}]),
        ),
        (
            "negative delete",
            1,
            json!([{"delete": -2}, {"retain": 11}]),
        ),
        (
            "fractional length",
            1,
            json!([{"retain": 1.5}, {"retain": 9.5}]),
        ),
        ("unknown component", 1, json!([{"skip": 1}, {"retain": 10}])),
        (
            "two keys in a component",
            1,
            json!([{"retain": 1, "delete": 1}, {"retain": 9}]),
        ),
        ("empty insert", 1, json!([{"insert": ""}, {"retain": 11}])),
        (
            "delete past the end",
            1,
            json!([{"retain": 8}, {"delete": 5}]),
        ),
        ("retain past the end", 1, json!([{"retain": 12}])),
        ("not an array", 1, json!({"retain": 11})),
        ("a component that is not an object", 1, json!([11])),
    ];
    for (case, revision, ops) in cases {
        let res = submit(&server, &alice, s, revision, ops, Some("bad")).await;
        let body = expect_error(res, 422, "invalid_operation").await;
        assert!(
            !body["message"].as_str().unwrap().is_empty(),
            "{case}: {body}"
        );
        let doc = document_ok(&server, &alice, "3", "notes").await;
        assert_eq!(
            doc["content"], "héllo wörld",
            "{case} left the document alone"
        );
        assert_eq!(doc["revision"], 1, "{case} left the revision alone");
    }
    // A refused operation's client_op_id is not used up.
    let ok = answer(
        submit(
            &server,
            &alice,
            s,
            1,
            json!([{"retain": 11}, {"insert": "!"}]),
            Some("bad"),
        )
        .await,
    )
    .await;
    assert_eq!(
        ok,
        (
            200,
            json!({"revision": 2, "ops": [{"retain": 11}, {"insert": "!"}]})
        )
    );
    let ops = events_named(&server, &alice, "task:3", "edit.operation").await;
    assert_eq!(ops.len(), 2, "no events for refused operations");

    // Shape errors of the body itself are 400 invalid_message.
    for body in [
        json!({"ops": []}),
        json!({"revision": 1}),
        json!({"revision": "1", "ops": []}),
        json!({"revision": 1, "ops": [], "extra": true}),
        json!({"revision": 1, "ops": [], "client_op_id": ""}),
    ] {
        let res = server
            .post(
                &format!("/realtime/edit/sessions/{s}/operations"),
                &alice,
                &body,
            )
            .await;
        expect_error(res, 400, "invalid_message").await;
    }
}

// Many operations racing on one document: `edit.operation` events enter
// the log in revision order, one per revision, with no gap.
async fn racing_operations_are_announced_in_revision_order(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(&backend).await);
    let mut sessions = Vec::new();
    for n in 0..5 {
        let token = editor(&format!("racer{n}"));
        let session = start(&server, &token, "race", "f").await;
        sessions.push((token, sid(&session).to_string()));
    }
    let mut tasks = Vec::new();
    for round in 0..20 {
        for (token, session) in &sessions {
            let (server, token, session) = (server.clone(), token.clone(), session.clone());
            tasks.push(tokio::spawn(async move {
                // Every operation is made against revision 0 (the empty
                // document) and transformed past all that won the race.
                let ops = json!([{"insert": format!("{round}.")}]);
                let (status, body) =
                    answer(submit(&server, &token, &session, 0, ops, None).await).await;
                assert_eq!(status, 200, "{body}");
                body["revision"].as_u64().unwrap()
            }));
        }
    }
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.push(t.await.unwrap());
    }
    revisions.sort();
    assert_eq!(
        revisions,
        (1..=100).collect::<Vec<u64>>(),
        "each revision once"
    );
    let events = events_named(&server, &sessions[0].0, "task:race", "edit.operation").await;
    let announced: Vec<u64> = events
        .iter()
        .map(|e| e["data"]["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(announced, revisions, "events in revision order (by log id)");
}

// Operations that pile up on one document are applied in batches; each
// keeps its own semantics: transformed past everything before it (earlier
// ones of its batch included), revisions dense, a retry answered with the
// first answer, a refused one 422 without touching the others, events in
// revision order carrying the operations as answered.
async fn queued_operations_keep_their_semantics_when_batched(backend: Backend) {
    let server = std::sync::Arc::new(Server::start(&backend).await);
    let mut editors = Vec::new();
    for n in 0..6 {
        let token = editor(&format!("batcher{n}"));
        let session = start(&server, &token, "batch", "f").await;
        editors.push((token, sid(&session).to_string()));
    }
    submit_ok(
        &server,
        &editors[0].0,
        &editors[0].1,
        0,
        json!([{"insert": "ab"}]),
    )
    .await;

    // Everything at once, all made against revision 1 ("ab"): eight inserts
    // per editor, a second copy of each editor's first one (same
    // client_op_id), and two refusals per editor.
    let mut tasks = Vec::new();
    for (e, (token, session)) in editors.iter().enumerate() {
        for k in 0..10 {
            let (server, token, session) = (server.clone(), token.clone(), session.clone());
            let (revision, ops, id) = match k {
                0..=7 => (
                    1,
                    json!([{"retain": 1}, {"insert": format!("<{e}.{k}>")}, {"retain": 1}]),
                    Some(format!("{e}-{k}")),
                ),
                8 => (
                    1,
                    json!([{"retain": 1}, {"insert": format!("<{e}.0>")}, {"retain": 1}]),
                    Some(format!("{e}-0")),
                ),
                _ if e % 2 == 0 => (1, json!([{"retain": 5}]), None),
                _ => (999, json!([{"retain": 2}]), None),
            };
            tasks.push(tokio::spawn(async move {
                let res = submit(&server, &token, &session, revision, ops, id.as_deref()).await;
                (id, answer(res).await)
            }));
        }
    }
    let mut applied = std::collections::BTreeMap::new();
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            (None, (status, body)) => {
                assert_eq!(
                    (status, &body["code"]),
                    (422, &json!("invalid_operation")),
                    "{body}"
                );
                refused += 1;
            }
            (Some(id), (status, body)) => {
                assert_eq!(status, 200, "{id}: {body}");
                if let Some(first) = applied.insert(id.clone(), body.clone()) {
                    assert_eq!(first, body, "a retry of {id} gets the first answer");
                }
            }
        }
    }
    assert_eq!(refused, 6);
    let mut by_revision: Vec<(u64, Value)> = applied
        .values()
        .map(|a| (a["revision"].as_u64().unwrap(), a["ops"].clone()))
        .collect();
    by_revision.sort_by_key(|(r, _)| *r);
    let revisions: Vec<u64> = by_revision.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        revisions,
        (2..=49).collect::<Vec<u64>>(),
        "dense, one per operation"
    );

    // The document is "ab" with the answered operations applied in order,
    // and holds every insert exactly once.
    let mut text = "ab".to_string();
    for (_, ops) in &by_revision {
        text = Operation::from_json(ops).unwrap().apply(&text).unwrap();
    }
    let doc = document_ok(&server, &editors[0].0, "batch", "f").await;
    assert_eq!(
        (doc["content"].as_str(), doc["revision"].as_u64()),
        (Some(text.as_str()), Some(49))
    );
    assert!(text.starts_with('a') && text.ends_with('b'), "{text}");
    for e in 0..6 {
        for k in 0..8 {
            assert_eq!(text.matches(&format!("<{e}.{k}>")).count(), 1, "{text}");
        }
    }

    // One event per revision, in revision order, as answered.
    let events = events_named(&server, &editors[0].0, "task:batch", "edit.operation").await;
    let announced: Vec<u64> = events
        .iter()
        .map(|e| e["data"]["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(
        announced,
        (1..=49).collect::<Vec<u64>>(),
        "events in revision order"
    );
    for event in &events[1..] {
        let id = event["data"]["client_op_id"]
            .as_str()
            .expect("client_op_id");
        let answered = &applied[id];
        assert_eq!(event["data"]["revision"], answered["revision"], "{id}");
        assert_eq!(event["data"]["ops"], answered["ops"], "{id}");
    }
}

// Save records the revision and appends `edit.saved`.
async fn save_answers_the_revision_and_appends_edit_saved(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = editor("alice");
    let a = start(&server, &alice, "4", "description").await;
    submit_ok(&server, &alice, sid(&a), 0, json!([{"insert": "draft"}])).await;
    let res = server
        .client
        .post(server.url(&format!("/realtime/edit/sessions/{}/save", sid(&a))))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let (status, saved) = answer(res).await;
    assert_eq!(status, 200, "{saved}");
    let doc = document_ok(&server, &alice, "4", "description").await;
    assert_eq!(
        saved,
        json!({"resource_type": "task", "resource_id": "4", "field": "description",
               "content": "draft", "revision": 1, "updated_at": doc["updated_at"]})
    );
    let events = events_named(&server, &alice, "task:4", "edit.saved").await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["data"],
        json!({"session_id": sid(&a), "user_id": "alice", "resource_type": "task",
               "resource_id": "4", "field": "description", "revision": 1,
               "updated_at": doc["updated_at"]})
    );
}

// ---------------------------------------------------------------------------
// Seeded documents and content set by a backend

async fn start_seeded(server: &Server, token: &str, id: &str, seed: &str) -> Value {
    let res = server
        .post(
            "/realtime/edit/sessions",
            token,
            &json!({"resource_type": "task", "resource_id": id, "field": "description",
                    "initial_content": seed}),
        )
        .await;
    let (status, body) = answer(res).await;
    assert_eq!(status, 201, "start session answered {body}");
    body
}

// The first session's initial_content seeds a new document; later ones get it.
async fn the_first_initial_content_seeds_the_document(backend: Backend) {
    let server = Server::start(&backend).await;
    let (alice, bob) = (editor("alice"), editor("bob"));
    let a = start_seeded(&server, &alice, "50", "Ship héllo").await;
    assert_eq!(
        (a["content"].as_str(), a["revision"].as_u64()),
        (Some("Ship héllo"), Some(0))
    );
    let b = start_seeded(&server, &bob, "50", "Something else").await;
    assert_eq!(b["content"], "Ship héllo", "the first seed wins");
    // Operations span the seeded text (10 characters).
    let applied = submit_ok(
        &server,
        &alice,
        sid(&a),
        0,
        json!([{"retain": 10}, {"insert": "!"}]),
    )
    .await;
    assert_eq!(applied["revision"], 1);
    assert_eq!(
        document_ok(&server, &bob, "50", "description").await["content"],
        "Ship héllo!"
    );
    let res = server
        .post(
            "/realtime/edit/sessions",
            &alice,
            &json!({"resource_type": "task", "resource_id": "51", "field": "description",
                    "initial_content": "x".repeat(1024 * 1024 + 1)}),
        )
        .await;
    assert_eq!(answer(res).await.0, 413);
    let res = server
        .post(
            "/realtime/edit/sessions",
            &alice,
            &json!({"resource_type": "task", "resource_id": "51", "field": "description",
                    "initial_content": "nul\u{0}"}),
        )
        .await;
    assert_eq!(answer(res).await.0, 400);
}

async fn put_content(server: &Server, token: &str, id: &str, content: &str) -> (u16, Value) {
    let res = server
        .client
        .put(server.url(&format!(
            "/realtime/edit/documents?resource_type=task&resource_id={id}&field=description"
        )))
        .bearer_auth(token)
        .json(&json!({ "content": content }))
        .send()
        .await
        .expect("PUT");
    answer(res).await
}

// A backend sets a document's content while no session is live: created at
// revision 0, then each change one more revision announced as an operation;
// with a live session it is 409 and nothing changes.
async fn a_backend_sets_content_while_no_one_edits(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    let alice = editor("alice");
    let mut watcher = server.sse("channels=task:60", &alice).await;
    watcher.subscription().await;

    let (status, created) = put_content(&server, &service, "60", "From the app").await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(
        (created["content"].as_str(), created["revision"].as_u64()),
        (Some("From the app"), Some(0))
    );
    let (status, replaced) = put_content(&server, &service, "60", "Edited in the app").await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["revision"], 1);
    let event = next_edit_event(&mut watcher).await;
    assert_eq!(event["event"], "edit.operation");
    assert_eq!(event["data"]["revision"], 1);
    assert_eq!(event["data"]["user_id"], "backend");
    assert_eq!(
        event["data"]["ops"],
        json!([{"delete": 12}, {"insert": "Edited in the app"}])
    );
    let (status, same) = put_content(&server, &service, "60", "Edited in the app").await;
    assert_eq!(
        (status, same["revision"].as_u64()),
        (200, Some(1)),
        "unchanged"
    );

    // A session opened now starts from it, and its operations follow on.
    let a = start(&server, &alice, "60", "description").await;
    assert_eq!(
        (a["content"].as_str(), a["revision"].as_u64()),
        (Some("Edited in the app"), Some(1))
    );
    let (status, busy) = put_content(&server, &service, "60", "Overwrite").await;
    assert_eq!(status, 409, "{busy}");
    assert_eq!(busy["code"], "conflict");
    assert_eq!(busy["details"]["active_editors"], json!(["alice"]));
    submit_ok(
        &server,
        &alice,
        sid(&a),
        1,
        json!([{"retain": 17}, {"insert": "."}]),
    )
    .await;
    let res = delete(
        &server,
        &format!("/realtime/edit/sessions/{}", sid(&a)),
        &alice,
    )
    .await;
    assert_eq!(res.status(), 204);
    let (status, after) = put_content(&server, &service, "60", "Final").await;
    assert_eq!(
        (status, after["revision"].as_u64()),
        (200, Some(3)),
        "{after}"
    );
    assert_eq!(
        document_ok(&server, &alice, "60", "description").await["content"],
        "Final"
    );

    let (status, refused) = put_content(&server, &alice, "60", "Mine").await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("permission_denied"))
    );
    let (status, big) = put_content(&server, &service, "61", &"x".repeat(1024 * 1024 + 1)).await;
    assert_eq!(
        (status, big["code"].as_str()),
        (413, Some("payload_too_large"))
    );
}

// Leaving ends a session (410 afterwards); only its user may; it is idempotent.
async fn leave_ends_the_session(backend: Backend) {
    let server = Server::start(&backend).await;
    let (alice, bob) = (editor("alice"), editor("bob"));
    let a = start(&server, &alice, "5", "f").await;
    let path = format!("/realtime/edit/sessions/{}", sid(&a));
    expect_error(delete(&server, &path, &bob).await, 403, "permission_denied").await;
    assert_eq!(delete(&server, &path, &alice).await.status(), 204);
    assert_eq!(
        delete(&server, &path, &alice).await.status(),
        204,
        "idempotent"
    );
    let res = submit(&server, &alice, sid(&a), 0, json!([{"insert": "x"}]), None).await;
    let body = expect_error(res, 410, "session_expired").await;
    assert_eq!(body["details"]["reason"], "left");
    expect_error(
        delete(&server, "/realtime/edit/sessions/nope", &alice).await,
        404,
        "not_found",
    )
    .await;
    let b = start(&server, &bob, "5", "f").await;
    assert_eq!(
        b["active_editors"],
        json!([{"user_id": "bob", "name": "Bob"}])
    );
}

// A session idle longer than the configured time answers 410.
async fn an_idle_session_expires_with_410(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_EDIT_SESSION_IDLE_SECS", "2")]).await;
    let alice = editor("alice");
    let a = start(&server, &alice, "6", "f").await;
    // Activity keeps it alive.
    let typing = [
        json!([{"insert": "x"}]),
        json!([{"retain": 1}, {"insert": "x"}]),
        json!([{"retain": 2}, {"insert": "x"}]),
    ];
    for (n, op) in typing.into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        submit_ok(&server, &alice, sid(&a), n as i64, op).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let res = submit(&server, &alice, sid(&a), 3, json!([{"retain": 3}]), None).await;
    let body = expect_error(res, 410, "session_expired").await;
    assert_eq!(body["details"]["reason"], "idle");
    assert_eq!(body["details"]["session_id"], sid(&a));
    let res = server
        .client
        .post(server.url(&format!("/realtime/edit/sessions/{}/save", sid(&a))))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    expect_error(res, 410, "session_expired").await;
    // The document is intact and a new session carries on.
    let b = start(&server, &editor("bob"), "6", "f").await;
    assert_eq!(
        (b["content"].as_str(), b["revision"].as_u64()),
        (Some("xxx"), Some(3))
    );
    assert_eq!(
        b["active_editors"],
        json!([{"user_id": "bob", "name": "Bob"}]),
        "alice went idle"
    );
}

// Documents are capped at 1 MiB of UTF-8: an operation that would pass the
// cap is 413 payload_too_large and changes nothing; exactly 1 MiB is fine.
async fn documents_are_capped_at_one_mib(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = editor("alice");
    let a = start(&server, &alice, "8", "f").await;
    let s = sid(&a);
    let chunk = "é".repeat(300_000); // 600,000 bytes
    submit_ok(&server, &alice, s, 0, json!([{"insert": chunk}])).await;
    let fill = "b".repeat(1024 * 1024 - 600_000);
    submit_ok(
        &server,
        &alice,
        s,
        1,
        json!([{"retain": 300_000}, {"insert": fill}]),
    )
    .await;
    let chars = 300_000 + 1024 * 1024 - 600_000;
    let res = submit(
        &server,
        &alice,
        s,
        2,
        json!([{"retain": chars}, {"insert": "c"}]),
        None,
    )
    .await;
    let body = expect_error(res, 413, "payload_too_large").await;
    assert_eq!(body["details"]["limit"], 1024 * 1024);
    assert_eq!(body["details"]["size"], 1024 * 1024 + 1);
    let doc = document_ok(&server, &alice, "8", "f").await;
    assert_eq!(doc["revision"], 2);
    assert_eq!(doc["content"].as_str().unwrap().len(), 1024 * 1024);
    // Replacing a 1-byte char by another keeps it at the cap.
    submit_ok(
        &server,
        &alice,
        s,
        2,
        json!([{"retain": chars - 1}, {"delete": 1}, {"insert": "z"}]),
    )
    .await;
}

// The caller must be able to read the resource's channel.
async fn a_resource_the_user_cannot_read_is_403(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = editor("alice");
    let outsider = token_with("alice", json!({"channels": ["task:other"]}));
    let a = start(&server, &alice, "9", "f").await;
    let res = server
        .post(
            "/realtime/edit/sessions",
            &outsider,
            &json!({"resource_type": "task", "resource_id": "9", "field": "f"}),
        )
        .await;
    let body = expect_error(res, 403, "permission_denied").await;
    assert_eq!(body["details"]["channel"], "task:9");
    expect_error(
        document(&server, &outsider, "9", "f").await,
        403,
        "permission_denied",
    )
    .await;
    expect_error(
        lock(&server, &outsider, "9", "f", 60).await,
        403,
        "permission_denied",
    )
    .await;
    // The same user with a token that lost the claim cannot go on with a session.
    let res = submit(
        &server,
        &outsider,
        sid(&a),
        0,
        json!([{"insert": "x"}]),
        None,
    )
    .await;
    expect_error(res, 403, "permission_denied").await;
    // Nor may another user use someone's session.
    let res = submit(
        &server,
        &editor("bob"),
        sid(&a),
        0,
        json!([{"insert": "x"}]),
        None,
    )
    .await;
    expect_error(res, 403, "permission_denied").await;
    let res = submit(
        &server,
        &alice,
        "no-such-session",
        0,
        json!([{"insert": "x"}]),
        None,
    )
    .await;
    expect_error(res, 404, "not_found").await;
    // A service token reads every channel of its tenant.
    start(&server, &service_token(), "9", "f").await;
}

// Names are validated: 400 for bad ones, 404 for an unknown namespace.
async fn bad_resource_names_are_400(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = editor("alice");
    for (rt, id, field) in [
        ("Task", "1", "f"),
        ("task:1", "1", "f"),
        ("", "1", "f"),
        ("task", "a b", "f"),
        ("task", "", "f"),
        ("task", "1", "bad field"),
        ("task", "1", "a:b"),
        ("task", "1", ""),
        ("task", "1", &"x".repeat(65)),
    ] {
        let body = json!({"resource_type": rt, "resource_id": id, "field": field});
        let res = server.post("/realtime/edit/sessions", &alice, &body).await;
        expect_error(res, 400, "invalid_message").await;
        let res = server.post("/realtime/edit/locks", &alice, &body).await;
        expect_error(res, 400, "invalid_message").await;
    }
    let res = server
        .post(
            "/realtime/edit/sessions",
            &alice,
            &json!({"resource_type": "widget", "resource_id": "1", "field": "f"}),
        )
        .await;
    expect_error(res, 404, "channel_not_found").await;
    for body in [
        json!({"resource_type": "task", "resource_id": "1"}),
        json!({"resource_type": "task", "resource_id": "1", "field": "f", "x": 1}),
        json!({"resource_type": "task", "resource_id": 1, "field": "f"}),
    ] {
        let res = server.post("/realtime/edit/sessions", &alice, &body).await;
        expect_error(res, 400, "invalid_message").await;
    }
    for ttl in [0, 3601] {
        expect_error(
            lock(&server, &alice, "1", "f", ttl).await,
            400,
            "invalid_message",
        )
        .await;
    }
    let res = server
        .get(
            "/realtime/edit/documents?resource_type=task&resource_id=1",
            &alice,
        )
        .await;
    expect_error(res, 400, "invalid_message").await;
    expect_error(
        document(&server, &alice, "never", "f").await,
        404,
        "not_found",
    )
    .await;
    let res = server
        .get(
            "/realtime/edit/documents?resource_type=task&resource_id=1&field=f&user_id=bob",
            &alice,
        )
        .await;
    expect_error(res, 403, "permission_denied").await;
}

// Nothing crosses tenants: documents, sessions, locks and events.
async fn tenants_are_isolated(backend: Backend) {
    let server = Server::start(&backend).await;
    let acme = token_with(
        "alice",
        json!({"tenant_id": "acme", "channels": ["task:*"]}),
    );
    let globex = token_with(
        "alice",
        json!({"tenant_id": "globex", "channels": ["task:*"]}),
    );
    let a = start(&server, &acme, "1", "description").await;
    submit_ok(
        &server,
        &acme,
        sid(&a),
        0,
        json!([{"insert": "acme secret"}]),
    )
    .await;
    lock(&server, &acme, "1", "title", 60).await;

    expect_error(
        document(&server, &globex, "1", "description").await,
        404,
        "not_found",
    )
    .await;
    let g = start(&server, &globex, "1", "description").await;
    assert_eq!(
        (g["content"].as_str(), g["revision"].as_u64()),
        (Some(""), Some(0))
    );
    let res = submit(&server, &globex, sid(&a), 1, json!([{"retain": 11}]), None).await;
    expect_error(res, 404, "not_found").await;
    let (status, body) = answer(lock(&server, &globex, "1", "title", 60).await).await;
    assert_eq!(status, 201, "acme's lock does not hold in globex: {body}");
    let seen = events_named(&server, &globex, "task:1", "edit.operation").await;
    assert!(seen.is_empty(), "{seen:?}");
    assert_eq!(
        document_ok(&server, &acme, "1", "description").await["content"],
        "acme secret"
    );
}

// The document, its history and its sessions survive a restart.
async fn documents_and_sessions_survive_a_restart(backend: Backend) {
    let mut server = Server::start(&backend).await;
    let alice = editor("alice");
    let a = start(&server, &alice, "10", "description").await;
    let s = sid(&a).to_string();
    let r1 = answer(
        submit(
            &server,
            &alice,
            &s,
            0,
            json!([{"insert": "durable ✓"}]),
            Some("k1"),
        )
        .await,
    )
    .await;
    assert_eq!(r1.0, 200);
    server.sigterm();
    server.wait_exit(Duration::from_secs(10));
    let db = server.db.clone();
    drop(server);

    let server = Server::start_on(db, &[]);
    let doc = document_ok(&server, &alice, "10", "description").await;
    assert_eq!(
        (doc["content"].as_str(), doc["revision"].as_u64()),
        (Some("durable ✓"), Some(1))
    );
    let again = answer(
        submit(
            &server,
            &alice,
            &s,
            0,
            json!([{"insert": "durable ✓"}]),
            Some("k1"),
        )
        .await,
    )
    .await;
    assert_eq!(again, r1, "a retry after the restart is still recognised");
    // An operation made against revision 0 is transformed past the history.
    let late = submit_ok(&server, &alice, &s, 0, json!([{"insert": "» "}])).await;
    assert_eq!(
        late,
        json!({"revision": 2, "ops": [{"insert": "» "}, {"retain": 9}]})
    );
    assert_eq!(
        document_ok(&server, &alice, "10", "description").await["content"],
        "» durable ✓"
    );
}

// ---------------------------------------------------------------------------
// Locks

// A held lock is 409 resource_locked for others, naming holder and expiry;
// its holder asking again gets it back. A lock also keeps others from editing.
async fn a_held_lock_is_409_resource_locked_with_holder_and_expiry(backend: Backend) {
    let server = Server::start(&backend).await;
    let (alice, bob) = (editor("alice"), editor("bob"));
    let before_lock = start(&server, &bob, "11", "title").await;
    let (status, mine) = answer(lock(&server, &alice, "11", "title", 60).await).await;
    assert_eq!(status, 201, "{mine}");
    let lock_id = mine["lock_id"].as_str().expect("lock_id").to_string();
    assert_eq!(
        mine["locked_by"],
        json!({"user_id": "alice", "name": "Alice"})
    );
    let expires = millis(&mine["expires_at"]);
    let now = chrono::Utc::now().timestamp_millis();
    assert!((now + 55_000..=now + 61_000).contains(&expires), "ttl 60 s");

    let res = lock(&server, &bob, "11", "title", 60).await;
    let body = expect_error(res, 409, "resource_locked").await;
    assert_eq!(
        body["details"],
        json!({"locked_by": {"user_id": "alice", "name": "Alice"}, "expires_at": mine["expires_at"]})
    );
    // Other fields are free.
    assert_eq!(
        lock(&server, &bob, "11", "description", 60).await.status(),
        201
    );
    // The holder again: the same lock, a fresh expiry.
    let (status, again) = answer(lock(&server, &alice, "11", "title", 120).await).await;
    assert_eq!(status, 201);
    assert_eq!(again["lock_id"], lock_id.as_str());
    assert!(millis(&again["expires_at"]) > expires);

    // Bob may not edit the locked field meanwhile, by a new or an old session.
    let res = server
        .post(
            "/realtime/edit/sessions",
            &bob,
            &json!({"resource_type": "task", "resource_id": "11", "field": "title"}),
        )
        .await;
    expect_error(res, 409, "resource_locked").await;
    let res = submit(
        &server,
        &bob,
        sid(&before_lock),
        0,
        json!([{"insert": "x"}]),
        None,
    )
    .await;
    let body = expect_error(res, 409, "resource_locked").await;
    assert_eq!(body["details"]["locked_by"]["user_id"], "alice");
    let a = start(&server, &alice, "11", "title").await;
    submit_ok(&server, &alice, sid(&a), 0, json!([{"insert": "mine"}])).await;

    let locks = events_named(&server, &alice, "task:11", "edit.lock").await;
    assert_eq!(locks.len(), 3);
    assert_eq!(
        locks[0]["data"],
        json!({"lock_id": lock_id, "resource_type": "task", "resource_id": "11", "field": "title",
               "locked_by": {"user_id": "alice", "name": "Alice"}, "expires_at": mine["expires_at"]})
    );
}

// Renew moves the expiry (by the given TTL, or the lock's own); only the holder may.
async fn renew_extends_a_lock_for_its_holder_only(backend: Backend) {
    let server = Server::start(&backend).await;
    let (alice, bob) = (editor("alice"), editor("bob"));
    let (_, mine) = answer(lock(&server, &alice, "12", "f", 2).await).await;
    let lock_id = mine["lock_id"].as_str().unwrap();
    let renew = format!("/realtime/edit/locks/{lock_id}/renew");
    let (status, renewed) = answer(
        server
            .post(&renew, &alice, &json!({"ttl_seconds": 300}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["lock_id"], lock_id);
    assert_eq!(
        renewed["locked_by"],
        json!({"user_id": "alice", "name": "Alice"})
    );
    let now = chrono::Utc::now().timestamp_millis();
    assert!(millis(&renewed["expires_at"]) > now + 290_000);
    // No body: the lock's TTL (now 300 s) again.
    let res = server
        .client
        .post(server.url(&renew))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    let (status, plain) = answer(res).await;
    assert_eq!(status, 200, "{plain}");
    assert!(millis(&plain["expires_at"]) >= millis(&renewed["expires_at"]));

    let body = expect_error(
        server.post(&renew, &bob, &json!({})).await,
        403,
        "permission_denied",
    )
    .await;
    assert_eq!(body["details"]["locked_by"]["user_id"], "alice");
    expect_error(
        server
            .post("/realtime/edit/locks/nope/renew", &alice, &json!({}))
            .await,
        404,
        "not_found",
    )
    .await;
    expect_error(
        server
            .post(&renew, &alice, &json!({"ttl_seconds": 0}))
            .await,
        400,
        "invalid_message",
    )
    .await;
    let renewals = events_named(&server, &alice, "task:12", "edit.lock").await;
    assert_eq!(renewals.len(), 3, "each renewal announces the new expiry");
}

// Only the holder releases a lock; release appends edit.unlock and frees the field.
async fn only_the_owner_releases_a_lock(backend: Backend) {
    let server = Server::start(&backend).await;
    let (alice, bob) = (editor("alice"), editor("bob"));
    let (_, mine) = answer(lock(&server, &alice, "13", "f", 60).await).await;
    let path = format!("/realtime/edit/locks/{}", mine["lock_id"].as_str().unwrap());
    expect_error(delete(&server, &path, &bob).await, 403, "permission_denied").await;
    expect_error(
        lock(&server, &bob, "13", "f", 60).await,
        409,
        "resource_locked",
    )
    .await;
    assert_eq!(delete(&server, &path, &alice).await.status(), 204);
    expect_error(delete(&server, &path, &alice).await, 404, "not_found").await;
    let unlocks = events_named(&server, &alice, "task:13", "edit.unlock").await;
    assert_eq!(unlocks.len(), 1);
    assert_eq!(unlocks[0]["user_id"], "alice");
    assert_eq!(
        unlocks[0]["data"],
        json!({"lock_id": mine["lock_id"], "resource_type": "task", "resource_id": "13",
               "field": "f", "locked_by": {"user_id": "alice", "name": "Alice"},
               "reason": "released"})
    );
    assert_eq!(lock(&server, &bob, "13", "f", 60).await.status(), 201);
}

// An expired lock releases itself with `edit.unlock`, seen live on the channel.
async fn an_expired_lock_is_released_with_edit_unlock(backend: Backend) {
    let server = Server::start(&backend).await;
    let (alice, bob) = (editor("alice"), editor("bob"));
    let mut stream = server.sse("channels=task:14", &bob).await;
    stream.subscription().await;
    let (status, mine) = answer(lock(&server, &alice, "14", "f", 1).await).await;
    assert_eq!(status, 201);
    let locked = next_edit_event(&mut stream).await;
    assert_eq!(locked["event"], "edit.lock");
    let unlocked = next_edit_event(&mut stream).await;
    assert_eq!(unlocked["event"], "edit.unlock");
    assert_eq!(
        unlocked["user_id"],
        Value::Null,
        "released by the server, not a user"
    );
    assert_eq!(unlocked["data"]["lock_id"], mine["lock_id"]);
    assert_eq!(unlocked["data"]["reason"], "expired");
    let at = millis(&unlocked["timestamp"]);
    assert!(at >= millis(&mine["expires_at"]), "not before it expired");
    let path = format!("/realtime/edit/locks/{}", mine["lock_id"].as_str().unwrap());
    expect_error(delete(&server, &path, &alice).await, 404, "not_found").await;
    assert_eq!(lock(&server, &bob, "14", "f", 60).await.status(), 201);
    let unlocks = events_named(&server, &alice, "task:14", "edit.unlock").await;
    assert_eq!(unlocks.len(), 1, "announced once");
}

// Edit operations spend the per-user `edit_operations` limit (20 a second).
async fn edit_operations_are_rate_limited(backend: Backend) {
    let server = std::sync::Arc::new(
        Server::start_with(&backend, &[("SWITCHYARD_RATE_LIMITS", "on")]).await,
    );
    let alice = editor("alice");
    let a = start(&server, &alice, "15", "f").await;
    let first = submit(&server, &alice, sid(&a), 0, json!([{"insert": "x"}]), None).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit"], "20");
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (server, alice, s) = (server.clone(), alice.clone(), sid(&a).to_string());
        tasks.push(tokio::spawn(async move {
            let res = submit(&server, &alice, &s, 0, json!([{"insert": "y"}]), None).await;
            let retry = res.headers().get("retry-after").is_some();
            (res.status().as_u16(), retry)
        }));
    }
    let mut limited = 0;
    for t in tasks {
        let (status, retry) = t.await.unwrap();
        assert!(status == 200 || status == 429, "{status}");
        if status == 429 {
            assert!(retry, "429 carries Retry-After");
            limited += 1;
        }
    }
    assert!(
        limited > 0,
        "41 operations at once pass a limit of 20 a second"
    );
}

// ---------------------------------------------------------------------------
// Five simulated ot.js clients

/// The ot.js client states.
enum State {
    Synchronized,
    AwaitingConfirm(Operation),
    AwaitingWithBuffer(Operation, Operation),
}

/// One editor: its own session, a reader on the resource channel feeding
/// `edit.operation` events, one operation in flight and a buffer, as
/// ot.js's `Client`. Its own event is its acknowledgement, so acks and
/// remote operations are taken in the one order the log gives them.
struct SimClient {
    name: String,
    token: String,
    session_id: String,
    text: String,
    revision: u64,
    state: State,
    in_flight: Option<String>,
    sent: u64,
    events: mpsc::UnboundedReceiver<Value>,
    /// Operation requests not yet completed: (status, answer, base revision).
    requests: VecDeque<JoinHandle<(u16, Value, u64)>>,
    reader: JoinHandle<()>,
}

impl Drop for SimClient {
    fn drop(&mut self) {
        // Before the server goes, so its readers do not see a broken stream.
        self.reader.abort();
    }
}

impl SimClient {
    fn apply_client(&mut self, op: Operation, http: &reqwest::Client, base: &str) {
        self.text = op.apply(&self.text).expect("local op applies");
        self.state = match std::mem::replace(&mut self.state, State::Synchronized) {
            State::Synchronized => {
                self.send(&op, http, base);
                State::AwaitingConfirm(op)
            }
            State::AwaitingConfirm(outstanding) => State::AwaitingWithBuffer(outstanding, op),
            State::AwaitingWithBuffer(outstanding, buffer) => {
                State::AwaitingWithBuffer(outstanding, compose(&buffer, &op).expect("compose"))
            }
        };
    }

    fn send(&mut self, op: &Operation, http: &reqwest::Client, base: &str) {
        self.sent += 1;
        let id = format!("{}-{}", self.name, self.sent);
        self.in_flight = Some(id.clone());
        let request = http
            .post(format!(
                "{base}/realtime/edit/sessions/{}/operations",
                self.session_id
            ))
            .bearer_auth(&self.token)
            .json(&json!({"revision": self.revision, "ops": op.to_json(), "client_op_id": id}));
        let base = self.revision;
        self.requests.push_back(tokio::spawn(async move {
            let res = request.send().await.expect("operation request");
            let status = res.status().as_u16();
            (status, res.json().await.expect("operation answer"), base)
        }));
    }

    fn receive(&mut self, data: &Value, http: &reqwest::Client, base: &str) {
        let revision = data["revision"].as_u64().expect("revision");
        assert_eq!(
            revision,
            self.revision + 1,
            "{} gets edit.operation events in revision order",
            self.name
        );
        self.revision = revision;
        if data["session_id"] == self.session_id.as_str() {
            assert_eq!(data["client_op_id"].as_str(), self.in_flight.as_deref());
            self.in_flight = None;
            self.state = match std::mem::replace(&mut self.state, State::Synchronized) {
                State::Synchronized => panic!("{}: an ack with nothing in flight", self.name),
                State::AwaitingConfirm(_) => State::Synchronized,
                State::AwaitingWithBuffer(_, buffer) => {
                    self.send(&buffer, http, base);
                    State::AwaitingConfirm(buffer)
                }
            };
            return;
        }
        let op = Operation::from_json(&data["ops"]).expect("event ops");
        let (state, apply) = match std::mem::replace(&mut self.state, State::Synchronized) {
            State::Synchronized => (State::Synchronized, op),
            State::AwaitingConfirm(outstanding) => {
                let (outstanding, op) = transform(&outstanding, &op).expect("transform");
                (State::AwaitingConfirm(outstanding), op)
            }
            State::AwaitingWithBuffer(outstanding, buffer) => {
                let (outstanding, op) = transform(&outstanding, &op).expect("transform");
                let (buffer, op) = transform(&buffer, &op).expect("transform");
                (State::AwaitingWithBuffer(outstanding, buffer), op)
            }
        };
        self.state = state;
        self.text = apply.apply(&self.text).expect("remote op applies");
    }

    async fn next_event(&mut self) -> Value {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("{} waited too long for an event", self.name))
            .expect("reader alive")
    }
}

/// Inserts of one to several pieces: ASCII, accents (precomposed and
/// combining), CJK, and multi-scalar emoji.
const PIECES: &[&str] = &[
    "a",
    "b",
    "z",
    " ",
    "\n",
    "é",
    "e\u{301}",
    "ß",
    "漢",
    "字",
    "👍🏽",
    "👩‍👩‍👧",
];

/// A random operation on `text`: a few retain/delete/insert steps, deleting
/// more once the text grows long.
fn random_op(rng: &mut StdRng, text: &str) -> Operation {
    let len = text.chars().count();
    let mut op = Operation::new();
    let mut left = len;
    for _ in 0..rng.random_range(1..=3) {
        let skip = rng.random_range(0..=left);
        op.retain(skip);
        left -= skip;
        if left > 0 && rng.random_bool(if len > 120 { 0.8 } else { 0.35 }) {
            let n = rng.random_range(1..=left.min(8));
            op.delete(n);
            left -= n;
        }
        if rng.random_bool(0.75) {
            let s: String = (0..rng.random_range(1..=4))
                .map(|_| PIECES[rng.random_range(0..PIECES.len())])
                .collect();
            op.insert(&s);
        }
    }
    op.retain(left);
    op
}

/// Forwards the `edit.operation` events of an SSE stream.
fn sse_reader(mut stream: SseStream, tx: mpsc::UnboundedSender<Value>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(frame) = stream.next_frame().await {
            let Some(data) = frame.data.as_deref() else {
                continue;
            };
            let msg: Value = serde_json::from_str(data).expect("frame JSON");
            if msg["type"] == "event"
                && msg["event"] == "edit.operation"
                && tx.send(msg["data"].clone()).is_err()
            {
                return;
            }
        }
    })
}

/// Forwards the `edit.operation` events of `channel`, read by long polling.
fn poll_reader(
    http: reqwest::Client,
    base: String,
    token: String,
    channel: String,
    tx: mpsc::UnboundedSender<Value>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut cursor = 0u64;
        while !tx.is_closed() {
            let url =
                format!("{base}/realtime/poll?channels={channel}&last_poll_id={cursor}&timeout=2");
            let Ok(res) = http.get(url).bearer_auth(&token).send().await else {
                return;
            };
            let body: Value = res.json().await.expect("poll JSON");
            for e in body["events"].as_array().expect("events") {
                if e["event"] == "edit.operation" && e["channel"] == channel.as_str() {
                    let _ = tx.send(e["data"].clone());
                }
            }
            cursor = body["last_poll_id"].as_u64().expect("cursor");
        }
    })
}

/// What the server did with the simulation's operations.
#[derive(Default)]
struct Tally {
    /// The highest revision any answer has reported.
    known: u64,
    /// Operations the server transformed past others made concurrently.
    transformed: u64,
}

impl Tally {
    /// Completes one operation request.
    async fn complete(&mut self, request: JoinHandle<(u16, Value, u64)>) {
        let (status, body, base) = request.await.expect("request task");
        assert_eq!(status, 200, "operation answered {body}");
        let revision = body["revision"].as_u64().expect("revision");
        self.known = self.known.max(revision);
        self.transformed += u64::from(revision > base + 1);
    }
}

/// Five clients, on SSE and long polling, edit one field at random (seeded)
/// interleavings: local edits, event deliveries and request completions in
/// any order, with up to five operations racing at the server. Every client
/// ends with exactly the server's text.
async fn simulate(server: &Server, seed: u64, resource_id: &str, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let channel = format!("task:{resource_id}");
    let http = server.client.clone();
    let mut clients = Vec::new();
    for i in 0..5 {
        let name = format!("c{i}");
        let token = editor(&name);
        let (tx, rx) = mpsc::unbounded_channel();
        // The reader starts before the session, so no event is missed.
        let reader = if i % 2 == 0 {
            let mut stream = server.sse(&format!("channels={channel}"), &token).await;
            stream.subscription().await;
            sse_reader(stream, tx)
        } else {
            poll_reader(
                http.clone(),
                server.base.clone(),
                token.clone(),
                channel.clone(),
                tx,
            )
        };
        let session = start(server, &token, resource_id, "body").await;
        clients.push(SimClient {
            name,
            token,
            session_id: sid(&session).to_string(),
            text: session["content"].as_str().unwrap().to_string(),
            revision: session["revision"].as_u64().unwrap(),
            state: State::Synchronized,
            in_flight: None,
            sent: 0,
            events: rx,
            requests: VecDeque::new(),
            reader,
        });
    }

    // A client behind `tally.known` has an event on its way and may wait for it.
    let mut tally = Tally::default();
    for _ in 0..steps {
        let c = &mut clients[rng.random_range(0..5)];
        match rng.random_range(0..10) {
            0..=3 => {
                let op = random_op(&mut rng, &c.text);
                c.apply_client(op, &http, &server.base);
            }
            4..=7 => {
                let event = if c.revision < tally.known {
                    Some(c.next_event().await)
                } else {
                    c.events.try_recv().ok()
                };
                if let Some(event) = event {
                    c.receive(&event, &http, &server.base);
                }
            }
            _ => {
                if let Some(request) = c.requests.pop_front() {
                    tally.complete(request).await;
                }
            }
        }
    }

    // Quiesce: finish requests, deliver every event, send what buffers
    // held, until every client is synchronized at the server's revision.
    loop {
        for c in &mut clients {
            while let Some(request) = c.requests.pop_front() {
                tally.complete(request).await;
            }
        }
        let server_doc = document_ok(server, &clients[0].token, resource_id, "body").await;
        let revision = server_doc["revision"].as_u64().unwrap();
        assert!(revision >= tally.known);
        let mut busy = false;
        for c in &mut clients {
            while c.revision < revision {
                let event = c.next_event().await;
                c.receive(&event, &http, &server.base);
            }
            busy |= !c.requests.is_empty() || !matches!(c.state, State::Synchronized);
        }
        if !busy {
            let content = server_doc["content"].as_str().unwrap();
            let sent: u64 = clients.iter().map(|c| c.sent).sum();
            assert_eq!(
                revision, sent,
                "seed {seed}: one revision per operation sent"
            );
            eprintln!(
                "seed {seed}: {sent} operations, {} transformed by the server, {} chars",
                tally.transformed,
                content.chars().count()
            );
            assert!(
                sent >= 50,
                "seed {seed}: a real workout ({sent} operations)"
            );
            assert!(
                tally.transformed * 4 >= sent,
                "seed {seed}: at least a quarter of the operations were concurrent"
            );
            for c in &clients {
                assert_eq!(c.text, content, "seed {seed}: {} converged", c.name);
                assert_eq!(c.revision, revision);
            }
            return;
        }
    }
}

async fn five_clients_converge_under_random_interleavings(backend: Backend) {
    let server = Server::start(&backend).await;
    let seeds: Vec<u64> = match std::env::var("EDIT_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("EDIT_SIM_SEED is a number")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        simulate(&server, seed, &format!("sim{seed}"), 1500).await;
    }
}

on_both_backends!(
    start_session_returns_document_and_editors_and_appends_edit_started,
    concurrent_inserts_are_transformed_the_later_one_first,
    a_retried_client_op_id_gets_the_first_answer_and_applies_once,
    racing_operations_are_announced_in_revision_order,
    queued_operations_keep_their_semantics_when_batched,
    malformed_or_inconsistent_operations_are_422_and_change_nothing,
    save_answers_the_revision_and_appends_edit_saved,
    leave_ends_the_session,
    an_idle_session_expires_with_410,
    documents_are_capped_at_one_mib,
    a_resource_the_user_cannot_read_is_403,
    bad_resource_names_are_400,
    tenants_are_isolated,
    documents_and_sessions_survive_a_restart,
    a_held_lock_is_409_resource_locked_with_holder_and_expiry,
    renew_extends_a_lock_for_its_holder_only,
    only_the_owner_releases_a_lock,
    an_expired_lock_is_released_with_edit_unlock,
    edit_operations_are_rate_limited,
    five_clients_converge_under_random_interleavings,
    the_first_initial_content_seeds_the_document,
    a_backend_sets_content_while_no_one_edits,
);
