-- The idle sweep looks for users not offline whose last activity is old.

-- +goose Up
CREATE INDEX presence_last_active ON presence (last_active_ts);

-- +goose Down
DROP INDEX presence_last_active;
