-- Presence: one row per user, stamped with its position on the presence
-- stream (its own sequence, separate from the room event log).

-- +goose Up
CREATE TABLE presence (
    user_id          TEXT    NOT NULL PRIMARY KEY,
    presence         TEXT    NOT NULL,
    status_msg       TEXT    NOT NULL DEFAULT '',
    -- 0 when the user was never seen active.
    last_active_ts   BIGINT  NOT NULL DEFAULT 0,
    currently_active BOOLEAN NOT NULL DEFAULT FALSE,
    -- Strictly increasing in commit order: /sync reads the rows in (from, to].
    stream_pos       BIGINT  NOT NULL UNIQUE
);

-- +goose Down
DROP TABLE presence;
