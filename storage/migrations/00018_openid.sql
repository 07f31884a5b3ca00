-- OpenID tokens users hand to other services, which exchange them for the
-- user's ID through the federation API's userinfo. Only their hashes are
-- kept, as for access tokens.

-- +goose Up
CREATE TABLE openid_tokens (
    token_hash TEXT   NOT NULL PRIMARY KEY,
    user_id    TEXT   NOT NULL,
    expires_ts BIGINT NOT NULL
);

CREATE INDEX openid_tokens_expires ON openid_tokens (expires_ts);

-- +goose Down
DROP TABLE openid_tokens;
