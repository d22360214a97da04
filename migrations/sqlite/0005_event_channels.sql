-- One event on several channels (PROTOCOL §6), and echo control.
--
-- An event is one row of `events`, under its first channel; its further
-- channels are rows of `event_channels` (most events have none). `channels`
-- lists every channel of such an event (JSON array, first first), NULL for
-- an event on one channel. The row's `expires_at` is the longest retention
-- of its channels. `origin` is the connection that published it asking
-- `exclude_self` (NULL otherwise).

ALTER TABLE events ADD COLUMN channels TEXT;
ALTER TABLE events ADD COLUMN origin TEXT;

CREATE TABLE event_channels (
    tenant  TEXT    NOT NULL,
    channel TEXT    NOT NULL,
    id      INTEGER NOT NULL,
    PRIMARY KEY (tenant, channel, id)
) WITHOUT ROWID;
CREATE INDEX event_channels_by_id ON event_channels (id);
