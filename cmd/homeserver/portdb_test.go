package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"homeserver/internal/testserver"
)

// A SQLite homeserver with accounts, devices and profiles is ported to
// PostgreSQL with port-db and serves the same data to the same tokens.
func TestPortDB(t *testing.T) {
	dsn := os.Getenv(testserver.PostgresEnv)
	if dsn == "" {
		t.Skipf("set %s to a PostgreSQL DSN to run", testserver.PostgresEnv)
	}
	sqliteBlock := "database:\n  name: sqlite3\n  args:\n    database: source.db\n"
	src := testserver.StartYAML(t, strings.Replace(testserver.BaseConfig, testserver.SQLiteDatabase, sqliteBlock, 1))
	alice := src.Register("alice", "pw-alice")
	phone := src.Login("alice", "pw-alice")
	bob := src.Register("bob", "pw-bob")
	src.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/profile/"+alice.ID+"/displayname", alice.Token, map[string]any{"displayname": "Alice A."})
	src.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/devices/"+phone.DeviceID, alice.Token, map[string]any{"display_name": "Phone"})
	room := src.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/createRoom", alice.Token, map[string]any{
		"name": "Ported", "preset": "public_chat", "room_alias_name": "ported", "invite": []string{bob.ID},
	}).String("room_id")
	src.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/rooms/"+room+"/join", bob.Token, map[string]any{})
	for i := range 5 {
		src.MustDo(http.StatusOK, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/t%d", room, i), alice.Token,
			map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)})
	}
	src.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/user/"+alice.ID+"/account_data/org.example.test", alice.Token, map[string]any{"x": 1})
	syncBefore := syncSummary(t, src, alice.Token)
	before := map[string]*testserver.Response{
		"devices": src.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/devices", alice.Token, nil),
		"profile": src.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/profile/"+alice.ID, "", nil),
	}
	src.Stop()

	targetYAML := strings.Replace(testserver.BaseConfig, testserver.SQLiteDatabase, testserver.PostgresDatabase(t, dsn), 1)
	dir := t.TempDir()
	targetPath := filepath.Join(dir, "homeserver.yaml")
	if err := os.WriteFile(targetPath, []byte(targetYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"port-db", "--sqlite-database", filepath.Join(src.Dir, "source.db"), "-c", targetPath}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("port-db exited %d: %s%s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "row counts verified") || !strings.Contains(stdout.String(), "users") {
		t.Fatalf("port-db output: %s", stdout.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := run(t.Context(), []string{"port-db", "--sqlite-database", filepath.Join(src.Dir, "source.db"), "-c", targetPath}, nil, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "not empty") {
		t.Fatalf("second port-db into a non-empty database: exit %d, %s", code, stderr.String())
	}

	dst := testserver.StartYAML(t, targetYAML)
	who := dst.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/account/whoami", phone.Token, nil)
	if who.String("user_id") != alice.ID || who.String("device_id") != phone.DeviceID {
		t.Fatalf("whoami on PostgreSQL: %s", who.Body)
	}
	for name, path := range map[string]string{"devices": "/_matrix/client/v3/devices", "profile": "/_matrix/client/v3/profile/" + alice.ID} {
		after := dst.MustDo(http.StatusOK, "GET", path, alice.Token, nil)
		if !reflect.DeepEqual(before[name].JSON, after.JSON) {
			t.Errorf("%s differs after porting:\nSQLite:     %s\nPostgreSQL: %s", name, before[name].Body, after.Body)
		}
	}
	if syncAfter := syncSummary(t, dst, alice.Token); !reflect.DeepEqual(syncBefore, syncAfter) {
		t.Errorf("/sync differs after porting:\nSQLite:     %v\nPostgreSQL: %v", syncBefore, syncAfter)
	}
	dst.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/after", bob.Token,
		map[string]any{"msgtype": "m.text", "body": "on PostgreSQL"})
	dst.Login("bob", "pw-bob")
	dst.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/account/whoami", bob.Token, nil)
	// The ported database takes new writes.
	dst.Register("carol", "pw-carol")
}

// syncSummary is what an initial /sync shows a user, minus what changes
// with the clock (ages, the typing position): room IDs with their timeline
// and state event IDs, and the account data.
func syncSummary(t *testing.T, s *testserver.Server, token string) map[string]any {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/sync", token, nil)
	var body struct {
		Rooms struct {
			Join map[string]struct {
				Timeline struct {
					Events []struct {
						EventID string `json:"event_id"`
					} `json:"events"`
					Limited   bool   `json:"limited"`
					PrevBatch string `json:"prev_batch"`
				} `json:"timeline"`
				State struct {
					Events []struct {
						EventID string `json:"event_id"`
					} `json:"events"`
				} `json:"state"`
			} `json:"join"`
		} `json:"rooms"`
		AccountData json.RawMessage `json:"account_data"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	out := map[string]any{"account_data": string(body.AccountData)}
	for id, jr := range body.Rooms.Join {
		var ids []string
		for _, e := range jr.Timeline.Events {
			ids = append(ids, e.EventID)
		}
		for _, e := range jr.State.Events {
			ids = append(ids, "state:"+e.EventID)
		}
		out[id] = fmt.Sprint(ids, jr.Timeline.Limited, jr.Timeline.PrevBatch)
	}
	if len(body.Rooms.Join) == 0 {
		t.Fatalf("initial sync shows no rooms: %s", r.Body)
	}
	return out
}
