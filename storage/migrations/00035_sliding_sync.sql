-- Sliding sync (MSC4186). rooms.bump_pos orders a user's rooms by their
-- last "proper" activity; it is kept in the event's transaction, so that
-- the order costs one read per room rather than a scan of its history.
-- A connection's state says which rooms its client has and how far: a
-- row per room and response position, compacted when the client comes
-- back with a position (rows of later positions were never processed).

-- +goose Up
-- Each sync reads every membership of the user: from this index alone.
CREATE INDEX current_state_user_rooms ON current_state (state_key, room_id, membership, stream_pos, event_id)
    WHERE type = 'm.room.member';
ALTER TABLE rooms ADD COLUMN bump_pos BIGINT NOT NULL DEFAULT 0;
UPDATE rooms SET bump_pos = COALESCE((SELECT MAX(e.stream_pos) FROM events e WHERE e.room_id = rooms.room_id
    AND e.type IN ('m.room.create', 'm.room.message', 'm.room.encrypted', 'm.sticker', 'm.call.invite', 'm.poll.start', 'm.beacon_info')), 0);

CREATE TABLE sliding_sync_connections (
    conn_key      BIGINT NOT NULL PRIMARY KEY,
    user_id       TEXT   NOT NULL,
    device_id     TEXT   NOT NULL,
    conn_id       TEXT   NOT NULL,
    last_pos      BIGINT NOT NULL,
    last_used_ts  BIGINT NOT NULL,
    UNIQUE (user_id, device_id, conn_id)
);

-- The stream token each handed-out position stands for.
CREATE TABLE sliding_sync_positions (
    conn_key BIGINT NOT NULL,
    pos      BIGINT NOT NULL,
    token    TEXT   NOT NULL,
    PRIMARY KEY (conn_key, pos)
);

-- sent_to is -1 while the client has every change of the room up to the
-- connection's token ("live"), else the event position it has it up to.
CREATE TABLE sliding_sync_rooms (
    conn_key BIGINT NOT NULL,
    room_id  TEXT   NOT NULL,
    pos      BIGINT NOT NULL,
    sent_to  BIGINT NOT NULL,
    config   TEXT   NOT NULL,
    PRIMARY KEY (conn_key, room_id, pos)
);

-- +goose Down
DROP INDEX current_state_user_rooms;
DROP TABLE sliding_sync_rooms;
DROP TABLE sliding_sync_positions;
DROP TABLE sliding_sync_connections;
ALTER TABLE rooms DROP COLUMN bump_pos;
