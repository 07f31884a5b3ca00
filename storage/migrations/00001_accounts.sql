-- Accounts, profiles, devices and their tokens, user-interactive auth
-- sessions and shared-secret registration nonces.

-- +goose Up
CREATE TABLE users (
    user_id       TEXT    NOT NULL PRIMARY KEY,
    localpart     TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL DEFAULT '',
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest      BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
    appservice_id TEXT    NOT NULL DEFAULT '',
    created_ts    BIGINT  NOT NULL
);

CREATE TABLE profiles (
    user_id     TEXT NOT NULL PRIMARY KEY REFERENCES users (user_id),
    displayname TEXT,
    avatar_url  TEXT,
    -- Custom profile fields (Matrix 1.16), a JSON object.
    fields      TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE devices (
    user_id      TEXT   NOT NULL REFERENCES users (user_id),
    device_id    TEXT   NOT NULL,
    display_name TEXT,
    created_ts   BIGINT NOT NULL,
    last_seen_ts BIGINT NOT NULL DEFAULT 0,
    last_seen_ip TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 hex digests: the database never holds a
-- usable secret.
CREATE TABLE access_tokens (
    token_hash   TEXT   NOT NULL PRIMARY KEY,
    user_id      TEXT   NOT NULL,
    device_id    TEXT   NOT NULL,
    created_ts   BIGINT NOT NULL,
    expires_ts   BIGINT NOT NULL DEFAULT 0,
    refresh_hash TEXT   NOT NULL DEFAULT '',
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);
CREATE INDEX access_tokens_refresh ON access_tokens (refresh_hash);

-- prev_hash is the refresh token this one replaced; it stays valid until the
-- new pair is first used, so a client that lost the answer can retry.
CREATE TABLE refresh_tokens (
    token_hash TEXT   NOT NULL PRIMARY KEY,
    user_id    TEXT   NOT NULL,
    device_id  TEXT   NOT NULL,
    prev_hash  TEXT   NOT NULL DEFAULT '',
    created_ts BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_prev ON refresh_tokens (prev_hash);

CREATE TABLE uia_sessions (
    session_id TEXT   NOT NULL PRIMARY KEY,
    method     TEXT   NOT NULL,
    path       TEXT   NOT NULL,
    user_id    TEXT   NOT NULL DEFAULT '',
    completed  TEXT   NOT NULL DEFAULT '',
    created_ts BIGINT NOT NULL
);

CREATE TABLE registration_nonces (
    nonce      TEXT   NOT NULL PRIMARY KEY,
    created_ts BIGINT NOT NULL
);

-- +goose Down
DROP TABLE registration_nonces;
DROP TABLE uia_sessions;
DROP TABLE refresh_tokens;
DROP TABLE access_tokens;
DROP TABLE devices;
DROP TABLE profiles;
DROP TABLE users;
