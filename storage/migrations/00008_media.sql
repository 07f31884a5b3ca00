-- The content repository: one row per media ID (uploaded, or created with
-- /create and still awaiting its bytes), and the thumbnails generated for it.
-- The bytes themselves live on disk under media_store_path, named by their
-- SHA-256, so that identical uploads share one file.

-- +goose Up
CREATE TABLE media (
    -- origin is this server's name for local media; remote media cached by
    -- federation will carry the remote server's name.
    origin       TEXT    NOT NULL,
    media_id     TEXT    NOT NULL,
    user_id      TEXT    NOT NULL DEFAULT '',
    content_type TEXT    NOT NULL DEFAULT '',
    upload_name  TEXT    NOT NULL DEFAULT '',
    media_length BIGINT  NOT NULL DEFAULT 0,
    -- Hex SHA-256 of the bytes; '' while the upload is pending.
    sha256       TEXT    NOT NULL DEFAULT '',
    -- Pixel size after EXIF orientation; 0 when not a decodable image.
    width        INTEGER NOT NULL DEFAULT 0,
    height       INTEGER NOT NULL DEFAULT 0,
    created_ts   BIGINT  NOT NULL,
    -- 0 while pending (created, bytes not yet uploaded).
    uploaded_ts  BIGINT  NOT NULL DEFAULT 0,
    -- When a pending media ID expires unused (unused_expires_at).
    expires_ts   BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, media_id)
);
CREATE INDEX media_pending ON media (user_id, uploaded_ts, expires_ts);
CREATE INDEX media_sha256 ON media (sha256);

CREATE TABLE media_thumbnails (
    origin       TEXT    NOT NULL,
    media_id     TEXT    NOT NULL,
    method       TEXT    NOT NULL,
    -- The thumbnail's actual pixel size.
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    content_type TEXT    NOT NULL,
    media_length BIGINT  NOT NULL,
    sha256       TEXT    NOT NULL,
    created_ts   BIGINT  NOT NULL,
    PRIMARY KEY (origin, media_id, method, width, height),
    FOREIGN KEY (origin, media_id) REFERENCES media (origin, media_id) ON DELETE CASCADE
);

-- +goose Down
DROP TABLE media_thumbnails;
DROP TABLE media;
