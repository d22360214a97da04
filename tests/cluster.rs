//! Several nodes on one Postgres behave as one service (PROTOCOL §13):
//! cross-node delivery, one sequence for every reader, shared presence, and
//! a killed node's clients resuming elsewhere with nothing lost.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

async fn two_nodes(env: Env<'_>) -> Option<(Server, Server)> {
    let backend = Backend::postgres()?;
    let a = Server::start_with(&backend, env).await;
    let b = Server::start_on(a.db.clone(), env);
    Some((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_and_poll_on_one_node_receive_what_another_publishes() {
    let Some((a, b)) = two_nodes(&[]).await else {
        return;
    };
    let alice = token("alice");
    let mut stream = b.sse("channels=system", &alice).await;
    stream.subscription().await;
    let poll = {
        let request = b
            .client
            .get(b.url("/realtime/poll?channels=system&last_poll_id=0&timeout=20"))
            .bearer_auth(&alice);
        tokio::spawn(async move { request.send().await.unwrap().json::<Value>().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = a
        .broadcast("system", "cross.node", json!({"from": "a"}))
        .await;
    let event = stream.next_event(Duration::from_secs(5)).await;
    assert_eq!(event["id"].as_u64(), Some(id));
    assert_eq!(event["data"], json!({"from": "a"}));
    let polled = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the poll on B woke")
        .unwrap();
    assert_eq!(polled["events"][0]["id"].as_u64(), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_on_two_nodes_give_every_reader_the_same_sequence() {
    let Some((a, b)) = two_nodes(&[]).await else {
        return;
    };
    const PER_PUBLISHER: usize = 250;
    const TOTAL: usize = 2 * 4 * PER_PUBLISHER;
    let mut readers = Vec::new();
    for node in [&a, &b] {
        let mut stream = node
            .sse("channels=feed:shared&last_event_id=0", &token("reader"))
            .await;
        stream.subscription().await;
        readers.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(TOTAL);
            while ids.len() < TOTAL {
                ids.push(
                    stream.next_event(Duration::from_secs(60)).await["id"]
                        .as_u64()
                        .unwrap(),
                );
            }
            ids
        }));
    }
    let mut publishers = Vec::new();
    for node in [&a, &b] {
        for p in 0..4 {
            let client = node.client.clone();
            let url = node.url("/realtime/broadcast");
            publishers.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..PER_PUBLISHER {
                    let res = client
                        .post(&url)
                        .bearer_auth(service_token())
                        .json(&json!({"channel": "feed:shared", "event": "tick", "data": {"p": p, "n": n}}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 202);
                    ids.push(res.json::<Value>().await.unwrap()["id"].as_u64().unwrap());
                }
                ids
            }));
        }
    }
    let mut published = BTreeSet::new();
    for p in publishers {
        published.extend(p.await.unwrap());
    }
    assert_eq!(published.len(), TOTAL, "every publish got its own id");
    let on_a = readers.remove(0).await.unwrap();
    let on_b = readers.remove(0).await.unwrap();
    assert!(
        on_a.windows(2).all(|w| w[0] < w[1]),
        "node A's reader: increasing, no duplicates"
    );
    assert_eq!(on_a, on_b, "both nodes' readers saw the same sequence");
    assert_eq!(on_a.into_iter().collect::<BTreeSet<_>>(), published);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_set_through_one_node_is_visible_on_another() {
    let Some((a, b)) = two_nodes(&[("SWITCHYARD_PRESENCE_TTL_SECS", "2")]).await else {
        return;
    };
    let mut stream = a.sse("channels=system", &token("alice")).await;
    stream.subscription().await;
    let res = a
        .post(
            "/realtime/presence",
            &token("alice"),
            &json!({"status": "busy", "status_message": "Deep work"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let seen: Value = b
        .get("/realtime/presence/users/alice", &token("bob"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["status"], "busy");
    assert_eq!(seen["status_message"], "Deep work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_client_resumes_on_another_node_with_nothing_lost() {
    let Some((mut a, b)) = two_nodes(&[]).await else {
        return;
    };
    let alice = token("alice");
    let mut stream = a.sse("channels=feed:k", &alice).await;
    stream.subscription().await;
    let first = b.broadcast("feed:k", "one", json!({})).await;
    assert_eq!(
        stream.next_event(Duration::from_secs(5)).await["id"].as_u64(),
        Some(first)
    );

    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let missed = vec![
        b.broadcast("feed:k", "two", json!({})).await,
        b.broadcast("feed:k", "three", json!({})).await,
    ];
    let res = b
        .client
        .get(b.url("/realtime/sse?channels=feed:k"))
        .bearer_auth(&alice)
        .header("Last-Event-ID", first.to_string())
        .send()
        .await
        .unwrap();
    let mut resumed = SseStream::new(res);
    resumed.subscription().await;
    for id in missed {
        assert_eq!(
            resumed.next_event(Duration::from_secs(5)).await["id"].as_u64(),
            Some(id)
        );
    }
}

/// Editing through two nodes: a lock taken on one blocks the other, and
/// concurrent operations sent through both converge, each client following
/// its own node's stream and transforming as ot.js clients do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_through_two_nodes_share_locks_and_converge() {
    use rand::{Rng, SeedableRng};
    use switchyard_core::edit::ot::{Operation, transform};

    let Some((a, b)) = two_nodes(&[]).await else {
        return;
    };
    let alice = token_with("alice", json!({"channels": ["task:*"]}));
    let bob = token_with("bob", json!({"channels": ["task:*"]}));

    let lock =
        json!({"resource_type": "task", "resource_id": "77", "field": "title", "ttl_seconds": 60});
    assert_eq!(
        a.post("/realtime/edit/locks", &alice, &lock).await.status(),
        201
    );
    let refused = b.post("/realtime/edit/locks", &bob, &lock).await;
    let body = expect_error(refused, 409, "resource_locked").await;
    assert_eq!(body["details"]["locked_by"]["user_id"], "alice");

    let mut streams = Vec::new();
    let mut sessions = Vec::new();
    for (node, token) in [(&a, &alice), (&b, &bob)] {
        let mut s = node.sse("channels=task:77", token).await;
        s.subscription().await;
        streams.push(s);
        let started: Value = node
            .post(
                "/realtime/edit/sessions",
                token,
                &json!({"resource_type": "task", "resource_id": "77", "field": "body"}),
            )
            .await
            .json()
            .await
            .unwrap();
        sessions.push(started["session_id"].as_str().unwrap().to_string());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut text, mut revision) = (String::new(), 0u64);
    let pieces = ["a", "é", "漢", "👍🏽", " "];
    let random_op = |rng: &mut rand::rngs::StdRng, text: &str| {
        let len = text.chars().count();
        let at = rng.random_range(0..=len);
        let mut op = Operation::new();
        op.retain(at);
        let del = if at < len && rng.random_bool(0.3) {
            rng.random_range(1..=(len - at).min(3))
        } else {
            0
        };
        if del > 0 {
            op.delete(del);
        }
        op.insert(pieces[rng.random_range(0..pieces.len())]);
        op.retain(len - at - del);
        op
    };
    for round in 0..10 {
        let ops = [random_op(&mut rng, &text), random_op(&mut rng, &text)];
        // Both sent at once, each through its own node, against the same revision.
        let sends = [(&a, &alice, 0usize), (&b, &bob, 1usize)].map(|(node, token, i)| {
            node.client
                .post(node.url(&format!("/realtime/edit/sessions/{}/operations", sessions[i])))
                .bearer_auth(token)
                .json(&json!({"revision": revision, "ops": ops[i].to_json(), "client_op_id": format!("r{round}-{i}")}))
                .send()
        });
        let [ra, rb] = sends;
        let (ra, rb) = tokio::join!(ra, rb);
        assert_eq!(
            (ra.unwrap().status().as_u16(), rb.unwrap().status().as_u16()),
            (200, 200)
        );

        // Each client: its own op applied locally, then the two events in
        // revision order from its node's stream (its own is the ack).
        let mut texts = Vec::new();
        for (i, stream) in streams.iter_mut().enumerate() {
            let mut events = Vec::new();
            while events.len() < 2 {
                let event = stream.next_event(Duration::from_secs(10)).await;
                if event["event"] == "edit.operation" {
                    events.push(event["data"].clone());
                }
            }
            // Appended with their revisions, so delivered in revision order.
            assert!(
                events[0]["revision"].as_u64() < events[1]["revision"].as_u64(),
                "round {round}: events out of revision order: {events:?}"
            );
            let mut local = ops[i].apply(&text).unwrap();
            let mut pending = Some(ops[i].clone());
            for e in events {
                if e["session_id"] == sessions[i].as_str() {
                    pending = None;
                    continue;
                }
                let remote = Operation::from_json(&e["ops"]).unwrap();
                let applied = match pending.take() {
                    Some(mine) => {
                        let (mine, remote) = transform(&mine, &remote).unwrap();
                        pending = Some(mine);
                        remote
                    }
                    None => remote,
                };
                local = applied.apply(&local).unwrap();
            }
            texts.push(local);
        }
        revision += 2;
        let doc: Value = b
            .get(
                "/realtime/edit/documents?resource_type=task&resource_id=77&field=body",
                &bob,
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(doc["revision"], revision);
        assert_eq!(texts[0], texts[1], "round {round}: both clients converged");
        assert_eq!(
            texts[0],
            doc["content"].as_str().unwrap(),
            "round {round}: and equal the server's text"
        );
        text = texts.remove(0);
    }
}

/// Editors on two nodes race on one document; the log holds one
/// `edit.operation` per revision, in revision order (each event commits in
/// the transaction that applies its operation), so a client reading it in
/// id order never needs to reorder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_events_enter_the_log_in_revision_order_across_nodes() {
    let Some((a, b)) = two_nodes(&[]).await else {
        return;
    };
    const EDITORS: usize = 6;
    const EACH: u64 = 25;
    let mut editors = Vec::new();
    for e in 0..EDITORS {
        let node = if e % 2 == 0 { a.url("") } else { b.url("") };
        let client = a.client.clone();
        editors.push(tokio::spawn(async move {
            let me = token_with(&format!("editor{e}"), json!({"channels": ["task:*"]}));
            let started: Value = client
                .post(format!("{node}/realtime/edit/sessions"))
                .bearer_auth(&me)
                .json(&json!({"resource_type": "task", "resource_id": "race", "field": "body"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let session = started["session_id"].as_str().unwrap().to_string();
            let mut revision = started["revision"].as_u64().unwrap();
            for _ in 0..EACH {
                // One character per operation: the text at revision r has r.
                let ops = if revision == 0 {
                    json!([{"insert": "x"}])
                } else {
                    json!([{"insert": "x"}, {"retain": revision}])
                };
                let res = client
                    .post(format!(
                        "{node}/realtime/edit/sessions/{session}/operations"
                    ))
                    .bearer_auth(&me)
                    .json(&json!({"revision": revision, "ops": ops}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                let body: Value = res.json().await.unwrap();
                revision = body["revision"].as_u64().unwrap();
            }
        }));
    }
    for e in editors {
        e.await.unwrap();
    }
    let reader = token_with("reader", json!({"channels": ["task:*"]}));
    let total = EDITORS as u64 * EACH;
    let (mut cursor, mut revisions) = (0u64, Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (revisions.len() as u64) < total {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {total} edit.operation events in the log",
            revisions.len()
        );
        let body: Value = a
            .get(
                &format!(
                    "/realtime/poll?channels=task:race&last_poll_id={cursor}&timeout=5&limit=100"
                ),
                &reader,
            )
            .await
            .json()
            .await
            .unwrap();
        for event in body["events"].as_array().unwrap() {
            if event["event"] == "edit.operation" {
                revisions.push(event["data"]["revision"].as_u64().unwrap());
            }
        }
        cursor = body["last_poll_id"].as_u64().unwrap();
    }
    assert_eq!(revisions, (1..=total).collect::<Vec<_>>());
}

/// Rooms across nodes: a user entering a channel's room on one node is
/// announced once to a watcher on another, a second tab on the other node
/// is no news, and leaving (the last tab gone, its TTL passed) is announced
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_are_entered_and_left_once_across_nodes() {
    let Some((a, b)) = two_nodes(&[("SWITCHYARD_PRESENCE_TTL_SECS", "1")]).await else {
        return;
    };
    let alice = token_with("alice", json!({"channels": ["project:*"]}));
    let bob = token_with("bob", json!({"channels": ["project:x"]}));
    let mut watcher = b.sse("channels=project:x", &bob).await;
    watcher.subscription().await;
    let mut on_a = a.sse("channels=project:x", &alice).await;
    on_a.subscription().await;
    let mut on_b = b.sse("channels=project:x", &alice).await;
    on_b.subscription().await;
    drop(on_a);
    drop(on_b);
    let mut names = Vec::new();
    while !names.contains(&"user.disconnected".to_string()) {
        let event = watcher.next_event(Duration::from_secs(15)).await;
        if event["data"]["user_id"] == "alice" {
            names.push(event["event"].as_str().unwrap().to_string());
        }
    }
    let marker = a.broadcast("project:x", "marker", json!(null)).await;
    loop {
        let event = watcher.next_event(Duration::from_secs(15)).await;
        if event["id"].as_u64() == Some(marker) {
            break;
        }
        if event["data"]["user_id"] == "alice" {
            names.push(event["event"].as_str().unwrap().to_string());
        }
    }
    let rooms: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| *n == "user.connected" || *n == "user.disconnected")
        .collect();
    assert_eq!(rooms, ["user.connected", "user.disconnected"], "{names:?}");
}
