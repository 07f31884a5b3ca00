package federation_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// A bridge on hs1 whose user is in a room receives hs2's users' messages
// in its transactions; hs1's /sync shows them; push counts them.
func TestRemoteEventsReachBridgeSyncAndPush(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var txn struct {
			Events []struct {
				EventID string `json:"event_id"`
				Sender  string `json:"sender"`
				Type    string `json:"type"`
			} `json:"events"`
		}
		data, _ := io.ReadAll(r.Body)
		if json.Unmarshal(data, &txn) == nil {
			mu.Lock()
			for _, e := range txn.Events {
				if e.Type == "m.room.message" {
					seen = append(seen, e.EventID)
				}
			}
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
	}))
	defer as.Close()
	reg := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(reg, []byte(`id: bridge
url: `+as.URL+`
as_token: bridge-as-token
hs_token: bridge-hs-token
sender_localpart: bridgebot
namespaces:
  users:
    - {regex: "@bridge_.*:hs1.test", exclusive: true}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	f := testserver.NewFederation(t, "app_service_config_files: ["+reg+"]\n", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	room := a.CreatePublicRoom(alice)
	// The bridge's user joins (lazily registered by the AS).
	a.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/register", "bridge-as-token", map[string]any{"type": "m.login.application_service", "username": "bridge_x"})
	a.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?user_id="+url.QueryEscape("@bridge_x:hs1.test"), "bridge-as-token", map[string]any{})
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name=hs1.test", bob.Token, map[string]any{})

	aliceSync := newSyncer(t, a, alice)
	id := b.SendText(bob, room, "hello bridge")
	counted := func(r map[string]any) bool {
		n, _ := path(r, "rooms", "join", room, "unread_notifications", "notification_count").(float64)
		return n >= 1
	}
	resp := aliceSync.until("bob's message", func(r map[string]any) bool { return hasEvent(r, room, id) })
	if !counted(resp) {
		// Counts come from the push evaluator, a reader of the log that
		// may run just after the event reached /sync: the room comes
		// again when its count changes.
		aliceSync.until("a notification count for bob's message", counted)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		ok := slices.Contains(seen, id)
		mu.Unlock()
		if ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the bridge never received hs2's message %s", id)
}
