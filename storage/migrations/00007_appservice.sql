-- Application service transaction queues: per service, the last stream
-- position fully handled (its durable cursor), the transaction ID counter,
-- whether it answers only on the legacy unprefixed paths, and the one
-- transaction persisted before it is sent (retried as is until a 2xx).

-- +goose Up
CREATE TABLE appservice_state (
    as_id      TEXT    NOT NULL PRIMARY KEY,
    -- Last position of the events stream fully handled.
    stream_pos BIGINT  NOT NULL,
    -- Highest transaction number handed out.
    last_txn   BIGINT  NOT NULL DEFAULT 0,
    legacy     BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE appservice_txns (
    as_id      TEXT    NOT NULL PRIMARY KEY REFERENCES appservice_state (as_id),
    txn_id     TEXT    NOT NULL,
    -- The request body as sent: {"events": [...], "ephemeral": [...]}.
    body       TEXT    NOT NULL,
    -- The stream position the cursor moves to once it is delivered.
    stream_pos BIGINT  NOT NULL,
    num_events INTEGER NOT NULL
);

-- +goose Down
DROP TABLE appservice_txns;
DROP TABLE appservice_state;
