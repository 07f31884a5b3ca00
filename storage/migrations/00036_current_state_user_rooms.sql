-- The covering index of a user's memberships (00035) was partial (WHERE
-- type = 'm.room.member'). SQLite then checks every query on current_state
-- with a bound type against that condition using the bound value, and
-- marks the prepared statement to be compiled again whenever it is bound
-- anew: each send recompiled its auth-state query. The same index over
-- every type, with type second, serves the membership reads as well.

-- +goose Up
DROP INDEX current_state_user_rooms;
CREATE INDEX current_state_user_rooms ON current_state (state_key, type, room_id, membership, stream_pos, event_id);

-- +goose Down
DROP INDEX current_state_user_rooms;
CREATE INDEX current_state_user_rooms ON current_state (state_key, room_id, membership, stream_pos, event_id)
    WHERE type = 'm.room.member';
