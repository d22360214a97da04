//! Storage for presence, viewing and typing (PROTOCOL §7), shared by every
//! node of a cluster.
//!
//! A user is online while one of their sessions is alive: an open stream on
//! a node that keeps renewing its heartbeat, or a recent poll or recently
//! closed stream whose `expires_at` has not passed. `announced_status` is
//! what was last published about the user; compare-and-set on it makes
//! exactly one node announce each transition.

use async_trait::async_trait;

use super::Result;

/// Who a presence row is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserKey {
    pub tenant: String,
    pub user_id: String,
}

/// A user's stored presence, with whether a live session exists now.
#[derive(Debug, Clone)]
pub struct UserPresence {
    pub name: Option<String>,
    pub avatar: Option<String>,
    /// `busy` or `away` when the user chose one; `None` otherwise.
    pub chosen_status: Option<String>,
    pub status_message: Option<String>,
    pub announced_status: String,
    /// JSON array of the channels the user last read.
    pub channels: String,
    pub last_activity: i64,
    pub updated_at: i64,
    pub viewing: Option<Viewing>,
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewing {
    pub resource_type: String,
    pub resource_id: String,
    pub since: i64,
}

/// One user's typing state on one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypingKey {
    pub tenant: String,
    pub user_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub field: String,
}

/// A user active on a resource (viewing it or typing in it).
#[derive(Debug, Clone)]
pub struct ActiveUser {
    pub user_id: String,
    pub presence: UserPresence,
    /// Fields being typed in on the resource.
    pub typing: Vec<String>,
}

/// A session to record: an open stream, or a poll.
#[derive(Debug, Clone)]
pub struct Session<'a> {
    pub user: &'a UserKey,
    pub session_id: &'a str,
    pub node_id: &'a str,
    pub open: bool,
    pub expires_at: i64,
}

/// What presence needs from storage; implemented for each backend in
/// `sqlite/presence.rs` and `postgres/presence.rs`.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// Keeps this node's open streams alive until `expires_at`.
    async fn heartbeat_node(&self, node_id: &str, expires_at: i64) -> Result<()>;

    /// Records or refreshes a session.
    async fn put_session(&self, session: Session<'_>) -> Result<()>;

    /// Creates or refreshes the user's row: name, avatar, the channels they
    /// read, and (for client actions) their last activity.
    async fn touch_user(
        &self,
        user: &UserKey,
        name: Option<&str>,
        avatar: Option<&str>,
        channels: Option<&str>,
        activity_at: Option<i64>,
        now: i64,
    ) -> Result<()>;

    /// Sets (or with `None` clears) the chosen status and message.
    async fn set_status(
        &self,
        user: &UserKey,
        chosen: Option<&str>,
        message: Option<&str>,
        now: i64,
    ) -> Result<()>;

    /// Sets what the user views; returns what they viewed before.
    async fn set_viewing(
        &self,
        user: &UserKey,
        viewing: Option<(&str, &str)>,
        now: i64,
    ) -> Result<Option<Viewing>>;

    /// The user's presence as of `now`, or `None` if never seen.
    async fn user_presence(&self, user: &UserKey, now: i64) -> Result<Option<UserPresence>>;

    /// Compare-and-set of `announced_status`; true when this caller won.
    async fn announce(&self, user: &UserKey, from: &str, to: &str, now: i64) -> Result<bool>;

    /// Deletes dead sessions; returns the users that lost one.
    async fn sweep_sessions(&self, now: i64) -> Result<Vec<UserKey>>;

    /// Users whose announced status may be stale: announced online but idle
    /// since before `idle_before`, or announced present with no live session.
    async fn stale_announcements(&self, now: i64, idle_before: i64) -> Result<Vec<UserKey>>;

    /// Starts or refreshes typing until `expires_at`; true when an event is due
    /// (not typing before, or the last event is older than `coalesce_before`).
    async fn typing_on(
        &self,
        key: &TypingKey,
        now: i64,
        expires_at: i64,
        coalesce_before: i64,
    ) -> Result<bool>;

    /// Ends typing; true when the user was typing.
    async fn typing_off(&self, key: &TypingKey) -> Result<bool>;

    /// Removes and returns typing states past `now`.
    async fn expired_typing(&self, now: i64) -> Result<Vec<TypingKey>>;

    /// Users viewing or typing on a resource, with their presence.
    async fn resource_users(
        &self,
        tenant: &str,
        resource_type: &str,
        resource_id: &str,
        now: i64,
    ) -> Result<Vec<ActiveUser>>;
}

/// A session is alive while its own expiry is ahead, or while it is an open
/// stream on a node whose heartbeat is ahead. `$N` is `now`'s placeholder.
macro_rules! live_session {
    ($s:literal, $now:literal) => {
        concat!(
            "(",
            $s,
            ".expires_at > ",
            $now,
            " OR (",
            $s,
            ".open AND EXISTS (SELECT 1 FROM presence_nodes n \
             WHERE n.node_id = ",
            $s,
            ".node_id AND n.expires_at > ",
            $now,
            ")))"
        )
    };
}

/// Implements [`PresenceStore`] for a backend whose `pool` field is a sqlx
/// pool. Both backends take the same SQL: `$N` placeholders, `ON CONFLICT`
/// upserts and `RETURNING` mean the same on SQLite and Postgres.
macro_rules! impl_presence_store {
    ($storage:ty) => {
        #[async_trait::async_trait]
        impl $crate::storage::presence::PresenceStore for $storage {
            async fn heartbeat_node(&self, node_id: &str, expires_at: i64) -> $crate::storage::Result<()> {
                sqlx::query(
                    "INSERT INTO presence_nodes (node_id, expires_at) VALUES ($1, $2) \
                     ON CONFLICT (node_id) DO UPDATE SET expires_at = excluded.expires_at",
                )
                .bind(node_id)
                .bind(expires_at)
                .execute(&self.pool)
                .await?;
                sqlx::query("DELETE FROM presence_nodes WHERE expires_at < $1")
                    .bind(expires_at - 24 * 3600 * 1000)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn put_session(&self, s: $crate::storage::presence::Session<'_>) -> $crate::storage::Result<()> {
                sqlx::query(
                    "INSERT INTO presence_sessions (tenant, user_id, session_id, node_id, open, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, user_id, session_id) DO UPDATE \
                     SET node_id = excluded.node_id, open = excluded.open, expires_at = excluded.expires_at",
                )
                .bind(&s.user.tenant)
                .bind(&s.user.user_id)
                .bind(s.session_id)
                .bind(s.node_id)
                .bind(s.open)
                .bind(s.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn touch_user(
                &self,
                user: &$crate::storage::presence::UserKey,
                name: Option<&str>,
                avatar: Option<&str>,
                channels: Option<&str>,
                activity_at: Option<i64>,
                now: i64,
            ) -> $crate::storage::Result<()> {
                sqlx::query(
                    "INSERT INTO presence_users (tenant, user_id, name, avatar, channels, last_activity, updated_at) \
                     VALUES ($1, $2, $3, $4, COALESCE($5, '[]'), COALESCE($6, $7), $7) \
                     ON CONFLICT (tenant, user_id) DO UPDATE SET \
                     name = COALESCE(excluded.name, presence_users.name), \
                     avatar = COALESCE(excluded.avatar, presence_users.avatar), \
                     channels = COALESCE($5, presence_users.channels), \
                     last_activity = COALESCE($6, presence_users.last_activity)",
                )
                .bind(&user.tenant)
                .bind(&user.user_id)
                .bind(name)
                .bind(avatar)
                .bind(channels)
                .bind(activity_at)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn set_status(
                &self,
                user: &$crate::storage::presence::UserKey,
                chosen: Option<&str>,
                message: Option<&str>,
                now: i64,
            ) -> $crate::storage::Result<()> {
                sqlx::query(
                    "UPDATE presence_users SET chosen_status = $3, status_message = $4, updated_at = $5 \
                     WHERE tenant = $1 AND user_id = $2",
                )
                .bind(&user.tenant)
                .bind(&user.user_id)
                .bind(chosen)
                .bind(message)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn set_viewing(
                &self,
                user: &$crate::storage::presence::UserKey,
                viewing: Option<(&str, &str)>,
                now: i64,
            ) -> $crate::storage::Result<Option<$crate::storage::presence::Viewing>> {
                let before: Option<(Option<String>, Option<String>, Option<i64>)> = sqlx::query_as(
                    "SELECT viewing_type, viewing_id, viewing_since FROM presence_users WHERE tenant = $1 AND user_id = $2",
                )
                .bind(&user.tenant)
                .bind(&user.user_id)
                .fetch_optional(&self.pool)
                .await?;
                sqlx::query(
                    "UPDATE presence_users SET viewing_type = $3, viewing_id = $4, viewing_since = $5 \
                     WHERE tenant = $1 AND user_id = $2",
                )
                .bind(&user.tenant)
                .bind(&user.user_id)
                .bind(viewing.map(|v| v.0))
                .bind(viewing.map(|v| v.1))
                .bind(viewing.map(|_| now))
                .execute(&self.pool)
                .await?;
                Ok(match before {
                    Some((Some(resource_type), Some(resource_id), since)) => Some($crate::storage::presence::Viewing {
                        resource_type,
                        resource_id,
                        since: since.unwrap_or(now),
                    }),
                    _ => None,
                })
            }

            async fn user_presence(
                &self,
                user: &$crate::storage::presence::UserKey,
                now: i64,
            ) -> $crate::storage::Result<Option<$crate::storage::presence::UserPresence>> {
                type Row = (
                    Option<String>, Option<String>, Option<String>, Option<String>, String, String,
                    i64, i64, Option<String>, Option<String>, Option<i64>, bool,
                );
                let row: Option<Row> = sqlx::query_as(concat!(
                    "SELECT u.name, u.avatar, u.chosen_status, u.status_message, u.announced_status, u.channels, \
                     u.last_activity, u.updated_at, u.viewing_type, u.viewing_id, u.viewing_since, \
                     EXISTS (SELECT 1 FROM presence_sessions s WHERE s.tenant = u.tenant AND s.user_id = u.user_id AND ",
                    $crate::storage::presence::live_session!("s", "$3"),
                    ") FROM presence_users u WHERE u.tenant = $1 AND u.user_id = $2"
                ))
                .bind(&user.tenant)
                .bind(&user.user_id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|r| $crate::storage::presence::UserPresence {
                    name: r.0,
                    avatar: r.1,
                    chosen_status: r.2,
                    status_message: r.3,
                    announced_status: r.4,
                    channels: r.5,
                    last_activity: r.6,
                    updated_at: r.7,
                    viewing: match (r.8, r.9) {
                        (Some(resource_type), Some(resource_id)) => Some($crate::storage::presence::Viewing {
                            resource_type,
                            resource_id,
                            since: r.10.unwrap_or(r.7),
                        }),
                        _ => None,
                    },
                    online: r.11,
                }))
            }

            async fn announce(
                &self,
                user: &$crate::storage::presence::UserKey,
                from: &str,
                to: &str,
                now: i64,
            ) -> $crate::storage::Result<bool> {
                let done = sqlx::query(
                    "UPDATE presence_users SET announced_status = $4, updated_at = $5 \
                     WHERE tenant = $1 AND user_id = $2 AND announced_status = $3",
                )
                .bind(&user.tenant)
                .bind(&user.user_id)
                .bind(from)
                .bind(to)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn sweep_sessions(&self, now: i64) -> $crate::storage::Result<Vec<$crate::storage::presence::UserKey>> {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "DELETE FROM presence_sessions WHERE expires_at <= $1 AND (NOT open OR NOT EXISTS \
                     (SELECT 1 FROM presence_nodes n WHERE n.node_id = presence_sessions.node_id AND n.expires_at > $1)) \
                     RETURNING tenant, user_id",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                let mut users: Vec<_> = rows
                    .into_iter()
                    .map(|(tenant, user_id)| $crate::storage::presence::UserKey { tenant, user_id })
                    .collect();
                users.sort_by(|a, b| (&a.tenant, &a.user_id).cmp(&(&b.tenant, &b.user_id)));
                users.dedup();
                Ok(users)
            }

            async fn stale_announcements(
                &self,
                now: i64,
                idle_before: i64,
            ) -> $crate::storage::Result<Vec<$crate::storage::presence::UserKey>> {
                let rows: Vec<(String, String)> = sqlx::query_as(concat!(
                    "SELECT u.tenant, u.user_id FROM presence_users u WHERE \
                     (u.announced_status = 'online' AND u.chosen_status IS NULL AND u.last_activity < $2) \
                     OR (u.announced_status <> 'offline' AND NOT EXISTS (SELECT 1 FROM presence_sessions s \
                     WHERE s.tenant = u.tenant AND s.user_id = u.user_id AND ",
                    $crate::storage::presence::live_session!("s", "$1"),
                    "))"
                ))
                .bind(now)
                .bind(idle_before)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(tenant, user_id)| $crate::storage::presence::UserKey { tenant, user_id })
                    .collect())
            }

            async fn typing_on(
                &self,
                key: &$crate::storage::presence::TypingKey,
                now: i64,
                expires_at: i64,
                coalesce_before: i64,
            ) -> $crate::storage::Result<bool> {
                let (last_event_at,): (i64,) = sqlx::query_as(
                    "INSERT INTO typing_states (tenant, user_id, resource_type, resource_id, field, started_at, last_event_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
                     ON CONFLICT (tenant, user_id, resource_type, resource_id, field) DO UPDATE SET \
                     expires_at = excluded.expires_at, \
                     last_event_at = CASE WHEN typing_states.last_event_at <= $8 OR typing_states.expires_at <= $6 \
                     THEN excluded.last_event_at ELSE typing_states.last_event_at END \
                     RETURNING last_event_at",
                )
                .bind(&key.tenant)
                .bind(&key.user_id)
                .bind(&key.resource_type)
                .bind(&key.resource_id)
                .bind(&key.field)
                .bind(now)
                .bind(expires_at)
                .bind(coalesce_before)
                .fetch_one(&self.pool)
                .await?;
                Ok(last_event_at == now)
            }

            async fn typing_off(&self, key: &$crate::storage::presence::TypingKey) -> $crate::storage::Result<bool> {
                let gone = sqlx::query(
                    "DELETE FROM typing_states WHERE tenant = $1 AND user_id = $2 AND resource_type = $3 \
                     AND resource_id = $4 AND field = $5",
                )
                .bind(&key.tenant)
                .bind(&key.user_id)
                .bind(&key.resource_type)
                .bind(&key.resource_id)
                .bind(&key.field)
                .execute(&self.pool)
                .await?;
                Ok(gone.rows_affected() > 0)
            }

            async fn expired_typing(&self, now: i64) -> $crate::storage::Result<Vec<$crate::storage::presence::TypingKey>> {
                let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
                    "DELETE FROM typing_states WHERE expires_at <= $1 \
                     RETURNING tenant, user_id, resource_type, resource_id, field",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(tenant, user_id, resource_type, resource_id, field)| $crate::storage::presence::TypingKey {
                        tenant,
                        user_id,
                        resource_type,
                        resource_id,
                        field,
                    })
                    .collect())
            }

            async fn resource_users(
                &self,
                tenant: &str,
                resource_type: &str,
                resource_id: &str,
                now: i64,
            ) -> $crate::storage::Result<Vec<$crate::storage::presence::ActiveUser>> {
                let ids: Vec<(String,)> = sqlx::query_as(
                    "SELECT user_id FROM presence_users WHERE tenant = $1 AND viewing_type = $2 AND viewing_id = $3 \
                     UNION SELECT user_id FROM typing_states WHERE tenant = $1 AND resource_type = $2 \
                     AND resource_id = $3 AND expires_at > $4 ORDER BY 1",
                )
                .bind(tenant)
                .bind(resource_type)
                .bind(resource_id)
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                let mut active = Vec::new();
                for (user_id,) in ids {
                    let key = $crate::storage::presence::UserKey { tenant: tenant.to_string(), user_id };
                    let Some(presence) = self.user_presence(&key, now).await? else { continue };
                    if !presence.online {
                        continue;
                    }
                    let typing: Vec<(String,)> = sqlx::query_as(
                        "SELECT field FROM typing_states WHERE tenant = $1 AND user_id = $2 AND resource_type = $3 \
                         AND resource_id = $4 AND expires_at > $5 ORDER BY field",
                    )
                    .bind(tenant)
                    .bind(&key.user_id)
                    .bind(resource_type)
                    .bind(resource_id)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await?;
                    active.push($crate::storage::presence::ActiveUser {
                        user_id: key.user_id,
                        presence,
                        typing: typing.into_iter().map(|(f,)| f).collect(),
                    });
                }
                Ok(active)
            }
        }
    };
}

pub(crate) use impl_presence_store;
pub(crate) use live_session;
