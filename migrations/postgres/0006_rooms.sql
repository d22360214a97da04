-- Who is in a room (PROTOCOL §7): the channels each presence session
-- follows, and per user and channel whether their joining was announced.
--
-- A user is in a channel's room while one of their live sessions (see
-- presence_sessions) follows it. `present` is what was last announced
-- (user.connected / user.disconnected on the channel); compare-and-set on
-- it makes exactly one node announce each change, and `updated_at` (moved
-- by every session that follows the channel) keeps a leave from being
-- announced while a session is just joining.

CREATE TABLE presence_rooms (
    tenant     TEXT NOT NULL,
    channel    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    session_id TEXT NOT NULL,
    PRIMARY KEY (tenant, channel, user_id, session_id)
);
CREATE INDEX presence_rooms_by_session ON presence_rooms (tenant, user_id, session_id);

CREATE TABLE presence_room_users (
    tenant     TEXT    NOT NULL,
    channel    TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    present    BOOLEAN NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (tenant, channel, user_id)
);
CREATE INDEX presence_room_users_by_present ON presence_room_users (present, updated_at);
