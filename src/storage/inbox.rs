//! The inbox's storage rules (PROTOCOL §9, §9a), written once for every
//! backend over [`Tx`]: notifications and their read state, members,
//! conversations, messages and read positions.
//!
//! Invariants (see `switchyard_core::storage::inbox` for the contract):
//! locks are taken in one order everywhere (the user's inbox row or the
//! conversation row first, the log head after it), so no two transactions
//! wait on each other in opposite orders; every change a user's devices
//! must see appends its event in the same transaction, so an unread count
//! announced is the count at that event's place in the log.

use std::sync::Arc;

use switchyard_core::event::Event;
use switchyard_core::storage::inbox::{
    Announce, AnnounceMember, AnnounceMessage, ConversationRow, ConversationSummary, MemberOutcome,
    MemberRow, MessageChange, MessageOutcome, MessageRow, NotificationQuery, Opened, ReadOutcome,
};
use switchyard_core::storage::notification::NotificationRow;
use switchyard_core::storage::{AppendOutcome, AppendRequest, Result};

use super::log::append_batch;
use super::sql;
use super::tx::{Param, Row, Tx};

/// Appends `requests` (plain events) and returns the appended events.
async fn append(
    tx: &mut dyn Tx,
    requests: &[AppendRequest],
    now_ms: i64,
) -> Result<Vec<Arc<Event>>> {
    let mut events = Vec::new();
    for outcome in append_batch(tx, requests, now_ms).await? {
        if let AppendOutcome::Appended { events: new, .. } = outcome {
            events.extend(new);
        }
    }
    Ok(events)
}

fn notification(mut r: Row) -> Result<NotificationRow> {
    Ok(NotificationRow {
        tenant: r.text(0)?,
        user_id: r.text(1)?,
        id: r.text(2)?,
        kind: r.text(3)?,
        title: r.text(4)?,
        body: r.opt_text(5)?,
        data: r.text(6)?,
        created_at: r.int(7)?,
        read_at: r.opt_int(8)?,
        expires_at: r.int(9)?,
    })
}

pub async fn notifications(
    tx: &mut dyn Tx,
    tenant: &str,
    user_id: &str,
    query: &NotificationQuery,
    now_ms: i64,
) -> Result<Vec<NotificationRow>> {
    let rows = tx
        .query(
            &sql::NOTIFICATIONS,
            &[
                Param::Text(tenant),
                Param::Text(user_id),
                Param::Int(i64::from(query.unread_only)),
                Param::OptText(query.before.as_deref()),
                Param::Int(query.limit as i64),
                Param::Int(now_ms),
            ],
        )
        .await?;
    rows.into_iter().map(notification).collect()
}

pub async fn unread_notifications(
    tx: &mut dyn Tx,
    tenant: &str,
    user_id: &str,
    now_ms: i64,
) -> Result<u64> {
    let row = tx
        .query_one(
            &sql::UNREAD_NOTIFICATIONS,
            &[
                Param::Text(tenant),
                Param::Text(user_id),
                Param::Int(now_ms),
            ],
        )
        .await?;
    Ok(row.int(0)? as u64)
}

/// Marks one notification (or all) read; the unread count is taken under
/// the user's inbox lock and the log head's, so it is the count at the
/// announcing event's place in the log.
pub async fn read_notifications(
    tx: &mut dyn Tx,
    tenant: &str,
    user_id: &str,
    id: Option<&str>,
    now_ms: i64,
    announce: Announce,
) -> Result<ReadOutcome> {
    let user = [Param::Text(tenant), Param::Text(user_id)];
    tx.execute(
        &sql::LOCK_INBOX_USER,
        &[user[0], user[1], Param::Int(now_ms)],
    )
    .await?;
    tx.query_one(&sql::LOCK_HEAD, &[]).await?;
    let changed = match id {
        Some(id) => {
            let changed = tx
                .execute(
                    &sql::READ_NOTIFICATION,
                    &[user[0], user[1], Param::Text(id), Param::Int(now_ms)],
                )
                .await?;
            if changed == 0 {
                let Some(row) = tx
                    .query_opt(
                        &sql::NOTIFICATION_READ_AT,
                        &[user[0], user[1], Param::Text(id)],
                    )
                    .await?
                else {
                    return Ok(ReadOutcome::NotFound);
                };
                let unread_count = unread_notifications(tx, tenant, user_id, now_ms).await?;
                return Ok(ReadOutcome::Unchanged {
                    unread_count,
                    read_at: row.opt_int(0)?,
                });
            }
            changed
        }
        None => {
            tx.execute(
                &sql::READ_ALL_NOTIFICATIONS,
                &[user[0], user[1], Param::Int(now_ms)],
            )
            .await?
        }
    };
    let unread_count = unread_notifications(tx, tenant, user_id, now_ms).await?;
    if changed == 0 {
        return Ok(ReadOutcome::Unchanged {
            unread_count,
            read_at: None,
        });
    }
    let events = append(tx, &[announce(unread_count, now_ms)], now_ms).await?;
    Ok(ReadOutcome::Read {
        unread_count,
        read_at: now_ms,
        events,
    })
}

fn member(mut r: Row) -> Result<MemberRow> {
    Ok(MemberRow {
        channel: r.text(0)?,
        user_id: r.text(1)?,
        since_id: r.int(2)? as u64,
        added_at: r.int(3)?,
        read_seq: r.int(4)? as u64,
        read_message_id: r.opt_text(5)?,
        read_at: r.opt_int(6)?,
    })
}

fn members_of(rows: Vec<Row>) -> Result<Vec<MemberRow>> {
    rows.into_iter().map(member).collect()
}

/// Inserts the members that are not members yet, appends their events, and
/// records each one's `since_id`. Returns the ones added and the events.
async fn insert_members(
    tx: &mut dyn Tx,
    tenant: &str,
    members: Vec<MemberRow>,
    announce: &AnnounceMember,
    now_ms: i64,
) -> Result<(Vec<MemberRow>, Vec<Arc<Event>>)> {
    let mut added = Vec::new();
    for m in members {
        let inserted = tx
            .execute(
                &sql::INSERT_MEMBER,
                &[
                    Param::Text(tenant),
                    Param::Text(&m.channel),
                    Param::Text(&m.user_id),
                    Param::Int(0),
                    Param::Int(m.added_at),
                ],
            )
            .await?;
        if inserted == 1 {
            added.push(m);
        }
    }
    let requests: Vec<AppendRequest> = added.iter().map(announce).collect();
    let events = append(tx, &requests, now_ms).await?;
    for (m, event) in added.iter_mut().zip(&events) {
        m.since_id = event.id;
        tx.execute(
            &sql::SET_MEMBER_SINCE,
            &[
                Param::Text(tenant),
                Param::Text(&m.channel),
                Param::Text(&m.user_id),
                Param::Int(event.id as i64),
            ],
        )
        .await?;
    }
    Ok((added, events))
}

pub async fn add_member(
    tx: &mut dyn Tx,
    tenant: &str,
    wanted: MemberRow,
    announce: AnnounceMember,
) -> Result<MemberOutcome> {
    let now_ms = wanted.added_at;
    let key = (wanted.channel.clone(), wanted.user_id.clone());
    let (mut added, events) = insert_members(tx, tenant, vec![wanted], &announce, now_ms).await?;
    match added.pop() {
        Some(member) => Ok(MemberOutcome::Changed { member, events }),
        None => {
            let row = tx
                .query_opt(
                    &sql::MEMBER,
                    &[
                        Param::Text(tenant),
                        Param::Text(&key.0),
                        Param::Text(&key.1),
                    ],
                )
                .await?;
            Ok(MemberOutcome::Unchanged(row.map(member).transpose()?))
        }
    }
}

pub async fn remove_member(
    tx: &mut dyn Tx,
    tenant: &str,
    channel: &str,
    user_id: &str,
    now_ms: i64,
    announce: AnnounceMember,
) -> Result<MemberOutcome> {
    let Some(row) = tx
        .query_opt(
            &sql::DELETE_MEMBER,
            &[
                Param::Text(tenant),
                Param::Text(channel),
                Param::Text(user_id),
            ],
        )
        .await?
    else {
        return Ok(MemberOutcome::Unchanged(None));
    };
    let removed = member(row)?;
    let events = append(tx, &[announce(&removed)], now_ms).await?;
    Ok(MemberOutcome::Changed {
        member: removed,
        events,
    })
}

pub async fn members(tx: &mut dyn Tx, tenant: &str, channel: &str) -> Result<Vec<MemberRow>> {
    members_of(
        tx.query(&sql::MEMBERS, &[Param::Text(tenant), Param::Text(channel)])
            .await?,
    )
}

pub async fn memberships(tx: &mut dyn Tx, tenant: &str, user_id: &str) -> Result<Vec<MemberRow>> {
    members_of(
        tx.query(
            &sql::MEMBERSHIPS,
            &[Param::Text(tenant), Param::Text(user_id)],
        )
        .await?,
    )
}

fn conversation(mut r: Row) -> Result<ConversationRow> {
    Ok(ConversationRow {
        tenant: r.text(0)?,
        id: r.text(1)?,
        kind: r.text(2)?,
        title: r.opt_text(3)?,
        created_by: r.text(4)?,
        created_at: r.int(5)?,
        last_seq: r.int(6)? as u64,
        last_at: r.int(7)?,
    })
}

/// The channel of a conversation.
pub fn conversation_channel(id: &str) -> String {
    format!("conversation:{id}")
}

pub async fn open_conversation(
    tx: &mut dyn Tx,
    wanted: ConversationRow,
    members: Vec<String>,
    announce: AnnounceMember,
) -> Result<Opened> {
    let c = &wanted;
    let created = tx
        .execute(
            &sql::INSERT_CONVERSATION,
            &[
                Param::Text(&c.tenant),
                Param::Text(&c.id),
                Param::Text(&c.kind),
                Param::OptText(c.title.as_deref()),
                Param::Text(&c.created_by),
                Param::Int(c.created_at),
            ],
        )
        .await?
        == 1;
    if !created {
        let existing = find_conversation(tx, &c.tenant, &c.id, false)
            .await?
            .expect("it exists: its insert conflicted");
        return Ok(Opened {
            conversation: existing,
            created: false,
            events: Vec::new(),
        });
    }
    let channel = conversation_channel(&c.id);
    let rows = members
        .into_iter()
        .map(|user_id| MemberRow {
            channel: channel.clone(),
            user_id,
            since_id: 0,
            added_at: c.created_at,
            read_seq: 0,
            read_message_id: None,
            read_at: None,
        })
        .collect();
    let (_, events) = insert_members(tx, &c.tenant, rows, &announce, c.created_at).await?;
    Ok(Opened {
        conversation: wanted,
        created: true,
        events,
    })
}

pub async fn find_conversation(
    tx: &mut dyn Tx,
    tenant: &str,
    id: &str,
    lock: bool,
) -> Result<Option<ConversationRow>> {
    let sql = if lock {
        &sql::LOCK_CONVERSATION
    } else {
        &sql::CONVERSATION
    };
    let row = tx
        .query_opt(sql, &[Param::Text(tenant), Param::Text(id)])
        .await?;
    row.map(conversation).transpose()
}

fn message(mut r: Row) -> Result<MessageRow> {
    Ok(MessageRow {
        conversation_id: r.text(0)?,
        id: r.text(1)?,
        seq: r.int(2)? as u64,
        client_message_id: r.opt_text(3)?,
        sender_id: r.text(4)?,
        sender_name: r.opt_text(5)?,
        sender_avatar: r.opt_text(6)?,
        content: r.text(7)?,
        created_at: r.int(8)?,
        edited_at: r.opt_int(9)?,
        deleted_at: r.opt_int(10)?,
    })
}

async fn unread_in(
    tx: &mut dyn Tx,
    tenant: &str,
    conversation_id: &str,
    read_seq: u64,
    user_id: &str,
) -> Result<u64> {
    let row = tx
        .query_one(
            &sql::UNREAD_MESSAGES,
            &[
                Param::Text(tenant),
                Param::Text(conversation_id),
                Param::Int(read_seq as i64),
                Param::Text(user_id),
            ],
        )
        .await?;
    Ok(row.int(0)? as u64)
}

pub async fn conversations(
    tx: &mut dyn Tx,
    tenant: &str,
    user_id: &str,
    before_ms: Option<i64>,
    limit: usize,
) -> Result<Vec<ConversationSummary>> {
    let rows = tx
        .query(
            &sql::CONVERSATIONS_OF,
            &[
                Param::Text(tenant),
                Param::Text(user_id),
                Param::OptInt(before_ms),
                Param::Int(limit as i64),
            ],
        )
        .await?;
    let mut summaries = Vec::with_capacity(rows.len());
    for row in rows {
        summaries.push(summarize(tx, tenant, user_id, conversation(row)?).await?);
    }
    Ok(summaries)
}

/// A conversation as `user_id` lists it: its last message, the user's
/// unread count and every member's read position.
pub async fn summarize(
    tx: &mut dyn Tx,
    tenant: &str,
    user_id: &str,
    c: ConversationRow,
) -> Result<ConversationSummary> {
    let last_message = if c.last_seq > 0 {
        tx.query_opt(
            &sql::MESSAGE_AT,
            &[
                Param::Text(tenant),
                Param::Text(&c.id),
                Param::Int(c.last_seq as i64),
            ],
        )
        .await?
        .map(message)
        .transpose()?
    } else {
        None
    };
    let members = members(tx, tenant, &conversation_channel(&c.id)).await?;
    let read_seq = members
        .iter()
        .find(|m| m.user_id == user_id)
        .map_or(0, |m| m.read_seq);
    let unread_count = unread_in(tx, tenant, &c.id, read_seq, user_id).await?;
    Ok(ConversationSummary {
        conversation: c,
        last_message,
        unread_count,
        members,
    })
}

async fn find_message(
    tx: &mut dyn Tx,
    tenant: &str,
    conversation_id: &str,
    id: &str,
) -> Result<Option<MessageRow>> {
    let row = tx
        .query_opt(
            &sql::MESSAGE,
            &[
                Param::Text(tenant),
                Param::Text(conversation_id),
                Param::Text(id),
            ],
        )
        .await?;
    row.map(message).transpose()
}

pub async fn messages(
    tx: &mut dyn Tx,
    tenant: &str,
    conversation_id: &str,
    before: Option<&str>,
    limit: usize,
) -> Result<Vec<MessageRow>> {
    let before_seq = match before {
        Some(id) => match find_message(tx, tenant, conversation_id, id).await? {
            Some(m) => m.seq,
            None => return Ok(Vec::new()),
        },
        None => i64::MAX as u64,
    };
    let rows = tx
        .query(
            &sql::MESSAGES_BEFORE,
            &[
                Param::Text(tenant),
                Param::Text(conversation_id),
                Param::Int(before_seq as i64),
                Param::Int(limit as i64),
            ],
        )
        .await?;
    rows.into_iter().map(message).collect()
}

pub async fn send_message(
    tx: &mut dyn Tx,
    tenant: &str,
    mut m: MessageRow,
    announce: AnnounceMessage,
) -> Result<MessageOutcome> {
    if find_conversation(tx, tenant, &m.conversation_id, true)
        .await?
        .is_none()
    {
        return Ok(MessageOutcome::NotFound);
    }
    if let Some(client_id) = m.client_message_id.as_deref()
        && let Some(row) = tx
            .query_opt(
                &sql::CLIENT_MESSAGE,
                &[
                    Param::Text(tenant),
                    Param::Text(&m.conversation_id),
                    Param::Text(&m.sender_id),
                    Param::Text(client_id),
                ],
            )
            .await?
    {
        return Ok(MessageOutcome::Replayed(message(row)?));
    }
    let events = append(tx, &[announce(&m)], m.created_at).await?;
    m.seq = events.first().map_or(0, |e| e.id);
    tx.execute(
        &sql::INSERT_MESSAGE,
        &[
            Param::Text(tenant),
            Param::Text(&m.conversation_id),
            Param::Text(&m.id),
            Param::Int(m.seq as i64),
            Param::OptText(m.client_message_id.as_deref()),
            Param::Text(&m.sender_id),
            Param::OptText(m.sender_name.as_deref()),
            Param::OptText(m.sender_avatar.as_deref()),
            Param::Text(&m.content),
            Param::Int(m.created_at),
            Param::OptInt(None),
            Param::OptInt(None),
        ],
    )
    .await?;
    tx.execute(
        &sql::SET_CONVERSATION_LAST,
        &[
            Param::Text(tenant),
            Param::Text(&m.conversation_id),
            Param::Int(m.seq as i64),
            Param::Int(m.created_at),
        ],
    )
    .await?;
    Ok(MessageOutcome::Stored { message: m, events })
}

/// Edits (`Some`) or deletes (`None`) a message of its sender.
pub async fn change_message(
    tx: &mut dyn Tx,
    tenant: &str,
    change: MessageChange,
    announce: AnnounceMessage,
) -> Result<MessageOutcome> {
    let MessageChange {
        conversation_id,
        message_id,
        sender_id,
        content,
        at_ms: now_ms,
    } = change;
    let (conversation_id, message_id) = (conversation_id.as_str(), message_id.as_str());
    if find_conversation(tx, tenant, conversation_id, true)
        .await?
        .is_none()
    {
        return Ok(MessageOutcome::NotFound);
    }
    let Some(mut m) = find_message(tx, tenant, conversation_id, message_id).await? else {
        return Ok(MessageOutcome::NotFound);
    };
    if m.sender_id != sender_id.as_str() {
        return Ok(MessageOutcome::NotSender);
    }
    if m.deleted_at.is_some() {
        // Deleting again is a retry: the deleted message, nothing appended.
        // A deleted message cannot be edited.
        return Ok(match content {
            None => MessageOutcome::Replayed(m),
            Some(_) => MessageOutcome::NotFound,
        });
    }
    let key = [
        Param::Text(tenant),
        Param::Text(conversation_id),
        Param::Text(message_id),
    ];
    match content {
        Some(content) => {
            tx.execute(
                &sql::EDIT_MESSAGE,
                &[
                    key[0],
                    key[1],
                    key[2],
                    Param::Text(&content),
                    Param::Int(now_ms),
                ],
            )
            .await?;
            m.content = content;
            m.edited_at = Some(now_ms);
        }
        None => {
            tx.execute(
                &sql::DELETE_MESSAGE,
                &[key[0], key[1], key[2], Param::Int(now_ms)],
            )
            .await?;
            m.content = String::new();
            m.deleted_at = Some(now_ms);
        }
    }
    let events = append(tx, &[announce(&m)], now_ms).await?;
    Ok(MessageOutcome::Stored { message: m, events })
}

/// Moves a member's read position forward to `message_id`.
pub async fn read_conversation(
    tx: &mut dyn Tx,
    tenant: &str,
    conversation_id: &str,
    user_id: &str,
    message_id: &str,
    now_ms: i64,
    announce: Announce,
) -> Result<ReadOutcome> {
    if find_conversation(tx, tenant, conversation_id, true)
        .await?
        .is_none()
    {
        return Ok(ReadOutcome::NotFound);
    }
    let Some(m) = find_message(tx, tenant, conversation_id, message_id).await? else {
        return Ok(ReadOutcome::NotFound);
    };
    let channel = conversation_channel(conversation_id);
    let moved = tx
        .execute(
            &sql::READ_POSITION,
            &[
                Param::Text(tenant),
                Param::Text(&channel),
                Param::Text(user_id),
                Param::Int(m.seq as i64),
                Param::Int(now_ms),
                Param::Text(&m.id),
            ],
        )
        .await?;
    let position = tx
        .query_opt(
            &sql::MEMBER,
            &[
                Param::Text(tenant),
                Param::Text(&channel),
                Param::Text(user_id),
            ],
        )
        .await?
        .map(member)
        .transpose()?;
    let Some(position) = position else {
        return Ok(ReadOutcome::NotFound);
    };
    let unread_count = unread_in(tx, tenant, conversation_id, position.read_seq, user_id).await?;
    if moved == 0 {
        return Ok(ReadOutcome::Unchanged {
            unread_count,
            read_at: position.read_at,
        });
    }
    let events = append(tx, &[announce(unread_count, now_ms)], now_ms).await?;
    Ok(ReadOutcome::Read {
        unread_count,
        read_at: now_ms,
        events,
    })
}
