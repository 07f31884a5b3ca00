-- Hardening of accounts: refresh tokens may expire
-- (refresh_token_lifetime, 0 for never), and the user-interactive auth
-- sessions and shared-secret nonces that anyone may create are swept by
-- age and trimmed by count, for which they are indexed.

-- +goose Up
ALTER TABLE refresh_tokens ADD COLUMN expires_ts BIGINT NOT NULL DEFAULT 0;
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);
CREATE INDEX uia_sessions_user ON uia_sessions (user_id, created_ts);
CREATE INDEX registration_nonces_created ON registration_nonces (created_ts);

-- +goose Down
DROP INDEX registration_nonces_created;
DROP INDEX uia_sessions_user;
DROP INDEX uia_sessions_created;
ALTER TABLE refresh_tokens DROP COLUMN expires_ts;
