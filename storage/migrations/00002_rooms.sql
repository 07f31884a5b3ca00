-- Rooms: the ordered event log, state (current and at each event), forward
-- extremities, client transaction IDs, aliases and relations.

-- +goose Up
CREATE TABLE rooms (
    room_id      TEXT    NOT NULL PRIMARY KEY,
    room_version TEXT    NOT NULL,
    creator      TEXT    NOT NULL,
    published    BOOLEAN NOT NULL DEFAULT FALSE,
    -- The state group of the room's current state.
    state_group  BIGINT  NOT NULL DEFAULT 0,
    created_ts   BIGINT  NOT NULL
);

-- The log of every room event. stream_pos is global and strictly increasing
-- in commit order: readers keep durable cursors into it.
CREATE TABLE events (
    stream_pos       BIGINT NOT NULL PRIMARY KEY,
    event_id         TEXT   NOT NULL UNIQUE,
    room_id          TEXT   NOT NULL REFERENCES rooms (room_id),
    type             TEXT   NOT NULL,
    state_key        TEXT,
    sender           TEXT   NOT NULL,
    membership       TEXT,
    depth            BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- The room state after this event.
    state_group      BIGINT NOT NULL,
    redacted_by      TEXT,
    -- The state event this one replaced (for unsigned.prev_content).
    replaces_state   TEXT,
    json             TEXT   NOT NULL
);
CREATE INDEX events_room ON events (room_id, stream_pos);
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);
CREATE INDEX events_member ON events (room_id, state_key, stream_pos);

-- A state group is the full state of a room at some point, stored as a delta
-- over prev_id (or in full when prev_id is NULL). A full copy is taken after
-- max(32, state_size/16) deltas: writes stay amortised O(1) per state event
-- whatever the room's size, and reads walk a bounded chain.
CREATE TABLE state_groups (
    id        BIGINT NOT NULL PRIMARY KEY,
    room_id   TEXT   NOT NULL,
    prev_id    BIGINT,
    chain_len  BIGINT NOT NULL,
    -- Number of (type, state_key) entries in the full state.
    state_size BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE state_group_entries (
    group_id  BIGINT NOT NULL,
    type      TEXT   NOT NULL,
    state_key TEXT   NOT NULL,
    event_id  TEXT   NOT NULL,
    PRIMARY KEY (group_id, type, state_key)
);

CREATE TABLE current_state (
    room_id    TEXT   NOT NULL,
    type       TEXT   NOT NULL,
    state_key  TEXT   NOT NULL,
    event_id   TEXT   NOT NULL,
    membership TEXT,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_user ON current_state (state_key, type, membership);

CREATE TABLE forward_extremities (
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- Client transaction IDs, so that a retried PUT returns the same event even
-- after a crash. scope is the device (or the application service).
CREATE TABLE event_txns (
    user_id  TEXT NOT NULL,
    scope    TEXT NOT NULL,
    txn_id   TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, scope, txn_id)
);
CREATE INDEX event_txns_event ON event_txns (event_id);

CREATE TABLE room_aliases (
    alias   TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- The relations index, kept at write time.
CREATE TABLE event_relations (
    event_id   TEXT   NOT NULL PRIMARY KEY,
    room_id    TEXT   NOT NULL,
    relates_to TEXT   NOT NULL,
    rel_type   TEXT   NOT NULL,
    type       TEXT   NOT NULL,
    stream_pos BIGINT NOT NULL
);
CREATE INDEX event_relations_parent ON event_relations (relates_to, rel_type, stream_pos);
CREATE INDEX event_relations_room ON event_relations (room_id, rel_type, stream_pos);

CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

-- +goose Down
DROP TABLE forgotten_rooms;
DROP TABLE event_relations;
DROP TABLE room_aliases;
DROP TABLE event_txns;
DROP TABLE forward_extremities;
DROP TABLE current_state;
DROP TABLE state_group_entries;
DROP TABLE state_groups;
DROP TABLE events;
DROP TABLE rooms;
