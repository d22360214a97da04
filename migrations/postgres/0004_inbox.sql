-- The inbox (PROTOCOL §9, §9a): notifications with read state, members
-- kept by the server, conversations and their messages (Postgres).
-- Timestamps are milliseconds since the epoch. Every row carries its
-- tenant: nothing crosses tenants.

-- One row per user with an inbox: locked by every change to the user's
-- notifications, so unread counts are exact under concurrent changes.
CREATE TABLE inbox_users (
    tenant     TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    touched_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, user_id)
);

CREATE TABLE notifications (
    tenant     TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    -- UUIDv7: orders by creation, and is the listing's cursor.
    id         TEXT   NOT NULL,
    kind       TEXT   NOT NULL,
    title      TEXT   NOT NULL,
    body       TEXT,
    data       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    read_at    BIGINT,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, user_id, id)
);
CREATE INDEX notifications_unread ON notifications (tenant, user_id, read_at);
CREATE INDEX notifications_by_expiry ON notifications (expires_at);

-- Members of channels, kept by the server. `since_id` is the log id of the
-- `member.added` event that began the membership: a stream that starts
-- following the channel for it reads from there.
CREATE TABLE channel_members (
    tenant    TEXT   NOT NULL,
    channel   TEXT   NOT NULL,
    user_id   TEXT   NOT NULL,
    since_id  BIGINT NOT NULL,
    added_at  BIGINT NOT NULL,
    -- Conversations only: the reader's position (the `seq` and id of the
    -- last message read) and when it moved.
    read_seq  BIGINT NOT NULL DEFAULT 0,
    read_message_id TEXT,
    read_at   BIGINT,
    PRIMARY KEY (tenant, channel, user_id)
);
CREATE INDEX channel_members_by_user ON channel_members (tenant, user_id);

CREATE TABLE conversations (
    tenant      TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    title       TEXT,
    created_by  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    -- The last message's `seq` and time (0 and created_at before any).
    last_seq    BIGINT NOT NULL DEFAULT 0,
    last_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- `seq` is the log id of the message's `message.created` event: the order
-- of a conversation's messages and of its readers' positions.
CREATE TABLE messages (
    tenant            TEXT   NOT NULL,
    conversation_id   TEXT   NOT NULL,
    id                TEXT   NOT NULL,
    seq               BIGINT NOT NULL,
    client_message_id TEXT,
    sender_id         TEXT   NOT NULL,
    sender_name       TEXT,
    sender_avatar     TEXT,
    content           TEXT   NOT NULL,
    created_at        BIGINT NOT NULL,
    edited_at         BIGINT,
    deleted_at        BIGINT,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX messages_by_conversation ON messages (tenant, conversation_id, seq);
CREATE UNIQUE INDEX messages_by_client_id ON messages (tenant, conversation_id, sender_id, client_message_id);
