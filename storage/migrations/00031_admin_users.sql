-- What the admin API records of users beyond their accounts: the user type
-- (Synapse's bot and support users), shadow bans, GDPR erasure, and the
-- per-user overrides of the message rate limit.

-- +goose Up
ALTER TABLE users ADD COLUMN user_type TEXT;
ALTER TABLE users ADD COLUMN shadow_banned BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN erased BOOLEAN NOT NULL DEFAULT FALSE;
-- The admin user list pages by creation time as well as by name.
CREATE INDEX users_created_ts ON users (created_ts);

-- A row replaces rc_message for its user; messages_per_second 0 means no
-- limit at all.
CREATE TABLE ratelimit_override (
    user_id             TEXT   NOT NULL PRIMARY KEY,
    messages_per_second BIGINT NOT NULL,
    burst_count         BIGINT NOT NULL
);

-- +goose Down
DROP TABLE ratelimit_override;
DROP INDEX users_created_ts;
ALTER TABLE users DROP COLUMN erased;
ALTER TABLE users DROP COLUMN shadow_banned;
ALTER TABLE users DROP COLUMN user_type;
