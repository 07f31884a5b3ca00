-- End-to-end encryption: device keys, one-time and fallback keys,
-- cross-signing keys and signatures, the device-list change stream, the
-- one-time-key change stream (for application services), and send-to-device
-- messages with their transaction IDs.

-- +goose Up
-- Stream positions of the streams below, one row per stream. A writer takes
-- its position with INSERT ... ON CONFLICT DO UPDATE ... RETURNING, which
-- locks the row until commit: positions commit in order, even across
-- processes.
CREATE TABLE stream_counters (
    name TEXT   NOT NULL PRIMARY KEY,
    pos  BIGINT NOT NULL
);

-- The signed device keys object as uploaded (canonical JSON, no unsigned).
CREATE TABLE device_keys (
    user_id   TEXT   NOT NULL,
    device_id TEXT   NOT NULL,
    key_json  TEXT   NOT NULL,
    ts        BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- Unclaimed one-time keys; claims take the oldest upload first (seq).
CREATE TABLE one_time_keys (
    user_id   TEXT   NOT NULL,
    device_id TEXT   NOT NULL,
    algorithm TEXT   NOT NULL,
    key_id    TEXT   NOT NULL,
    key_json  TEXT   NOT NULL,
    seq       BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX one_time_keys_claim ON one_time_keys (user_id, device_id, algorithm, seq);

-- At most one fallback key per device and algorithm; used once claimed.
CREATE TABLE fallback_keys (
    user_id   TEXT    NOT NULL,
    device_id TEXT    NOT NULL,
    algorithm TEXT    NOT NULL,
    key_id    TEXT    NOT NULL,
    key_json  TEXT    NOT NULL,
    used      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

-- A user's cross-signing keys: key_type is master, self_signing or
-- user_signing; public_key is the base64 ed25519 key.
CREATE TABLE cross_signing_keys (
    user_id    TEXT NOT NULL,
    key_type   TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded with /keys/signatures/upload, merged into the signed
-- object when served. target_key is a device ID or a cross-signing public key.
CREATE TABLE key_signatures (
    target_user   TEXT NOT NULL,
    target_key    TEXT NOT NULL,
    signer_user   TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature     TEXT NOT NULL,
    PRIMARY KEY (target_user, target_key, signer_user, signer_key_id)
);

-- One row per change of a user's devices or keys that others must learn of.
CREATE TABLE device_list_stream (
    pos     BIGINT NOT NULL,
    user_id TEXT   NOT NULL,
    PRIMARY KEY (pos, user_id)
);
CREATE INDEX device_list_stream_user ON device_list_stream (user_id, pos);

-- One row per change of a device's one-time or fallback keys (uploads and
-- claims), read by application services that receive key counts.
CREATE TABLE otk_stream (
    pos       BIGINT NOT NULL,
    user_id   TEXT   NOT NULL,
    device_id TEXT   NOT NULL,
    PRIMARY KEY (pos, user_id, device_id)
);

-- Send-to-device messages waiting for their device; pos is shared by the
-- messages of one request. Deleted once the device acknowledges them.
CREATE TABLE to_device_messages (
    user_id   TEXT   NOT NULL,
    device_id TEXT   NOT NULL,
    pos       BIGINT NOT NULL,
    sender    TEXT   NOT NULL,
    type      TEXT   NOT NULL,
    content   TEXT   NOT NULL,
    PRIMARY KEY (user_id, device_id, pos),
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX to_device_messages_pos ON to_device_messages (pos);

-- Transaction IDs of /sendToDevice, so that a retry sends nothing twice.
CREATE TABLE to_device_txns (
    user_id    TEXT   NOT NULL,
    scope      TEXT   NOT NULL,
    txn_id     TEXT   NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, scope, txn_id)
);

-- Where each application service is in the streams above.
ALTER TABLE appservice_state ADD COLUMN to_device_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE appservice_state ADD COLUMN device_list_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE appservice_state ADD COLUMN otk_pos BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE appservice_state DROP COLUMN otk_pos;
ALTER TABLE appservice_state DROP COLUMN device_list_pos;
ALTER TABLE appservice_state DROP COLUMN to_device_pos;
DROP TABLE to_device_txns;
DROP TABLE to_device_messages;
DROP TABLE otk_stream;
DROP TABLE device_list_stream;
DROP TABLE key_signatures;
DROP TABLE cross_signing_keys;
DROP TABLE fallback_keys;
DROP TABLE one_time_keys;
DROP TABLE device_keys;
DROP TABLE stream_counters;
