package rooms

import (
	"context"
	"encoding/json"
)

// bumpTypes are the events that count as a room's activity when a
// client's room list is ordered (MSC4186's bump_stamp): messages and the
// like, not state changes or reactions.
var bumpTypes = map[string]bool{
	"m.room.create": true, "m.room.message": true, "m.room.encrypted": true, "m.sticker": true,
	"m.call.invite": true, "m.poll.start": true, "m.beacon_info": true,
}

// IsBumpType reports whether an event of this type moves its room up a
// client's room list.
func IsBumpType(eventType string) bool { return bumpTypes[eventType] }

// RoomInfo is what a room list is filtered and ordered by.
type RoomInfo struct {
	// BumpPos is the position of the room's last event of a bump type (0
	// when it has none, as a room joined over federation may not).
	BumpPos int64
	// Type is the create event's content.type ("" for a plain room).
	Type      string
	Encrypted bool
}

// RoomInfoRow is a room's info as stored, its create event still raw.
type RoomInfoRow struct {
	RoomID    string
	BumpPos   int64
	Create    []byte
	Encrypted bool
}

// RoomInfos returns the info of each room that exists among roomIDs.
func (s *Service) RoomInfos(ctx context.Context, roomIDs []string) (map[string]RoomInfo, error) {
	rows, err := s.store.RoomInfos(ctx, roomIDs)
	if err != nil {
		return nil, err
	}
	out := make(map[string]RoomInfo, len(rows))
	for _, r := range rows {
		info := RoomInfo{BumpPos: r.BumpPos, Encrypted: r.Encrypted}
		if len(r.Create) > 0 {
			var create struct {
				Content struct {
					Type any `json:"type"`
				} `json:"content"`
			}
			if json.Unmarshal(r.Create, &create) == nil {
				// A type that is not a string is no type (as for spaces).
				info.Type, _ = create.Content.Type.(string)
			}
		}
		out[r.RoomID] = info
	}
	return out, nil
}
