//! Presence's storage rules (PROTOCOL §7), written once for every backend
//! over [`Tx`]: users' chosen status, viewing and typing, the sweep of dead
//! sessions and rooms left. Sessions, node heartbeats, users' rows, rooms
//! entered and announcements are written in batches ([`super::sessions`]);
//! the single-user forms here are batches of one.
//!
//! Invariants: a session is alive while its own expiry is ahead, or while
//! it is an open stream on a node whose heartbeat is ahead (so a crashed
//! node's streams end after the TTL); `announce` is a compare-and-set on
//! the stored `announced_status`, so exactly one caller wins a transition;
//! entering and leaving a room are compare-and-set on `present` the same
//! way, and a leave needs `updated_at` (moved by every session that
//! follows the room) to be older than the quiet time.

use switchyard_core::storage::Result;
use switchyard_core::storage::presence::{
    ActiveUser, TypingKey, UserKey, UserPresence, UserTouch, Viewing,
};

use super::sessions;
use super::sql;
use super::tx::{Param, Tx};

/// Creates or refreshes the user's row (a batch of one, see
/// [`sessions::touch_users`]).
pub async fn touch_user(
    tx: &mut dyn Tx,
    user: &UserKey,
    touch: &UserTouch,
    now: i64,
) -> Result<()> {
    sessions::touch_users(tx, &[(user, touch)], now).await
}

pub async fn set_status(
    tx: &mut dyn Tx,
    user: &UserKey,
    chosen: Option<&str>,
    message: Option<&str>,
    now: i64,
) -> Result<()> {
    tx.execute(
        &sql::SET_STATUS,
        &[
            Param::Text(&user.tenant),
            Param::Text(&user.user_id),
            Param::OptText(chosen),
            Param::OptText(message),
            Param::Int(now),
        ],
    )
    .await?;
    Ok(())
}

/// Sets what the user views; returns what they viewed before.
pub async fn set_viewing(
    tx: &mut dyn Tx,
    user: &UserKey,
    viewing: Option<(&str, &str)>,
    now: i64,
) -> Result<Option<Viewing>> {
    let key = [Param::Text(&user.tenant), Param::Text(&user.user_id)];
    let before = tx.query_opt(&sql::VIEWING, &key).await?;
    tx.execute(
        &sql::SET_VIEWING,
        &[
            key[0],
            key[1],
            Param::OptText(viewing.map(|v| v.0)),
            Param::OptText(viewing.map(|v| v.1)),
            Param::OptInt(viewing.map(|_| now)),
        ],
    )
    .await?;
    let Some(mut row) = before else {
        return Ok(None);
    };
    Ok(match (row.opt_text(0)?, row.opt_text(1)?) {
        (Some(resource_type), Some(resource_id)) => Some(Viewing {
            resource_type,
            resource_id,
            since: row.opt_int(2)?.unwrap_or(now),
        }),
        _ => None,
    })
}

pub async fn user_presence(
    tx: &mut dyn Tx,
    user: &UserKey,
    now: i64,
) -> Result<Option<UserPresence>> {
    Ok(sessions::users_presence(tx, &[user], now)
        .await?
        .remove(user))
}

fn user_keys(rows: Vec<super::tx::Row>) -> Result<Vec<UserKey>> {
    rows.into_iter()
        .map(|mut r| {
            Ok(UserKey {
                tenant: r.text(0)?,
                user_id: r.text(1)?,
            })
        })
        .collect()
}

/// Deletes dead sessions; returns the users that lost one, once each.
/// Deletes dead sessions, and their rooms (marked to be checked for
/// leaves); returns the users that lost one, once each.
pub async fn sweep_sessions(tx: &mut dyn Tx, now: i64) -> Result<Vec<UserKey>> {
    let mut ended = Vec::new();
    for mut row in tx.query(&sql::SWEEP_SESSIONS, &[Param::Int(now)]).await? {
        let user = UserKey {
            tenant: row.text(0)?,
            user_id: row.text(1)?,
        };
        ended.push((user, row.text(2)?));
    }
    let sessions: Vec<(&UserKey, &str)> = ended.iter().map(|(u, s)| (u, s.as_str())).collect();
    sessions::forget_rooms(tx, &sessions).await?;
    let mut users: Vec<UserKey> = ended.into_iter().map(|(user, _)| user).collect();
    users.sort_by(|a, b| (&a.tenant, &a.user_id).cmp(&(&b.tenant, &b.user_id)));
    users.dedup();
    Ok(users)
}

pub async fn stale_announcements(
    tx: &mut dyn Tx,
    now: i64,
    idle_before: i64,
) -> Result<Vec<UserKey>> {
    let rows = tx
        .query(
            &sql::STALE_ANNOUNCEMENTS,
            &[Param::Int(now), Param::Int(idle_before)],
        )
        .await?;
    user_keys(rows)
}

fn typing_key(key: &TypingKey) -> [Param<'_>; 5] {
    [
        Param::Text(&key.tenant),
        Param::Text(&key.user_id),
        Param::Text(&key.resource_type),
        Param::Text(&key.resource_id),
        Param::Text(&key.field),
    ]
}

/// Starts or refreshes typing; true when an event is due.
pub async fn typing_on(
    tx: &mut dyn Tx,
    key: &TypingKey,
    now: i64,
    expires_at: i64,
    coalesce_before: i64,
) -> Result<bool> {
    let [a, b, c, d, e] = typing_key(key);
    let row = tx
        .query_one(
            &sql::TYPING_ON,
            &[
                a,
                b,
                c,
                d,
                e,
                Param::Int(now),
                Param::Int(expires_at),
                Param::Int(coalesce_before),
            ],
        )
        .await?;
    Ok(row.int(0)? == now)
}

pub async fn typing_off(tx: &mut dyn Tx, key: &TypingKey) -> Result<bool> {
    Ok(tx.execute(&sql::TYPING_OFF, &typing_key(key)).await? > 0)
}

pub async fn expired_typing(tx: &mut dyn Tx, now: i64) -> Result<Vec<TypingKey>> {
    let rows = tx.query(&sql::EXPIRED_TYPING, &[Param::Int(now)]).await?;
    rows.into_iter()
        .map(|mut r| {
            Ok(TypingKey {
                tenant: r.text(0)?,
                user_id: r.text(1)?,
                resource_type: r.text(2)?,
                resource_id: r.text(3)?,
                field: r.text(4)?,
            })
        })
        .collect()
}

/// Online users viewing or typing on a resource, with their presence.
pub async fn resource_users(
    tx: &mut dyn Tx,
    tenant: &str,
    resource_type: &str,
    resource_id: &str,
    now: i64,
) -> Result<Vec<ActiveUser>> {
    let ids = tx
        .query(
            &sql::RESOURCE_USER_IDS,
            &[
                Param::Text(tenant),
                Param::Text(resource_type),
                Param::Text(resource_id),
                Param::Int(now),
                Param::Text(&format!("{resource_type}:{resource_id}")),
            ],
        )
        .await?;
    let mut active = Vec::new();
    for mut id in ids {
        let key = UserKey {
            tenant: tenant.to_string(),
            user_id: id.text(0)?,
        };
        let Some(presence) = user_presence(tx, &key, now).await? else {
            continue;
        };
        if !presence.online {
            continue;
        }
        let fields = tx
            .query(
                &sql::TYPING_FIELDS,
                &[
                    Param::Text(tenant),
                    Param::Text(&key.user_id),
                    Param::Text(resource_type),
                    Param::Text(resource_id),
                    Param::Int(now),
                ],
            )
            .await?;
        active.push(ActiveUser {
            user_id: key.user_id,
            presence,
            typing: fields
                .into_iter()
                .map(|mut f| f.text(0))
                .collect::<Result<_>>()?,
        });
    }
    Ok(active)
}

/// Rooms left long ago are forgotten after this.
const FORGET_ROOMS_AFTER_MS: i64 = 24 * 3600 * 1000;

/// Sets the channels a session follows (a batch of one, see
/// [`sessions::follow_all`]).
pub async fn follow(
    tx: &mut dyn Tx,
    user: &UserKey,
    session_id: &str,
    channels: &[String],
    now: i64,
) -> Result<Vec<String>> {
    let mut entered = sessions::follow_all(tx, &[(user, session_id, channels)], now).await?;
    Ok(entered.pop().unwrap_or_default())
}

pub async fn leave_rooms(
    tx: &mut dyn Tx,
    now: i64,
    quiet_since: i64,
) -> Result<Vec<(UserKey, String)>> {
    let rows = tx
        .query(
            &sql::LEAVE_ROOMS,
            &[Param::Int(now), Param::Int(quiet_since)],
        )
        .await?;
    let mut left = Vec::with_capacity(rows.len());
    for mut row in rows {
        let user = UserKey {
            tenant: row.text(0)?,
            user_id: row.text(1)?,
        };
        left.push((user, row.text(2)?));
    }
    tx.execute(
        &sql::CLEAR_LEAVING,
        &[Param::Int(now), Param::Int(quiet_since)],
    )
    .await?;
    tx.execute(
        &sql::FORGET_ROOM_USERS,
        &[Param::Int(now - FORGET_ROOMS_AFTER_MS)],
    )
    .await?;
    left.sort();
    Ok(left)
}
