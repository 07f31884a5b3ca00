package clientapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// ksAS is an encrypting bridge's transaction endpoint: it records every
// transaction, or answers 503 while down.
type ksAS struct {
	down atomic.Bool
	mu   sync.Mutex
	txns []map[string]json.RawMessage
}

func (a *ksAS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if a.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var txn map[string]json.RawMessage
	if r.Method != http.MethodPut || json.Unmarshal(body, &txn) != nil {
		http.Error(w, "bad", http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.txns = append(a.txns, txn)
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, "{}")
}

// await waits until some transaction satisfies ok.
func (a *ksAS) await(t *testing.T, what string, ok func(txn map[string]json.RawMessage) bool) map[string]json.RawMessage {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	seen := 0
	for time.Now().Before(deadline) {
		a.mu.Lock()
		txns := a.txns[seen:]
		a.mu.Unlock()
		for _, txn := range txns {
			seen++
			if ok(txn) {
				return txn
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no transaction with %s", what)
	return nil
}

func TestAppServiceEncryptedBridge(t *testing.T) {
	as := &ksAS{}
	srv := httptest.NewServer(as)
	defer srv.Close()
	s := asqStart(t, map[string]string{
		"bridge.yaml": "id: bridge\nurl: " + srv.URL + "\nas_token: as-bridge\nhs_token: hs-bridge\nsender_localpart: bridgebot\n" +
			"receive_ephemeral: true\norg.matrix.msc3202: true\nio.element.msc4190: true\n" +
			"namespaces:\n  users: [{exclusive: true, regex: '@bridge_.*'}]\n  aliases: []\n  rooms: []\n",
	})
	s.Srv.AppServiceQueues().SetBackoff(20*time.Millisecond, 200*time.Millisecond)
	const asTok = "as-bridge"
	ghost := "@bridge_alice:" + testserver.ServerName
	s.MustDo(http.StatusOK, "POST", v3+"/register", asTok, map[string]any{
		"type": "m.login.application_service", "username": "bridge_alice", "inhibit_login": true})
	as1 := func(path string, device string) string {
		q := url.Values{"user_id": {ghost}}
		if device != "" {
			q.Set("device_id", device)
		}
		return v3 + path + "?" + q.Encode()
	}

	// The service creates a device for its user, without a password.
	s.MustDo(http.StatusCreated, "PUT", as1("/devices/GHOSTDEV", ""), asTok, map[string]any{"display_name": "bridge"})
	s.MustDo(http.StatusOK, "PUT", as1("/devices/GHOSTDEV", ""), asTok, map[string]any{})
	wantErr(t, s.Do("POST", as1("/keys/upload", "NOSUCHDEVICE"), asTok, map[string]any{}), http.StatusBadRequest, "M_UNKNOWN_DEVICE")
	wantErr(t, s.Do("POST", as1("/keys/upload", ""), asTok, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	// Regular clients still only update devices they have.
	alice := ksNewDevice(t, s.Register("alice", "pw"))
	wantErr(t, s.Do("PUT", v3+"/devices/NEWDEVICE", alice.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")

	// It uploads the device's keys with ?device_id= and gets the counts.
	ghostDev := ksNewDevice(t, testserver.User{ID: ghost, DeviceID: "GHOSTDEV"})
	r := s.MustDo(http.StatusOK, "POST", as1("/keys/upload", "GHOSTDEV"), asTok, map[string]any{
		"device_keys": ghostDev.deviceKeys(t), "one_time_keys": ghostDev.otks(t, 0, 5)})
	if c := r.JSON["one_time_key_counts"].(map[string]any); c["signed_curve25519"] != float64(5) {
		t.Fatalf("counts %v", c)
	}
	whoami := s.MustDo(http.StatusOK, "GET", as1("/account/whoami", "GHOSTDEV"), asTok, nil)
	if whoami.String("device_id") != "GHOSTDEV" {
		t.Fatalf("whoami as the device: %s", whoami.Body)
	}
	countOf := func(txn map[string]json.RawMessage, field string) float64 {
		var m map[string]map[string]map[string]float64
		if json.Unmarshal(txn[field], &m) != nil {
			return -1
		}
		if c, ok := m[ghost]["GHOSTDEV"]; ok {
			return c["signed_curve25519"]
		}
		return -1
	}
	as.await(t, "5 one-time keys counted", func(txn map[string]json.RawMessage) bool {
		return countOf(txn, "org.matrix.msc3202.device_one_time_keys_count") == 5 && countOf(txn, "device_one_time_keys_count") == 5
	})

	// Someone claims a key: the count the service sees drops.
	ksClaim(t, s, alice.Token, ghost, "GHOSTDEV", "signed_curve25519")
	as.await(t, "4 one-time keys counted", func(txn map[string]json.RawMessage) bool {
		return countOf(txn, "device_one_time_keys_count") == 4
	})

	// alice shares a room with the ghost; her new keys reach the service.
	roomID := s.CreateRoom(alice.User, map[string]any{"preset": "public_chat"})
	s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(roomID)+"?user_id="+url.QueryEscape(ghost), asTok, map[string]any{})
	ksUpload(t, s, alice, map[string]any{"device_keys": alice.deviceKeys(t)})
	as.await(t, "alice in device_lists.changed", func(txn map[string]json.RawMessage) bool {
		var dl struct{ Changed []string }
		return json.Unmarshal(txn["org.matrix.msc3202.device_lists"], &dl) == nil && slices.Contains(dl.Changed, alice.ID)
	})

	// A to-device message for the ghost's device goes to the service, and
	// with it out of the store: nothing else will ever collect it. The
	// service is down when it is sent, and the homeserver restarts.
	as.down.Store(true)
	s.MustDo(http.StatusOK, "PUT", v3+"/sendToDevice/m.room_key_request/"+ksNextTxn(), alice.Token, map[string]any{
		"messages": map[string]any{ghost: map[string]any{"GHOSTDEV": map[string]any{"secret": "s1"}}}})
	time.Sleep(100 * time.Millisecond) // let it fail at least once
	s.Restart()
	s.Srv.AppServiceQueues().SetBackoff(20*time.Millisecond, 200*time.Millisecond)
	as.down.Store(false)
	txn := as.await(t, "the to-device message", func(txn map[string]json.RawMessage) bool {
		return txn["to_device"] != nil
	})
	var msgs []map[string]any
	_ = json.Unmarshal(txn["de.sorunome.msc2409.to_device"], &msgs)
	if len(msgs) != 1 || msgs[0]["to_user_id"] != ghost || msgs[0]["to_device_id"] != "GHOSTDEV" ||
		msgs[0]["sender"] != alice.ID || msgs[0]["type"] != "m.room_key_request" {
		t.Fatalf("to-device in transaction: %s", txn["de.sorunome.msc2409.to_device"])
	}
	r = s.MustDo(http.StatusOK, "GET", as1("/sync", "GHOSTDEV")+"&timeout=0", asTok, nil)
	if evs := r.JSON["to_device"].(map[string]any)["events"].([]any); len(evs) != 0 {
		t.Fatalf("message delivered to the service still waits in /sync: %v", evs)
	}

	// The service deletes the device without user-interactive auth.
	s.MustDo(http.StatusOK, "DELETE", as1("/devices/GHOSTDEV", ""), asTok, nil)
	wantErr(t, s.Do("POST", as1("/keys/upload", "GHOSTDEV"), asTok, map[string]any{}), http.StatusBadRequest, "M_UNKNOWN_DEVICE")
	if q := ksQueryKeys(t, s, alice.Token, ghost); len(q.DeviceKeys[ghost]) != 0 {
		t.Fatalf("deleted device's keys: %v", q.DeviceKeys[ghost])
	}
	// Users' own deletions still ask for the password.
	r = s.Do("DELETE", v3+"/devices/"+alice.DeviceID, alice.Token, map[string]any{})
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("client device deletion without auth: %d %s", r.Status, r.Body)
	}
}
