//! The log's memory (the fan-out hub) over real storage, on SQLite and
//! Postgres: what a node holds in memory and what it reads from storage
//! must add up to every event, once, in order.

mod common;

use std::sync::Arc;

use common::*;
use switchyard::storage;
use switchyard_core::channel::Channel;
use switchyard_core::event::{Event, NewEvent};
use switchyard_core::log::Reader;
use switchyard_core::log::hub::{Hub, RING_CAPACITY, Retention, Signal, feed_key};
use switchyard_core::log::writer::{MAX_REFILL, catch_up};
use switchyard_core::storage::{AppendOutcome, AppendRequest, Storage};

async fn open(backend: &Backend) -> (Database, Arc<dyn Storage>) {
    let db = Database::create(backend).await;
    let storage = storage::open(&db.url).await.expect("open storage");
    storage.migrate().await.expect("migrate");
    (db, storage)
}

fn burst(channel: &str, n: usize) -> AppendRequest {
    AppendRequest {
        origin: None,
        tenant: "t".into(),
        user_id: None,
        events: (0..n)
            .map(|_| NewEvent {
                also: Vec::new(),
                channel: Channel::parse(channel).unwrap(),
                event: "e".into(),
                data: "1".into(),
                expected_last_id: None,
                retention_ms: 3_600_000,
            })
            .collect(),
        idempotency_key: None,
        recipients: 0,
        notifications: Vec::new(),
    }
}

fn ids(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

/// A node far behind (another node appended many events) reads them all
/// in bounded chunks: a follower of a quiet channel keeps its memory and
/// is not woken to catch up from storage, and the busy channel's ring
/// holds its newest events.
async fn a_wide_gap_is_read_in_chunks_without_waking_every_reader(backend: Backend) {
    let (_db, storage) = open(&backend).await;
    let hub = Hub::new(0);
    let (quiet, busy) = (feed_key("t", "feed:quiet"), feed_key("t", "feed:busy"));
    let signal = Arc::new(Signal::new());
    hub.register(1, std::slice::from_ref(&quiet), &signal, 0);
    hub.register(2, std::slice::from_ref(&busy), &Arc::new(Signal::new()), 0);
    let gap = 3 * MAX_REFILL as usize + 10;
    for _ in 0..gap / 1000 + 1 {
        storage
            .append(Arc::from([burst("feed:busy", 1000)]), 1)
            .await
            .unwrap();
    }
    let head = storage.head().await.unwrap();
    assert!(head > 3 * MAX_REFILL);

    catch_up(&hub, storage.as_ref(), head).await;

    assert_eq!(hub.head(), head);
    let woken = tokio::time::timeout(
        std::time::Duration::from_millis(50),
        signal.notify.notified(),
    );
    assert!(woken.await.is_err(), "the quiet channel's reader was woken");
    let (events, position) = hub.read(&[quiet], 0, 10).expect("still in memory");
    assert!(events.is_empty());
    assert_eq!(position, head);
    let (events, _) = hub.read(&[busy], head - 5, 10).expect("in memory");
    assert_eq!(events.len(), 5);
}

/// Polls through real storage while feeds come and go: every event is
/// handed out once, in order, whether memory or storage answers.
async fn evicted_feeds_fall_back_to_storage_with_nothing_lost(backend: Backend) {
    let (_db, storage) = open(&backend).await;
    let hub = Arc::new(Hub::with_retention(
        0,
        Retention {
            max_idle_feeds: 1,
            ..Retention::default()
        },
    ));
    let channels = ["a", "b", "c"];
    let mut cursors = [0u64; 3];
    let mut seen: [Vec<u64>; 3] = Default::default();
    let mut published: [Vec<u64>; 3] = Default::default();
    // One reader per poll, registered at the poll's cursor.
    let poll = |channel: &str, cursor: u64| {
        let (reader, _, _) = Reader::register(
            hub.clone(),
            storage.clone(),
            "t",
            &[Channel::parse(&format!("feed:{channel}")).unwrap()],
            Some(cursor),
        );
        reader
    };
    for round in 0..40u64 {
        // Bursts bigger than a ring now and then.
        let n = if round % 7 == 3 {
            RING_CAPACITY + 30
        } else {
            3
        };
        let channel = channels[round as usize % 3];
        let outcome = storage
            .append(Arc::from([burst(&format!("feed:{channel}"), n)]), 1)
            .await
            .unwrap();
        let AppendOutcome::Appended { events, .. } = &outcome[0] else {
            panic!("not appended: {outcome:?}");
        };
        published[round as usize % 3].extend(ids(events));
        hub.ingest(events).unwrap();
        // Each channel is polled in turn.
        for (i, channel) in channels.iter().enumerate() {
            let mut reader = poll(channel, cursors[i]);
            let got = reader.fetch(100).await.unwrap();
            assert!(reader.position() >= cursors[i]);
            cursors[i] = reader.position();
            seen[i].extend(ids(&got));
        }
    }
    // Drain what the limit left.
    for (i, channel) in channels.iter().enumerate() {
        loop {
            let mut reader = poll(channel, cursors[i]);
            let got = reader.fetch(100).await.unwrap();
            cursors[i] = reader.position();
            if got.is_empty() {
                break;
            }
            seen[i].extend(ids(&got));
        }
        assert_eq!(seen[i], published[i], "channel {channel}");
    }
    assert!(hub.idle_feeds() <= 1);
}

on_both_backends!(
    a_wide_gap_is_read_in_chunks_without_waking_every_reader,
    evicted_feeds_fall_back_to_storage_with_nothing_lost,
);
