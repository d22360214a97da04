//! Every SQL statement of the service, per dialect, in one table.
//!
//! One placeholder syntax everywhere: `$N`, the N-th parameter (SQLite's
//! driver reads them as its own `?N`). Most statements are the same text on
//! both backends ([`Sql::both`]): `ON CONFLICT` upserts and `RETURNING` mean
//! the same on SQLite and Postgres. Where they differ ([`Sql::each`]):
//! - locking: Postgres locks rows with `FOR UPDATE`; SQLite's writer holds
//!   the database's one write lock (`BEGIN IMMEDIATE`) for the whole
//!   transaction, so the same read needs no clause;
//! - lists: Postgres takes an array (`= ANY($N)`), SQLite a JSON array
//!   (`IN (SELECT value FROM json_each($N))`);
//! - many-row inserts: Postgres inserts every row in one statement from
//!   arrays (`UNNEST`), SQLite runs a prepared one-row statement per row;
//! - `GREATEST` is `MAX` with two arguments on SQLite;
//! - notifications: Postgres tells other nodes of appends (`pg_notify`);
//!   SQLite has no such channel (empty text: the statement is skipped).

/// One statement, as each backend writes it.
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Sql {
    /// The same text on both backends.
    pub const fn both(text: &'static str) -> Self {
        Self {
            sqlite: text,
            postgres: text,
        }
    }

    /// Different texts.
    pub const fn each(sqlite: &'static str, postgres: &'static str) -> Self {
        Self { sqlite, postgres }
    }
}

// ---- the log (PROTOCOL §3, §6) ----

pub const HEAD: Sql = Sql::both("SELECT last_id FROM log_head WHERE singleton = 1");

/// The head, locked until commit: the one lock every append takes first.
pub const LOCK_HEAD: Sql = Sql::each(
    "SELECT last_id FROM log_head WHERE singleton = 1",
    "SELECT last_id FROM log_head WHERE singleton = 1 FOR UPDATE",
);

pub const SET_HEAD: Sql = Sql::both("UPDATE log_head SET last_id = $1 WHERE singleton = 1");

/// Tells other nodes the new head, at commit: once per transaction, never
/// per event (NOTIFY takes a global lock held through commit).
pub const NOTIFY_HEAD: Sql = Sql::each("", "SELECT pg_notify('switchyard_log', $1)");

/// The channel Postgres notifications of [`NOTIFY_HEAD`] travel on.
pub const NOTIFY_CHANNEL: &str = "switchyard_log";

pub const FIND_RECEIPT: Sql = Sql::both(
    "SELECT receipt FROM idempotency_keys \
     WHERE tenant = $1 AND user_id = $2 AND key = $3 AND created_at > $4",
);

pub const UPSERT_RECEIPT: Sql = Sql::both(
    "INSERT INTO idempotency_keys (tenant, user_id, key, receipt, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, user_id, key) \
     DO UPDATE SET receipt = excluded.receipt, created_at = excluded.created_at",
);

/// The last id of a channel, whether the channel is an event's first or
/// a further one.
pub const CHANNEL_LAST_ID: Sql = Sql::both(
    "SELECT MAX(id) FROM (\
     SELECT MAX(id) AS id FROM events WHERE tenant = $1 AND channel = $2 \
     UNION ALL SELECT MAX(id) AS id FROM event_channels WHERE tenant = $1 AND channel = $2) AS heads",
);

/// Rows of events: id, tenant, channel, event, data, user_id, created_at,
/// expires_at, channels, origin.
pub const INSERT_EVENTS: Sql = Sql::each(
    "INSERT INTO events (id, tenant, channel, event, data, user_id, created_at, expires_at, \
     channels, origin) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    "INSERT INTO events (id, tenant, channel, event, data, user_id, created_at, expires_at, \
     channels, origin) \
     SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::bigint[], $8::bigint[], $9::text[], $10::text[])",
);

/// Rows of an event's further channels: tenant, channel, id.
pub const INSERT_EVENT_CHANNELS: Sql = Sql::each(
    "INSERT INTO event_channels (tenant, channel, id) VALUES ($1, $2, $3)",
    "INSERT INTO event_channels (tenant, channel, id) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[])",
);

/// The columns every read of events selects, in [`super::log`]'s order.
macro_rules! event_columns {
    ($e:literal) => {
        concat!(
            $e,
            ".id, ",
            $e,
            ".tenant, ",
            $e,
            ".channel, ",
            $e,
            ".event, ",
            $e,
            ".data, ",
            $e,
            ".user_id, ",
            $e,
            ".created_at, ",
            $e,
            ".channels, ",
            $e,
            ".origin"
        )
    };
}

/// Events of some channels after a cursor, in id order: those whose first
/// channel it is and those it is a further channel of, each side limited
/// first (an event on two of the channels comes twice; the reader keeps
/// one).
pub const READ_EVENTS: Sql = Sql::each(
    concat!(
        "SELECT * FROM (SELECT * FROM (SELECT ",
        event_columns!("e"),
        " FROM events e \
         WHERE e.tenant = $1 AND e.channel IN (SELECT value FROM json_each($2)) AND e.id > $3 \
         ORDER BY e.id LIMIT $4) \
         UNION ALL SELECT * FROM (SELECT ",
        event_columns!("e"),
        " FROM event_channels c \
         JOIN events e ON e.id = c.id WHERE c.tenant = $1 \
         AND c.channel IN (SELECT value FROM json_each($2)) AND c.id > $3 \
         ORDER BY c.id LIMIT $4)) ORDER BY 1 LIMIT $4"
    ),
    concat!(
        "(SELECT ",
        event_columns!("e"),
        " FROM events e \
         WHERE e.tenant = $1 AND e.channel = ANY($2) AND e.id > $3 ORDER BY e.id LIMIT $4) \
         UNION ALL (SELECT ",
        event_columns!("e"),
        " FROM event_channels c \
         JOIN events e ON e.id = c.id WHERE c.tenant = $1 AND c.channel = ANY($2) AND c.id > $3 \
         ORDER BY c.id LIMIT $4) ORDER BY 1 LIMIT $4"
    ),
);

pub const READ_RANGE: Sql = Sql::both(concat!(
    "SELECT ",
    event_columns!("e"),
    " FROM events e WHERE e.id > $1 AND e.id <= $2 ORDER BY e.id"
));

/// Events of some channels stamped at or after a time, in id order.
pub const READ_SINCE: Sql = Sql::each(
    concat!(
        "SELECT * FROM (SELECT * FROM (SELECT ",
        event_columns!("e"),
        " FROM events e \
         WHERE e.tenant = $1 AND e.channel IN (SELECT value FROM json_each($2)) \
         AND e.created_at >= $3 ORDER BY e.id LIMIT $4) \
         UNION ALL SELECT * FROM (SELECT ",
        event_columns!("e"),
        " FROM event_channels c \
         JOIN events e ON e.id = c.id WHERE c.tenant = $1 \
         AND c.channel IN (SELECT value FROM json_each($2)) AND e.created_at >= $3 \
         ORDER BY c.id LIMIT $4)) ORDER BY 1 LIMIT $4"
    ),
    concat!(
        "(SELECT ",
        event_columns!("e"),
        " FROM events e \
         WHERE e.tenant = $1 AND e.channel = ANY($2) AND e.created_at >= $3 \
         ORDER BY e.id LIMIT $4) \
         UNION ALL (SELECT ",
        event_columns!("e"),
        " FROM event_channels c \
         JOIN events e ON e.id = c.id WHERE c.tenant = $1 AND c.channel = ANY($2) \
         AND e.created_at >= $3 ORDER BY c.id LIMIT $4) ORDER BY 1 LIMIT $4"
    ),
);

pub const PRUNED_THROUGH: Sql = Sql::each(
    "SELECT MAX(through_id) FROM pruned_channels \
     WHERE tenant = $1 AND channel IN (SELECT value FROM json_each($2)) AND through_id > $3",
    "SELECT MAX(through_id) FROM pruned_channels \
     WHERE tenant = $1 AND channel = ANY($2) AND through_id > $3",
);

/// The oldest retained id of some channels after a cursor.
pub const OLDEST_AFTER: Sql = Sql::each(
    "SELECT MIN(id) FROM (\
     SELECT MIN(id) AS id FROM events \
     WHERE tenant = $1 AND channel IN (SELECT value FROM json_each($2)) AND id > $3 \
     UNION ALL SELECT MIN(id) AS id FROM event_channels \
     WHERE tenant = $1 AND channel IN (SELECT value FROM json_each($2)) AND id > $3)",
    "SELECT MIN(id) FROM (\
     SELECT MIN(id) AS id FROM events WHERE tenant = $1 AND channel = ANY($2) AND id > $3 \
     UNION ALL SELECT MIN(id) AS id FROM event_channels \
     WHERE tenant = $1 AND channel = ANY($2) AND id > $3) AS oldest",
);

/// Remembers, per channel, the highest id about to be pruned (first
/// channels).
pub const RECORD_PRUNED: Sql = Sql::each(
    "INSERT INTO pruned_channels (tenant, channel, through_id) \
     SELECT tenant, channel, MAX(id) FROM events WHERE expires_at <= $1 GROUP BY tenant, channel \
     ON CONFLICT (tenant, channel) DO UPDATE SET through_id = MAX(through_id, excluded.through_id)",
    "INSERT INTO pruned_channels (tenant, channel, through_id) \
     SELECT tenant, channel, MAX(id) FROM events WHERE expires_at <= $1 GROUP BY tenant, channel \
     ON CONFLICT (tenant, channel) DO UPDATE \
     SET through_id = GREATEST(pruned_channels.through_id, excluded.through_id)",
);

/// The same for the further channels of the events about to be pruned.
pub const RECORD_PRUNED_FURTHER: Sql = Sql::each(
    "INSERT INTO pruned_channels (tenant, channel, through_id) \
     SELECT c.tenant, c.channel, MAX(c.id) FROM event_channels c JOIN events e ON e.id = c.id \
     WHERE e.expires_at <= $1 GROUP BY c.tenant, c.channel \
     ON CONFLICT (tenant, channel) DO UPDATE SET through_id = MAX(through_id, excluded.through_id)",
    "INSERT INTO pruned_channels (tenant, channel, through_id) \
     SELECT c.tenant, c.channel, MAX(c.id) FROM event_channels c JOIN events e ON e.id = c.id \
     WHERE e.expires_at <= $1 GROUP BY c.tenant, c.channel \
     ON CONFLICT (tenant, channel) DO UPDATE \
     SET through_id = GREATEST(pruned_channels.through_id, excluded.through_id)",
);

/// The further channels of the events about to be pruned.
pub const PRUNE_EVENT_CHANNELS: Sql = Sql::both(
    "DELETE FROM event_channels WHERE id IN (SELECT id FROM events WHERE expires_at <= $1)",
);

pub const PRUNE_EVENTS: Sql = Sql::both("DELETE FROM events WHERE expires_at <= $1");

pub const PRUNE_RECEIPTS: Sql = Sql::both("DELETE FROM idempotency_keys WHERE created_at <= $1");

pub const PING: Sql = Sql::both("SELECT 1");

// ---- presence (PROTOCOL §7) ----

pub const HEARTBEAT_NODE: Sql = Sql::both(
    "INSERT INTO presence_nodes (node_id, expires_at) VALUES ($1, $2) \
     ON CONFLICT (node_id) DO UPDATE SET expires_at = excluded.expires_at",
);

pub const FORGET_NODES: Sql = Sql::both("DELETE FROM presence_nodes WHERE expires_at < $1");

// Presence is written in batches: rows travel as one array per column
// (`Tx::insert_rows`, `Tx::query_rows`), `$1` the tenants, `$2` the users,
// ...; Postgres runs one statement over their `UNNEST`, SQLite one prepared
// statement per row.

/// Rows of (tenant, user_id, session_id, node_id, open as 0/1, expires_at);
/// one row per session.
pub const PUT_SESSIONS: Sql = Sql::each(
    "INSERT INTO presence_sessions (tenant, user_id, session_id, node_id, open, expires_at) \
     VALUES ($1, $2, $3, $4, $5 <> 0, $6) ON CONFLICT (tenant, user_id, session_id) DO UPDATE \
     SET node_id = excluded.node_id, open = excluded.open, expires_at = excluded.expires_at",
    "INSERT INTO presence_sessions (tenant, user_id, session_id, node_id, open, expires_at) \
     SELECT t, u, s, n, o <> 0, e FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
     $5::bigint[], $6::bigint[]) AS x(t, u, s, n, o, e) \
     ON CONFLICT (tenant, user_id, session_id) DO UPDATE \
     SET node_id = excluded.node_id, open = excluded.open, expires_at = excluded.expires_at",
);

/// Rows of (tenant, user_id, now): users seen for the first time get a row.
pub const ADD_USERS: Sql = Sql::each(
    "INSERT INTO presence_users (tenant, user_id, last_activity, updated_at) \
     VALUES ($1, $2, $3, $3) ON CONFLICT (tenant, user_id) DO NOTHING",
    "INSERT INTO presence_users (tenant, user_id, last_activity, updated_at) \
     SELECT t, u, n, n FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS x(t, u, n) \
     ON CONFLICT (tenant, user_id) DO NOTHING",
);

/// Rows of (tenant, user_id, name, avatar, channels, activity): each given
/// value replaces the stored one; one row per user.
pub const TOUCH_USERS: Sql = Sql::each(
    "UPDATE presence_users SET name = COALESCE($3, name), avatar = COALESCE($4, avatar), \
     channels = COALESCE($5, channels), last_activity = COALESCE($6, last_activity) \
     WHERE tenant = $1 AND user_id = $2",
    "UPDATE presence_users p SET name = COALESCE(x.n, p.name), avatar = COALESCE(x.a, p.avatar), \
     channels = COALESCE(x.c, p.channels), last_activity = COALESCE(x.act, p.last_activity) \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[]) \
     AS x(t, u, n, a, c, act) WHERE p.tenant = x.t AND p.user_id = x.u",
);

pub const SET_STATUS: Sql = Sql::both(
    "UPDATE presence_users SET chosen_status = $3, status_message = $4, updated_at = $5 \
     WHERE tenant = $1 AND user_id = $2",
);

pub const VIEWING: Sql = Sql::both(
    "SELECT viewing_type, viewing_id, viewing_since FROM presence_users \
     WHERE tenant = $1 AND user_id = $2",
);

pub const SET_VIEWING: Sql = Sql::both(
    "UPDATE presence_users SET viewing_type = $3, viewing_id = $4, viewing_since = $5 \
     WHERE tenant = $1 AND user_id = $2",
);

/// Rows of (tenant, user_id, now): each user's row and whether a session
/// of theirs is alive now: its own expiry is ahead, or it is an open stream
/// on a node whose heartbeat is.
pub const USERS_PRESENCE: Sql = Sql::each(
    "SELECT p.tenant, p.user_id, p.name, p.avatar, p.chosen_status, p.status_message, \
     p.announced_status, p.channels, p.last_activity, p.updated_at, p.viewing_type, p.viewing_id, \
     p.viewing_since, EXISTS (SELECT 1 FROM presence_sessions s WHERE s.tenant = p.tenant \
     AND s.user_id = p.user_id AND (s.expires_at > $3 OR (s.open AND EXISTS (SELECT 1 \
     FROM presence_nodes n WHERE n.node_id = s.node_id AND n.expires_at > $3)))) \
     FROM presence_users p WHERE p.tenant = $1 AND p.user_id = $2",
    "SELECT p.tenant, p.user_id, p.name, p.avatar, p.chosen_status, p.status_message, \
     p.announced_status, p.channels, p.last_activity, p.updated_at, p.viewing_type, p.viewing_id, \
     p.viewing_since, EXISTS (SELECT 1 FROM presence_sessions s WHERE s.tenant = p.tenant \
     AND s.user_id = p.user_id AND (s.expires_at > x.n OR (s.open AND EXISTS (SELECT 1 \
     FROM presence_nodes n WHERE n.node_id = s.node_id AND n.expires_at > x.n)))) \
     FROM presence_users p JOIN UNNEST($1::text[], $2::text[], $3::bigint[]) AS x(t, u, n) \
     ON p.tenant = x.t AND p.user_id = x.u",
);

/// Rows of (tenant, user_id, from, to, now), one per user: compare-and-set
/// of `announced_status`; answers the users whose change this caller won.
pub const ANNOUNCE: Sql = Sql::each(
    "UPDATE presence_users SET announced_status = $4, updated_at = $5 \
     WHERE tenant = $1 AND user_id = $2 AND announced_status = $3 RETURNING tenant, user_id",
    "UPDATE presence_users p SET announced_status = x.s, updated_at = x.n \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
     AS x(t, u, f, s, n) WHERE p.tenant = x.t AND p.user_id = x.u AND p.announced_status = x.f \
     RETURNING p.tenant, p.user_id",
);

pub const SWEEP_SESSIONS: Sql = Sql::both(
    "DELETE FROM presence_sessions WHERE expires_at <= $1 AND (NOT open OR NOT EXISTS \
     (SELECT 1 FROM presence_nodes n WHERE n.node_id = presence_sessions.node_id \
     AND n.expires_at > $1)) RETURNING tenant, user_id, session_id",
);

pub const STALE_ANNOUNCEMENTS: Sql = Sql::both(
    "SELECT u.tenant, u.user_id FROM presence_users u WHERE \
     (u.announced_status = 'online' AND u.chosen_status IS NULL AND u.last_activity < $2) \
     OR (u.announced_status <> 'offline' AND NOT EXISTS (SELECT 1 FROM presence_sessions s \
     WHERE s.tenant = u.tenant AND s.user_id = u.user_id \
     AND (s.expires_at > $1 OR (s.open AND EXISTS (SELECT 1 FROM presence_nodes n \
     WHERE n.node_id = s.node_id AND n.expires_at > $1)))))",
);

pub const TYPING_ON: Sql = Sql::both(
    "INSERT INTO typing_states (tenant, user_id, resource_type, resource_id, field, started_at, \
     last_event_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
     ON CONFLICT (tenant, user_id, resource_type, resource_id, field) DO UPDATE SET \
     expires_at = excluded.expires_at, \
     last_event_at = CASE WHEN typing_states.last_event_at <= $8 OR typing_states.expires_at <= $6 \
     THEN excluded.last_event_at ELSE typing_states.last_event_at END \
     RETURNING last_event_at",
);

pub const TYPING_OFF: Sql = Sql::both(
    "DELETE FROM typing_states WHERE tenant = $1 AND user_id = $2 AND resource_type = $3 \
     AND resource_id = $4 AND field = $5",
);

pub const EXPIRED_TYPING: Sql = Sql::both(
    "DELETE FROM typing_states WHERE expires_at <= $1 \
     RETURNING tenant, user_id, resource_type, resource_id, field",
);

/// Users viewing or typing on a resource, or whose live sessions follow its
/// channel (`$5`).
pub const RESOURCE_USER_IDS: Sql = Sql::both(
    "SELECT user_id FROM presence_users WHERE tenant = $1 AND viewing_type = $2 AND viewing_id = $3 \
     UNION SELECT user_id FROM typing_states WHERE tenant = $1 AND resource_type = $2 \
     AND resource_id = $3 AND expires_at > $4 \
     UNION SELECT r.user_id FROM presence_rooms r JOIN presence_sessions s \
     ON s.tenant = r.tenant AND s.user_id = r.user_id AND s.session_id = r.session_id \
     WHERE r.tenant = $1 AND r.channel = $5 AND (s.expires_at > $4 OR (s.open AND EXISTS \
     (SELECT 1 FROM presence_nodes n WHERE n.node_id = s.node_id AND n.expires_at > $4))) \
     ORDER BY 1",
);

/// Rows of (tenant, user_id, session_id): these sessions stop following
/// their channels (they follow others now, or ended), so the rooms they
/// were in are to be checked for leaves.
pub const MARK_LEAVING: Sql = Sql::each(
    // Without the hint SQLite scans the tenant's rooms by their key.
    "UPDATE presence_room_users SET leaving = true WHERE tenant = $1 AND user_id = $2 \
     AND present AND channel IN (SELECT channel FROM presence_rooms \
     INDEXED BY presence_rooms_by_session WHERE tenant = $1 AND user_id = $2 AND session_id = $3)",
    "UPDATE presence_room_users u SET leaving = true FROM presence_rooms r, \
     UNNEST($1::text[], $2::text[], $3::text[]) AS x(t, v, s) \
     WHERE r.tenant = x.t AND r.user_id = x.v AND r.session_id = x.s \
     AND u.tenant = r.tenant AND u.user_id = r.user_id AND u.channel = r.channel AND u.present",
);

/// Rows as above: then their rows go.
pub const FORGET_SESSION_ROOMS: Sql = Sql::each(
    "DELETE FROM presence_rooms WHERE tenant = $1 AND user_id = $2 AND session_id = $3",
    "DELETE FROM presence_rooms r USING UNNEST($1::text[], $2::text[], $3::text[]) AS x(t, u, s) \
     WHERE r.tenant = x.t AND r.user_id = x.u AND r.session_id = x.s",
);

/// Rows of (tenant, channel, user_id, session_id).
pub const INSERT_ROOMS: Sql = Sql::each(
    "INSERT INTO presence_rooms (tenant, channel, user_id, session_id) VALUES ($1, $2, $3, $4) \
     ON CONFLICT DO NOTHING",
    "INSERT INTO presence_rooms (tenant, channel, user_id, session_id) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING",
);

/// Rows of (tenant, user_id, channel, now), one per user and channel:
/// users back in rooms they had left; answers those whose joining is due.
pub const ENTER_ROOMS_AGAIN: Sql = Sql::each(
    "UPDATE presence_room_users SET present = true, updated_at = $4 \
     WHERE tenant = $1 AND user_id = $2 AND channel = $3 AND NOT present \
     RETURNING tenant, user_id, channel",
    "UPDATE presence_room_users r SET present = true, updated_at = x.n \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) AS x(t, u, c, n) \
     WHERE r.tenant = x.t AND r.user_id = x.u AND r.channel = x.c AND NOT r.present \
     RETURNING r.tenant, r.user_id, r.channel",
);

/// Rows as above: users in rooms new to them; answers those whose joining
/// is due.
pub const ENTER_NEW_ROOMS: Sql = Sql::each(
    "INSERT INTO presence_room_users (tenant, channel, user_id, present, updated_at) \
     VALUES ($1, $3, $2, true, $4) ON CONFLICT DO NOTHING RETURNING tenant, user_id, channel",
    "INSERT INTO presence_room_users (tenant, channel, user_id, present, updated_at) \
     SELECT t, c, u, true, n FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) \
     AS x(t, u, c, n) ON CONFLICT DO NOTHING RETURNING tenant, user_id, channel",
);

/// Rows as above: every room these sessions follow was just followed (a
/// leave waits).
pub const TOUCH_ROOMS: Sql = Sql::each(
    "UPDATE presence_room_users SET updated_at = $4 \
     WHERE tenant = $1 AND user_id = $2 AND channel = $3",
    "UPDATE presence_room_users r SET updated_at = x.n \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) AS x(t, u, c, n) \
     WHERE r.tenant = x.t AND r.user_id = x.u AND r.channel = x.c",
);

/// `EXISTS` a live session (at `$1`) of the room user's that follows its
/// channel.
macro_rules! live_follower {
    () => {
        "EXISTS (SELECT 1 FROM presence_rooms r JOIN presence_sessions s \
         ON s.tenant = r.tenant AND s.user_id = r.user_id AND s.session_id = r.session_id \
         WHERE r.tenant = presence_room_users.tenant AND r.channel = presence_room_users.channel \
         AND r.user_id = presence_room_users.user_id \
         AND (s.expires_at > $1 OR (s.open AND EXISTS (SELECT 1 FROM presence_nodes n \
         WHERE n.node_id = s.node_id AND n.expires_at > $1))))"
    };
}

/// Users who left rooms: marked leaving, announced present, quiet since
/// `$2`, and no live session of theirs follows the channel any more.
pub const LEAVE_ROOMS: Sql = Sql::both(concat!(
    "UPDATE presence_room_users SET present = false, leaving = false, updated_at = $1 \
     WHERE leaving AND updated_at < $2 AND present AND NOT ",
    live_follower!(),
    " RETURNING tenant, user_id, channel"
));

/// Marks checked after [`LEAVE_ROOMS`]: rooms a live session still follows
/// (or that were left before) lose theirs. A mark set meanwhile by another
/// node stays: its room has no follower.
pub const CLEAR_LEAVING: Sql = Sql::both(concat!(
    "UPDATE presence_room_users SET leaving = false \
     WHERE leaving AND updated_at < $2 AND (NOT present OR ",
    live_follower!(),
    ")"
));

/// Rooms left long ago are forgotten.
pub const FORGET_ROOM_USERS: Sql =
    Sql::both("DELETE FROM presence_room_users WHERE NOT present AND updated_at < $1");

pub const TYPING_FIELDS: Sql = Sql::both(
    "SELECT field FROM typing_states WHERE tenant = $1 AND user_id = $2 AND resource_type = $3 \
     AND resource_id = $4 AND expires_at > $5 ORDER BY field",
);

// ---- editing (PROTOCOL §8) ----
// A document key is always `$1`-`$4`: tenant, resource_type, resource_id, field.

pub const CREATE_DOCUMENT: Sql = Sql::both(
    "INSERT INTO edit_documents (tenant, resource_type, resource_id, field, content, revision, \
     created_at, updated_at) VALUES ($1, $2, $3, $4, $6, 0, $5, $5) ON CONFLICT DO NOTHING",
);

pub const DOCUMENT: Sql = Sql::both(
    "SELECT content, revision, updated_at FROM edit_documents \
     WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND field = $4",
);

/// The document, locked until commit (serializes transform-and-apply).
pub const LOCK_DOCUMENT: Sql = Sql::each(
    "SELECT content, revision, updated_at FROM edit_documents \
     WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND field = $4",
    "SELECT content, revision, updated_at FROM edit_documents \
     WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND field = $4 FOR UPDATE",
);

pub const UPDATE_DOCUMENT: Sql = Sql::both(
    "UPDATE edit_documents SET content = $5, revision = $6, updated_at = $7 \
     WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND field = $4",
);

pub const SAVE_DOCUMENT: Sql = Sql::both(
    "UPDATE edit_documents SET saved_revision = revision, saved_at = $5 \
     WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND field = $4 \
     RETURNING content, revision, updated_at",
);

/// The columns of a session, in the order the rules read them.
pub const INSERT_SESSION: Sql = Sql::both(
    "INSERT INTO edit_sessions (session_id, tenant, resource_type, resource_id, field, user_id, \
     name, created_at, last_active_at, ended_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
);

pub const SESSION: Sql = Sql::both(
    "SELECT session_id, tenant, resource_type, resource_id, field, user_id, name, created_at, \
     last_active_at, ended_at FROM edit_sessions WHERE tenant = $1 AND session_id = $2",
);

pub const SESSIONS: Sql = Sql::each(
    "SELECT session_id, tenant, resource_type, resource_id, field, user_id, name, created_at, \
     last_active_at, ended_at FROM edit_sessions \
     WHERE tenant = $1 AND session_id IN (SELECT value FROM json_each($2))",
    "SELECT session_id, tenant, resource_type, resource_id, field, user_id, name, created_at, \
     last_active_at, ended_at FROM edit_sessions WHERE tenant = $1 AND session_id = ANY($2)",
);

pub const END_SESSION: Sql =
    Sql::both("UPDATE edit_sessions SET ended_at = $2 WHERE session_id = $1 AND ended_at IS NULL");

pub const TOUCH_SESSIONS: Sql = Sql::each(
    "UPDATE edit_sessions SET last_active_at = $2 \
     WHERE session_id IN (SELECT value FROM json_each($1))",
    "UPDATE edit_sessions SET last_active_at = $2 WHERE session_id = ANY($1)",
);

pub const ACTIVE_EDITORS: Sql = Sql::both(
    "SELECT user_id, MAX(name) FROM edit_sessions \
     WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND field = $4 \
     AND ended_at IS NULL AND last_active_at > $5 \
     GROUP BY user_id ORDER BY MIN(created_at), user_id",
);

pub const FIND_CLIENT_OP: Sql = Sql::both(
    "SELECT revision, ops FROM edit_operations WHERE session_id = $1 AND client_op_id = $2",
);

pub const HISTORY: Sql = Sql::both(
    "SELECT ops FROM edit_operations \
     WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 AND field = $4 \
     AND revision > $5 ORDER BY revision",
);

/// Rows of history: the document key, revision, ops, session_id, user_id,
/// client_op_id, created_at.
pub const INSERT_OPERATIONS: Sql = Sql::each(
    "INSERT INTO edit_operations (tenant, resource_type, resource_id, field, revision, ops, \
     session_id, user_id, client_op_id, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    "INSERT INTO edit_operations (tenant, resource_type, resource_id, field, revision, ops, \
     session_id, user_id, client_op_id, created_at) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[])",
);

/// The columns of a lock, in the order the rules read them.
#[cfg(test)]
const LOCK_COLUMNS: &str = "lock_id, tenant, resource_type, resource_id, field, user_id, name, \
     ttl_ms, created_at, expires_at";

pub const LIVE_LOCK: Sql = Sql::both(
    "SELECT lock_id, tenant, resource_type, resource_id, field, user_id, name, ttl_ms, \
     created_at, expires_at FROM edit_locks WHERE tenant = $1 AND resource_type = $2 \
     AND resource_id = $3 AND field = $4 AND expires_at > $5",
);

pub const LOCK_OF_FIELD: Sql = Sql::both(
    "SELECT lock_id, tenant, resource_type, resource_id, field, user_id, name, ttl_ms, \
     created_at, expires_at FROM edit_locks WHERE tenant = $1 AND resource_type = $2 \
     AND resource_id = $3 AND field = $4",
);

pub const FIND_LOCK: Sql = Sql::both(
    "SELECT lock_id, tenant, resource_type, resource_id, field, user_id, name, ttl_ms, \
     created_at, expires_at FROM edit_locks WHERE tenant = $1 AND lock_id = $2",
);

pub const DELETE_EXPIRED_LOCK: Sql = Sql::both(
    "DELETE FROM edit_locks WHERE tenant = $1 AND resource_type = $2 AND resource_id = $3 \
     AND field = $4 AND expires_at <= $5 RETURNING lock_id, tenant, resource_type, resource_id, \
     field, user_id, name, ttl_ms, created_at, expires_at",
);

/// Takes the lock, or refreshes the holder's own; matches no row (returns
/// nothing) when another user holds it.
pub const TAKE_LOCK: Sql = Sql::both(
    "INSERT INTO edit_locks (lock_id, tenant, resource_type, resource_id, field, user_id, name, \
     ttl_ms, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (tenant, resource_type, resource_id, field) DO UPDATE SET \
     expires_at = excluded.expires_at, ttl_ms = excluded.ttl_ms, name = excluded.name \
     WHERE edit_locks.user_id = excluded.user_id RETURNING lock_id, tenant, resource_type, \
     resource_id, field, user_id, name, ttl_ms, created_at, expires_at",
);

pub const RENEW_LOCK: Sql = Sql::both(
    "UPDATE edit_locks SET expires_at = $5 + $4, ttl_ms = $4 \
     WHERE tenant = $1 AND lock_id = $2 AND user_id = $3 AND expires_at > $5 RETURNING lock_id, \
     tenant, resource_type, resource_id, field, user_id, name, ttl_ms, created_at, expires_at",
);

pub const RELEASE_LOCK: Sql = Sql::both(
    "DELETE FROM edit_locks WHERE tenant = $1 AND lock_id = $2 AND user_id = $3 \
     AND expires_at > $4 RETURNING lock_id, tenant, resource_type, resource_id, field, user_id, \
     name, ttl_ms, created_at, expires_at",
);

pub const EXPIRE_LOCKS: Sql = Sql::both(
    "DELETE FROM edit_locks WHERE expires_at <= $1 RETURNING lock_id, tenant, resource_type, \
     resource_id, field, user_id, name, ttl_ms, created_at, expires_at",
);

// ---- the inbox (PROTOCOL §9, §9a) ----

/// The user's inbox row, locked until commit: every change to a user's
/// notifications takes it first, so their unread counts are exact.
pub const LOCK_INBOX_USER: Sql = Sql::both(
    "INSERT INTO inbox_users (tenant, user_id, touched_at) VALUES ($1, $2, $3) \
     ON CONFLICT (tenant, user_id) DO UPDATE SET touched_at = excluded.touched_at",
);

/// Rows of notifications: tenant, user_id, id, kind, title, body, data,
/// created_at, expires_at.
pub const INSERT_NOTIFICATIONS: Sql = Sql::each(
    "INSERT INTO notifications (tenant, user_id, id, kind, title, body, data, created_at, \
     expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    "INSERT INTO notifications (tenant, user_id, id, kind, title, body, data, created_at, \
     expires_at) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
     $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[])",
);

/// A user's unexpired notifications (`$3`: 1 for unread only; `$4`: only
/// older than this id), newest first.
pub const NOTIFICATIONS: Sql = Sql::both(
    "SELECT tenant, user_id, id, kind, title, body, data, created_at, read_at, expires_at \
     FROM notifications WHERE tenant = $1 AND user_id = $2 AND ($3 = 0 OR read_at IS NULL) \
     AND ($4 IS NULL OR id < $4) AND expires_at > $6 ORDER BY id DESC LIMIT $5",
);

pub const UNREAD_NOTIFICATIONS: Sql = Sql::both(
    "SELECT COUNT(*) FROM notifications WHERE tenant = $1 AND user_id = $2 \
     AND read_at IS NULL AND expires_at > $3",
);

pub const NOTIFICATION_READ_AT: Sql =
    Sql::both("SELECT read_at FROM notifications WHERE tenant = $1 AND user_id = $2 AND id = $3");

pub const READ_NOTIFICATION: Sql = Sql::both(
    "UPDATE notifications SET read_at = $4 \
     WHERE tenant = $1 AND user_id = $2 AND id = $3 AND read_at IS NULL",
);

pub const READ_ALL_NOTIFICATIONS: Sql = Sql::both(
    "UPDATE notifications SET read_at = $3 WHERE tenant = $1 AND user_id = $2 AND read_at IS NULL",
);

pub const PRUNE_NOTIFICATIONS: Sql = Sql::both("DELETE FROM notifications WHERE expires_at <= $1");

/// Adds a member unless there is one (then changes nothing: 0 rows).
pub const INSERT_MEMBER: Sql = Sql::both(
    "INSERT INTO channel_members (tenant, channel, user_id, since_id, added_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, channel, user_id) DO NOTHING",
);

pub const SET_MEMBER_SINCE: Sql = Sql::both(
    "UPDATE channel_members SET since_id = $4 WHERE tenant = $1 AND channel = $2 AND user_id = $3",
);

pub const MEMBER: Sql = Sql::both(
    "SELECT channel, user_id, since_id, added_at, read_seq, read_message_id, read_at FROM channel_members \
     WHERE tenant = $1 AND channel = $2 AND user_id = $3",
);

pub const DELETE_MEMBER: Sql = Sql::both(
    "DELETE FROM channel_members WHERE tenant = $1 AND channel = $2 AND user_id = $3 \
     RETURNING channel, user_id, since_id, added_at, read_seq, read_message_id, read_at",
);

pub const MEMBERS: Sql = Sql::both(
    "SELECT channel, user_id, since_id, added_at, read_seq, read_message_id, read_at FROM channel_members \
     WHERE tenant = $1 AND channel = $2 ORDER BY since_id, user_id",
);

pub const MEMBERSHIPS: Sql = Sql::both(
    "SELECT channel, user_id, since_id, added_at, read_seq, read_message_id, read_at FROM channel_members \
     WHERE tenant = $1 AND user_id = $2 ORDER BY since_id, channel",
);

/// Moves a reader's position forward only.
pub const READ_POSITION: Sql = Sql::both(
    "UPDATE channel_members SET read_seq = $4, read_message_id = $6, read_at = $5 \
     WHERE tenant = $1 AND channel = $2 AND user_id = $3 AND read_seq < $4",
);

/// Creates a conversation unless one with its id exists (0 rows then).
pub const INSERT_CONVERSATION: Sql = Sql::both(
    "INSERT INTO conversations (tenant, id, kind, title, created_by, created_at, last_seq, last_at) \
     VALUES ($1, $2, $3, $4, $5, $6, 0, $6) ON CONFLICT (tenant, id) DO NOTHING",
);

pub const CONVERSATION: Sql = Sql::both(
    "SELECT tenant, id, kind, title, created_by, created_at, last_seq, last_at FROM conversations \
     WHERE tenant = $1 AND id = $2",
);

/// The conversation, locked until commit: sends, edits and reads of one
/// conversation are serialized.
pub const LOCK_CONVERSATION: Sql = Sql::each(
    "SELECT tenant, id, kind, title, created_by, created_at, last_seq, last_at FROM conversations \
     WHERE tenant = $1 AND id = $2",
    "SELECT tenant, id, kind, title, created_by, created_at, last_seq, last_at FROM conversations \
     WHERE tenant = $1 AND id = $2 FOR UPDATE",
);

pub const SET_CONVERSATION_LAST: Sql =
    Sql::both("UPDATE conversations SET last_seq = $3, last_at = $4 WHERE tenant = $1 AND id = $2");

/// A member's conversations (`$3`: active before, or null), by last
/// activity; the member's read position last.
pub const CONVERSATIONS_OF: Sql = Sql::both(
    "SELECT c.tenant, c.id, c.kind, c.title, c.created_by, c.created_at, c.last_seq, c.last_at \
     FROM channel_members m JOIN conversations c \
     ON c.tenant = m.tenant AND m.channel = 'conversation:' || c.id \
     WHERE m.tenant = $1 AND m.user_id = $2 AND ($3 IS NULL OR c.last_at < $3) \
     ORDER BY c.last_at DESC, c.id DESC LIMIT $4",
);

/// A message row, its tenant first.
pub const INSERT_MESSAGE: Sql = Sql::both(
    "INSERT INTO messages (tenant, conversation_id, id, seq, client_message_id, sender_id, \
     sender_name, sender_avatar, content, created_at, edited_at, deleted_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
);

pub const MESSAGE: Sql = Sql::both(
    "SELECT conversation_id, id, seq, client_message_id, sender_id, sender_name, sender_avatar, \
     content, created_at, edited_at, deleted_at FROM messages \
     WHERE tenant = $1 AND conversation_id = $2 AND id = $3",
);

pub const MESSAGE_AT: Sql = Sql::both(
    "SELECT conversation_id, id, seq, client_message_id, sender_id, sender_name, sender_avatar, \
     content, created_at, edited_at, deleted_at FROM messages \
     WHERE tenant = $1 AND conversation_id = $2 AND seq = $3",
);

pub const CLIENT_MESSAGE: Sql = Sql::both(
    "SELECT conversation_id, id, seq, client_message_id, sender_id, sender_name, sender_avatar, \
     content, created_at, edited_at, deleted_at FROM messages \
     WHERE tenant = $1 AND conversation_id = $2 AND sender_id = $3 AND client_message_id = $4",
);

/// Messages before `seq` `$3`, newest first.
pub const MESSAGES_BEFORE: Sql = Sql::both(
    "SELECT conversation_id, id, seq, client_message_id, sender_id, sender_name, sender_avatar, \
     content, created_at, edited_at, deleted_at FROM messages \
     WHERE tenant = $1 AND conversation_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4",
);

pub const EDIT_MESSAGE: Sql = Sql::both(
    "UPDATE messages SET content = $4, edited_at = $5 \
     WHERE tenant = $1 AND conversation_id = $2 AND id = $3",
);

pub const DELETE_MESSAGE: Sql = Sql::both(
    "UPDATE messages SET content = '', deleted_at = $4 \
     WHERE tenant = $1 AND conversation_id = $2 AND id = $3",
);

/// Messages of others after a read position, not deleted.
pub const UNREAD_MESSAGES: Sql = Sql::both(
    "SELECT COUNT(*) FROM messages WHERE tenant = $1 AND conversation_id = $2 AND seq > $3 \
     AND sender_id <> $4 AND deleted_at IS NULL",
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock statements read the columns in [`LOCK_COLUMNS`]' order.
    #[test]
    fn lock_statements_read_the_lock_columns() {
        for sql in [
            LIVE_LOCK,
            LOCK_OF_FIELD,
            FIND_LOCK,
            DELETE_EXPIRED_LOCK,
            TAKE_LOCK,
            RENEW_LOCK,
            RELEASE_LOCK,
            EXPIRE_LOCKS,
        ] {
            let squeezed = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                squeezed(sql.postgres).contains(&squeezed(LOCK_COLUMNS)),
                "{}",
                sql.postgres
            );
        }
    }
}
