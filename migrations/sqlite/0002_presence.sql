-- Presence, viewing and typing, shared by every node (SQLite).
-- Timestamps are milliseconds since the epoch.

-- Nodes with open streams renew their row; a node that stops renewing
-- (crashed) stops keeping its streams' users online.
CREATE TABLE presence_nodes (
    node_id    TEXT    PRIMARY KEY,
    expires_at BIGINT  NOT NULL
);

-- One row per open stream (open = true, alive while its node is) or per
-- recent poll / recently closed stream (alive until expires_at).
CREATE TABLE presence_sessions (
    tenant     TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    session_id TEXT    NOT NULL,
    node_id    TEXT    NOT NULL,
    open       BOOLEAN NOT NULL,
    expires_at BIGINT  NOT NULL,
    PRIMARY KEY (tenant, user_id, session_id)
);
CREATE INDEX presence_sessions_by_expiry ON presence_sessions (expires_at);

-- What a user chose and what was last announced about them.
CREATE TABLE presence_users (
    tenant           TEXT    NOT NULL,
    user_id          TEXT    NOT NULL,
    name             TEXT,
    avatar           TEXT,
    chosen_status    TEXT,
    status_message   TEXT,
    announced_status TEXT    NOT NULL DEFAULT 'offline',
    channels         TEXT    NOT NULL DEFAULT '[]',
    last_activity    BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    viewing_type     TEXT,
    viewing_id       TEXT,
    viewing_since    BIGINT,
    PRIMARY KEY (tenant, user_id)
);
CREATE INDEX presence_users_by_viewing ON presence_users (tenant, viewing_type, viewing_id);
CREATE INDEX presence_users_by_announced ON presence_users (announced_status);

CREATE TABLE typing_states (
    tenant        TEXT   NOT NULL,
    user_id       TEXT   NOT NULL,
    resource_type TEXT   NOT NULL,
    resource_id   TEXT   NOT NULL,
    field         TEXT   NOT NULL,
    started_at    BIGINT NOT NULL,
    last_event_at BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant, user_id, resource_type, resource_id, field)
);
CREATE INDEX typing_states_by_expiry ON typing_states (expires_at);
CREATE INDEX typing_states_by_resource ON typing_states (tenant, resource_type, resource_id);
