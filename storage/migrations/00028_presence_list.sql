-- Presence lists (the 2015 API's /presence/list/{userId}): the users whose
-- presence each user asked to follow. Local invitations are accepted at
-- once, so every row is an accepted one.

-- +goose Up
CREATE TABLE presence_list (
    user_id          TEXT NOT NULL,
    observed_user_id TEXT NOT NULL,
    PRIMARY KEY (user_id, observed_user_id)
);

-- +goose Down
DROP TABLE presence_list;
