-- Login tokens (m.login.token), issued to logged-in devices through
-- /login/get_token for a new device to log in with once. Only their hashes
-- are kept, as for access tokens.
--
-- Client transaction IDs are scoped to the device and the request path (the
-- room and event type, or the redacted event): the same ID sent to another
-- room is another event. Transactions recorded before have an empty path.

-- +goose Up
CREATE TABLE login_tokens (
    token_hash TEXT   NOT NULL PRIMARY KEY,
    user_id    TEXT   NOT NULL,
    expires_ts BIGINT NOT NULL
);

CREATE INDEX login_tokens_expires ON login_tokens (expires_ts);

CREATE TABLE event_txns_by_path (
    user_id  TEXT NOT NULL,
    scope    TEXT NOT NULL,
    path     TEXT NOT NULL,
    txn_id   TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, scope, path, txn_id)
);
INSERT INTO event_txns_by_path (user_id, scope, path, txn_id, event_id)
    SELECT user_id, scope, '', txn_id, event_id FROM event_txns;
DROP TABLE event_txns;
ALTER TABLE event_txns_by_path RENAME TO event_txns;
CREATE INDEX event_txns_event ON event_txns (event_id);

-- A pusher belongs to the session (device) that set it: a password change
-- that logs the other devices out deletes their pushers, as in Synapse.
ALTER TABLE pushers ADD COLUMN device_id TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE pushers DROP COLUMN device_id;

CREATE TABLE event_txns_by_scope (
    user_id  TEXT NOT NULL,
    scope    TEXT NOT NULL,
    txn_id   TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, scope, txn_id)
);
INSERT INTO event_txns_by_scope (user_id, scope, txn_id, event_id)
    SELECT user_id, scope, txn_id, MIN(event_id) FROM event_txns GROUP BY user_id, scope, txn_id;
DROP TABLE event_txns;
ALTER TABLE event_txns_by_scope RENAME TO event_txns;
CREATE INDEX event_txns_event ON event_txns (event_id);

DROP TABLE login_tokens;
