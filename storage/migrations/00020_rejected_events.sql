-- Events received from other servers that the auth rules rejected, with
-- the reason: never processed or requested again, never served.

-- +goose Up
CREATE TABLE rejected_events (
    event_id    TEXT   NOT NULL PRIMARY KEY,
    room_id     TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    json        TEXT   NOT NULL,
    received_ts BIGINT NOT NULL
);

-- +goose Down
DROP TABLE rejected_events;
