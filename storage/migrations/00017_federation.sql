-- Federation: what each destination is owed, inbound transactions already
-- answered, and the stripped state of invites from other servers.
--
-- Events known only through federation's auth chains and room state (never
-- part of this server's timeline) live in events with negative stream
-- positions, so that no reader following positions upwards meets them.

-- +goose Up
CREATE TABLE federation_outbox (
    destination TEXT   NOT NULL,
    pos         BIGINT NOT NULL,
    -- An event (event_id) or an EDU (edu, its JSON).
    event_id    TEXT,
    edu         TEXT,
    created_ts  BIGINT NOT NULL,
    PRIMARY KEY (destination, pos)
);

CREATE TABLE federation_inbound_txns (
    origin     TEXT   NOT NULL,
    txn_id     TEXT   NOT NULL,
    response   TEXT   NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

CREATE TABLE invite_stripped_state (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    state   TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- +goose Down
DROP TABLE invite_stripped_state;
DROP TABLE federation_inbound_txns;
DROP TABLE federation_outbox;
