-- Collaborative editing (PROTOCOL §8): documents, their operation history,
-- edit sessions and locks (Postgres). Timestamps are milliseconds since the
-- epoch. Every row carries its tenant: nothing crosses tenants.

-- One plain-text field of one resource.
CREATE TABLE edit_documents (
    tenant         TEXT    NOT NULL,
    resource_type  TEXT    NOT NULL,
    resource_id    TEXT    NOT NULL,
    field          TEXT    NOT NULL,
    content        TEXT    NOT NULL,
    revision       BIGINT  NOT NULL,
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    saved_revision BIGINT,
    saved_at       BIGINT,
    PRIMARY KEY (tenant, resource_type, resource_id, field)
);

-- Every operation as applied; `revision` is the document's revision after
-- it, so a document at revision N has exactly the rows 1..N.
CREATE TABLE edit_operations (
    tenant        TEXT    NOT NULL,
    resource_type TEXT    NOT NULL,
    resource_id   TEXT    NOT NULL,
    field         TEXT    NOT NULL,
    revision      BIGINT  NOT NULL,
    ops           TEXT    NOT NULL,
    session_id    TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    client_op_id  TEXT,
    created_at    BIGINT  NOT NULL,
    PRIMARY KEY (tenant, resource_type, resource_id, field, revision)
);
-- A retry is found by its client_op_id, and can never be stored twice.
CREATE UNIQUE INDEX edit_operations_by_client_op ON edit_operations (session_id, client_op_id);

CREATE TABLE edit_sessions (
    session_id     TEXT    PRIMARY KEY,
    tenant         TEXT    NOT NULL,
    resource_type  TEXT    NOT NULL,
    resource_id    TEXT    NOT NULL,
    field          TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    name           TEXT,
    created_at     BIGINT  NOT NULL,
    last_active_at BIGINT  NOT NULL,
    ended_at       BIGINT
);
CREATE INDEX edit_sessions_by_document ON edit_sessions (tenant, resource_type, resource_id, field, last_active_at);

-- At most one lock per field.
CREATE TABLE edit_locks (
    lock_id       TEXT    PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    resource_type TEXT    NOT NULL,
    resource_id   TEXT    NOT NULL,
    field         TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    name          TEXT,
    ttl_ms        BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL
);
CREATE UNIQUE INDEX edit_locks_by_field ON edit_locks (tenant, resource_type, resource_id, field);
CREATE INDEX edit_locks_by_expiry ON edit_locks (expires_at);
