-- Push: each user's push rules, the notifications the rules produced (from
-- which unread counts are computed against read receipts), pushers, and the
-- durable cursors of the readers of the event log that push runs.

-- +goose Up
-- rules is the JSON of the user's own rules and their changes to the
-- server-default rules (which are not stored).
CREATE TABLE push_rules (
    user_id TEXT NOT NULL PRIMARY KEY,
    rules   TEXT NOT NULL
);

-- One row per reader ("evaluator", or "pusher:<id>"): the last event stream
-- position (or notification ID) it has fully handled.
CREATE TABLE push_cursors (
    name       TEXT   NOT NULL PRIMARY KEY,
    stream_pos BIGINT NOT NULL
);

-- A notification of event_id (at stream_pos on the event stream) for one
-- user. thread_id is "main" or the thread root's event ID.
CREATE TABLE push_notifications (
    id         BIGINT  NOT NULL PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    room_id    TEXT    NOT NULL,
    event_id   TEXT    NOT NULL,
    stream_pos BIGINT  NOT NULL,
    ts         BIGINT  NOT NULL,
    actions    TEXT    NOT NULL,
    highlight  BOOLEAN NOT NULL,
    thread_id  TEXT    NOT NULL,
    UNIQUE (user_id, event_id)
);
CREATE INDEX push_notifications_user_room ON push_notifications (user_id, room_id, stream_pos);
CREATE INDEX push_notifications_user_id ON push_notifications (user_id, id);

CREATE TABLE pushers (
    id                  BIGINT NOT NULL PRIMARY KEY,
    user_id             TEXT   NOT NULL,
    app_id              TEXT   NOT NULL,
    pushkey             TEXT   NOT NULL,
    kind                TEXT   NOT NULL,
    app_display_name    TEXT   NOT NULL,
    device_display_name TEXT   NOT NULL,
    profile_tag         TEXT   NOT NULL DEFAULT '',
    lang                TEXT   NOT NULL,
    data                TEXT   NOT NULL,
    pushkey_ts          BIGINT NOT NULL,
    UNIQUE (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers (user_id);

-- +goose Down
DROP TABLE pushers;
DROP TABLE push_notifications;
DROP TABLE push_cursors;
DROP TABLE push_rules;
