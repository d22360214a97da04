-- Leaves are looked for where they can happen, not in every room of every
-- online user. `leaving` marks a user's room that a session of theirs
-- stopped following (its channels changed, or it ended): the presence
-- sweep checks those rows only, and clears the mark once a live session
-- is found still following (or announces the leave). A session's rooms go
-- with it, so no orphans are left to look for.

ALTER TABLE presence_room_users ADD COLUMN leaving BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX presence_room_users_leaving ON presence_room_users (updated_at) WHERE leaving;

-- Rows from before: every room present is checked once, and orphans go.
UPDATE presence_room_users SET leaving = true WHERE present;
DELETE FROM presence_rooms WHERE NOT EXISTS (SELECT 1 FROM presence_sessions s
    WHERE s.tenant = presence_rooms.tenant AND s.user_id = presence_rooms.user_id
    AND s.session_id = presence_rooms.session_id);
