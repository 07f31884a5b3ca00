-- Registration tokens managed through the admin API
-- (/_synapse/admin/v1/registration_tokens), beside the static ones of the
-- configuration. NULL uses_allowed is unlimited, NULL expiry_time never.
--
-- A token's pending uses are not counted here: they are the live UIA
-- sessions holding it (uia_sessions.registration_token), so that a session
-- that expires or is swept gives its use back without bookkeeping.

-- +goose Up
CREATE TABLE registration_tokens (
    token        TEXT   NOT NULL PRIMARY KEY,
    uses_allowed BIGINT,
    completed    BIGINT NOT NULL DEFAULT 0,
    expiry_time  BIGINT
);

ALTER TABLE uia_sessions ADD COLUMN registration_token TEXT;
CREATE INDEX uia_sessions_registration_token ON uia_sessions (registration_token);

-- +goose Down
DROP INDEX uia_sessions_registration_token;
ALTER TABLE uia_sessions DROP COLUMN registration_token;
DROP TABLE registration_tokens;
