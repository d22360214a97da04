//! The fan-out hub's semantics (issue: fan-out engine): a stalled reader
//! loses nothing and costs the server no buffer; a thousand readers of one
//! channel each get every event once. Speed is measured in benchmarks, not here.

mod common;

use std::time::Duration;

use common::*;
use futures_util::future::join_all;
use serde_json::json;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Publishes `n` events of `size` bytes of data on `channel`, in batches.
async fn publish_many(server: &Server, channel: &str, n: usize, size: usize) -> Vec<u64> {
    let filler = "x".repeat(size);
    let mut ids = Vec::with_capacity(n);
    let per_request = (512 * 1024 / (size + 128)).max(1);
    for start in (0..n).step_by(per_request) {
        let events: Vec<_> = (start..(start + per_request).min(n))
            .map(|i| json!({"channel": channel, "event": "bulk", "data": {"i": i, "filler": filler}}))
            .collect();
        let res = server
            .post(
                "/realtime/broadcast",
                &service_token(),
                &json!({"events": events}),
            )
            .await;
        assert_eq!(res.status(), 202);
        let receipt: serde_json::Value = res.json().await.unwrap();
        ids.extend(
            receipt["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap()),
        );
    }
    ids
}

async fn a_stalled_reader_gets_everything_in_order_without_server_buffering(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut stalled = server.sse("channels=feed:firehose", &token("slow")).await;
    stalled.subscription().await;
    // Warm up allocator and caches, then measure.
    publish_many(&server, "feed:warmup", 2_000, 8192).await;
    let before = rss_kib(server.child.id());
    // 10,000 events of 8 KiB: 80 MiB that a per-stream buffer would have to
    // hold. Bounded, the server holds its ring (512 events) and its caches.
    let ids = publish_many(&server, "feed:firehose", 10_000, 8192).await;
    let after = rss_kib(server.child.id());
    eprintln!("stalled reader: server RSS {before} KiB -> {after} KiB");
    assert!(
        after.saturating_sub(before) < 40 * 1024,
        "server RSS grew {} KiB while a reader stalled behind 80 MiB of events",
        after.saturating_sub(before)
    );
    for expected in ids {
        let event = stalled.next_event(Duration::from_secs(30)).await;
        assert_eq!(
            event["id"].as_u64(),
            Some(expected),
            "every event, in order, once"
        );
    }
}

async fn a_thousand_readers_of_one_channel_each_get_every_event_once(backend: Backend) {
    let server = Server::start(&backend).await;
    let readers: Vec<SseStream> = join_all((0..1000).map(|i| {
        let server = &server;
        async move {
            let mut s = server
                .sse("channels=feed:crowd", &token(&format!("reader{i}")))
                .await;
            s.subscription().await;
            s
        }
    }))
    .await;
    let mut published = Vec::new();
    for n in 0..20 {
        published.push(
            server
                .broadcast("feed:crowd", "tick", json!({"n": n}))
                .await,
        );
    }
    let results = join_all(readers.into_iter().map(|mut s| {
        let expected = published.clone();
        async move {
            let mut got = Vec::new();
            while got.len() < expected.len() {
                got.push(
                    s.next_event(Duration::from_secs(60)).await["id"]
                        .as_u64()
                        .unwrap(),
                );
            }
            got == expected
        }
    }))
    .await;
    assert!(
        results.iter().all(|ok| *ok),
        "{} of 1000 readers saw a different sequence",
        results.iter().filter(|ok| !**ok).count()
    );
}

on_both_backends!(
    a_stalled_reader_gets_everything_in_order_without_server_buffering,
    a_thousand_readers_of_one_channel_each_get_every_event_once,
);
