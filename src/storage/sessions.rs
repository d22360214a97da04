//! Presence's storage rules for many users at once: sessions, users' rows,
//! rooms entered, presence read and status announced, each one statement
//! for the whole batch whatever its size (rows travel as arrays, see
//! [`super::sql`]). A reconnect storm is a few statements per batch, not a
//! few per stream; a single write is a batch of one.
//!
//! Invariants: the result is what running the writes one by one, in order,
//! would leave: a key written twice keeps its last values (a statement
//! gets each key once); a room two sessions of a user enter is entered by
//! the first; presence is read after every write. Each statement takes its
//! rows in key order, so batches of nodes sharing users seldom deadlock
//! (and the store runs one that did again).

use std::collections::{HashMap, HashSet};

use switchyard_core::storage::Result;
use switchyard_core::storage::presence::{
    SessionWrite, SessionWritten, StatusChange, UserKey, UserPresence, UserTouch, Viewing,
};

use super::sql;
use super::tx::{Column, Param, Row, Tx};

/// Nodes whose heartbeat lapsed this long ago are forgotten.
const FORGET_NODES_AFTER_MS: i64 = 24 * 3600 * 1000;

pub async fn heartbeat_node(tx: &mut dyn Tx, node_id: &str, expires_at: i64) -> Result<()> {
    tx.execute(
        &sql::HEARTBEAT_NODE,
        &[Param::Text(node_id), Param::Int(expires_at)],
    )
    .await?;
    tx.execute(
        &sql::FORGET_NODES,
        &[Param::Int(expires_at - FORGET_NODES_AFTER_MS)],
    )
    .await?;
    Ok(())
}

/// Records a batch of sessions (see `PresenceStore::write_sessions`).
pub async fn write_sessions(
    tx: &mut dyn Tx,
    node_id: &str,
    heartbeat: Option<i64>,
    writes: &[SessionWrite],
    now: i64,
) -> Result<Vec<SessionWritten>> {
    if let Some(expires_at) = heartbeat {
        heartbeat_node(tx, node_id, expires_at).await?;
    }
    put_sessions(tx, node_id, writes).await?;
    let touches: Vec<(&UserKey, &UserTouch)> = writes
        .iter()
        .filter_map(|w| Some((&w.user, w.touch.as_ref()?)))
        .collect();
    touch_users(tx, &touches, now).await?;
    let follows: Vec<Following<'_>> = writes
        .iter()
        .filter_map(|w| Some((&w.user, w.session_id.as_str(), w.follows.as_deref()?)))
        .collect();
    let mut entered = follow_all(tx, &follows, now).await?.into_iter();
    let users: Vec<&UserKey> = touches.iter().map(|(user, _)| *user).collect();
    let presence = users_presence(tx, &users, now).await?;
    Ok(writes
        .iter()
        .map(|w| SessionWritten {
            entered: match w.follows {
                Some(_) => entered.next().unwrap_or_default(),
                None => Vec::new(),
            },
            presence: w
                .touch
                .as_ref()
                .and_then(|_| presence.get(&w.user).cloned()),
        })
        .collect())
}

/// The last write of each key, in the order keys were first written.
fn last_of_each<'a, K: Eq + std::hash::Hash, T>(
    items: impl Iterator<Item = (K, &'a T)>,
) -> Vec<&'a T> {
    let mut at: HashMap<K, usize> = HashMap::new();
    let mut last: Vec<&T> = Vec::new();
    for (key, item) in items {
        match at.get(&key) {
            Some(&i) => last[i] = item,
            None => {
                at.insert(key, last.len());
                last.push(item);
            }
        }
    }
    last
}

async fn put_sessions(tx: &mut dyn Tx, node_id: &str, writes: &[SessionWrite]) -> Result<()> {
    let mut writes = last_of_each(writes.iter().map(|w| ((&w.user, &w.session_id), w)));
    writes.sort_by_key(|w| (&w.user, &w.session_id));
    let n = writes.len();
    tx.insert_rows(
        &sql::PUT_SESSIONS,
        &[
            Column::Texts(writes.iter().map(|w| w.user.tenant.as_str()).collect()),
            Column::Texts(writes.iter().map(|w| w.user.user_id.as_str()).collect()),
            Column::Texts(writes.iter().map(|w| w.session_id.as_str()).collect()),
            Column::Texts(vec![node_id; n]),
            Column::Ints(writes.iter().map(|w| i64::from(w.open)).collect()),
            Column::Ints(writes.iter().map(|w| w.expires_at).collect()),
        ],
    )
    .await
}

/// Creates or refreshes users' rows: each value a touch gives replaces the
/// stored one (a later touch of the same user wins where it gives one).
pub async fn touch_users(
    tx: &mut dyn Tx,
    touches: &[(&UserKey, &UserTouch)],
    now: i64,
) -> Result<()> {
    let mut merged: Vec<(&UserKey, UserTouch)> = Vec::new();
    let mut at: HashMap<&UserKey, usize> = HashMap::new();
    for (user, t) in touches {
        let Some(&i) = at.get(user) else {
            at.insert(user, merged.len());
            merged.push((user, (*t).clone()));
            continue;
        };
        let m = &mut merged[i].1;
        m.name = t.name.clone().or(m.name.take());
        m.avatar = t.avatar.clone().or(m.avatar.take());
        m.channels = t.channels.clone().or(m.channels.take());
        m.activity_at = t.activity_at.or(m.activity_at);
    }
    merged.sort_by(|a, b| a.0.cmp(b.0));
    let n = merged.len();
    let tenants = || Column::Texts(merged.iter().map(|(u, _)| u.tenant.as_str()).collect());
    let users = || Column::Texts(merged.iter().map(|(u, _)| u.user_id.as_str()).collect());
    tx.insert_rows(
        &sql::ADD_USERS,
        &[tenants(), users(), Column::Ints(vec![now; n])],
    )
    .await?;
    let texts = |f: fn(&UserTouch) -> Option<&str>| {
        Column::OptTexts(merged.iter().map(|(_, t)| f(t)).collect())
    };
    tx.insert_rows(
        &sql::TOUCH_USERS,
        &[
            tenants(),
            users(),
            texts(|t| t.name.as_deref()),
            texts(|t| t.avatar.as_deref()),
            texts(|t| t.channels.as_deref()),
            Column::OptInts(merged.iter().map(|(_, t)| t.activity_at).collect()),
        ],
    )
    .await
}

/// A session and the channels it follows from now on.
pub type Following<'a> = (&'a UserKey, &'a str, &'a [String]);

/// Sets the channels each session follows (replacing what it followed);
/// returns, per session, the rooms its user entered by it.
pub async fn follow_all(
    tx: &mut dyn Tx,
    follows: &[Following<'_>],
    now: i64,
) -> Result<Vec<Vec<String>>> {
    if follows.is_empty() {
        return Ok(Vec::new());
    }
    let sessions = last_of_each(follows.iter().map(|f| ((f.0, f.1), f)));
    let ids: Vec<(&UserKey, &str)> = sessions.iter().map(|f| (f.0, f.1)).collect();
    forget_rooms(tx, &ids).await?;
    // Each (session, channel) once, and each (user, channel) once.
    let rows: Vec<(&UserKey, &str, &str)> = sessions
        .iter()
        .flat_map(|(user, session, channels)| {
            channels.iter().map(move |c| (*user, *session, c.as_str()))
        })
        .collect();
    let mut rows = last_of_each(rows.iter().map(|r| ((r.0, r.1, r.2), r)));
    rows.sort_by_key(|r| (&r.0.tenant, r.2, &r.0.user_id, r.1));
    tx.insert_rows(
        &sql::INSERT_ROOMS,
        &[
            Column::Texts(rows.iter().map(|r| r.0.tenant.as_str()).collect()),
            Column::Texts(rows.iter().map(|r| r.2).collect()),
            Column::Texts(rows.iter().map(|r| r.0.user_id.as_str()).collect()),
            Column::Texts(rows.iter().map(|r| r.1).collect()),
        ],
    )
    .await?;
    let rooms = last_of_each(rows.iter().map(|r| ((r.0, r.2), *r)));
    let columns = [
        Column::Texts(rooms.iter().map(|r| r.0.tenant.as_str()).collect()),
        Column::Texts(rooms.iter().map(|r| r.0.user_id.as_str()).collect()),
        Column::Texts(rooms.iter().map(|r| r.2).collect()),
        Column::Ints(vec![now; rooms.len()]),
    ];
    let mut due: Vec<(UserKey, String)> = Vec::new();
    for statement in [&sql::ENTER_ROOMS_AGAIN, &sql::ENTER_NEW_ROOMS] {
        for mut row in tx.query_rows(statement, &columns).await? {
            let user = UserKey {
                tenant: row.text(0)?,
                user_id: row.text(1)?,
            };
            due.push((user, row.text(2)?));
        }
    }
    tx.insert_rows(&sql::TOUCH_ROOMS, &columns).await?;
    // A room is entered by the first session of its user that follows it.
    Ok(follows
        .iter()
        .map(|(user, _, channels)| {
            let mut entered = Vec::new();
            due.retain(|(u, c)| {
                let now_entered = u == *user && channels.contains(c);
                if now_entered {
                    entered.push(c.clone());
                }
                !now_entered
            });
            entered
        })
        .collect())
}

/// These sessions stop following their channels (they follow others now,
/// or ended): their rooms go, each marked to be checked for a leave.
pub async fn forget_rooms(tx: &mut dyn Tx, sessions: &[(&UserKey, &str)]) -> Result<()> {
    let mut sessions = last_of_each(sessions.iter().map(|s| (*s, s)));
    sessions.sort();
    let columns = [
        Column::Texts(sessions.iter().map(|s| s.0.tenant.as_str()).collect()),
        Column::Texts(sessions.iter().map(|s| s.0.user_id.as_str()).collect()),
        Column::Texts(sessions.iter().map(|s| s.1).collect()),
    ];
    tx.insert_rows(&sql::MARK_LEAVING, &columns).await?;
    tx.insert_rows(&sql::FORGET_SESSION_ROOMS, &columns).await
}

/// Users' presence as of `now`; users never seen are missing.
pub async fn users_presence(
    tx: &mut dyn Tx,
    users: &[&UserKey],
    now: i64,
) -> Result<HashMap<UserKey, UserPresence>> {
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    let users = last_of_each(users.iter().map(|u| (*u, u)));
    let columns = [
        Column::Texts(users.iter().map(|u| u.tenant.as_str()).collect()),
        Column::Texts(users.iter().map(|u| u.user_id.as_str()).collect()),
        Column::Ints(vec![now; users.len()]),
    ];
    let rows = tx.query_rows(&sql::USERS_PRESENCE, &columns).await?;
    rows.into_iter().map(user_presence).collect()
}

/// A row of `USERS_PRESENCE`.
fn user_presence(mut r: Row) -> Result<(UserKey, UserPresence)> {
    let user = UserKey {
        tenant: r.text(0)?,
        user_id: r.text(1)?,
    };
    let updated_at = r.int(9)?;
    let viewing = match (r.opt_text(10)?, r.opt_text(11)?) {
        (Some(resource_type), Some(resource_id)) => Some(Viewing {
            resource_type,
            resource_id,
            since: r.opt_int(12)?.unwrap_or(updated_at),
        }),
        _ => None,
    };
    let presence = UserPresence {
        name: r.opt_text(2)?,
        avatar: r.opt_text(3)?,
        chosen_status: r.opt_text(4)?,
        status_message: r.opt_text(5)?,
        announced_status: r.text(6)?,
        channels: r.text(7)?,
        last_activity: r.int(8)?,
        updated_at,
        viewing,
        online: r.bool(13)?,
    };
    Ok((user, presence))
}

/// Compare-and-set of each user's `announced_status`; true for each change
/// this caller won (a user changed twice wins at most the first).
pub async fn announce_all(
    tx: &mut dyn Tx,
    changes: &[StatusChange],
    now: i64,
) -> Result<Vec<bool>> {
    let mut first: HashMap<&UserKey, usize> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        first.entry(&c.user).or_insert(i);
    }
    let mut once: Vec<&StatusChange> = changes
        .iter()
        .enumerate()
        .filter(|(i, c)| first[&c.user] == *i)
        .map(|(_, c)| c)
        .collect();
    once.sort_by_key(|c| &c.user);
    let won: HashSet<UserKey> = if once.is_empty() {
        HashSet::new()
    } else {
        let column =
            |f: fn(&StatusChange) -> &str| Column::Texts(once.iter().map(|c| f(c)).collect());
        let columns = [
            column(|c| &c.user.tenant),
            column(|c| &c.user.user_id),
            column(|c| &c.from),
            column(|c| &c.to),
            Column::Ints(vec![now; once.len()]),
        ];
        let rows = tx.query_rows(&sql::ANNOUNCE, &columns).await?;
        rows.into_iter()
            .map(|mut r| {
                Ok(UserKey {
                    tenant: r.text(0)?,
                    user_id: r.text(1)?,
                })
            })
            .collect::<Result<_>>()?
    };
    Ok(changes
        .iter()
        .enumerate()
        .map(|(i, c)| first[&c.user] == i && won.contains(&c.user))
        .collect())
}
