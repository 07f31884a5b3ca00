-- Leases on background readers, so that each runs in one process of a
-- deployment at a time: held by owner until expires_ms (the database's
-- clock, in milliseconds), renewed while the owner lives.

-- +goose Up
CREATE TABLE reader_leases (
    name       TEXT   NOT NULL PRIMARY KEY,
    owner      TEXT   NOT NULL,
    expires_ms BIGINT NOT NULL
);

-- +goose Down
DROP TABLE reader_leases;
