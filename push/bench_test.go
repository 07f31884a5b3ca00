package push

import (
	"context"
	"fmt"
	"testing"

	"homeserver/pdu"
	"homeserver/rooms"
)

// benchStore serves one room's state for the service-level benchmark; the
// methods it does not need are left to the embedded nil interface.
type benchStore struct {
	Store
	members []rooms.Stored
	power   rooms.Stored
	loads   int
}

func (b *benchStore) CurrentStateOfType(context.Context, string, string) ([]rooms.Stored, error) {
	return b.members, nil
}

func (b *benchStore) CurrentState(context.Context, string, []pdu.StateKey) ([]rooms.Stored, error) {
	return []rooms.Stored{b.power}, nil
}

func (b *benchStore) PushRules(_ context.Context, users []string) (map[string][]byte, error) {
	b.loads++
	return map[string][]byte{}, nil
}

func (b *benchStore) IgnoredUserLists(context.Context, []string) (map[string][]byte, error) {
	return map[string][]byte{}, nil
}

func benchRoom(n int) *benchStore {
	b := &benchStore{power: rooms.Stored{Type: "m.room.power_levels",
		JSON: []byte(`{"type":"m.room.power_levels","sender":"@user0000:hs","content":{"users":{"@user0000:hs":100}}}`)}}
	for i := range n {
		u := fmt.Sprintf("@user%04d:hs", i)
		b.members = append(b.members, rooms.Stored{Type: "m.room.member", StateKey: &u, Membership: "join",
			JSON: fmt.Appendf(nil, `{"type":"m.room.member","state_key":%q,"content":{"membership":"join","displayname":"User %d"}}`, u, i)})
	}
	return b
}

// BenchmarkEvaluateRoom1000 is what the evaluator does for one message in
// a room of 1,000 local members: load the room (members, display names,
// power levels: two queries, served from memory here), then run each
// member's rules (cached after the first event) over the event.
func BenchmarkEvaluateRoom1000(b *testing.B) {
	st := benchRoom(1000)
	s := New(st, Config{ServerName: "hs"})
	ev := rooms.Stored{Pos: 1, EventID: "$e", RoomID: "!r:hs", Type: "m.room.message", Sender: "@user0000:hs",
		JSON: []byte(`{"type":"m.room.message","room_id":"!r:hs","sender":"@user0000:hs","content":{"msgtype":"m.text","body":"hello User 7","m.mentions":{"user_ids":["@user0001:hs"]}}}`)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ri, err := s.loadRoom(ctx, ev.RoomID)
		if err != nil {
			b.Fatal(err)
		}
		ns, err := s.evaluate(ctx, ev, ri)
		if err != nil || len(ns) != 999 {
			b.Fatalf("%d notifications, %v", len(ns), err)
		}
	}
	if st.loads != 1 {
		b.Fatalf("rules loaded %d times", st.loads)
	}
}
