-- History from other servers: events fetched by /backfill join the
-- timeline below everything this server saw live (negative stream
-- positions, like outliers, so that no reader following positions upwards
-- meets them), and /messages pages in topological order (depth, then
-- stream position) so that they land where they belong.
--
-- outlier tells the two kinds of negative positions apart: an outlier is
-- known only through auth chains and state, never served in a timeline.
-- backward_extremities are the holes: events named as prev_events by a
-- timeline event that are not in the timeline here, with the depth of
-- the event naming them, so that pagination knows where to backfill.

-- +goose Up
ALTER TABLE events ADD COLUMN outlier BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE events SET outlier = TRUE WHERE stream_pos < 0;
CREATE INDEX events_room_topological ON events (room_id, depth, stream_pos);

CREATE TABLE backward_extremities (
    room_id  TEXT   NOT NULL,
    event_id TEXT   NOT NULL,
    depth    BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- +goose Down
DROP TABLE backward_extremities;
DROP INDEX events_room_topological;
ALTER TABLE events DROP COLUMN outlier;
