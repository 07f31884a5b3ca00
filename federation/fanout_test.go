package federation

import (
	"slices"
	"testing"

	"homeserver/rooms"
)

// An event goes to the servers in its room at it: not to one that joined
// after it, and still to one that left after it, however late the fanout
// runs.
func TestServersAtAnEvent(t *testing.T) {
	// Now: alice (a.test) and carol (c.test) are joined; since position
	// 10, dave (d.test) joined at 12, bob (b.test) left at 14, and carol
	// left and came back at 15 and 16.
	m := &membersSince{wind: true,
		joined: []string{"@alice:a.test", "@carol:c.test", "@dave:d.test"},
		changes: []rooms.MemberChange{
			{UserID: "@dave:d.test", Membership: "join", Previous: "", Pos: 12},
			{UserID: "@bob:b.test", Membership: "leave", Previous: "join", Pos: 14},
			{UserID: "@carol:c.test", Membership: "leave", Previous: "join", Pos: 15},
			{UserID: "@carol:c.test", Membership: "join", Previous: "leave", Pos: 16},
		},
	}
	for _, c := range []struct {
		pos  int64
		want []string
	}{
		{11, []string{"a.test", "b.test", "c.test"}},
		{12, []string{"a.test", "b.test", "c.test", "d.test"}},
		{13, []string{"a.test", "b.test", "c.test", "d.test"}},
		{14, []string{"a.test", "c.test", "d.test"}},
		{15, []string{"a.test", "d.test"}},
		{16, []string{"a.test", "c.test", "d.test"}},
		{20, []string{"a.test", "c.test", "d.test"}},
	} {
		if got := m.serversAt(c.pos); !slices.Equal(got, c.want) {
			t.Errorf("at %d: %v, want %v", c.pos, got, c.want)
		}
	}
	// With nothing changed since, the servers of now.
	still := &membersSince{servers: []string{"a.test", "b.test"}}
	if got := still.serversAt(11); !slices.Equal(got, []string{"a.test", "b.test"}) {
		t.Errorf("unchanged room: %v", got)
	}
}
