//! The storage suite: the `Storage` trait's contract, run against SQLite and
//! Postgres alike. Includes the cross-node case the HTTP tests cannot reach:
//! several appenders in parallel (as several nodes would be) must never let
//! a reader see an id appear below one it already saw.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use switchyard::channel::Channel;
use switchyard::error::ApiError;
use switchyard::event::NewEvent;
use switchyard::storage::edit::{
    Applied, DocKey, DocumentRow, OperationBatch, OperationRequest, SessionRow, Submission,
    Submitted,
};
use switchyard::storage::{self, AppendOutcome, AppendRequest, CursorExpired, Storage};

async fn open(backend: &Backend) -> (Database, Arc<dyn Storage>) {
    let db = Database::create(backend).await;
    let storage = storage::open(&db.url).await.expect("open storage");
    storage.migrate().await.expect("migrate");
    (db, storage)
}

fn new_event(channel: &str, retention_ms: i64) -> NewEvent {
    NewEvent {
        channel: Channel::parse(channel).unwrap(),
        event: "test.event".into(),
        data: r#"{"k":"v"}"#.into(),
        expected_last_id: None,
        retention_ms,
    }
}

fn request(tenant: &str, user: &str, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        tenant: tenant.into(),
        user_id: Some(user.into()),
        events,
        idempotency_key: None,
        recipients: 0,
    }
}

fn appended_ids(outcome: &AppendOutcome) -> Vec<u64> {
    match outcome {
        AppendOutcome::Appended { events, .. } => events.iter().map(|e| e.id).collect(),
        other => panic!("expected Appended, got {other:?}"),
    }
}

const DAY: i64 = 86_400_000;
const NOW: i64 = 1_800_000_000_000;

async fn ids_are_dense_and_in_request_order(backend: Backend) {
    let (_db, s) = open(&backend).await;
    assert_eq!(s.head().await.unwrap(), 0);
    let out = s
        .append(
            &[
                request(
                    "t",
                    "u",
                    vec![new_event("feed:a", DAY), new_event("feed:b", DAY)],
                ),
                request("t", "u", vec![new_event("feed:a", DAY)]),
            ],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(appended_ids(&out[0]), vec![1, 2]);
    assert_eq!(appended_ids(&out[1]), vec![3]);
    let out = s
        .append(&[request("t", "u", vec![new_event("feed:a", DAY)])], NOW)
        .await
        .unwrap();
    assert_eq!(appended_ids(&out[0]), vec![4]);
    assert_eq!(s.head().await.unwrap(), 4);
}

async fn a_conflict_appends_nothing_and_uses_no_ids(backend: Backend) {
    let (_db, s) = open(&backend).await;
    s.append(&[request("t", "u", vec![new_event("task:1", DAY)])], NOW)
        .await
        .unwrap();
    let mut stale = new_event("task:1", DAY);
    stale.expected_last_id = Some(0);
    let mut fresh = new_event("task:1", DAY);
    fresh.expected_last_id = Some(1);
    // A later request in the same batch sees the earlier one's event.
    let mut chained = new_event("task:1", DAY);
    chained.expected_last_id = Some(2);
    let out = s
        .append(
            &[
                request("t", "u", vec![new_event("task:2", DAY), stale]),
                request("t", "u", vec![fresh]),
                request("t", "u", vec![chained]),
            ],
            NOW,
        )
        .await
        .unwrap();
    match &out[0] {
        AppendOutcome::Conflict { channel, last_id } => {
            assert_eq!((channel.as_str(), *last_id), ("task:1", 1))
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(appended_ids(&out[1]), vec![2]);
    assert_eq!(appended_ids(&out[2]), vec![3]);
    let all = s
        .read("t", &["task:1".into(), "task:2".into()], 0, 100)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "the conflicting request's task:2 event is absent"
    );
}

async fn idempotency_keys_replay_the_first_receipt(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let keyed = |user: &str| AppendRequest {
        idempotency_key: Some("k-1".into()),
        ..request("t", user, vec![new_event("feed:a", DAY)])
    };
    let out = s.append(&[keyed("u"), keyed("u")], NOW).await.unwrap();
    let AppendOutcome::Appended { receipt, .. } = &out[0] else {
        panic!("first appends")
    };
    let AppendOutcome::Replayed { receipt: again } = &out[1] else {
        panic!("same batch replays")
    };
    assert_eq!(receipt, again);
    let out = s
        .append(&[keyed("u"), keyed("other")], NOW + 1000)
        .await
        .unwrap();
    let AppendOutcome::Replayed { receipt: later } = &out[0] else {
        panic!("later batch replays")
    };
    assert_eq!(later, receipt);
    assert_eq!(appended_ids(&out[1]), vec![2], "keys are per user");
    // Past the 24 h window the key is forgotten.
    let out = s.append(&[keyed("u")], NOW + DAY + 1).await.unwrap();
    assert_eq!(appended_ids(&out[0]), vec![3]);
}

async fn reads_filter_by_tenant_and_channel_in_id_order(backend: Backend) {
    let (_db, s) = open(&backend).await;
    for (tenant, channel) in [
        ("t", "feed:a"),
        ("other", "feed:a"),
        ("t", "feed:b"),
        ("t", "feed:c"),
        ("t", "feed:a"),
    ] {
        s.append(&[request(tenant, "u", vec![new_event(channel, DAY)])], NOW)
            .await
            .unwrap();
    }
    let ids = |v: Vec<Arc<switchyard::event::Event>>| v.iter().map(|e| e.id).collect::<Vec<_>>();
    let chans = vec!["feed:a".to_string(), "feed:b".to_string()];
    assert_eq!(
        ids(s.read("t", &chans, 0, 100).await.unwrap()),
        vec![1, 3, 5]
    );
    assert_eq!(ids(s.read("t", &chans, 1, 100).await.unwrap()), vec![3, 5]);
    assert_eq!(ids(s.read("t", &chans, 0, 2).await.unwrap()), vec![1, 3]);
    assert_eq!(ids(s.read("other", &chans, 0, 100).await.unwrap()), vec![2]);
    assert_eq!(ids(s.read_range(1, 4).await.unwrap()), vec![2, 3, 4]);
    assert_eq!(
        ids(s.read_since("t", &chans, NOW, 100).await.unwrap()),
        vec![1, 3, 5]
    );
    assert!(
        s.read_since("t", &chans, NOW + 1, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let e = &s.read("t", &["feed:c".to_string()], 0, 1).await.unwrap()[0];
    assert_eq!(
        (
            e.tenant.as_str(),
            e.channel.as_str(),
            e.event.as_str(),
            e.data.as_str()
        ),
        ("t", "feed:c", "test.event", r#"{"k":"v"}"#)
    );
    assert_eq!((e.user_id.as_deref(), e.timestamp_ms), (Some("u"), NOW));
}

async fn pruning_removes_expired_events_and_reports_expired_cursors(backend: Backend) {
    let (_db, s) = open(&backend).await;
    s.append(
        &[request(
            "t",
            "u",
            vec![new_event("presence", 60_000), new_event("feed:a", DAY)],
        )],
        NOW,
    )
    .await
    .unwrap();
    s.append(
        &[request("t", "u", vec![new_event("presence", 60_000)])],
        NOW + 120_000,
    )
    .await
    .unwrap();
    assert_eq!(s.prune(NOW + 61_000).await.unwrap(), 1);
    let presence = vec!["presence".to_string()];
    assert_eq!(
        s.expired_cursor("t", &presence, 0).await.unwrap(),
        Some(CursorExpired { oldest_id: 3 })
    );
    assert_eq!(
        s.expired_cursor("t", &presence, 1).await.unwrap(),
        None,
        "nothing after id 1 was pruned"
    );
    assert_eq!(
        s.expired_cursor("t", &["feed:a".to_string()], 0)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.expired_cursor("other", &presence, 0).await.unwrap(),
        None,
        "pruning is per tenant"
    );
    assert_eq!(s.read("t", &presence, 0, 10).await.unwrap().len(), 1);
    // Ids are never reused after pruning the newest events.
    s.prune(NOW + 1000 * DAY).await.unwrap();
    let out = s
        .append(&[request("t", "u", vec![new_event("feed:a", DAY)])], NOW)
        .await
        .unwrap();
    assert_eq!(appended_ids(&out[0]), vec![4]);
    s.ping().await.unwrap();
}

/// Appenders in parallel (as several nodes would be) while a reader follows
/// with a cursor: every id is seen exactly once, in order.
async fn parallel_appenders_never_show_an_id_below_one_already_read(backend: Backend) {
    let (db, s) = open(&backend).await;
    const APPENDERS: usize = 4;
    const EACH: usize = 150;
    let mut tasks = Vec::new();
    for _ in 0..APPENDERS {
        // Separate pools, like separate nodes.
        let s = storage::open(&db.url).await.unwrap();
        tasks.push(tokio::spawn(async move {
            for _ in 0..EACH {
                s.append(&[request("t", "u", vec![new_event("feed:x", DAY)])], NOW)
                    .await
                    .unwrap();
            }
        }));
    }
    let chans = vec!["feed:x".to_string()];
    let (mut seen, mut cursor) = (Vec::new(), 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < APPENDERS * EACH {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reader caught up in time"
        );
        for e in s.read("t", &chans, cursor, 1000).await.unwrap() {
            assert_eq!(e.id, cursor + 1, "ids appear densely and in order");
            cursor = e.id;
            seen.push(e.id);
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.head().await.unwrap(), (APPENDERS * EACH) as u64);
}

/// Submits one operation inserting "x" at `base` through `s`, with
/// `announce` making its event.
async fn submit_x(
    s: &dyn Storage,
    session: &SessionRow,
    base: u64,
    announce: &(dyn Fn(usize, u64, &str) -> AppendRequest + Sync),
) -> storage::Result<Submission> {
    let check = |_: Option<&SessionRow>| Ok::<(), ApiError>(());
    let decide = |doc: &DocumentRow, _: &[String]| {
        Ok::<_, ApiError>(Applied {
            content: format!("x{}", doc.content),
            ops: r#"[{"insert":"x"}]"#.to_string(),
        })
    };
    let operations = [OperationRequest {
        session,
        check_session: &check,
        client_op_id: None,
        base_revision: base,
        decide: &decide,
    }];
    s.submit_operations(OperationBatch {
        key: &session.key,
        now_ms: NOW,
        operations: &operations,
        announce,
    })
    .await
}

/// An edit transaction that fails after writing (here its event cannot be
/// made: a panic) leaves nothing behind: no content, no history, no event;
/// and the connection serves the next transaction normally.
async fn a_failed_edit_transaction_leaves_nothing_and_the_next_one_works(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let session = SessionRow {
        session_id: "s1".into(),
        key: DocKey {
            tenant: "t".into(),
            resource_type: "task".into(),
            resource_id: "1".into(),
            field: "body".into(),
        },
        user_id: "u".into(),
        name: None,
        created_at: NOW,
        last_active_at: NOW,
        ended_at: None,
    };
    s.create_session(&session).await.unwrap();
    let failed = tokio::spawn({
        let (s, session) = (s.clone(), session.clone());
        async move { submit_x(&*s, &session, 0, &|_, _, _| panic!("no event")).await }
    })
    .await;
    assert!(failed.unwrap_err().is_panic());
    let doc = s.document(&session.key).await.unwrap().unwrap();
    assert_eq!((doc.content.as_str(), doc.revision), ("", 0));
    assert_eq!(s.head().await.unwrap(), 0);

    let announce = |_: usize, _: u64, _: &str| request("t", "u", vec![new_event("task:1", DAY)]);
    let done = submit_x(&*s, &session, 0, &announce).await.unwrap();
    assert!(
        matches!(done.outcomes[..], [Submitted::Applied { revision: 1, .. }]),
        "{:?}",
        done.outcomes
    );
    assert_eq!(done.events.iter().map(|e| e.id).collect::<Vec<_>>(), [1]);
    let doc = s.document(&session.key).await.unwrap().unwrap();
    assert_eq!((doc.content.as_str(), doc.revision), ("x", 1));
    let out = s
        .append(&[request("t", "u", vec![new_event("feed:x", DAY)])], NOW)
        .await
        .unwrap();
    assert_eq!(appended_ids(&out[0]), [2]);
}

on_both_backends!(
    a_failed_edit_transaction_leaves_nothing_and_the_next_one_works,
    ids_are_dense_and_in_request_order,
    a_conflict_appends_nothing_and_uses_no_ids,
    idempotency_keys_replay_the_first_receipt,
    reads_filter_by_tenant_and_channel_in_id_order,
    pruning_removes_expired_events_and_reports_expired_cursors,
    parallel_appenders_never_show_an_id_below_one_already_read,
);
