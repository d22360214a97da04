//! The append algorithm both backends share, over a few per-backend
//! primitives ([`AppendTx`]) run inside one transaction.
//!
//! Invariants: the head counter is locked first among the log's statements,
//! so everything below sees a stable log (a transaction may do other work
//! before, as an edit batch does: see `storage::edit`); a request whose
//! `expected_last_id` fails, or whose idempotency key was seen, appends
//! nothing and uses no ids; ids are dense.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::json;

use super::{AppendOutcome, AppendRequest, IDEMPOTENCY_WINDOW_MS, Result};
use crate::event::{Event, format_timestamp};

/// A row to insert into `events`.
pub(crate) struct EventRow {
    pub id: i64,
    pub tenant: String,
    pub channel: String,
    pub event: String,
    pub data: String,
    pub user_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A remembered receipt for an idempotency key.
pub(crate) struct ReceiptRow {
    pub tenant: String,
    pub user_id: String,
    pub key: String,
    pub receipt: String,
    pub created_at: i64,
}

/// What one backend does inside the append transaction.
#[async_trait]
pub(crate) trait AppendTx: Send {
    /// Locks the head counter until commit and returns the last id.
    async fn lock_head(&mut self) -> Result<u64>;
    async fn find_receipt(
        &mut self,
        tenant: &str,
        user_id: &str,
        key: &str,
        newer_than_ms: i64,
    ) -> Result<Option<String>>;
    async fn channel_last_id(&mut self, tenant: &str, channel: &str) -> Result<u64>;
    async fn insert_events(&mut self, rows: &[EventRow]) -> Result<()>;
    async fn insert_receipts(&mut self, rows: &[ReceiptRow]) -> Result<()>;
    async fn set_head(&mut self, head: u64) -> Result<()>;
    /// Tells other nodes, at commit, that the log now ends at `head`: once
    /// per appending transaction (Postgres `NOTIFY`; nothing on SQLite,
    /// whose nodes share no notification channel).
    async fn notify_head(&mut self, head: u64) -> Result<()>;
}

/// The receipt a publish is answered with (PROTOCOL §6).
pub fn render_receipt(ids: &[u64], recipients: u64, timestamp_ms: i64) -> String {
    json!({
        "status": "sent",
        "id": ids.last().copied().unwrap_or(0),
        "ids": ids,
        "recipients": recipients,
        "timestamp": format_timestamp(timestamp_ms),
    })
    .to_string()
}

/// Appends `batch` through `tx`; the caller commits.
pub(crate) async fn append_batch<T: AppendTx>(
    tx: &mut T,
    batch: &[AppendRequest],
    now_ms: i64,
) -> Result<Vec<AppendOutcome>> {
    let mut head = tx.lock_head().await?;
    let first_head = head;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut rows = Vec::new();
    let mut receipts: Vec<ReceiptRow> = Vec::new();
    // Channel heads as this batch leaves them, so later requests in the same
    // batch check `expected_last_id` against earlier ones.
    let mut last_ids: HashMap<(String, String), u64> = HashMap::new();
    let mut keys_seen: HashMap<(String, String, String), String> = HashMap::new();

    for req in batch {
        let user = req.user_id.clone().unwrap_or_default();
        if let Some(key) = &req.idempotency_key {
            let k = (req.tenant.clone(), user.clone(), key.clone());
            let earlier = match keys_seen.get(&k) {
                Some(r) => Some(r.clone()),
                None => {
                    tx.find_receipt(&req.tenant, &user, key, now_ms - IDEMPOTENCY_WINDOW_MS)
                        .await?
                }
            };
            if let Some(receipt) = earlier {
                outcomes.push(AppendOutcome::Replayed { receipt });
                continue;
            }
        }

        let mut local: HashMap<(String, String), u64> = HashMap::new();
        let mut conflict = None;
        let mut next = head;
        for e in &req.events {
            let k = (req.tenant.clone(), e.channel.as_str().to_string());
            if let Some(expected) = e.expected_last_id {
                let last = match local.get(&k).or_else(|| last_ids.get(&k)) {
                    Some(id) => *id,
                    None => tx.channel_last_id(&req.tenant, e.channel.as_str()).await?,
                };
                if last != expected {
                    conflict = Some((k.1.clone(), last));
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

        let mut events = Vec::with_capacity(req.events.len());
        for e in &req.events {
            head += 1;
            let row = EventRow {
                id: head as i64,
                tenant: req.tenant.clone(),
                channel: e.channel.as_str().to_string(),
                event: e.event.clone(),
                data: e.data.clone(),
                user_id: req.user_id.clone(),
                created_at: now_ms,
                expires_at: now_ms.saturating_add(e.retention_ms),
            };
            events.push(Event::new(
                head,
                row.tenant.clone(),
                row.channel.clone(),
                row.event.clone(),
                row.data.clone(),
                row.user_id.clone(),
                now_ms,
            ));
            rows.push(row);
        }
        last_ids.extend(local);
        let ids: Vec<u64> = events.iter().map(|e| e.id).collect();
        let receipt = render_receipt(&ids, req.recipients, now_ms);
        if let Some(key) = &req.idempotency_key {
            keys_seen.insert(
                (req.tenant.clone(), user.clone(), key.clone()),
                receipt.clone(),
            );
            receipts.push(ReceiptRow {
                tenant: req.tenant.clone(),
                user_id: user,
                key: key.clone(),
                receipt: receipt.clone(),
                created_at: now_ms,
            });
        }
        outcomes.push(AppendOutcome::Appended { events, receipt });
    }

    if head != first_head {
        tx.insert_events(&rows).await?;
        tx.set_head(head).await?;
        tx.notify_head(head).await?;
    }
    if !receipts.is_empty() {
        tx.insert_receipts(&receipts).await?;
    }
    Ok(outcomes)
}

/// Rows per multi-row INSERT, under both backends' bind-parameter limits.
pub(crate) const INSERT_CHUNK: usize = 1000;

// The statements of the primitives, one text for both backends (`$N`
// placeholders: sqlx binds them on Postgres, `sqlite/direct.rs` by number).

/// The last id; Postgres adds `FOR UPDATE` to lock the counter (SQLite's
/// `BEGIN IMMEDIATE` already holds the write lock).
macro_rules! select_head {
    () => {
        "SELECT last_id FROM log_head WHERE singleton = 1"
    };
}
pub(crate) use select_head;

pub(crate) const FIND_RECEIPT: &str = "SELECT receipt FROM idempotency_keys \
     WHERE tenant = $1 AND user_id = $2 AND key = $3 AND created_at > $4";

pub(crate) const CHANNEL_LAST_ID: &str =
    "SELECT MAX(id) FROM events WHERE tenant = $1 AND channel = $2";

/// The start of an insert of events, in [`INSERT_EVENT`]'s column order.
macro_rules! insert_events {
    () => {
        "INSERT INTO events (id, tenant, channel, event, data, user_id, created_at, expires_at) "
    };
}
pub(crate) use insert_events;

/// One event row.
pub(crate) const INSERT_EVENT: &str =
    concat!(insert_events!(), "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");

pub(crate) const UPSERT_RECEIPT: &str = "INSERT INTO idempotency_keys (tenant, user_id, key, receipt, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, user_id, key) \
     DO UPDATE SET receipt = excluded.receipt, created_at = excluded.created_at";

pub(crate) const SET_HEAD: &str = "UPDATE log_head SET last_id = $1 WHERE singleton = 1";
