//! The log's storage rules, written once for every backend over [`Tx`].
//!
//! Invariants: the head counter is locked first among the log's statements
//! ([`append_batch`]), so everything after it sees a stable log and a
//! transaction holding id N commits before another can take N+1 (an edit
//! batch does other work before, under its document's lock: see
//! [`super::edit`]); a request whose `expected_last_id` fails, or whose
//! idempotency key was seen, appends nothing and uses no ids; ids are dense.

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_core::event::{Event, EventParts};
use switchyard_core::storage::notification::NotificationRow;
use switchyard_core::storage::{
    AppendOutcome, AppendRequest, CursorExpired, IDEMPOTENCY_WINDOW_MS, Result, render_receipt,
};

use super::sql;
use super::tx::{Column, Param, Row, Tx};

/// Appends `batch` through `tx`, in request order; the caller commits.
pub async fn append_batch(
    tx: &mut dyn Tx,
    batch: &[AppendRequest],
    now_ms: i64,
) -> Result<Vec<AppendOutcome>> {
    let mut head = tx.query_one(&sql::LOCK_HEAD, &[]).await?.int(0)? as u64;
    let first_head = head;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut events: Vec<Arc<Event>> = Vec::new();
    let mut receipts: Vec<(&AppendRequest, String)> = Vec::new();
    // Channel heads as this batch leaves them, so later requests in the same
    // batch check `expected_last_id` against earlier ones.
    let mut last_ids: HashMap<(&str, &str), u64> = HashMap::new();
    let mut keys_seen: HashMap<(&str, &str, &str), String> = HashMap::new();

    for req in batch {
        let user = req.user_id.as_deref().unwrap_or_default();
        if let Some(key) = &req.idempotency_key {
            let earlier = match keys_seen.get(&(req.tenant.as_str(), user, key.as_str())) {
                Some(receipt) => Some(receipt.clone()),
                None => find_receipt(tx, &req.tenant, user, key, now_ms).await?,
            };
            if let Some(receipt) = earlier {
                outcomes.push(AppendOutcome::Replayed { receipt });
                continue;
            }
        }
        let mut local: HashMap<(&str, &str), u64> = HashMap::new();
        let mut conflict = None;
        let mut next = head;
        for e in &req.events {
            let k = (req.tenant.as_str(), e.channel.as_str());
            if let Some(expected) = e.expected_last_id {
                let last = match local.get(&k).or_else(|| last_ids.get(&k)) {
                    Some(id) => *id,
                    None => channel_last_id(tx, k.0, k.1).await?,
                };
                if last != expected {
                    conflict = Some((k.1.to_string(), last));
                    break;
                }
            }
            next += 1;
            local.insert(k, next);
        }
        if let Some((channel, last_id)) = conflict {
            outcomes.push(AppendOutcome::Conflict { channel, last_id });
            continue;
        }
        let mut appended = Vec::with_capacity(req.events.len());
        for e in &req.events {
            head += 1;
            appended.push(Event::build(EventParts {
                id: head,
                tenant: req.tenant.clone(),
                channel: e.channel.as_str().to_string(),
                also: e.also.iter().map(|c| c.as_str().to_string()).collect(),
                event: e.event.clone(),
                data: e.data.clone(),
                user_id: req.user_id.clone(),
                timestamp_ms: now_ms,
                origin: req.origin.clone(),
            }));
        }
        last_ids.extend(local);
        let ids: Vec<u64> = appended.iter().map(|e| e.id).collect();
        let receipt = render_receipt(&ids, req.recipients, now_ms);
        if let Some(key) = &req.idempotency_key {
            keys_seen.insert((req.tenant.as_str(), user, key.as_str()), receipt.clone());
            receipts.push((req, receipt.clone()));
        }
        events.extend(appended.iter().cloned());
        outcomes.push(AppendOutcome::Appended {
            events: appended,
            receipt,
        });
    }

    if head != first_head {
        insert_events(tx, batch, &outcomes, now_ms).await?;
        let notifications: Vec<_> = batch
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| matches!(o, AppendOutcome::Appended { .. }))
            .flat_map(|(req, _)| req.notifications.iter())
            .collect();
        insert_notifications(tx, &notifications).await?;
        tx.execute(&sql::SET_HEAD, &[Param::Int(head as i64)])
            .await?;
        let head = head.to_string();
        tx.execute(&sql::NOTIFY_HEAD, &[Param::Text(&head)]).await?;
    }
    for (req, receipt) in receipts {
        let user = req.user_id.as_deref().unwrap_or_default();
        let key = req.idempotency_key.as_deref().unwrap_or_default();
        tx.execute(
            &sql::UPSERT_RECEIPT,
            &[
                Param::Text(&req.tenant),
                Param::Text(user),
                Param::Text(key),
                Param::Text(&receipt),
                Param::Int(now_ms),
            ],
        )
        .await?;
    }
    Ok(outcomes)
}

async fn find_receipt(
    tx: &mut dyn Tx,
    tenant: &str,
    user: &str,
    key: &str,
    now_ms: i64,
) -> Result<Option<String>> {
    let row = tx
        .query_opt(
            &sql::FIND_RECEIPT,
            &[
                Param::Text(tenant),
                Param::Text(user),
                Param::Text(key),
                Param::Int(now_ms - IDEMPOTENCY_WINDOW_MS),
            ],
        )
        .await?;
    row.map(|mut r| r.text(0)).transpose()
}

async fn channel_last_id(tx: &mut dyn Tx, tenant: &str, channel: &str) -> Result<u64> {
    let row = tx
        .query_one(
            &sql::CHANNEL_LAST_ID,
            &[Param::Text(tenant), Param::Text(channel)],
        )
        .await?;
    Ok(row.opt_int(0)?.unwrap_or(0) as u64)
}

/// The rows of every appended event of `batch`, in one insert, and the
/// rows of their further channels in another.
async fn insert_events(
    tx: &mut dyn Tx,
    batch: &[AppendRequest],
    outcomes: &[AppendOutcome],
    now_ms: i64,
) -> Result<()> {
    let mut ids = Vec::new();
    let (mut tenants, mut channels, mut names, mut data, mut users) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut expires, mut lists, mut origins) = (Vec::new(), Vec::new(), Vec::new());
    let (mut further_tenants, mut further_channels, mut further_ids) =
        (Vec::new(), Vec::new(), Vec::new());
    for (req, outcome) in batch.iter().zip(outcomes) {
        let AppendOutcome::Appended { events, .. } = outcome else {
            continue;
        };
        for (new, event) in req.events.iter().zip(events) {
            ids.push(event.id as i64);
            tenants.push(req.tenant.as_str());
            channels.push(new.channel.as_str());
            names.push(new.event.as_str());
            data.push(new.data.as_str());
            users.push(req.user_id.as_deref());
            expires.push(now_ms.saturating_add(new.retention_ms));
            origins.push(req.origin.as_deref());
            lists.push((!new.also.is_empty()).then(|| {
                let all: Vec<&str> = event.channels().collect();
                serde_json::to_string(&all).expect("strings serialize")
            }));
            for channel in &new.also {
                further_tenants.push(req.tenant.as_str());
                further_channels.push(channel.as_str());
                further_ids.push(event.id as i64);
            }
        }
    }
    let created = vec![now_ms; ids.len()];
    tx.insert_rows(
        &sql::INSERT_EVENTS,
        &[
            Column::Ints(ids),
            Column::Texts(tenants),
            Column::Texts(channels),
            Column::Texts(names),
            Column::Texts(data),
            Column::OptTexts(users),
            Column::Ints(created),
            Column::Ints(expires),
            Column::OptTexts(lists.iter().map(Option::as_deref).collect()),
            Column::OptTexts(origins),
        ],
    )
    .await?;
    if !further_ids.is_empty() {
        tx.insert_rows(
            &sql::INSERT_EVENT_CHANNELS,
            &[
                Column::Texts(further_tenants),
                Column::Texts(further_channels),
                Column::Ints(further_ids),
            ],
        )
        .await?;
    }
    Ok(())
}

/// Stores the notifications an append carries (inside its transaction).
pub async fn insert_notifications(tx: &mut dyn Tx, rows: &[&NotificationRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    tx.insert_rows(
        &sql::INSERT_NOTIFICATIONS,
        &[
            Column::Texts(rows.iter().map(|r| r.tenant.as_str()).collect()),
            Column::Texts(rows.iter().map(|r| r.user_id.as_str()).collect()),
            Column::Texts(rows.iter().map(|r| r.id.as_str()).collect()),
            Column::Texts(rows.iter().map(|r| r.kind.as_str()).collect()),
            Column::Texts(rows.iter().map(|r| r.title.as_str()).collect()),
            Column::OptTexts(rows.iter().map(|r| r.body.as_deref()).collect()),
            Column::Texts(rows.iter().map(|r| r.data.as_str()).collect()),
            Column::Ints(rows.iter().map(|r| r.created_at).collect()),
            Column::Ints(rows.iter().map(|r| r.expires_at).collect()),
        ],
    )
    .await
}

/// An event row as the read statements return it: id, tenant, channel,
/// event, data, user_id, created_at, channels, origin.
fn event(mut row: Row) -> Result<Arc<Event>> {
    let id = row.int(0)? as u64;
    let (tenant, channel) = (row.text(1)?, row.text(2)?);
    let (name, data, user_id, timestamp_ms) =
        (row.text(3)?, row.text(4)?, row.opt_text(5)?, row.int(6)?);
    // Every channel, first first, for an event on several.
    let also = match row.opt_text(7)? {
        Some(list) => serde_json::from_str::<Vec<String>>(&list)
            .unwrap_or_default()
            .into_iter()
            .skip(1)
            .collect(),
        None => Vec::new(),
    };
    Ok(Event::build(EventParts {
        id,
        tenant,
        channel,
        also,
        event: name,
        data,
        user_id,
        timestamp_ms,
        origin: row.opt_text(8)?,
    }))
}

/// Rows in id order as events, each once (an event on several of the
/// channels read comes once per channel).
fn events(rows: Vec<Row>) -> Result<Vec<Arc<Event>>> {
    let mut events: Vec<Arc<Event>> = Vec::with_capacity(rows.len());
    for row in rows {
        let event = event(row)?;
        if events.last().is_none_or(|last| last.id != event.id) {
            events.push(event);
        }
    }
    Ok(events)
}

/// Up to `limit` events of `channels` after `after`, in id order. Fewer
/// than `limit` means there are no more: an event on several of the
/// channels is one row per channel, so rows cut by the limit that held
/// duplicates are followed by another read.
pub async fn read(
    tx: &mut dyn Tx,
    tenant: &str,
    channels: &[&str],
    after: u64,
    limit: usize,
) -> Result<Vec<Arc<Event>>> {
    let mut out: Vec<Arc<Event>> = Vec::new();
    let mut cursor = after;
    while out.len() < limit {
        let want = limit - out.len();
        let rows = tx
            .query(
                &sql::READ_EVENTS,
                &[
                    Param::Text(tenant),
                    Param::Texts(channels),
                    Param::Int(cursor as i64),
                    Param::Int(want as i64),
                ],
            )
            .await?;
        let cut = rows.len() == want;
        for event in events(rows)? {
            if out.last().is_none_or(|last| last.id != event.id) {
                out.push(event);
            }
        }
        match out.last() {
            Some(last) if cut => cursor = last.id,
            _ => break,
        }
    }
    Ok(out)
}

pub async fn read_range(tx: &mut dyn Tx, after: u64, through: u64) -> Result<Vec<Arc<Event>>> {
    let rows = tx
        .query(
            &sql::READ_RANGE,
            &[Param::Int(after as i64), Param::Int(through as i64)],
        )
        .await?;
    events(rows)
}

pub async fn read_since(
    tx: &mut dyn Tx,
    tenant: &str,
    channels: &[&str],
    since_ms: i64,
    limit: usize,
) -> Result<Vec<Arc<Event>>> {
    let rows = tx
        .query(
            &sql::READ_SINCE,
            &[
                Param::Text(tenant),
                Param::Texts(channels),
                Param::Int(since_ms),
                Param::Int(limit as i64),
            ],
        )
        .await?;
    events(rows)
}

pub async fn head(tx: &mut dyn Tx) -> Result<u64> {
    Ok(tx.query_one(&sql::HEAD, &[]).await?.int(0)? as u64)
}

pub async fn expired_cursor(
    tx: &mut dyn Tx,
    tenant: &str,
    channels: &[&str],
    cursor: u64,
) -> Result<Option<CursorExpired>> {
    let params = [
        Param::Text(tenant),
        Param::Texts(channels),
        Param::Int(cursor as i64),
    ];
    let Some(pruned) = tx
        .query_one(&sql::PRUNED_THROUGH, &params)
        .await?
        .opt_int(0)?
    else {
        return Ok(None);
    };
    let oldest = tx
        .query_one(&sql::OLDEST_AFTER, &params)
        .await?
        .opt_int(0)?;
    Ok(Some(CursorExpired {
        oldest_id: oldest.unwrap_or(pruned + 1) as u64,
    }))
}

/// Deletes expired events (remembering per channel the highest id removed),
/// old idempotency keys and expired notifications; returns how many events
/// went.
pub async fn prune(tx: &mut dyn Tx, now_ms: i64) -> Result<u64> {
    tx.execute(&sql::RECORD_PRUNED, &[Param::Int(now_ms)])
        .await?;
    tx.execute(&sql::RECORD_PRUNED_FURTHER, &[Param::Int(now_ms)])
        .await?;
    tx.execute(&sql::PRUNE_EVENT_CHANNELS, &[Param::Int(now_ms)])
        .await?;
    let deleted = tx
        .execute(&sql::PRUNE_EVENTS, &[Param::Int(now_ms)])
        .await?;
    tx.execute(
        &sql::PRUNE_RECEIPTS,
        &[Param::Int(now_ms - IDEMPOTENCY_WINDOW_MS)],
    )
    .await?;
    tx.execute(&sql::PRUNE_NOTIFICATIONS, &[Param::Int(now_ms)])
        .await?;
    Ok(deleted)
}
