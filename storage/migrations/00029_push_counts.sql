-- Push notifications keyed for cheap writes and cheap unread counts. A
-- message in a room of N members writes N rows, and every row went into
-- four B-trees: the table, PRIMARY KEY (id), UNIQUE (user_id, event_id),
-- and the indexes (user_id, room_id, stream_pos) and (user_id, id). Two
-- keys now do all of it:
-- - PRIMARY KEY (user_id, id) pages /notifications and finds the rooms
--   notified between two IDs; IDs come from the notifications stream
--   counter, so they stay unique without a key of their own.
-- - UNIQUE (user_id, room_id, stream_pos) is the evaluator's duplicate
--   check (an event's stream_pos identifies it as its event_id does) and
--   the unread counts' range: the rows after the user's read receipt.
-- SQLite cannot drop a table's constraints, so the table is rebuilt (on
-- both engines, to keep one schema); the rows are copied as they are (a
-- duplicate of (user_id, room_id, stream_pos) could only be the same
-- notification twice, and is dropped). (WHERE TRUE lets SQLite parse
-- ON CONFLICT after a SELECT.)

-- +goose Up
CREATE TABLE push_notifications_v2 (
    id         BIGINT  NOT NULL,
    user_id    TEXT    NOT NULL,
    room_id    TEXT    NOT NULL,
    event_id   TEXT    NOT NULL,
    stream_pos BIGINT  NOT NULL,
    ts         BIGINT  NOT NULL,
    actions    TEXT    NOT NULL,
    highlight  BOOLEAN NOT NULL,
    thread_id  TEXT    NOT NULL,
    PRIMARY KEY (user_id, id),
    UNIQUE (user_id, room_id, stream_pos)
);
INSERT INTO push_notifications_v2 (id, user_id, room_id, event_id, stream_pos, ts, actions, highlight, thread_id)
    SELECT id, user_id, room_id, event_id, stream_pos, ts, actions, highlight, thread_id FROM push_notifications
    WHERE TRUE ON CONFLICT DO NOTHING;
DROP TABLE push_notifications;
ALTER TABLE push_notifications_v2 RENAME TO push_notifications;

-- +goose Down
CREATE TABLE push_notifications_v1 (
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
INSERT INTO push_notifications_v1 (id, user_id, room_id, event_id, stream_pos, ts, actions, highlight, thread_id)
    SELECT id, user_id, room_id, event_id, stream_pos, ts, actions, highlight, thread_id FROM push_notifications;
DROP TABLE push_notifications;
ALTER TABLE push_notifications_v1 RENAME TO push_notifications;
CREATE INDEX push_notifications_user_room ON push_notifications (user_id, room_id, stream_pos);
CREATE INDEX push_notifications_user_id ON push_notifications (user_id, id);
