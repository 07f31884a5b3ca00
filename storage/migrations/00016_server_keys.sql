-- Other servers' signing keys, fetched from them or through a notary: one
-- row per (server, key), with the signed key response that listed it, which
-- we serve again, countersigned, when asked as a notary.

-- +goose Up
CREATE TABLE server_keys (
    server_name    TEXT   NOT NULL,
    key_id         TEXT   NOT NULL,
    -- Unpadded standard base64 of the ed25519 public key.
    public_key     TEXT   NOT NULL,
    -- The response's valid_until_ts, capped at fetched_ts + 7 days.
    valid_until_ts BIGINT NOT NULL,
    -- Set for keys listed in old_verify_keys.
    expired_ts     BIGINT,
    fetched_ts     BIGINT NOT NULL,
    -- The whole signed response, canonical JSON.
    key_json       TEXT   NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- +goose Down
DROP TABLE server_keys;
