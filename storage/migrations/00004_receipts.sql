-- Read receipts (m.read, m.read.private): one row per room, receipt type,
-- user and thread holding the latest receipt, stamped with a position of the
-- receipts stream (its own, apart from the event stream's).

-- +goose Up
CREATE TABLE receipts (
    room_id      TEXT   NOT NULL,
    receipt_type TEXT   NOT NULL,
    user_id      TEXT   NOT NULL,
    -- '' for an unthreaded receipt, else "main" or a thread root's event ID.
    thread_id    TEXT   NOT NULL DEFAULT '',
    event_id     TEXT   NOT NULL,
    ts           BIGINT NOT NULL,
    -- Strictly increasing in commit order; a row moves up when it changes.
    stream_pos   BIGINT NOT NULL UNIQUE,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_room_pos ON receipts (room_id, stream_pos);

-- +goose Down
DROP TABLE receipts;
