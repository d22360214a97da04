//! The log's order and no-gap/no-duplicate invariants under concurrent
//! publishers, as seen by an SSE reader and a long-poll reader (PROTOCOL §3).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const PUBLISHERS: usize = 8;
const EVENTS_EACH: usize = 500;
const TOTAL: usize = PUBLISHERS * EVENTS_EACH;

async fn concurrent_publishers_each_reader_sees_every_id_once_in_order(backend: Backend) {
    let server = Server::start(&backend).await;
    let reader_token = token("reader");

    // Both readers start before the first publish, from cursor 0.
    let mut stream = server
        .sse("channels=feed:load&last_event_id=0", &reader_token)
        .await;
    stream.subscription().await;
    let sse = tokio::spawn(async move {
        let mut ids = Vec::with_capacity(TOTAL);
        while ids.len() < TOTAL {
            let event = stream.next_event(Duration::from_secs(60)).await;
            ids.push(event["id"].as_u64().unwrap());
        }
        ids
    });
    let poll_client = server.client.clone();
    let poll_url = server.url("/realtime/poll");
    let poller = tokio::spawn(async move {
        let (mut ids, mut cursor) = (Vec::with_capacity(TOTAL), 0u64);
        while ids.len() < TOTAL {
            let body: Value = poll_client
                .post(&poll_url)
                .bearer_auth(&reader_token)
                .json(&json!({"channels": ["feed:load"], "last_poll_id": cursor, "timeout": 10, "limit": 1000}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let next = body["last_poll_id"].as_u64().unwrap();
            assert!(
                next >= cursor,
                "last_poll_id went backwards: {cursor} -> {next}"
            );
            cursor = next;
            ids.extend(
                body["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["id"].as_u64().unwrap()),
            );
        }
        ids
    });

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let client = server.client.clone();
        let url = server.url("/realtime/broadcast");
        publishers.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(EVENTS_EACH);
            for n in 0..EVENTS_EACH {
                let res = client
                    .post(&url)
                    .bearer_auth(service_token())
                    .json(&json!({"channel": "feed:load", "event": "load.tick", "data": {"publisher": p, "n": n}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202);
                let receipt: Value = res.json().await.unwrap();
                ids.push(receipt["id"].as_u64().unwrap());
            }
            ids
        }));
    }
    let mut published = BTreeSet::new();
    for p in publishers {
        for id in p.await.unwrap() {
            assert!(published.insert(id), "two publishes got id {id}");
        }
    }
    assert_eq!(published.len(), TOTAL);

    for (reader, ids) in [("sse", sse.await.unwrap()), ("poll", poller.await.unwrap())] {
        assert_eq!(ids.len(), TOTAL, "{reader} got every event");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{reader}: ids strictly increase (no duplicate, no reordering)"
        );
        let seen: BTreeSet<u64> = ids.into_iter().collect();
        assert_eq!(seen, published, "{reader} saw exactly the published ids");
    }
}

on_both_backends!(concurrent_publishers_each_reader_sees_every_id_once_in_order);
