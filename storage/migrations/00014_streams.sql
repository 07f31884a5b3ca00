-- The spine: every stream takes its positions from its row of
-- stream_counters (the row lock makes positions commit in the order they
-- are handed out, with several processes too), and every durable reader
-- keeps its cursors in reader_cursors, one row per reader and stream.

-- +goose Up
-- Counters for the streams and identifiers that took MAX(...) + 1 under an
-- in-process lock, starting where their tables are (an empty table needs
-- no row: a counter starts at 0).
INSERT INTO stream_counters (name, pos) SELECT 'events', MAX(stream_pos) FROM events HAVING MAX(stream_pos) IS NOT NULL
    ON CONFLICT (name) DO UPDATE SET pos = excluded.pos;
INSERT INTO stream_counters (name, pos) SELECT 'receipts', MAX(stream_pos) FROM receipts HAVING MAX(stream_pos) IS NOT NULL
    ON CONFLICT (name) DO UPDATE SET pos = excluded.pos;
INSERT INTO stream_counters (name, pos) SELECT 'presence', MAX(stream_pos) FROM presence HAVING MAX(stream_pos) IS NOT NULL
    ON CONFLICT (name) DO UPDATE SET pos = excluded.pos;
INSERT INTO stream_counters (name, pos) SELECT 'notifications', MAX(id) FROM push_notifications HAVING MAX(id) IS NOT NULL
    ON CONFLICT (name) DO UPDATE SET pos = excluded.pos;
INSERT INTO stream_counters (name, pos) SELECT 'account_data', MAX(pos) FROM account_data_stream HAVING MAX(pos) IS NOT NULL
    ON CONFLICT (name) DO UPDATE SET pos = excluded.pos;
INSERT INTO stream_counters (name, pos) SELECT 'state_groups', MAX(id) FROM state_groups HAVING MAX(id) IS NOT NULL
    ON CONFLICT (name) DO UPDATE SET pos = excluded.pos;
INSERT INTO stream_counters (name, pos) SELECT 'pushers', MAX(id) FROM pushers HAVING MAX(id) IS NOT NULL
    ON CONFLICT (name) DO UPDATE SET pos = excluded.pos;
DROP TABLE account_data_stream;

CREATE TABLE reader_cursors (
    reader TEXT   NOT NULL,
    stream TEXT   NOT NULL,
    pos    BIGINT NOT NULL,
    PRIMARY KEY (reader, stream)
);
INSERT INTO reader_cursors (reader, stream, pos) SELECT 'appservice:' || as_id, 'events', stream_pos FROM appservice_state;
INSERT INTO reader_cursors (reader, stream, pos) SELECT 'appservice:' || as_id, 'to_device', to_device_pos FROM appservice_state;
INSERT INTO reader_cursors (reader, stream, pos) SELECT 'appservice:' || as_id, 'device_lists', device_list_pos FROM appservice_state;
INSERT INTO reader_cursors (reader, stream, pos) SELECT 'appservice:' || as_id, 'otk', otk_pos FROM appservice_state;
-- Receipts and presence were not kept: the services start at their end.
INSERT INTO reader_cursors (reader, stream, pos)
    SELECT 'appservice:' || as_id, 'receipts', COALESCE((SELECT pos FROM stream_counters WHERE name = 'receipts'), 0) FROM appservice_state;
INSERT INTO reader_cursors (reader, stream, pos)
    SELECT 'appservice:' || as_id, 'presence', COALESCE((SELECT pos FROM stream_counters WHERE name = 'presence'), 0) FROM appservice_state;
INSERT INTO reader_cursors (reader, stream, pos) SELECT 'push:evaluator', 'events', stream_pos FROM push_cursors WHERE name = 'evaluator';
INSERT INTO reader_cursors (reader, stream, pos) SELECT name, 'notifications', stream_pos FROM push_cursors WHERE name <> 'evaluator';
DROP TABLE push_cursors;
ALTER TABLE appservice_state DROP COLUMN stream_pos;
ALTER TABLE appservice_state DROP COLUMN to_device_pos;
ALTER TABLE appservice_state DROP COLUMN device_list_pos;
ALTER TABLE appservice_state DROP COLUMN otk_pos;

-- +goose Down
ALTER TABLE appservice_state ADD COLUMN stream_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE appservice_state ADD COLUMN to_device_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE appservice_state ADD COLUMN device_list_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE appservice_state ADD COLUMN otk_pos BIGINT NOT NULL DEFAULT 0;
CREATE TABLE push_cursors (
    name       TEXT   NOT NULL PRIMARY KEY,
    stream_pos BIGINT NOT NULL
);
DROP TABLE reader_cursors;
CREATE TABLE account_data_stream (
    id  INTEGER NOT NULL PRIMARY KEY,
    pos BIGINT  NOT NULL
);
