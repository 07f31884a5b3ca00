-- What the admin API needs of media and federation destinations.
--
-- Media: when it was last downloaded (for deleting old media), who
-- quarantined it (NULL when it is not: quarantined media is never served),
-- and whether an admin protected it from quarantine.
--
-- Destinations: the durable record of each federation destination's
-- backoff (Synapse's destinations table) and, per room, the stream
-- position of the last event delivered to it there (destination_rooms).
-- The sender's queues keep their own in-process backoff; these rows are
-- what the admin API reads and resets.

-- +goose Up
ALTER TABLE media ADD COLUMN last_access_ts BIGINT;
ALTER TABLE media ADD COLUMN quarantined_by TEXT;
ALTER TABLE media ADD COLUMN safe_from_quarantine BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX media_user_created ON media (user_id, created_ts);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);

CREATE TABLE federation_destinations (
    destination     TEXT   NOT NULL PRIMARY KEY,
    -- When the last failed attempt was made; 0 after a success.
    retry_last_ts   BIGINT NOT NULL DEFAULT 0,
    -- The wait before the next attempt; 0 after a success.
    retry_interval  BIGINT NOT NULL DEFAULT 0,
    -- When the current run of failures began; NULL when there is none.
    failure_ts      BIGINT,
    -- The stream position of the last event delivered; NULL if none yet.
    last_successful_stream_ordering BIGINT
);

CREATE TABLE federation_destination_rooms (
    destination     TEXT   NOT NULL,
    room_id         TEXT   NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (destination, room_id)
);

-- +goose Down
DROP TABLE federation_destination_rooms;
DROP TABLE federation_destinations;
DROP INDEX media_thumbnails_sha256;
DROP INDEX media_user_created;
ALTER TABLE media DROP COLUMN safe_from_quarantine;
ALTER TABLE media DROP COLUMN quarantined_by;
ALTER TABLE media DROP COLUMN last_access_ts;
