//! The hub's semantics: retention of idle feeds, seeding, bounds, merging.

use super::*;

fn event(id: u64, channel: &str) -> Arc<Event> {
    Event::new(
        id,
        "t".into(),
        channel.into(),
        "e".into(),
        format!("{{\"n\":{id}}}"),
        None,
        0,
    )
}

fn key(channel: &str) -> String {
    feed_key("t", channel)
}

fn ids(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.id).collect()
}

/// Registers `stream` on `channels`, then leaves: what one poll does.
fn visit(hub: &Hub, stream: u64, channels: &[&str]) {
    let keys: Vec<String> = channels.iter().map(|c| key(c)).collect();
    hub.register(stream, &keys, &Arc::new(Signal::new()), 0);
    hub.unregister(stream, &keys);
}

#[test]
fn a_feed_is_kept_and_fed_after_its_last_reader_leaves() {
    let hub = Hub::new(0);
    visit(&hub, 1, &["a"]);
    assert_eq!(hub.idle_feeds(), 1);
    hub.ingest(&[event(1, "a"), event(2, "b"), event(3, "a")])
        .unwrap();
    let (events, position) = hub.read(&[key("a")], 0, 10).expect("in memory");
    assert_eq!(ids(&events), [1, 3]);
    assert_eq!(position, 3);
    // A new reader finds it covered and takes it out of the idle count.
    let (head, covered) = hub.register(2, &[key("a")], &Arc::new(Signal::new()), 0);
    assert_eq!((head, covered), (3, true));
    assert_eq!(hub.idle_feeds(), 0);
    assert_eq!(hub.count_streams(&[key("a")]), 1);
}

#[test]
fn idle_feeds_are_bounded_least_recently_used_first() {
    let hub = Hub::with_retention(
        0,
        Retention {
            max_idle_feeds: 2,
            ..Retention::default()
        },
    );
    visit(&hub, 1, &["a"]);
    visit(&hub, 2, &["b"]);
    visit(&hub, 3, &["a"]); // a is now more recent than b
    visit(&hub, 4, &["c"]);
    assert_eq!(hub.idle_feeds(), 2);
    assert!(hub.read(&[key("a")], 0, 10).is_some());
    assert!(hub.read(&[key("b")], 0, 10).is_none(), "b was least recent");
    assert!(hub.read(&[key("c")], 0, 10).is_some());
    // A feed with a reader is never evicted.
    let notify = Arc::new(Signal::new());
    hub.register(5, &[key("d")], &notify, 0);
    for (i, channel) in ["e", "f", "g", "h"].into_iter().enumerate() {
        visit(&hub, 10 + i as u64, &[channel]);
    }
    assert_eq!(hub.idle_feeds(), 2);
    assert!(hub.read(&[key("d")], 0, 10).is_some());
    hub.unregister(5, &[key("d")]);
    assert_eq!(hub.idle_feeds(), 2);
}

#[test]
fn idle_feeds_are_bounded_in_bytes_and_time() {
    let small = event(1, "a").memory_size();
    let hub = Hub::with_retention(
        0,
        Retention {
            max_idle_bytes: small * 3,
            ..Retention::default()
        },
    );
    visit(&hub, 1, &["a"]);
    visit(&hub, 2, &["b"]);
    hub.ingest(&[event(1, "a"), event(2, "a"), event(3, "b")])
        .unwrap();
    assert_eq!(hub.idle_feeds(), 2);
    hub.ingest(&[event(4, "b")]).unwrap();
    assert_eq!(hub.idle_feeds(), 1, "over the byte bound: a goes");
    assert!(hub.read(&[key("a")], 0, 10).is_none());
    assert_eq!(ids(&hub.read(&[key("b")], 0, 10).unwrap().0), [3, 4]);

    let hub = Hub::with_retention(
        0,
        Retention {
            idle_ttl: Duration::ZERO,
            ..Retention::default()
        },
    );
    visit(&hub, 1, &["a"]);
    assert_eq!(hub.idle_feeds(), 0, "expired at once");
}

#[test]
fn seeding_lowers_the_floor_only_when_the_read_reaches_it() {
    // Storage holds 1..=5; the feed starts at head 5 with floor 5.
    let stored = [event(1, "a"), event(3, "a"), event(5, "a")];
    let hub = Hub::new(5);
    let keys = [key("a")];
    let channels = ["a".to_string()];
    let notify = Arc::new(Signal::new());
    assert_eq!(hub.register(1, &keys, &notify, 0), (5, false));
    assert!(hub.read(&keys, 0, 10).is_none());

    // A read cut by `max` below the floor proves nothing about 4..=5.
    hub.seed(&keys, &channels, 0, 3, &stored[..2], pruner::passes());
    assert!(hub.read(&keys, 0, 10).is_none());

    // Events ingested between the read and the seeding stay after it.
    hub.ingest(&[event(6, "a"), event(7, "b")]).unwrap();
    hub.seed(&keys, &channels, 0, 5, &stored, pruner::passes());
    let (events, position) = hub.read(&keys, 0, 10).expect("seeded");
    assert_eq!(ids(&events), [1, 3, 5, 6]);
    assert_eq!(position, 7);
    assert!(hub.covers(&keys, 0));

    // A seeding from further back than the ring holds keeps the newest.
    let hub = Hub::new(RING_CAPACITY as u64 + 10);
    hub.register(1, &keys, &notify, 0);
    let many: Vec<Arc<Event>> = (1..=RING_CAPACITY as u64 + 10)
        .map(|id| event(id, "a"))
        .collect();
    hub.seed(
        &keys,
        &channels,
        0,
        RING_CAPACITY as u64 + 10,
        &many,
        pruner::passes(),
    );
    assert!(hub.read(&keys, 9, 10).is_none());
    let (events, _) = hub.read(&keys, 10, 1000).expect("newest kept");
    assert_eq!(
        ids(&events),
        (11..=RING_CAPACITY as u64 + 10).collect::<Vec<_>>()
    );
}

#[test]
fn seeding_after_a_skip_or_a_recreated_feed_does_nothing() {
    let stored = [event(1, "a"), event(2, "a")];
    let keys = [key("a")];
    let channels = ["a".to_string()];
    let notify = Arc::new(Signal::new());

    // A prune pass finished since the read began: it may lack events.
    let hub = Hub::new(2);
    hub.register(1, &keys, &notify, 0);
    assert!(hub.would_seed(&keys, 0, 2));
    hub.seed(
        &keys,
        &channels,
        0,
        2,
        &stored,
        pruner::passes().wrapping_sub(1),
    );
    assert!(hub.read(&keys, 0, 10).is_none());

    // The hub jumped past the read: the floor is out of its reach.
    let hub = Hub::new(2);
    hub.register(1, &keys, &notify, 0);
    hub.skip_to(10_000);
    hub.seed(&keys, &channels, 0, 2, &stored, pruner::passes());
    assert!(hub.read(&keys, 0, 10).is_none());
    assert_eq!(hub.read(&keys, 10_000, 10).unwrap().1, 10_000);

    // The feed was evicted and recreated at a later head meanwhile.
    let hub = Hub::with_retention(
        2,
        Retention {
            idle_ttl: Duration::ZERO,
            ..Retention::default()
        },
    );
    hub.register(1, &keys, &notify, 0);
    hub.unregister(1, &keys);
    hub.ingest(&[event(3, "a")]).unwrap();
    hub.register(2, &keys, &notify, 0);
    hub.seed(&keys, &channels, 0, 2, &stored, pruner::passes());
    assert!(hub.read(&keys, 0, 10).is_none(), "3 would be missing");
}

#[test]
fn multi_channel_reads_merge_in_id_order() {
    let hub = Hub::new(0);
    visit(&hub, 1, &["a", "b"]);
    hub.ingest(&[event(1, "a"), event(2, "b"), event(3, "a"), event(4, "b")])
        .unwrap();
    let keys = [key("a"), key("b")];
    let (events, position) = hub.read(&keys, 1, 2).unwrap();
    assert_eq!((ids(&events), position), (vec![2, 3], 3));
    let (events, position) = hub.read(&keys, 3, 2).unwrap();
    assert_eq!((ids(&events), position), (vec![4], 4));
}

/// All feeds together stay within the byte budget, however many channels
/// are followed; what is trimmed is only not cached (a reader behind the
/// floor gets `None` and reads storage).
#[test]
fn every_ring_together_stays_within_the_byte_budget() {
    let budget = 64 * 1024;
    let hub = Hub::with_retention(
        0,
        Retention {
            max_bytes: budget,
            ..Retention::default()
        },
    );
    let channels: Vec<String> = (0..10).map(|n| format!("c{n}")).collect();
    for (n, channel) in channels.iter().enumerate() {
        // A stalled reader on each: its feed is never dropped.
        hub.register(n as u64, &[key(channel)], &Arc::new(Signal::new()), 0);
    }
    let big = "x".repeat(1000);
    let mut id = 0;
    for _round in 0..50 {
        let batch: Vec<Arc<Event>> = channels
            .iter()
            .map(|channel| {
                id += 1;
                Event::new(
                    id,
                    "t".into(),
                    channel.clone(),
                    "e".into(),
                    format!("\"{big}\""),
                    None,
                    0,
                )
            })
            .collect();
        hub.ingest(&batch).unwrap();
        assert!(hub.bytes() <= budget, "{} bytes held", hub.bytes());
    }
    // The newest events are still served from memory; the oldest are not.
    let (events, _) = hub
        .read(&[key("c0")], id - 10, 10)
        .expect("recent in memory");
    assert_eq!(events.len(), 1);
    assert!(
        hub.read(&[key("c0")], 0, 10).is_none(),
        "old events were trimmed"
    );
}

#[test]
fn a_peek_answers_from_memory_only_with_events_and_counts_as_a_use() {
    let hub = Hub::with_retention(
        0,
        Retention {
            max_idle_feeds: 2,
            ..Retention::default()
        },
    );
    // No feed yet: a reader must register (and read storage).
    assert!(hub.peek(&[key("a")], 0, 10).is_none());
    visit(&hub, 1, &["a"]);
    // A feed but nothing after the cursor: a reader must wait.
    assert!(hub.peek(&[key("a")], 0, 10).is_none());
    hub.ingest(&[event(1, "a"), event(2, "b"), event(3, "a")])
        .unwrap();
    let (events, position) = hub.peek(&[key("a")], 0, 10).expect("in memory");
    assert_eq!((ids(&events), position), (vec![1, 3], 3));
    // Cut by `max`, and a cursor past the events.
    assert_eq!(ids(&hub.peek(&[key("a")], 0, 1).unwrap().0), [1]);
    assert!(hub.peek(&[key("a")], 3, 10).is_none());
    // A channel without a feed among others: not all in memory.
    assert!(hub.peek(&[key("a"), key("z")], 0, 10).is_none());
    // Peeked at, `a` is more recent than `b`, visited after it was.
    visit(&hub, 2, &["b"]);
    assert!(hub.peek(&[key("a")], 0, 10).is_some());
    visit(&hub, 3, &["c"]);
    assert!(hub.read(&[key("a")], 0, 10).is_some(), "a was used last");
    assert!(hub.read(&[key("b")], 0, 10).is_none(), "b was least recent");
    // Nothing was registered by peeking.
    assert_eq!(hub.count_streams(&[key("a")]), 0);
}

#[test]
fn the_tail_search_finds_what_a_binary_search_finds() {
    for len in [0usize, 1, 2, 7, 8, 9, 20, 512] {
        // Ids with gaps: 10, 13, 16, ...
        let recent: VecDeque<Arc<Event>> =
            (0..len as u64).map(|i| event(10 + 3 * i, "a")).collect();
        let last = 10 + 3 * len as u64;
        for after in 0..=last + 2 {
            assert_eq!(
                first_after(&recent, after),
                recent.partition_point(|e| e.id <= after),
                "len {len}, after {after}"
            );
        }
    }
}

#[test]
fn a_reader_woken_by_one_feed_reads_it_and_loses_nothing_it_did_not_read() {
    let hub = Hub::new(0);
    let keys = vec![key("a"), key("b"), key("c")];
    let signal = Arc::new(Signal::new());
    hub.register(1, &keys, &signal, u64::MAX);
    // The first read looks at every feed.
    let (events, position) = hub.read_marked(&keys, &signal, 0, 10).unwrap();
    assert_eq!((ids(&events), position), (vec![], 0));
    hub.ingest(&[event(1, "a"), event(2, "x")]).unwrap();
    let (events, position) = hub.read_marked(&keys, &signal, 0, 10).unwrap();
    assert_eq!((ids(&events), position), (vec![1], 2));
    hub.ingest(&[event(3, "b")]).unwrap();
    let (events, position) = hub.read_marked(&keys, &signal, position, 10).unwrap();
    assert_eq!((ids(&events), position), (vec![3], 3));
    // Nothing marked: nothing read, the position is the head.
    let (events, position) = hub.read_marked(&keys, &signal, 3, 10).unwrap();
    assert_eq!((ids(&events), position), (vec![], 3));
    // Cut by `max`: the marks stay until everything is read.
    hub.ingest(&[event(4, "c"), event(5, "a"), event(6, "c")])
        .unwrap();
    let (events, position) = hub.read_marked(&keys, &signal, 3, 2).unwrap();
    assert_eq!((ids(&events), position), (vec![4, 5], 5));
    let (events, position) = hub.read_marked(&keys, &signal, position, 2).unwrap();
    assert_eq!((ids(&events), position), (vec![6], 6));
    // A head moved past what memory holds marks every feed again.
    hub.skip_to(10);
    assert!(hub.read_marked(&keys, &signal, 6, 10).is_none());
    let (events, position) = hub.read_marked(&keys, &signal, 10, 10).unwrap();
    assert_eq!((ids(&events), position), (vec![], 10));
}
