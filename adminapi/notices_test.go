package adminapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"homeserver/config"
	"homeserver/internal/testserver"
)

const (
	noticePath   = "/_synapse/admin/v1/send_server_notice"
	noticeConfig = `server_notices:
  system_mxid_localpart: notices
  system_mxid_display_name: "Server Notices"
  system_mxid_avatar_url: "mxc://test.local/sysavatar"
  room_name: "Notices Room"
  room_topic: "What the admins say"
  room_avatar_url: "mxc://test.local/roomavatar"
`
)

func noticeText(body string) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": body}
}

// noticeSync returns the rooms of u's initial /sync.
func noticeSync(t *testing.T, s *testserver.Server, u testserver.User) (invited, joined map[string]any) {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync?timeout=0", u.Token, nil)
	var body struct {
		Rooms struct {
			Invite map[string]any `json:"invite"`
			Join   map[string]any `json:"join"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	return body.Rooms.Invite, body.Rooms.Join
}

// noticeEvent reads an event as u sees it.
func noticeEvent(t *testing.T, s *testserver.Server, u testserver.User, roomID, eventID string) map[string]any {
	t.Helper()
	return s.MustDo(http.StatusOK, "GET", testserver.RoomPath(roomID, "/event/"+url.PathEscape(eventID)), u.Token, nil).JSON
}

func noticeState(t *testing.T, s *testserver.Server, u testserver.User, roomID, eventType string) map[string]any {
	t.Helper()
	return s.MustDo(http.StatusOK, "GET", testserver.RoomPath(roomID, "/state/"+eventType+"/"), u.Token, nil).JSON
}

func TestAdminServerNoticesDisabled(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	admin := s.Register("admin", "pw")
	regTokenMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	body := map[string]any{"user_id": bob.ID, "content": noticeText("hi")}
	regTokenWantErr(t, "user", s.Do("POST", noticePath, bob.Token, body), http.StatusForbidden, "M_FORBIDDEN")
	regTokenWantErr(t, "disabled", s.Do("POST", noticePath, admin.Token, body), http.StatusBadRequest, "M_UNKNOWN")
	regTokenWantErr(t, "disabled, PUT", s.Do("PUT", noticePath+"/t1", admin.Token, body), http.StatusBadRequest, "M_UNKNOWN")
}

func TestAdminServerNotices(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, noticeConfig)
	admin := s.Register("admin", "pw")
	regTokenMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	const system = "@notices:test.local"

	// Refused: normal users, unknown, remote and malformed users, bodies.
	regTokenWantErr(t, "user", s.Do("POST", noticePath, bob.Token, map[string]any{"user_id": bob.ID, "content": noticeText("hi")}),
		http.StatusForbidden, "M_FORBIDDEN")
	regTokenWantErr(t, "user, PUT", s.Do("PUT", noticePath+"/x", bob.Token, map[string]any{"user_id": bob.ID, "content": noticeText("hi")}),
		http.StatusForbidden, "M_FORBIDDEN")
	regTokenWantErr(t, "unknown user", s.Do("POST", noticePath, admin.Token, map[string]any{"user_id": "@nobody:test.local", "content": noticeText("hi")}),
		http.StatusNotFound, "M_NOT_FOUND")
	regTokenWantErr(t, "remote user", s.Do("POST", noticePath, admin.Token, map[string]any{"user_id": "@bob:elsewhere.example", "content": noticeText("hi")}),
		http.StatusBadRequest, "M_UNKNOWN")
	regTokenWantErr(t, "not a user ID", s.Do("POST", noticePath, admin.Token, map[string]any{"user_id": "bob", "content": noticeText("hi")}),
		http.StatusBadRequest, "M_INVALID_PARAM")
	regTokenWantErr(t, "no content", s.Do("POST", noticePath, admin.Token, map[string]any{"user_id": bob.ID}),
		http.StatusBadRequest, "M_MISSING_PARAM")
	regTokenWantErr(t, "no user", s.Do("POST", noticePath, admin.Token, map[string]any{"content": noticeText("hi")}),
		http.StatusBadRequest, "M_MISSING_PARAM")
	regTokenWantErr(t, "message content not an object", s.Do("POST", noticePath, admin.Token, map[string]any{"user_id": bob.ID, "content": ""}),
		http.StatusBadRequest, "M_UNKNOWN")
	regTokenWantErr(t, "message without msgtype", s.Do("POST", noticePath, admin.Token, map[string]any{"user_id": bob.ID, "content": map[string]any{"body": ""}}),
		http.StatusBadRequest, "M_UNKNOWN")
	regTokenWantErr(t, "content not an object", s.Do("POST", noticePath, admin.Token, map[string]any{"user_id": bob.ID, "type": "m.example", "content": "hi"}),
		http.StatusBadRequest, "M_BAD_JSON")
	regTokenWantErr(t, "user_id not a string", s.Do("POST", noticePath, admin.Token, map[string]any{"user_id": 5, "content": noticeText("hi")}),
		http.StatusBadRequest, "M_BAD_JSON")
	regTokenWantErr(t, "not JSON", s.Do("POST", noticePath, admin.Token, "{"), http.StatusBadRequest, "M_NOT_JSON")
	if invited, _ := noticeSync(t, s, bob); len(invited) != 0 {
		t.Fatalf("refused notices made rooms: %v", invited)
	}

	// The first notice creates the system user and the room, and invites bob.
	first := s.MustDo(http.StatusOK, "POST", noticePath, admin.Token, map[string]any{"user_id": bob.ID, "content": noticeText("first")}).String("event_id")
	if first == "" {
		t.Fatal("no event_id")
	}
	invited, _ := noticeSync(t, s, bob)
	if len(invited) != 1 {
		t.Fatalf("bob's invites: %v", invited)
	}
	var roomID string
	for id := range invited {
		roomID = id
	}
	profile := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(system), bob.Token, nil)
	if profile.String("displayname") != "Server Notices" || profile.String("avatar_url") != "mxc://test.local/sysavatar" {
		t.Fatalf("system user's profile: %s", profile.Body)
	}
	tags := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/user/"+url.PathEscape(bob.ID)+"/rooms/"+url.PathEscape(roomID)+"/tags", bob.Token, nil)
	if _, ok := tags.JSON["tags"].(map[string]any)["m.server_notice"]; !ok {
		t.Fatalf("room tags: %s", tags.Body)
	}

	// Bob cannot reject the invite.
	regTokenWantErr(t, "reject", s.Do("POST", testserver.RoomPath(roomID, "/leave"), bob.Token, map[string]any{}),
		http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")

	// A second notice, before bob joined, goes to the same room; its
	// transaction ID makes a retry, even after a restart, the same event.
	txn := testserver.NextTxn()
	second := s.MustDo(http.StatusOK, "PUT", noticePath+"/"+txn, admin.Token, map[string]any{"user_id": bob.ID, "content": noticeText("second")}).String("event_id")
	if second == "" || second == first {
		t.Fatalf("second notice: %q", second)
	}
	if again := s.MustDo(http.StatusOK, "PUT", noticePath+"/"+txn, admin.Token, map[string]any{"user_id": bob.ID, "content": noticeText("second")}).String("event_id"); again != second {
		t.Fatalf("retried transaction: %s, want %s", again, second)
	}
	s.Restart()
	if again := s.MustDo(http.StatusOK, "PUT", noticePath+"/"+txn, admin.Token, map[string]any{"user_id": bob.ID, "content": noticeText("second")}).String("event_id"); again != second {
		t.Fatalf("retried transaction after a restart: %s, want %s", again, second)
	}
	if invited, _ := noticeSync(t, s, bob); len(invited) != 1 {
		t.Fatalf("bob's invites after the second notice: %v", invited)
	}

	// Bob joins and reads both notices, from the system user.
	s.Join(bob, roomID)
	for id, body := range map[string]string{first: "first", second: "second"} {
		ev := noticeEvent(t, s, bob, roomID, id)
		content, _ := ev["content"].(map[string]any)
		if ev["sender"] != system || ev["room_id"] != roomID || ev["type"] != "m.room.message" || content["body"] != body {
			t.Fatalf("notice %s: %v", id, ev)
		}
	}
	_, joined := noticeSync(t, s, bob)
	if _, ok := joined[roomID]; !ok {
		t.Fatalf("bob's joined rooms: %v", joined)
	}
	if name := noticeState(t, s, bob, roomID, "m.room.name"); name["name"] != "Notices Room" {
		t.Fatalf("room name: %v", name)
	}
	if topic := noticeState(t, s, bob, roomID, "m.room.topic"); topic["topic"] != "What the admins say" {
		t.Fatalf("room topic: %v", topic)
	}
	if avatar := noticeState(t, s, bob, roomID, "m.room.avatar"); avatar["url"] != "mxc://test.local/roomavatar" {
		t.Fatalf("room avatar: %v", avatar)
	}
	if create := noticeState(t, s, bob, roomID, "m.room.create"); create["creator"] != nil && create["creator"] != system {
		t.Fatalf("room creator: %v", create)
	}

	// Bob cannot speak in the room.
	regTokenWantErr(t, "bob sends", s.Do("PUT", testserver.RoomPath(roomID, "/send/m.room.message/"+testserver.NextTxn()), bob.Token, noticeText("hello?")),
		http.StatusForbidden, "M_FORBIDDEN")

	// A third notice, now that bob joined, still lands there; so does a
	// state event.
	third := s.MustDo(http.StatusOK, "POST", noticePath, admin.Token, map[string]any{"user_id": bob.ID, "content": noticeText("third")}).String("event_id")
	if ev := noticeEvent(t, s, bob, roomID, third); ev["room_id"] != roomID {
		t.Fatalf("third notice: %v", ev)
	}
	state := s.MustDo(http.StatusOK, "POST", noticePath, admin.Token, map[string]any{
		"user_id": bob.ID, "type": "m.example.notice", "state_key": "k", "content": map[string]any{"v": 1},
	}).String("event_id")
	if ev := noticeEvent(t, s, bob, roomID, state); ev["room_id"] != roomID || ev["state_key"] != "k" || ev["type"] != "m.example.notice" {
		t.Fatalf("state notice: %v", ev)
	}

	// Joined, bob may leave; the next notice makes a new room.
	s.MustDo(http.StatusOK, "POST", testserver.RoomPath(roomID, "/leave"), bob.Token, map[string]any{})
	s.MustDo(http.StatusOK, "POST", noticePath, admin.Token, map[string]any{"user_id": bob.ID, "content": noticeText("fourth")})
	invited, _ = noticeSync(t, s, bob)
	if len(invited) != 1 {
		t.Fatalf("bob's invites after leaving: %v", invited)
	}
	for id := range invited {
		if id == roomID {
			t.Fatal("the notice after leaving went to the old room")
		}
	}

	// Other invites can still be rejected.
	other := s.CreateRoom(admin, map[string]any{"invite": []string{bob.ID}})
	s.MustDo(http.StatusOK, "POST", testserver.RoomPath(other, "/leave"), bob.Token, map[string]any{})
}

func TestAdminServerNoticesProfileChange(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, noticeConfig)
	admin := s.Register("admin", "pw")
	regTokenMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	s.MustDo(http.StatusOK, "POST", noticePath, admin.Token, map[string]any{"user_id": bob.ID, "content": noticeText("one")})
	invited, _ := noticeSync(t, s, bob)
	var roomID string
	for id := range invited {
		roomID = id
	}
	s.Join(bob, roomID)
	member := func() map[string]any {
		return s.MustDo(http.StatusOK, "GET", testserver.RoomPath(roomID, "/state/m.room.member/"+url.PathEscape("@notices:test.local")), bob.Token, nil).JSON
	}
	if m := member(); m["displayname"] != "Server Notices" || m["avatar_url"] != "mxc://test.local/sysavatar" {
		t.Fatalf("system user's membership: %v", m)
	}

	// The admin renames the system user in the configuration.
	path := filepath.Join(s.Dir, "homeserver.yaml")
	yaml, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	yaml = []byte(strings.Replace(string(yaml), `system_mxid_display_name: "Server Notices"`, `system_mxid_display_name: "The Admins"`, 1))
	yaml = []byte(strings.Replace(string(yaml), `room_topic: "What the admins say"`, `room_topic: "News"`, 1))
	if err := os.WriteFile(path, yaml, 0o600); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	s.MustDo(http.StatusOK, "POST", noticePath, admin.Token, map[string]any{"user_id": bob.ID, "content": noticeText("two")})
	if m := member(); m["displayname"] != "The Admins" || m["avatar_url"] != "mxc://test.local/sysavatar" {
		t.Fatalf("system user's membership after the change: %v", m)
	}
	if topic := noticeState(t, s, bob, roomID, "m.room.topic"); topic["topic"] != "News" {
		t.Fatalf("room topic after the change: %v", topic)
	}
	if name := noticeState(t, s, bob, roomID, "m.room.name"); name["name"] != "Notices Room" {
		t.Fatalf("room name after the change: %v", name)
	}
}

func TestAdminServerNoticesAutoJoin(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, noticeConfig+"  auto_join: true\n")
	admin := s.Register("admin", "pw")
	regTokenMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	id := s.MustDo(http.StatusOK, "POST", noticePath, admin.Token, map[string]any{"user_id": bob.ID, "content": noticeText("hi")}).String("event_id")
	invited, joined := noticeSync(t, s, bob)
	if len(invited) != 0 || len(joined) != 1 {
		t.Fatalf("auto_join: invited %v, joined %v", invited, joined)
	}
	for roomID := range joined {
		if ev := noticeEvent(t, s, bob, roomID, id); ev["sender"] != "@notices:test.local" {
			t.Fatalf("notice: %v", ev)
		}
	}
}

func TestAdminServerNoticesConfig(t *testing.T) {
	t.Parallel()
	cfg, _, err := config.Parse([]byte(testserver.BaseConfig+"server_notices:\n  system_mxid_localpart: notices\n"), "")
	if err != nil {
		t.Fatal(err)
	}
	if n := cfg.ServerNotices; n == nil || n.SystemMXIDLocalpart != "notices" || n.RoomName != "Server Notices" || n.AutoJoin {
		t.Fatalf("server_notices: %+v", n)
	}
	if cfg, _, err := config.Parse([]byte(testserver.BaseConfig), ""); err != nil || cfg.ServerNotices != nil {
		t.Fatalf("without the block: %v, %+v", err, cfg)
	}
	for block, key := range map[string]string{
		"server_notices:\n  room_name: x\n":                                                "server_notices.system_mxid_localpart",
		"server_notices:\n  system_mxid_localpart: \"No Way\"\n":                           "server_notices.system_mxid_localpart",
		"server_notices:\n  system_mxid_localpart: n\n  room_avatar_url: http://x/y.png\n": "server_notices.room_avatar_url",
		"server_notices:\n  system_mxid_localpart: n\n  system_mxid_avatar_url: /a.png\n":  "server_notices.system_mxid_avatar_url",
	} {
		if _, _, err := config.Parse([]byte(testserver.BaseConfig+block), ""); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: error %v, want one naming %s", block, err, key)
		}
	}
}
