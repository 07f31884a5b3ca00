-- Federation of device lists: what other servers were last told of each
-- local user's devices and cross-signing keys (m.device_list_update,
-- m.signing_key_update), so that the next change is announced as the
-- difference: new or changed devices, deleted ones, new keys.

-- +goose Up
-- stream_id is the stream_id of the user's last m.device_list_update (a
-- position of the device-list stream), the prev_id of the next one;
-- signing_keys a digest of the cross-signing keys last announced.
CREATE TABLE device_lists_announced (
    user_id      TEXT   NOT NULL PRIMARY KEY,
    stream_id    BIGINT NOT NULL,
    signing_keys TEXT   NOT NULL
);

-- A digest of each device (keys and display name) as last announced.
CREATE TABLE device_lists_announced_devices (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    digest    TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- +goose Down
DROP TABLE device_lists_announced_devices;
DROP TABLE device_lists_announced;
