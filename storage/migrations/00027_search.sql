-- Server-side search (POST /search): the searchable text of each
-- m.room.message (content.body), m.room.name (content.name) and
-- m.room.topic (content.topic) event, written by the search package's
-- reader of the event log, and removed when the event is redacted. The
-- full-text index over value is engine-specific and is created at start-up
-- by storage (ensureSearchSchema): an FTS5 table on SQLite, a generated
-- tsvector column with a GIN index on PostgreSQL.

-- +goose Up
CREATE TABLE event_search (
    event_id         TEXT   NOT NULL PRIMARY KEY,
    room_id          TEXT   NOT NULL,
    sender           TEXT   NOT NULL,
    key              TEXT   NOT NULL,
    value            TEXT   NOT NULL,
    -- The event's stream position: unique, the FTS5 rowid on SQLite.
    stream_pos       BIGINT NOT NULL UNIQUE,
    origin_server_ts BIGINT NOT NULL
);
CREATE INDEX event_search_room ON event_search (room_id, stream_pos);

-- +goose Down
DROP TABLE event_search;
