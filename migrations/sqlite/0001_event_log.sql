-- The sequenced event log and its side tables (SQLite).
-- Timestamps are milliseconds since the epoch.

CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    tenant     TEXT    NOT NULL,
    channel    TEXT    NOT NULL,
    event      TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    user_id    TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX events_by_channel ON events (tenant, channel, id);
CREATE INDEX events_by_time    ON events (tenant, channel, created_at);
CREATE INDEX events_by_expiry  ON events (expires_at);

-- The last id handed out. Read and advanced inside every appending
-- transaction, so ids are dense and never reused after pruning.
CREATE TABLE log_head (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    last_id   INTEGER NOT NULL
);
INSERT INTO log_head (singleton, last_id) VALUES (1, 0);

-- Per channel, the highest id the pruner removed: a cursor below it gets `reset`.
CREATE TABLE pruned_channels (
    tenant     TEXT    NOT NULL,
    channel    TEXT    NOT NULL,
    through_id INTEGER NOT NULL,
    PRIMARY KEY (tenant, channel)
);

-- First answers to publishes that carried an idempotency key.
CREATE TABLE idempotency_keys (
    tenant     TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    receipt    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, user_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
