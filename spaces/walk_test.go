package spaces

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"

	"homeserver/mxhttp"
	"homeserver/rooms"
)

const me = "@me:here"

// fakeRooms is the rooms this server ("here") is in.
type fakeRooms struct {
	rooms   map[string]rooms.SpaceRoom
	members map[[2]string]string // room, user: membership
	joined  map[string][]string  // room: servers with members
	denied  map[[2]string]bool   // room, server: denied by the ACL
}

func newFakeRooms() *fakeRooms {
	return &fakeRooms{rooms: map[string]rooms.SpaceRoom{}, members: map[[2]string]string{}, joined: map[string][]string{}, denied: map[[2]string]bool{}}
}

func (f *fakeRooms) ServerName() string { return "here" }
func (f *fakeRooms) InRoom(_ context.Context, id string) (bool, error) {
	_, ok := f.rooms[id]
	return ok, nil
}
func (f *fakeRooms) SpaceRoom(_ context.Context, id string) (rooms.SpaceRoom, error) {
	r, ok := f.rooms[id]
	if !ok {
		return r, rooms.ErrNotFound
	}
	return r, nil
}
func (f *fakeRooms) Membership(_ context.Context, id, user string) (string, error) {
	return f.members[[2]string{id, user}], nil
}
func (f *fakeRooms) JoinedServers(_ context.Context, id string) ([]string, error) {
	return f.joined[id], nil
}
func (f *fakeRooms) ServerAllowed(_ context.Context, id, server string) (bool, error) {
	return !f.denied[[2]string{id, server}], nil
}

// add adds a room with a join rule; children (with via ["here"]) make it a
// space, in the order given.
func (f *fakeRooms) add(id, rule string, children ...string) {
	r := rooms.SpaceRoom{PublicRoom: rooms.PublicRoom{RoomID: id, JoinRule: rule, Name: "name of " + id}, RoomVersion: "10"}
	if len(children) > 0 {
		r.RoomType = spaceType
	}
	for i, c := range children {
		r.Children = append(r.Children, rooms.SpaceChild{RoomID: c, Sender: "@a:here", TS: int64(i), Content: json.RawMessage(`{"via":["here"]}`)})
	}
	f.rooms[id] = r
}

func roomIDs(rs []Room) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.RoomID)
	}
	return out
}

func depth(n int) *int { return &n }

// testTree is:
//
//	!root (space)
//	  !s1 (space)
//	    !a       public
//	    !private invite
//	    !root    (a loop)
//	  !b         public, suggested
//	  !r         restricted to !allowed, which the user is in
//	  !s2 (space, suggested)
//	    !c       knock
//	    !d       invite, but the user is invited
//	    !e       invite, world readable
func testTree() *fakeRooms {
	f := newFakeRooms()
	f.add("!root:here", "public", "!s1:here", "!b:here", "!r:here", "!s2:here")
	f.add("!s1:here", "public", "!a:here", "!private:here", "!root:here")
	f.add("!a:here", "public")
	f.add("!private:here", "invite")
	f.add("!b:here", "public")
	f.add("!r:here", "restricted")
	r := f.rooms["!r:here"]
	r.AllowedRoomIDs = []string{"!allowed:here"}
	f.rooms["!r:here"] = r
	f.members[[2]string{"!allowed:here", me}] = "join"
	f.add("!s2:here", "public", "!c:here", "!d:here", "!e:here")
	f.add("!c:here", "knock")
	f.add("!d:here", "invite")
	f.members[[2]string{"!d:here", me}] = "invite"
	f.add("!e:here", "invite")
	e := f.rooms["!e:here"]
	e.WorldReadable = true
	f.rooms["!e:here"] = e
	root := f.rooms["!root:here"]
	root.Children[1].Content = json.RawMessage(`{"via":["here"],"suggested":true}`)
	root.Children[3].Content = json.RawMessage(`{"via":["here"],"suggested":true}`)
	return f
}

func TestHierarchyWalk(t *testing.T) {
	tests := []struct {
		name string
		q    Query
		want []string
	}{
		{"whole tree, depth first", Query{}, []string{"!root:here", "!s1:here", "!a:here", "!b:here", "!r:here", "!s2:here", "!c:here", "!d:here", "!e:here"}},
		{"max_depth 0", Query{MaxDepth: depth(0)}, []string{"!root:here"}},
		{"max_depth 1", Query{MaxDepth: depth(1)}, []string{"!root:here", "!s1:here", "!b:here", "!r:here", "!s2:here"}},
		{"suggested only", Query{SuggestedOnly: true}, []string{"!root:here", "!b:here", "!s2:here"}},
		{"suggested only from a space", Query{RoomID: "!s2:here", SuggestedOnly: true}, []string{"!s2:here"}},
		{"rooted elsewhere", Query{RoomID: "!s1:here"}, []string{"!s1:here", "!a:here", "!root:here", "!b:here", "!r:here", "!s2:here", "!c:here", "!d:here", "!e:here"}},
		{"a room that is not a space", Query{RoomID: "!a:here"}, []string{"!a:here"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(testTree(), slog.Default())
			tt.q.User = me
			if tt.q.RoomID == "" {
				tt.q.RoomID = "!root:here"
			}
			page, err := s.Hierarchy(context.Background(), tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := roomIDs(page.Rooms); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if page.NextBatch != "" {
				t.Errorf("next_batch %q on the only page", page.NextBatch)
			}
		})
	}
}

func TestHierarchyChildrenState(t *testing.T) {
	s := New(testTree(), slog.Default())
	page, err := s.Hierarchy(context.Background(), Query{User: me, RoomID: "!root:here", MaxDepth: depth(1), SuggestedOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, c := range page.Rooms[0].ChildrenState {
		keys = append(keys, c.StateKey)
		if c.Type != "m.space.child" || c.Sender != "@a:here" {
			t.Errorf("child event %+v", c)
		}
	}
	if !slices.Equal(keys, []string{"!b:here", "!s2:here"}) {
		t.Errorf("root's children_state with suggested_only: %v", keys)
	}
	if cs := page.Rooms[1].ChildrenState; cs == nil || len(cs) != 0 {
		t.Errorf("a room's children_state: %#v", cs)
	}
	// Only a restricted room tells its allowed rooms.
	page, _ = s.Hierarchy(context.Background(), Query{User: me, RoomID: "!root:here", MaxDepth: depth(1)})
	for _, r := range page.Rooms {
		if want := r.RoomID == "!r:here"; (len(r.AllowedRoomIDs) > 0) != want {
			t.Errorf("%s: allowed_room_ids %v", r.RoomID, r.AllowedRoomIDs)
		}
	}
}

func TestHierarchyPagination(t *testing.T) {
	s := New(testTree(), slog.Default())
	ctx := context.Background()
	full, err := s.Hierarchy(ctx, Query{User: me, RoomID: "!root:here"})
	if err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{1, 2, 3, 4, 8, 9, 10} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			var got []string
			from := ""
			for pages := 0; ; pages++ {
				if pages > len(full.Rooms) {
					t.Fatal("pagination does not end")
				}
				page, err := s.Hierarchy(ctx, Query{User: me, RoomID: "!root:here", Limit: limit, From: from})
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Rooms) > limit {
					t.Fatalf("page of %d rooms", len(page.Rooms))
				}
				got = append(got, roomIDs(page.Rooms)...)
				if from = page.NextBatch; from == "" {
					break
				}
			}
			if !slices.Equal(got, roomIDs(full.Rooms)) {
				t.Errorf("pages: %v, want %v", got, roomIDs(full.Rooms))
			}
		})
	}
}

func TestHierarchyBadRequests(t *testing.T) {
	s := New(testTree(), slog.Default())
	ctx := context.Background()
	first, err := s.Hierarchy(ctx, Query{User: me, RoomID: "!root:here", Limit: 1, MaxDepth: depth(3)})
	if err != nil || first.NextBatch == "" {
		t.Fatalf("first page: %+v, %v", first, err)
	}
	tests := []struct {
		name   string
		q      Query
		status int
		code   string
	}{
		{"invalid token", Query{RoomID: "!root:here", From: "nonsense"}, 400, "M_INVALID_PARAM"},
		{"token of another room", Query{RoomID: "!s1:here", MaxDepth: depth(3), From: first.NextBatch}, 400, "M_INVALID_PARAM"},
		{"max_depth changed", Query{RoomID: "!root:here", MaxDepth: depth(2), From: first.NextBatch}, 400, "M_INVALID_PARAM"},
		{"suggested_only changed", Query{RoomID: "!root:here", MaxDepth: depth(3), SuggestedOnly: true, From: first.NextBatch}, 400, "M_INVALID_PARAM"},
		{"negative max_depth", Query{RoomID: "!root:here", MaxDepth: depth(-1)}, 400, "M_INVALID_PARAM"},
		{"negative limit", Query{RoomID: "!root:here", Limit: -1}, 400, "M_INVALID_PARAM"},
		{"not a room ID", Query{RoomID: "#root:here"}, 400, "M_INVALID_PARAM"},
		{"unknown root", Query{RoomID: "!nowhere:here"}, 403, "M_FORBIDDEN"},
		{"root the user may not see", Query{RoomID: "!private:here"}, 403, "M_FORBIDDEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.q.User = me
			_, err := s.Hierarchy(ctx, tt.q)
			var mx *mxhttp.Error
			if !errors.As(err, &mx) || mx.Status != tt.status || mx.Code != tt.code {
				t.Errorf("got %v, want %d %s", err, tt.status, tt.code)
			}
		})
	}
	if _, err := s.Hierarchy(ctx, Query{User: me, RoomID: "!root:here", Limit: 1, MaxDepth: depth(3), From: first.NextBatch}); err != nil {
		t.Errorf("same parameters: %v", err)
	}
}

func TestHierarchyAccess(t *testing.T) {
	f := newFakeRooms()
	f.add("!root:here", "invite", "!banned:here", "!bannedwr:here", "!knockv6:here", "!restrictednot:here", "!joined:here")
	f.members[[2]string{"!root:here", me}] = "join"
	f.add("!banned:here", "public")
	f.members[[2]string{"!banned:here", me}] = "ban"
	f.add("!bannedwr:here", "public")
	f.members[[2]string{"!bannedwr:here", me}] = "ban"
	wr := f.rooms["!bannedwr:here"]
	wr.WorldReadable = true
	f.rooms["!bannedwr:here"] = wr
	f.add("!knockv6:here", "knock")
	k := f.rooms["!knockv6:here"]
	k.RoomVersion = "6" // knocking came with v7
	f.rooms["!knockv6:here"] = k
	f.add("!restrictednot:here", "restricted")
	rn := f.rooms["!restrictednot:here"]
	rn.AllowedRoomIDs = []string{"!elsewhere:here"}
	f.rooms["!restrictednot:here"] = rn
	f.add("!joined:here", "invite")
	f.members[[2]string{"!joined:here", me}] = "join"

	page, err := New(f, slog.Default()).Hierarchy(context.Background(), Query{User: me, RoomID: "!root:here"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := roomIDs(page.Rooms), []string{"!root:here", "!bannedwr:here", "!joined:here"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// fakeRemote answers hierarchies of other servers' rooms.
type fakeRemote struct {
	answers map[string]*FederationHierarchy // server/room
	calls   []string
}

func (f *fakeRemote) Hierarchy(_ context.Context, server, roomID string, suggestedOnly bool) (*FederationHierarchy, error) {
	f.calls = append(f.calls, server+"/"+roomID)
	if a, ok := f.answers[server+"/"+roomID]; ok {
		return a, nil
	}
	return nil, mxhttp.NotFound("no")
}

func remoteRoom(id, rule, roomType string, children ...string) Room {
	r := Room{PublicRoom: rooms.PublicRoom{RoomID: id, JoinRule: rule, RoomType: roomType}, ChildrenState: []ChildEvent{}}
	for i, c := range children {
		r.ChildrenState = append(r.ChildrenState, childEv(c, int64(i), `{"via":["there"]}`))
	}
	return r
}

func TestHierarchyRemote(t *testing.T) {
	f := newFakeRooms()
	f.add("!root:here", "public")
	root := f.rooms["!root:here"]
	root.RoomType = spaceType
	root.Children = []rooms.SpaceChild{{RoomID: "!far:there", TS: 1, Content: json.RawMessage(`{"via":["here","dead","there"]}`)}}
	f.rooms["!root:here"] = root
	remote := &fakeRemote{answers: map[string]*FederationHierarchy{
		"there/!far:there": {
			Room: remoteRoom("!far:there", "public", spaceType, "!leaf:there", "!secret:there", "!sub:there", "!private:there", "!gone:there"),
			Children: []Room{
				remoteRoom("!leaf:there", "", ""),
				remoteRoom("!sub:there", "public", spaceType, "!deep:there"),
				remoteRoom("!private:there", "invite", ""),
			},
			InaccessibleChildren: []string{"!secret:there"},
		},
		"there/!sub:there": {
			Room:     remoteRoom("!sub:there", "public", spaceType, "!deep:there"),
			Children: []Room{remoteRoom("!deep:there", "public", "")},
		},
	}}
	s := New(f, slog.Default())
	ctx := context.Background()

	// Without federation, rooms elsewhere are left out.
	page, err := s.Hierarchy(ctx, Query{User: me, RoomID: "!root:here"})
	if err != nil || !slices.Equal(roomIDs(page.Rooms), []string{"!root:here"}) {
		t.Fatalf("without federation: %+v %v", page, err)
	}

	s.SetRemote(remote)
	page, err = s.Hierarchy(ctx, Query{User: me, RoomID: "!root:here"})
	if err != nil {
		t.Fatal(err)
	}
	// !leaf has no join rule: public, as a summary without one means.
	// !secret is inaccessible, !private invite only (its summary serves:
	// it is no space), and of !gone no server says anything.
	if got, want := roomIDs(page.Rooms), []string{"!root:here", "!far:there", "!leaf:there", "!sub:there", "!deep:there"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if want := []string{"dead/!far:there", "there/!far:there", "there/!sub:there", "there/!gone:there"}; !slices.Equal(remote.calls, want) {
		t.Errorf("asked %v, want %v", remote.calls, want)
	}

	// The next pages walk again, from the answers kept.
	remote.calls = nil
	var got []string
	for from := ""; ; {
		page, err := s.Hierarchy(ctx, Query{User: me, RoomID: "!root:here", Limit: 2, From: from})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, roomIDs(page.Rooms)...)
		if from = page.NextBatch; from == "" {
			break
		}
	}
	if len(got) != 5 || len(remote.calls) != 0 {
		t.Errorf("pages %v, asking %v", got, remote.calls)
	}

	// At the depth asked for, a child space's summary serves.
	s = New(f, slog.Default())
	s.SetRemote(remote)
	page, err = s.Hierarchy(ctx, Query{User: me, RoomID: "!root:here", MaxDepth: depth(2)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := roomIDs(page.Rooms), []string{"!root:here", "!far:there", "!leaf:there", "!sub:there"}; !slices.Equal(got, want) {
		t.Errorf("max_depth 2: got %v, want %v", got, want)
	}
}

func TestServerHierarchy(t *testing.T) {
	f := newFakeRooms()
	f.add("!space:here", "invite", "!pub:here", "!inv:here", "!acl:here", "!res:here", "!elsewhere:there", "!theirs:here")
	f.joined["!space:here"] = []string{"here", "origin"}
	f.add("!pub:here", "public")
	f.add("!inv:here", "invite")
	f.add("!acl:here", "public")
	f.denied[[2]string{"!acl:here", "origin"}] = true
	f.add("!res:here", "restricted")
	f.add("!theirs:here", "invite")
	f.joined["!theirs:here"] = []string{"origin"}
	s := New(f, slog.Default())
	ctx := context.Background()

	ans, err := s.ServerHierarchy(ctx, "origin", "!space:here", false)
	if err != nil {
		t.Fatal(err)
	}
	if ans.Room.RoomID != "!space:here" || len(ans.Room.ChildrenState) != 6 {
		t.Errorf("room: %+v", ans.Room)
	}
	if got, want := roomIDs(ans.Children), []string{"!pub:here", "!res:here", "!theirs:here"}; !slices.Equal(got, want) {
		t.Errorf("children %v, want %v", got, want)
	}
	if want := []string{"!inv:here", "!acl:here"}; !slices.Equal(ans.InaccessibleChildren, want) {
		t.Errorf("inaccessible %v, want %v", ans.InaccessibleChildren, want)
	}

	for _, tt := range []struct{ name, origin, room string }{
		{"a server without access", "stranger", "!space:here"},
		{"an unknown room", "origin", "!nowhere:here"},
	} {
		_, err := s.ServerHierarchy(ctx, tt.origin, tt.room, false)
		var mx *mxhttp.Error
		if !errors.As(err, &mx) || mx.Status != 404 || mx.Code != "M_NOT_FOUND" {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}
