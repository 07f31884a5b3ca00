-- The user directory: one entry per user the directory knows (every local
-- user, and remote users seen joining a room), their search tokens (each
-- word of the user ID and display name, lower-cased, matched by prefix),
-- and the rooms whose members anyone may find (join rule public, or
-- history world-readable, as Synapse). Who shares a room with whom is read
-- from current_state at search time, so a leave hides a user at once.

-- +goose Up
CREATE TABLE user_directory (
    user_id      TEXT    NOT NULL PRIMARY KEY,
    display_name TEXT,
    avatar_url   TEXT,
    is_local     BOOLEAN NOT NULL,
    -- lower-cased display name (or localpart) to order results by.
    sort_key     TEXT    NOT NULL
);

CREATE TABLE user_directory_search (
    token   TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (token, user_id)
);
CREATE INDEX user_directory_search_user ON user_directory_search (user_id);

CREATE TABLE user_directory_public_rooms (
    room_id TEXT NOT NULL PRIMARY KEY
);

-- +goose Down
DROP TABLE user_directory_public_rooms;
DROP TABLE user_directory_search;
DROP TABLE user_directory;
