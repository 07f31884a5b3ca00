-- Reports of events, rooms and users that users make for the server's
-- admins, and the reversible account moderation states of Matrix 1.18:
-- a suspended account may read but not act, a locked one may do nothing
-- but log out. Both are columns of users so that resolving an access
-- token reads them at no extra cost.

-- +goose Up
ALTER TABLE users ADD COLUMN suspended BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE reports (
    report_id   TEXT   NOT NULL PRIMARY KEY,
    reporter    TEXT   NOT NULL,
    -- What is reported: an event (room_id and event_id), a room (room_id)
    -- or a user (user_id); the other columns are empty.
    room_id     TEXT   NOT NULL DEFAULT '',
    event_id    TEXT   NOT NULL DEFAULT '',
    user_id     TEXT   NOT NULL DEFAULT '',
    reason      TEXT   NOT NULL DEFAULT '',
    -- score is the legacy -100..0 rating of event reports, NULL if not given.
    score       BIGINT,
    received_ts BIGINT NOT NULL
);

CREATE INDEX reports_received ON reports (received_ts);

-- +goose Down
DROP TABLE reports;
ALTER TABLE users DROP COLUMN locked;
ALTER TABLE users DROP COLUMN suspended;
