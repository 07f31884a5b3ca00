-- Account data: global and per-room JSON objects of each user (room tags
-- are the m.tag room account data), and the position counter of the
-- account-data stream.

-- +goose Up
-- One row per (user, room, type) with its latest content; room_id is '' for
-- global account data. stream_pos is the position of the row's last change,
-- so that "what changed since" is a range scan on (user_id, stream_pos).
CREATE TABLE account_data (
    user_id    TEXT   NOT NULL,
    room_id    TEXT   NOT NULL,
    type       TEXT   NOT NULL,
    content    TEXT   NOT NULL,
    stream_pos BIGINT NOT NULL UNIQUE,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_user_pos ON account_data (user_id, stream_pos);

-- The last position handed out (a single row, id 1, created by the first
-- write). Bumping it first in each write transaction serialises writers on
-- its row, so positions commit in order, and a position is never reused
-- whatever happens to the rows of account_data.
CREATE TABLE account_data_stream (
    id  INTEGER NOT NULL PRIMARY KEY,
    pos BIGINT  NOT NULL
);

-- +goose Down
DROP TABLE account_data_stream;
DROP TABLE account_data;
