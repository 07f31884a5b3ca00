-- enable_authenticated_media: media stored while it is on is served only by
-- the authenticated endpoints, as in Synapse. Media stored before keeps
-- being served by the legacy unauthenticated ones.

-- +goose Up
ALTER TABLE media ADD COLUMN authenticated BOOLEAN NOT NULL DEFAULT FALSE;

-- +goose Down
ALTER TABLE media DROP COLUMN authenticated;
