//! The storage suite: the contract of the storage traits (the log,
//! presence, editing, the inbox), run against SQLite and Postgres alike. Includes the cross-node case the HTTP tests cannot reach:
//! several appenders in parallel (as several nodes would be) must never let
//! a reader see an id appear below one it already saw.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use switchyard::storage;
use switchyard_core::Error;
use switchyard_core::channel::Channel;
use switchyard_core::event::NewEvent;
use switchyard_core::storage::edit::{
    Applied, ContentChange, ContentSet, DocKey, DocumentRow, LockAttempt, LockRow, OperationBatch,
    OperationRequest, OperationRules, SessionRow, Submission, Submitted,
};
use switchyard_core::storage::inbox::{
    Announce, AnnounceMember, AnnounceMessage, ConversationRow, MemberOutcome, MemberRow,
    MessageChange, MessageOutcome, MessageRow, NotificationQuery, ReadOutcome,
};
use switchyard_core::storage::notification::NotificationRow;
use switchyard_core::storage::presence::{
    SessionWrite, SessionWritten, StatusChange, TypingKey, UserKey, UserPresence, UserTouch,
    Viewing,
};
use switchyard_core::storage::{AppendOutcome, AppendRequest, CursorExpired, Storage};

async fn open(backend: &Backend) -> (Database, Arc<dyn Storage>) {
    let db = Database::create(backend).await;
    let storage = storage::open(&db.url).await.expect("open storage");
    storage.migrate().await.expect("migrate");
    (db, storage)
}

fn new_event(channel: &str, retention_ms: i64) -> NewEvent {
    NewEvent {
        also: Vec::new(),
        channel: Channel::parse(channel).unwrap(),
        event: "test.event".into(),
        data: r#"{"k":"v"}"#.into(),
        expected_last_id: None,
        retention_ms,
    }
}

fn request(tenant: &str, user: &str, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        origin: None,
        tenant: tenant.into(),
        user_id: Some(user.into()),
        events,
        idempotency_key: None,
        recipients: 0,
        notifications: Vec::new(),
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
            Arc::from([
                request(
                    "t",
                    "u",
                    vec![new_event("feed:a", DAY), new_event("feed:b", DAY)],
                ),
                request("t", "u", vec![new_event("feed:a", DAY)]),
            ]),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(appended_ids(&out[0]), vec![1, 2]);
    assert_eq!(appended_ids(&out[1]), vec![3]);
    let out = s
        .append(
            Arc::from([request("t", "u", vec![new_event("feed:a", DAY)])]),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(appended_ids(&out[0]), vec![4]);
    assert_eq!(s.head().await.unwrap(), 4);
}

async fn a_conflict_appends_nothing_and_uses_no_ids(backend: Backend) {
    let (_db, s) = open(&backend).await;
    s.append(
        Arc::from([request("t", "u", vec![new_event("task:1", DAY)])]),
        NOW,
    )
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
            Arc::from([
                request("t", "u", vec![new_event("task:2", DAY), stale]),
                request("t", "u", vec![fresh]),
                request("t", "u", vec![chained]),
            ]),
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
        origin: None,
        idempotency_key: Some("k-1".into()),
        ..request("t", user, vec![new_event("feed:a", DAY)])
    };
    let out = s
        .append(Arc::from([keyed("u"), keyed("u")]), NOW)
        .await
        .unwrap();
    let AppendOutcome::Appended { receipt, .. } = &out[0] else {
        panic!("first appends")
    };
    let AppendOutcome::Replayed { receipt: again } = &out[1] else {
        panic!("same batch replays")
    };
    assert_eq!(receipt, again);
    let out = s
        .append(Arc::from([keyed("u"), keyed("other")]), NOW + 1000)
        .await
        .unwrap();
    let AppendOutcome::Replayed { receipt: later } = &out[0] else {
        panic!("later batch replays")
    };
    assert_eq!(later, receipt);
    assert_eq!(appended_ids(&out[1]), vec![2], "keys are per user");
    // Past the 24 h window the key is forgotten.
    let out = s
        .append(Arc::from([keyed("u")]), NOW + DAY + 1)
        .await
        .unwrap();
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
        s.append(
            Arc::from([request(tenant, "u", vec![new_event(channel, DAY)])]),
            NOW,
        )
        .await
        .unwrap();
    }
    let ids =
        |v: Vec<Arc<switchyard_core::event::Event>>| v.iter().map(|e| e.id).collect::<Vec<_>>();
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
        Arc::from([request(
            "t",
            "u",
            vec![new_event("presence", 60_000), new_event("feed:a", DAY)],
        )]),
        NOW,
    )
    .await
    .unwrap();
    s.append(
        Arc::from([request("t", "u", vec![new_event("presence", 60_000)])]),
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
        .append(
            Arc::from([request("t", "u", vec![new_event("feed:a", DAY)])]),
            NOW,
        )
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
                s.append(
                    Arc::from([request("t", "u", vec![new_event("feed:x", DAY)])]),
                    NOW,
                )
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

/// Inserts "x" at the start, whatever the base; its event is `announce`'s.
struct InsertX<A>(A);

impl<A: Fn(usize, u64, &str) -> AppendRequest + Send + Sync> OperationRules for InsertX<A> {
    fn check_session(&self, _: usize, _: Option<&SessionRow>) -> Result<(), Error> {
        Ok(())
    }

    fn decide(&self, _: usize, doc: &DocumentRow, _: &[String]) -> Result<Applied, Error> {
        Ok(Applied {
            content: format!("x{}", doc.content),
            ops: r#"[{"insert":"x"}]"#.to_string(),
        })
    }

    fn announce(&self, index: usize, revision: u64, ops: &str) -> AppendRequest {
        (self.0)(index, revision, ops)
    }
}

/// Submits one operation inserting "x" at `base` through `s`, with
/// `announce` making its event.
async fn submit_x(
    s: &dyn Storage,
    session: &SessionRow,
    base: u64,
    announce: impl Fn(usize, u64, &str) -> AppendRequest + Send + Sync + 'static,
) -> switchyard_core::storage::Result<Submission> {
    s.submit_operations(OperationBatch {
        key: session.key.clone(),
        now_ms: NOW,
        operations: vec![OperationRequest {
            session: session.clone(),
            client_op_id: None,
            base_revision: base,
        }],
        rules: Arc::new(InsertX(announce)),
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
    s.create_session(&session, "").await.unwrap();
    let failed = tokio::spawn({
        let (s, session) = (s.clone(), session.clone());
        async move { submit_x(&*s, &session, 0, |_, _, _| panic!("no event")).await }
    })
    .await;
    assert!(failed.unwrap_err().is_panic());
    let doc = s.document(&session.key).await.unwrap().unwrap();
    assert_eq!((doc.content.as_str(), doc.revision), ("", 0));
    assert_eq!(s.head().await.unwrap(), 0);

    let announce = |_: usize, _: u64, _: &str| request("t", "u", vec![new_event("task:1", DAY)]);
    let done = submit_x(&*s, &session, 0, announce).await.unwrap();
    assert!(
        matches!(done.outcomes[..], [Submitted::Applied { revision: 1, .. }]),
        "{:?}",
        done.outcomes
    );
    assert_eq!(done.events.iter().map(|e| e.id).collect::<Vec<_>>(), [1]);
    let doc = s.document(&session.key).await.unwrap().unwrap();
    assert_eq!((doc.content.as_str(), doc.revision), ("x", 1));
    let out = s
        .append(
            Arc::from([request("t", "u", vec![new_event("feed:x", DAY)])]),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(appended_ids(&out[0]), [2]);
}

fn user(id: &str) -> UserKey {
    UserKey {
        tenant: "t".into(),
        user_id: id.into(),
    }
}

async fn touch(s: &dyn Storage, who: &UserKey) {
    s.touch_user(
        who,
        Some("Name"),
        None,
        Some("[\"task:1\"]"),
        Some(NOW),
        NOW,
    )
    .await
    .unwrap();
}

/// Records one session of node `n1`, saying nothing of its user.
async fn put_session(s: &dyn Storage, who: &UserKey, id: &str, open: bool, expires_at: i64) {
    let write = SessionWrite {
        user: who.clone(),
        session_id: id.to_string(),
        open,
        expires_at,
        touch: None,
        follows: None,
    };
    s.write_sessions("n1", None, vec![write].into(), NOW)
        .await
        .unwrap();
}

fn change(who: &UserKey, from: &str, to: &str) -> StatusChange {
    StatusChange {
        user: who.clone(),
        from: from.to_string(),
        to: to.to_string(),
    }
}

/// A session is alive while its own expiry is ahead, or while it is an open
/// stream on a node whose heartbeat is; the sweep removes the dead ones and
/// names each user that lost one once.
async fn presence_sessions_live_by_their_expiry_or_their_node(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let (streamer, poller) = (user("streamer"), user("poller"));
    touch(&*s, &streamer).await;
    touch(&*s, &poller).await;
    s.heartbeat_node("n1", NOW + 1000).await.unwrap();
    put_session(&*s, &streamer, "a", true, NOW).await;
    put_session(&*s, &poller, "poll", false, NOW + 500).await;
    put_session(&*s, &poller, "b", false, NOW + 400).await;
    let online = |p: Option<UserPresence>| p.expect("a row").online;
    assert!(online(s.user_presence(&streamer, NOW + 1).await.unwrap()));
    assert!(online(s.user_presence(&poller, NOW + 1).await.unwrap()));
    assert!(!online(s.user_presence(&poller, NOW + 600).await.unwrap()));
    assert!(online(s.user_presence(&streamer, NOW + 600).await.unwrap()));
    assert!(!online(
        s.user_presence(&streamer, NOW + 1001).await.unwrap()
    ));
    assert!(
        s.user_presence(&user("nobody"), NOW)
            .await
            .unwrap()
            .is_none()
    );

    let swept = s.sweep_sessions(NOW + 2000).await.unwrap();
    assert_eq!(swept, vec![poller.clone(), streamer.clone()]);
    assert!(s.sweep_sessions(NOW + 2000).await.unwrap().is_empty());
}

/// Announcing a status is a compare-and-set: exactly one caller wins.
async fn presence_announcements_are_compare_and_set(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let who = user("u");
    touch(&*s, &who).await;
    let twice = vec![
        change(&who, "offline", "online"),
        change(&who, "offline", "online"),
    ];
    assert_eq!(s.announce(twice, NOW).await.unwrap(), vec![true, false]);
    assert_eq!(
        s.announce(vec![change(&who, "offline", "online")], NOW)
            .await
            .unwrap(),
        vec![false]
    );
    let p = s.user_presence(&who, NOW).await.unwrap().unwrap();
    assert_eq!(p.announced_status, "online");
    assert_eq!(p.channels, "[\"task:1\"]");
    // Not online, announced online: stale.
    let stale = s.stale_announcements(NOW, NOW - 1).await.unwrap();
    assert_eq!(stale, vec![who]);
}

/// A batch of sessions is recorded in order in one transaction: the node's
/// heartbeat first, a user's second tab enters no room the first entered,
/// and each write that touched its user reads their presence after the
/// whole batch.
async fn session_batches_record_in_order_and_read_presence_after(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let write = |who: &UserKey, id: &str, open: bool, follows: Option<&[&str]>| SessionWrite {
        user: who.clone(),
        session_id: id.to_string(),
        open,
        expires_at: NOW + 500,
        touch: follows.map(|f| UserTouch {
            name: Some(format!("{} name", who.user_id)),
            avatar: None,
            channels: Some(serde_json::to_string(f).unwrap()),
            activity_at: Some(NOW),
        }),
        follows: follows.map(|f| f.iter().map(|c| c.to_string()).collect()),
    };
    let batch = vec![
        write(&alice, "a1", true, Some(&["task:1", "task:2"])),
        write(&bob, "b1", false, Some(&["task:2"])),
        write(&alice, "a2", true, Some(&["task:2", "task:3"])),
        write(&alice, "a0", false, None),
    ];
    let written: Vec<SessionWritten> = s
        .write_sessions("n1", Some(NOW + 10_000), batch.into(), NOW)
        .await
        .unwrap();
    let entered: Vec<Vec<String>> = written
        .iter()
        .map(|w| {
            let mut e = w.entered.clone();
            e.sort();
            e
        })
        .collect();
    assert_eq!(
        entered,
        vec![
            vec!["task:1".to_string(), "task:2".to_string()],
            vec!["task:2".to_string()],
            vec!["task:3".to_string()],
            vec![],
        ]
    );
    let presence: Vec<Option<(String, bool)>> = written
        .iter()
        .map(|w| w.presence.as_ref().map(|p| (p.channels.clone(), p.online)))
        .collect();
    // Both of Alice's writes read her row after the second one.
    let alice_after = Some((r#"["task:2","task:3"]"#.to_string(), true));
    assert_eq!(
        presence,
        vec![
            alice_after.clone(),
            Some((r#"["task:2"]"#.to_string(), true)),
            alice_after,
            None,
        ]
    );
    // The open streams live by the heartbeat written with them, past
    // their own expiry.
    let p = s.user_presence(&alice, NOW + 5_000).await.unwrap().unwrap();
    assert!(p.online);
    assert_eq!(p.name.as_deref(), Some("alice name"));
    let p = s.user_presence(&bob, NOW + 5_000).await.unwrap().unwrap();
    assert!(!p.online);
}

/// Typing: an event is due when typing starts or the last one is older
/// than the coalescing window; a state not refreshed expires once.
async fn typing_coalesces_and_expires(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let key = TypingKey {
        tenant: "t".into(),
        user_id: "u".into(),
        resource_type: "task".into(),
        resource_id: "1".into(),
        field: "body".into(),
    };
    assert!(
        s.typing_on(&key, NOW, NOW + 6000, NOW - 1000)
            .await
            .unwrap()
    );
    assert!(
        !s.typing_on(&key, NOW + 500, NOW + 6500, NOW - 500)
            .await
            .unwrap()
    );
    assert!(
        s.typing_on(&key, NOW + 1500, NOW + 7500, NOW + 500)
            .await
            .unwrap()
    );
    assert!(s.expired_typing(NOW + 7000).await.unwrap().is_empty());
    assert_eq!(
        s.expired_typing(NOW + 7500).await.unwrap(),
        vec![key.clone()]
    );
    assert!(!s.typing_off(&key).await.unwrap());
    assert!(
        s.typing_on(&key, NOW + 8000, NOW + 9000, NOW + 7000)
            .await
            .unwrap()
    );
    assert!(s.typing_off(&key).await.unwrap());
}

/// Viewing answers what was viewed before; a resource lists its online
/// viewers and typists.
async fn viewing_and_resource_users(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let who = user("u");
    touch(&*s, &who).await;
    s.heartbeat_node("n1", NOW + 10_000).await.unwrap();
    put_session(&*s, &who, "a", true, NOW).await;
    assert_eq!(
        s.set_viewing(&who, Some(("task", "1")), NOW).await.unwrap(),
        None
    );
    let before = s
        .set_viewing(&who, Some(("task", "2")), NOW + 1)
        .await
        .unwrap();
    assert_eq!(
        before,
        Some(Viewing {
            resource_type: "task".into(),
            resource_id: "1".into(),
            since: NOW,
        })
    );
    let typing = TypingKey {
        tenant: "t".into(),
        user_id: "u".into(),
        resource_type: "task".into(),
        resource_id: "2".into(),
        field: "title".into(),
    };
    s.typing_on(&typing, NOW + 1, NOW + 6000, NOW)
        .await
        .unwrap();
    let active = s.resource_users("t", "task", "2", NOW + 2).await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].user_id, "u");
    assert_eq!(active[0].typing, vec!["title".to_string()]);
    assert!(
        s.resource_users("t", "task", "1", NOW + 2)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.resource_users("other", "task", "2", NOW + 2)
            .await
            .unwrap()
            .is_empty()
    );
}

fn doc_key(id: &str) -> DocKey {
    DocKey {
        tenant: "t".into(),
        resource_type: "task".into(),
        resource_id: id.into(),
        field: "body".into(),
    }
}

fn lock(id: &str, user: &str, expires_at: i64) -> LockRow {
    LockRow {
        lock_id: id.into(),
        key: doc_key("1"),
        user_id: user.into(),
        name: None,
        ttl_ms: 1000,
        created_at: NOW,
        expires_at,
    }
}

/// A field has one live lock; its holder renews or releases it; an expired
/// one goes to exactly one caller.
async fn locks_are_exclusive_and_expire(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let (got, expired) = s
        .acquire_lock(&lock("l1", "a", NOW + 1000), NOW)
        .await
        .unwrap();
    assert!(matches!(got, LockAttempt::Acquired(ref l) if l.lock_id == "l1"));
    assert!(expired.is_empty());
    let (held, _) = s
        .acquire_lock(&lock("l2", "b", NOW + 1000), NOW)
        .await
        .unwrap();
    assert!(matches!(held, LockAttempt::Held(ref l) if l.user_id == "a"));
    // The holder asking again keeps the same lock with a fresh expiry.
    let (again, _) = s
        .acquire_lock(&lock("l3", "a", NOW + 2000), NOW)
        .await
        .unwrap();
    assert!(
        matches!(again, LockAttempt::Acquired(ref l) if l.lock_id == "l1" && l.expires_at == NOW + 2000)
    );
    assert!(
        s.renew_lock("t", "l1", "b", 5000, NOW)
            .await
            .unwrap()
            .is_none()
    );
    let renewed = s
        .renew_lock("t", "l1", "a", 5000, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.expires_at, NOW + 5000);
    assert!(s.release_lock("t", "l1", "b", NOW).await.unwrap().is_none());
    assert!(s.release_lock("t", "l1", "a", NOW).await.unwrap().is_some());
    assert!(s.find_lock("t", "l1").await.unwrap().is_none());

    s.acquire_lock(&lock("l4", "a", NOW + 10), NOW)
        .await
        .unwrap();
    assert!(
        s.current_lock(&doc_key("1"), NOW + 5)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        s.current_lock(&doc_key("1"), NOW + 10)
            .await
            .unwrap()
            .is_none()
    );
    let (taken, expired) = s
        .acquire_lock(&lock("l5", "b", NOW + 1000), NOW + 20)
        .await
        .unwrap();
    assert!(matches!(taken, LockAttempt::Acquired(ref l) if l.user_id == "b"));
    assert_eq!(
        expired
            .iter()
            .map(|l| l.lock_id.as_str())
            .collect::<Vec<_>>(),
        ["l4"]
    );
    let swept = s.expire_locks(NOW + 1000).await.unwrap();
    assert_eq!(
        swept.iter().map(|l| l.lock_id.as_str()).collect::<Vec<_>>(),
        ["l5"]
    );
    assert!(s.expire_locks(NOW + 1000).await.unwrap().is_empty());
}

/// Sessions: the document is created once, a retried `client_op_id` is
/// answered from its first application, and saving records the revision.
async fn sessions_documents_and_retries(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let session = |id: &str, user: &str| SessionRow {
        session_id: id.into(),
        key: doc_key("9"),
        user_id: user.into(),
        name: Some(user.to_uppercase()),
        created_at: NOW,
        last_active_at: NOW,
        ended_at: None,
    };
    let first = s.create_session(&session("s1", "a"), "").await.unwrap();
    assert_eq!((first.content.as_str(), first.revision), ("", 0));
    let second = s
        .create_session(&session("s2", "b"), "a seed")
        .await
        .unwrap();
    assert_eq!(second.content, "", "an existing document keeps its content");
    let editors = s.active_editors(&doc_key("9"), NOW - 1).await.unwrap();
    assert_eq!(
        editors,
        vec![
            ("a".to_string(), Some("A".to_string())),
            ("b".to_string(), Some("B".to_string()))
        ]
    );
    let op = || OperationBatch {
        key: doc_key("9"),
        now_ms: NOW,
        operations: vec![OperationRequest {
            session: session("s1", "a"),
            client_op_id: Some("c1".into()),
            base_revision: 0,
        }],
        rules: Arc::new(InsertX(|_: usize, _: u64, _: &str| {
            request("t", "a", vec![new_event("task:9", DAY)])
        })),
    };
    let applied = s.submit_operations(op()).await.unwrap();
    assert!(matches!(
        applied.outcomes[..],
        [Submitted::Applied { revision: 1, .. }]
    ));
    let retried = s.submit_operations(op()).await.unwrap();
    assert!(matches!(
        retried.outcomes[..],
        [Submitted::Replayed { revision: 1, .. }]
    ));
    assert!(retried.events.is_empty());
    let doc = s.document(&doc_key("9")).await.unwrap().unwrap();
    assert_eq!((doc.content.as_str(), doc.revision), ("x", 1));
    let saved = s
        .save_document(&doc_key("9"), "s1", NOW + 5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.revision, 1);
    s.end_session("s2", NOW + 6).await.unwrap();
    assert_eq!(
        s.session("t", "s2").await.unwrap().unwrap().ended_at,
        Some(NOW + 6)
    );
    assert!(s.session("other", "s1").await.unwrap().is_none());
}

/// One event on several channels: one row read once per reader whatever
/// channels it follows, pages that rows of one event cannot shorten into
/// looking like the end, and pruning that remembers every channel.
async fn an_event_on_several_channels_is_read_once_and_pruned_on_each(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let mut both = new_event("task:1", DAY);
    both.also = vec![
        Channel::parse("task:2").unwrap(),
        Channel::parse("task:3").unwrap(),
    ];
    let mut requests = Vec::new();
    for _ in 0..3 {
        requests.push(request("t", "u", vec![both.clone()]));
    }
    requests.push(request("t", "u", vec![new_event("task:1", 3 * DAY)]));
    let outcomes = s.append(Arc::from(requests), NOW).await.unwrap();
    let ids: Vec<u64> = outcomes.iter().flat_map(appended_ids).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    let all = [
        "task:1".to_string(),
        "task:2".to_string(),
        "task:3".to_string(),
    ];
    let read = s.read("t", &all, 0, 10).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        read[0].channels().collect::<Vec<_>>(),
        ["task:1", "task:2", "task:3"]
    );
    assert!(read[3].also.is_empty());
    // A page of two is two events, not two rows of one.
    let page = s.read("t", &all, 0, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 2]);
    let further = s.read("t", &["task:3".to_string()], 1, 10).await.unwrap();
    assert_eq!(further.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 3]);
    let since = s.read_since("t", &all[1..], NOW, 10).await.unwrap();
    assert_eq!(
        since.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // The three expire, the single one stays; task:3 remembers its pruning.
    assert_eq!(s.prune(NOW + 2 * DAY).await.unwrap(), 3);
    assert!(s.read("t", &all[2..], 0, 10).await.unwrap().is_empty());
    assert_eq!(
        s.expired_cursor("t", &all[2..], 1).await.unwrap(),
        Some(CursorExpired { oldest_id: 4 })
    );
    assert_eq!(
        s.read("t", &all, 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![4]
    );
}

/// Rooms: a session's channels replace what it followed; a user enters a
/// room once whatever their number of sessions, and leaves it once no live
/// session has followed it for the quiet time.
async fn rooms_are_entered_once_and_left_when_no_session_follows(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let alice = user("alice");
    touch(&*s, &alice).await;
    put_session(&*s, &alice, "s1", false, NOW + 60_000).await;
    put_session(&*s, &alice, "s2", false, NOW + 60_000).await;
    let follow = |id: &'static str, channels: &[&str], at| {
        let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
        let s = s.clone();
        let alice = alice.clone();
        async move { s.follow(&alice, id, &channels, at).await.unwrap() }
    };
    let mut entered = follow("s1", &["task:1", "task:2"], NOW).await;
    entered.sort();
    assert_eq!(entered, ["task:1", "task:2"]);
    assert!(
        follow("s2", &["task:1"], NOW).await.is_empty(),
        "a second tab"
    );
    assert!(
        follow("s1", &["task:1"], NOW).await.is_empty(),
        "s1 leaves task:2"
    );
    // Quiet not passed yet: nothing left.
    assert!(s.leave_rooms(NOW + 1000, NOW - 1).await.unwrap().is_empty());
    let left = s.leave_rooms(NOW + 10_000, NOW + 5_000).await.unwrap();
    assert_eq!(left, vec![(alice.clone(), "task:2".to_string())]);
    assert!(
        s.leave_rooms(NOW + 10_000, NOW + 5_000)
            .await
            .unwrap()
            .is_empty(),
        "once"
    );
    // Back in task:2: entered again. The sessions expire and are swept
    // (their rooms with them): both rooms left.
    assert_eq!(
        follow("s2", &["task:1", "task:2"], NOW + 20_000).await,
        ["task:2"]
    );
    assert_eq!(
        s.sweep_sessions(NOW + 70_000).await.unwrap(),
        vec![alice.clone()]
    );
    let mut left = s.leave_rooms(NOW + 70_000, NOW + 65_000).await.unwrap();
    left.sort();
    assert_eq!(
        left,
        vec![
            (alice.clone(), "task:1".to_string()),
            (alice.clone(), "task:2".to_string())
        ]
    );
    assert!(
        s.resource_users("t", "task", "1", NOW + 70_000)
            .await
            .unwrap()
            .is_empty(),
        "no one in the room"
    );
}

fn content_change(id: &str, content: &str, live_since_ms: i64) -> ContentChange {
    let text = content.to_string();
    ContentChange {
        key: doc_key(id),
        content: content.into(),
        user_id: "backend".into(),
        change_id: "c1".into(),
        live_since_ms,
        now_ms: NOW + 10,
        replace: Box::new(move |old| {
            format!(
                r#"[{{"delete":{}}},{{"insert":"{text}"}}]"#,
                old.content.chars().count()
            )
        }),
        announce: Box::new(|_revision, _ops| {
            request("t", "backend", vec![new_event("task:9", DAY)])
        }),
    }
}

async fn content_is_seeded_or_set_unless_a_session_is_live(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let created = s
        .set_content(content_change("70", "first", NOW))
        .await
        .unwrap();
    assert!(
        matches!(&created, ContentSet::Created(d) if d.content == "first" && d.revision == 0),
        "{created:?}"
    );
    let same = s
        .set_content(content_change("70", "first", NOW))
        .await
        .unwrap();
    assert!(matches!(same, ContentSet::Unchanged(_)), "{same:?}");
    let replaced = s
        .set_content(content_change("70", "second", NOW))
        .await
        .unwrap();
    let ContentSet::Replaced {
        document,
        ops,
        events,
    } = replaced
    else {
        panic!("expected Replaced, got {replaced:?}");
    };
    assert_eq!(
        (document.content.as_str(), document.revision),
        ("second", 1)
    );
    assert_eq!(ops, r#"[{"delete":5},{"insert":"second"}]"#);
    assert_eq!(events.len(), 1, "announced in the same transaction");
    let stored = s.document(&doc_key("70")).await.unwrap().unwrap();
    assert_eq!((stored.content.as_str(), stored.revision), ("second", 1));
    // A session seeded on a new document; a live session blocks setting.
    let session = SessionRow {
        session_id: "s70".into(),
        key: doc_key("71"),
        user_id: "a".into(),
        name: None,
        created_at: NOW,
        last_active_at: NOW,
        ended_at: None,
    };
    let seeded = s.create_session(&session, "seeded").await.unwrap();
    assert_eq!((seeded.content.as_str(), seeded.revision), ("seeded", 0));
    let busy = s
        .set_content(content_change("71", "overwrite", NOW - 1))
        .await
        .unwrap();
    assert!(
        matches!(&busy, ContentSet::Busy(users) if users == &["a".to_string()]),
        "{busy:?}"
    );
    let idle = s
        .set_content(content_change("71", "overwrite", NOW + 1))
        .await
        .unwrap();
    assert!(
        matches!(idle, ContentSet::Replaced { .. }),
        "an idle session does not block: {idle:?}"
    );
}

fn notification(id: &str, user: &str, expires_at: i64) -> NotificationRow {
    NotificationRow {
        tenant: "t".into(),
        user_id: user.into(),
        id: id.into(),
        kind: "task.assigned".into(),
        title: format!("about {id}"),
        body: None,
        data: "null".into(),
        created_at: NOW,
        read_at: None,
        expires_at,
    }
}

/// The announcement a read makes: one event on the user's channel, its
/// data the unread count after the change.
fn announce_count(user: &str) -> Announce {
    let user = user.to_string();
    Box::new(move |unread, at| {
        let mut event = new_event(&format!("user:{user}"), DAY);
        event.data = format!(r#"{{"unread_count":{unread},"at":{at}}}"#);
        request("t", &user, vec![event])
    })
}

async fn notifications_keep_a_read_state_by_user(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let ids = [
        "01000000-0000-7000-8000-000000000001",
        "01000000-0000-7000-8000-000000000002",
        "01000000-0000-7000-8000-000000000003",
    ];
    let mut append = request("t", "backend", vec![new_event("user:alice", DAY)]);
    append.notifications = vec![
        notification(ids[0], "alice", NOW + DAY),
        notification(ids[1], "alice", NOW + 10),
        notification(ids[2], "alice", NOW + DAY),
    ];
    appended_ids(&s.append(Arc::from([append]), NOW).await.unwrap()[0]);
    let mut other = request("t", "backend", vec![new_event("user:bob", DAY)]);
    other.notifications = vec![notification(
        "01000000-0000-7000-8000-000000000009",
        "bob",
        NOW + DAY,
    )];
    s.append(Arc::from([other]), NOW).await.unwrap();

    let query = |unread_only, before: Option<&str>, limit| NotificationQuery {
        unread_only,
        before: before.map(str::to_string),
        limit,
    };
    let listed = s
        .notifications("t", "alice", query(false, None, 10), NOW)
        .await
        .unwrap();
    let listed: Vec<&str> = listed.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(listed, vec![ids[2], ids[1], ids[0]], "newest first");
    let page = s
        .notifications("t", "alice", query(false, Some(ids[2]), 1), NOW)
        .await
        .unwrap();
    assert_eq!(page[0].id, ids[1]);
    assert_eq!(s.unread_notifications("t", "alice", NOW).await.unwrap(), 3);
    // Expired ones are gone from lists and counts.
    assert_eq!(
        s.unread_notifications("t", "alice", NOW + 20)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        s.unread_notifications("other", "alice", NOW).await.unwrap(),
        0
    );

    let read = s
        .read_notifications(
            "t",
            "alice",
            Some(ids[0].into()),
            NOW + 1,
            announce_count("alice"),
        )
        .await
        .unwrap();
    let ReadOutcome::Read {
        unread_count: 2,
        read_at,
        events,
    } = read
    else {
        panic!("expected Read with 2 unread, got {read:?}");
    };
    assert_eq!(read_at, NOW + 1);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].data,
        format!(r#"{{"unread_count":2,"at":{}}}"#, NOW + 1)
    );
    let again = s
        .read_notifications(
            "t",
            "alice",
            Some(ids[0].into()),
            NOW + 2,
            announce_count("alice"),
        )
        .await
        .unwrap();
    assert!(
        matches!(again, ReadOutcome::Unchanged { unread_count: 2, read_at: Some(at) } if at == NOW + 1),
        "{again:?}"
    );
    let theirs = s
        .read_notifications(
            "t",
            "bob",
            Some(ids[0].into()),
            NOW + 2,
            announce_count("bob"),
        )
        .await
        .unwrap();
    assert!(matches!(theirs, ReadOutcome::NotFound), "{theirs:?}");
    let unread = s
        .notifications("t", "alice", query(true, None, 10), NOW + 2)
        .await
        .unwrap();
    assert_eq!(unread.len(), 2);
    let all = s
        .read_notifications("t", "alice", None, NOW + 3, announce_count("alice"))
        .await
        .unwrap();
    assert!(
        matches!(
            all,
            ReadOutcome::Read {
                unread_count: 0,
                ..
            }
        ),
        "{all:?}"
    );
    let nothing_left = s
        .read_notifications("t", "alice", None, NOW + 4, announce_count("alice"))
        .await
        .unwrap();
    assert!(
        matches!(
            nothing_left,
            ReadOutcome::Unchanged {
                unread_count: 0,
                ..
            }
        ),
        "{nothing_left:?}"
    );
    assert_eq!(s.unread_notifications("t", "bob", NOW).await.unwrap(), 1);
}

fn announce_member(name: &'static str) -> AnnounceMember {
    Box::new(move |m: &MemberRow| {
        let mut event = new_event(&m.channel, DAY);
        event.event = name.into();
        event.data = format!(r#"{{"user_id":"{}"}}"#, m.user_id);
        request("t", "backend", vec![event])
    })
}

fn announce_message(name: &'static str) -> AnnounceMessage {
    Box::new(move |m: &MessageRow| {
        let mut event = new_event(&format!("conversation:{}", m.conversation_id), DAY);
        event.event = name.into();
        request("t", &m.sender_id, vec![event])
    })
}

fn message(id: &str, sender: &str, client_id: Option<&str>) -> MessageRow {
    MessageRow {
        conversation_id: "g-1".into(),
        id: id.into(),
        seq: 0,
        client_message_id: client_id.map(str::to_string),
        sender_id: sender.into(),
        sender_name: None,
        sender_avatar: None,
        content: format!("{sender} says {id}"),
        created_at: NOW,
        edited_at: None,
        deleted_at: None,
    }
}

async fn members_conversations_messages_and_read_positions(backend: Backend) {
    let (_db, s) = open(&backend).await;
    let member = |user: &str| MemberRow {
        channel: "project:1".into(),
        user_id: user.into(),
        since_id: 0,
        added_at: NOW,
        read_seq: 0,
        read_message_id: None,
        read_at: None,
    };
    let added = s
        .add_member("t", member("alice"), announce_member("member.added"))
        .await
        .unwrap();
    let MemberOutcome::Changed {
        member: row,
        events,
    } = added
    else {
        panic!("expected Changed, got {added:?}");
    };
    assert_eq!(row.since_id, events[0].id, "since_id is the event's id");
    let again = s
        .add_member("t", member("alice"), announce_member("member.added"))
        .await
        .unwrap();
    assert!(
        matches!(&again, MemberOutcome::Unchanged(Some(m)) if m.since_id == row.since_id),
        "{again:?}"
    );
    assert_eq!(s.memberships("t", "alice").await.unwrap().len(), 1);
    assert!(s.memberships("other", "alice").await.unwrap().is_empty());

    let conversation = ConversationRow {
        tenant: "t".into(),
        id: "g-1".into(),
        kind: "group".into(),
        title: Some("crew".into()),
        created_by: "alice".into(),
        created_at: NOW,
        last_seq: 0,
        last_at: NOW,
    };
    let members = vec!["alice".to_string(), "bob".to_string()];
    let opened = s
        .open_conversation(
            conversation.clone(),
            members.clone(),
            announce_member("member.added"),
        )
        .await
        .unwrap();
    assert!(opened.created);
    assert_eq!(opened.events.len(), 2);
    let reopened = s
        .open_conversation(conversation, members, announce_member("member.added"))
        .await
        .unwrap();
    assert!(!reopened.created && reopened.events.is_empty());

    let sent = s
        .send_message(
            "t",
            message("m1", "alice", Some("c1")),
            announce_message("message.created"),
        )
        .await
        .unwrap();
    let MessageOutcome::Stored {
        message: m1,
        events,
    } = sent
    else {
        panic!("expected Stored, got {sent:?}");
    };
    assert_eq!(m1.seq, events[0].id, "a message's seq is its event's id");
    let retried = s
        .send_message(
            "t",
            message("m1-retry", "alice", Some("c1")),
            announce_message("message.created"),
        )
        .await
        .unwrap();
    assert!(
        matches!(&retried, MessageOutcome::Replayed(m) if m.id == "m1"),
        "{retried:?}"
    );
    for id in ["m2", "m3"] {
        s.send_message(
            "t",
            message(id, "alice", None),
            announce_message("message.created"),
        )
        .await
        .unwrap();
    }
    let bob_sees = s
        .conversation_summary("t", "bob", "g-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bob_sees.unread_count, 3);
    assert_eq!(bob_sees.last_message.as_ref().unwrap().id, "m3");
    assert_eq!(
        s.conversation_summary("t", "alice", "g-1")
            .await
            .unwrap()
            .unwrap()
            .unread_count,
        0
    );

    let read = s
        .read_conversation("t", "g-1", "bob", "m2", NOW + 1, announce_count("bob"))
        .await
        .unwrap();
    assert!(
        matches!(
            read,
            ReadOutcome::Read {
                unread_count: 1,
                ..
            }
        ),
        "{read:?}"
    );
    let back = s
        .read_conversation("t", "g-1", "bob", "m1", NOW + 2, announce_count("bob"))
        .await
        .unwrap();
    assert!(
        matches!(
            back,
            ReadOutcome::Unchanged {
                unread_count: 1,
                ..
            }
        ),
        "never back: {back:?}"
    );
    let unknown = s
        .read_conversation("t", "g-1", "bob", "nope", NOW + 2, announce_count("bob"))
        .await
        .unwrap();
    assert!(matches!(unknown, ReadOutcome::NotFound), "{unknown:?}");

    let change = |message_id: &str, sender: &str, content: Option<&str>| MessageChange {
        conversation_id: "g-1".into(),
        message_id: message_id.into(),
        sender_id: sender.into(),
        content: content.map(str::to_string),
        at_ms: NOW + 3,
    };
    let not_theirs = s
        .change_message(
            "t",
            change("m3", "bob", Some("x")),
            announce_message("message.updated"),
        )
        .await
        .unwrap();
    assert!(
        matches!(not_theirs, MessageOutcome::NotSender),
        "{not_theirs:?}"
    );
    let deleted = s
        .change_message(
            "t",
            change("m3", "alice", None),
            announce_message("message.deleted"),
        )
        .await
        .unwrap();
    assert!(
        matches!(&deleted, MessageOutcome::Stored { message, .. } if message.deleted_at == Some(NOW + 3) && message.content.is_empty()),
        "{deleted:?}"
    );
    assert_eq!(
        s.conversation_summary("t", "bob", "g-1")
            .await
            .unwrap()
            .unwrap()
            .unread_count,
        0,
        "deleted is not unread"
    );
    let retried = s
        .change_message(
            "t",
            change("m3", "alice", None),
            announce_message("message.deleted"),
        )
        .await
        .unwrap();
    assert!(
        matches!(&retried, MessageOutcome::Replayed(m) if m.deleted_at == Some(NOW + 3)),
        "deleting again is a retry: {retried:?}"
    );
    let gone = s
        .change_message(
            "t",
            change("m3", "alice", Some("back")),
            announce_message("message.updated"),
        )
        .await
        .unwrap();
    assert!(matches!(gone, MessageOutcome::NotFound), "{gone:?}");

    let history = s.messages("t", "g-1", None, 10).await.unwrap();
    let history: Vec<&str> = history.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(history, vec!["m3", "m2", "m1"]);
    assert_eq!(
        s.messages("t", "g-1", Some("m2".into()), 10).await.unwrap()[0].id,
        "m1"
    );
    assert_eq!(
        s.conversations("t", "bob", None, 10).await.unwrap().len(),
        1
    );
    assert!(
        s.conversations("other", "bob", None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let removed = s
        .remove_member(
            "t",
            "project:1",
            "alice",
            NOW + 4,
            announce_member("member.removed"),
        )
        .await
        .unwrap();
    assert!(
        matches!(removed, MemberOutcome::Changed { .. }),
        "{removed:?}"
    );
    let twice = s
        .remove_member(
            "t",
            "project:1",
            "alice",
            NOW + 5,
            announce_member("member.removed"),
        )
        .await
        .unwrap();
    assert!(matches!(twice, MemberOutcome::Unchanged(None)), "{twice:?}");
    let left: Vec<String> = s
        .memberships("t", "alice")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.channel)
        .collect();
    assert_eq!(left, vec!["conversation:g-1".to_string()]);
}

on_both_backends!(
    a_failed_edit_transaction_leaves_nothing_and_the_next_one_works,
    ids_are_dense_and_in_request_order,
    a_conflict_appends_nothing_and_uses_no_ids,
    idempotency_keys_replay_the_first_receipt,
    reads_filter_by_tenant_and_channel_in_id_order,
    pruning_removes_expired_events_and_reports_expired_cursors,
    parallel_appenders_never_show_an_id_below_one_already_read,
    presence_sessions_live_by_their_expiry_or_their_node,
    presence_announcements_are_compare_and_set,
    session_batches_record_in_order_and_read_presence_after,
    typing_coalesces_and_expires,
    viewing_and_resource_users,
    rooms_are_entered_once_and_left_when_no_session_follows,
    locks_are_exclusive_and_expire,
    sessions_documents_and_retries,
    an_event_on_several_channels_is_read_once_and_pruned_on_each,
    content_is_seeded_or_set_unless_a_session_is_live,
    notifications_keep_a_read_state_by_user,
    members_conversations_messages_and_read_positions,
);
