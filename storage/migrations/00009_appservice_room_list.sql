-- Rooms application services publish in the room lists of their
-- third-party networks (PUT /directory/list/appservice/{networkId}/{roomId}),
-- apart from the server's own directory (rooms.published).

-- +goose Up
CREATE TABLE appservice_room_list (
    as_id      TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    PRIMARY KEY (as_id, network_id, room_id)
);
CREATE INDEX appservice_room_list_network ON appservice_room_list (network_id);

-- +goose Down
DROP TABLE appservice_room_list;
