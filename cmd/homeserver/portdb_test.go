package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// A SQLite homeserver with accounts, devices and profiles is ported to
// PostgreSQL with port-db and serves the same data to the same tokens.
func TestPortDB(t *testing.T) {
	dsn := os.Getenv(testserver.PostgresEnv)
	if dsn == "" {
		t.Skipf("set %s to a PostgreSQL DSN to run", testserver.PostgresEnv)
	}
	// An application service that is down while the source runs: its queue
	// holds a pending transaction when the database is ported.
	var asUp atomic.Bool
	var delivered atomic.Int64
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !asUp.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var body struct {
			Events []json.RawMessage `json:"events"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		delivered.Add(int64(len(body.Events)))
		w.Write([]byte("{}"))
	}))
	defer as.Close()
	reg := filepath.Join(t.TempDir(), "bridge.yaml")
	regYAML := "id: bridge\nurl: " + as.URL + "\nas_token: port-as-token\nhs_token: port-hs-token\nsender_localpart: bridge\n" +
		"namespaces:\n  users:\n    - exclusive: true\n      regex: '@bridge_.*'\n  aliases: []\n  rooms: []\n"
	if err := os.WriteFile(reg, []byte(regYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	asConfig := "app_service_config_files: [" + reg + "]\n"
	sqliteBlock := "database:\n  name: sqlite3\n  args:\n    database: source.db\n"
	src := testserver.StartYAML(t, strings.Replace(testserver.BaseConfig, testserver.SQLiteDatabase, sqliteBlock, 1)+asConfig)
	src.Srv.AppServiceQueues().SetBackoff(10*time.Millisecond, 50*time.Millisecond)
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
	media := uploadMedia(t, src, alice.Token, []byte("ported bytes"))
	// The bridge's user sends into the room while the bridge is down.
	src.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/register", "port-as-token", map[string]any{
		"type": "m.login.application_service", "username": "bridge_carl", "inhibit_login": true,
	})
	src.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/rooms/"+room+"/join?user_id=@bridge_carl:test.local", "port-as-token", map[string]any{})
	syncBefore := syncSummary(t, src, alice.Token)
	before := map[string]*testserver.Response{
		"devices": src.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/devices", alice.Token, nil),
		"profile": src.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/profile/"+alice.ID, "", nil),
	}
	src.Stop()

	// The media files stay where they are: only the database moves.
	targetYAML := strings.Replace(testserver.BaseConfig, testserver.SQLiteDatabase, testserver.EmptyPostgresDatabase(t, dsn), 1) +
		"media_store_path: " + filepath.Join(src.Dir, "media_store") + "\n" + asConfig
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

	asUp.Store(true)
	dst := testserver.StartYAML(t, targetYAML)
	dst.Srv.AppServiceQueues().SetBackoff(10*time.Millisecond, 50*time.Millisecond)
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
	got := dst.MustDo(http.StatusOK, "GET", "/_matrix/client/v1/media/download/"+testserver.ServerName+"/"+media, alice.Token, nil)
	if string(got.Body) != "ported bytes" || got.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("media after porting: %q %s", got.Body, got.Header.Get("Content-Type"))
	}
	dst.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/after", bob.Token,
		map[string]any{"msgtype": "m.text", "body": "on PostgreSQL"})
	dst.Login("bob", "pw-bob")
	dst.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/account/whoami", bob.Token, nil)
	// The ported database takes new writes.
	dst.Register("carol", "pw-carol")
	// Search finds what was indexed on SQLite, through PostgreSQL's index.
	for i := 0; ; i++ {
		r := dst.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/search", alice.Token, map[string]any{
			"search_categories": map[string]any{"room_events": map[string]any{"search_term": "message"}},
		})
		cat, _ := r.JSON["search_categories"].(map[string]any)
		re, _ := cat["room_events"].(map[string]any)
		if n, _ := re["count"].(float64); n >= 5 {
			break
		}
		if i > 200 {
			t.Fatalf("search after porting: %s", r.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The bridge's queue, ported mid-outage, delivers what it held.
	for i := 0; delivered.Load() == 0; i++ {
		if i > 600 {
			t.Fatal("the ported application service queue never delivered")
		}
		time.Sleep(50 * time.Millisecond)
	}
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

// uploadMedia uploads a small text file and returns its media ID.
func uploadMedia(t *testing.T, s *testserver.Server, token string, body []byte) string {
	t.Helper()
	req, err := http.NewRequest("POST", s.URL+"/_matrix/media/v3/upload?filename=a.txt", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "text/plain")
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %d %v", resp.StatusCode, err)
	}
	id, ok := strings.CutPrefix(out.ContentURI, "mxc://"+testserver.ServerName+"/")
	if !ok {
		t.Fatalf("content_uri %q", out.ContentURI)
	}
	return id
}
