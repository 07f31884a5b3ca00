-- The rooms part of the admin API: rooms blocked by an admin (local users
-- may neither join nor be invited; a room the server has never seen can be
-- blocked ahead), and the background deletions of rooms and purges of
-- their history, with their outcome, kept so that their status can be
-- asked after the request that started them, and after a restart.

-- +goose Up
CREATE TABLE blocked_rooms (
    room_id    TEXT   NOT NULL PRIMARY KEY,
    -- The admin who blocked the room.
    user_id    TEXT   NOT NULL,
    blocked_ts BIGINT NOT NULL
);

CREATE TABLE room_delete_tasks (
    delete_id  TEXT   NOT NULL PRIMARY KEY,
    room_id    TEXT   NOT NULL,
    -- scheduled, active, complete or failed.
    status     TEXT   NOT NULL,
    error      TEXT   NOT NULL DEFAULT '',
    -- The shutdown_room object of the status (JSON).
    result     TEXT   NOT NULL,
    created_ts BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);
CREATE INDEX room_delete_tasks_room ON room_delete_tasks (room_id, created_ts);

-- The background purges of rooms' old history (POST purge_history).
CREATE TABLE purge_history_tasks (
    purge_id   TEXT   NOT NULL PRIMARY KEY,
    room_id    TEXT   NOT NULL,
    -- active, complete or failed.
    status     TEXT   NOT NULL,
    error      TEXT   NOT NULL DEFAULT '',
    created_ts BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);

-- +goose Down
DROP TABLE purge_history_tasks;
DROP TABLE room_delete_tasks;
DROP TABLE blocked_rooms;
