-- Server-side key backups (/room_keys): each user's backup versions and the
-- backed-up key of each megolm session in them.

-- +goose Up
-- One row per user who ever created a backup: the last version number handed
-- out, so that numbers are never reused. Every backup write of the user
-- first updates this row (INSERT ... ON CONFLICT DO UPDATE), which locks it
-- until commit: the user's backup writes are serialised, even across
-- processes.
CREATE TABLE key_backup_counters (
    user_id      TEXT   NOT NULL PRIMARY KEY REFERENCES users (user_id),
    last_version BIGINT NOT NULL
);

-- A backup version. Deleted versions keep their row (without keys), so that
-- deleting them again succeeds. etag increases with every change to the
-- version's keys; key_count is their number, kept in the same transactions.
CREATE TABLE key_backup_versions (
    user_id   TEXT    NOT NULL REFERENCES users (user_id),
    version   BIGINT  NOT NULL,
    algorithm TEXT    NOT NULL,
    auth_data TEXT    NOT NULL,
    etag      BIGINT  NOT NULL DEFAULT 0,
    key_count BIGINT  NOT NULL DEFAULT 0,
    deleted   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

-- The key of one session in one version; session_data is the client's
-- encrypted object, opaque to the server.
CREATE TABLE key_backup_keys (
    user_id             TEXT    NOT NULL,
    version             BIGINT  NOT NULL,
    room_id             TEXT    NOT NULL,
    session_id          TEXT    NOT NULL,
    first_message_index BIGINT  NOT NULL,
    forwarded_count     BIGINT  NOT NULL,
    is_verified         BOOLEAN NOT NULL,
    session_data        TEXT    NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id),
    FOREIGN KEY (user_id, version) REFERENCES key_backup_versions (user_id, version)
);

-- +goose Down
DROP TABLE key_backup_keys;
DROP TABLE key_backup_versions;
DROP TABLE key_backup_counters;
