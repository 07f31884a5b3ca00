-- Filters uploaded with POST /user/{userId}/filter.

-- +goose Up
CREATE TABLE filters (
    user_id   TEXT   NOT NULL,
    filter_id BIGINT NOT NULL,
    json      TEXT   NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- +goose Down
DROP TABLE filters;
