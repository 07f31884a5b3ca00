package federation_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"homeserver/internal/testserver"
	"homeserver/pdu"
)

// Helpers of the end-to-end encryption tests start with e2e.

type e2eKey struct {
	pub  string
	priv ed25519.PrivateKey
}

func e2eNewKey(t *testing.T) e2eKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return e2eKey{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

// e2eSign signs obj as entity (a user ID) with key ID keyID.
func e2eSign(t *testing.T, entity, keyID string, k e2eKey, obj map[string]any) map[string]any {
	t.Helper()
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := pdu.SignJSON(pdu.Key{ServerName: entity, KeyID: keyID, Private: k.priv}, data)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(signed, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// e2eDevice is a logged-in device with its identity key.
type e2eDevice struct {
	testserver.User
	ed e2eKey
}

func (d e2eDevice) deviceKeys(t *testing.T) map[string]any {
	return e2eSign(t, d.ID, "ed25519:"+d.DeviceID, d.ed, map[string]any{
		"user_id": d.ID, "device_id": d.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]any{"ed25519:" + d.DeviceID: d.ed.pub, "curve25519:" + d.DeviceID: e2eNewKey(t).pub},
	})
}

// upload publishes the device's keys and n signed one-time keys.
func (d e2eDevice) upload(t *testing.T, s *testserver.Server, n int) {
	t.Helper()
	otks := map[string]any{}
	for i := range n {
		otks[fmt.Sprintf("signed_curve25519:K%d", i)] = e2eSign(t, d.ID, "ed25519:"+d.DeviceID, d.ed, map[string]any{"key": e2eNewKey(t).pub})
	}
	s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/keys/upload", d.Token, map[string]any{"device_keys": d.deviceKeys(t), "one_time_keys": otks})
}

func e2eClaim(t *testing.T, s *testserver.Server, token, user, device string) (map[string]any, map[string]any) {
	t.Helper()
	r := s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/keys/claim", token,
		map[string]any{"one_time_keys": map[string]any{user: map[string]any{device: "signed_curve25519"}}})
	keys, _ := path(r.JSON, "one_time_keys", user, device).(map[string]any)
	failures, _ := r.JSON["failures"].(map[string]any)
	return keys, failures
}

func e2eQuery(t *testing.T, s *testserver.Server, token string, users ...string) map[string]any {
	t.Helper()
	want := map[string][]string{}
	for _, u := range users {
		want[u] = []string{}
	}
	return s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/keys/query", token, map[string]any{"device_keys": want, "timeout": 5000}).JSON
}

func e2eChanged(resp map[string]any, user string) bool {
	changed, _ := path(resp, "device_lists", "changed").([]any)
	return slices.Contains(changed, any(user))
}

// e2eToDevice returns the to-device events of a sync response.
func e2eToDevice(resp map[string]any) []map[string]any {
	return objects(path(resp, "to_device", "events"))
}

// Alice on hs1 and bob on hs2 share a room: alice gets bob's device keys
// and one-time keys (each once) from hs2, her to-device message reaches
// bob's device, and bob's new devices and cross-signing keys reach her
// /sync as device list changes.
func TestE2EEAcrossServers(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := a.Register("alice", "pw")
	bob := e2eDevice{User: b.Register("bob", "pw"), ed: e2eNewKey(t)}
	room := a.CreatePublicRoom(alice)
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name=hs1.test", bob.Token, map[string]any{})
	aliceSync := newSyncer(t, a, alice)
	bobSync := newSyncer(t, b, bob.User)

	// Bob's first keys: hs2 tells hs1, and alice's /sync says so.
	bob.upload(t, b, 2)
	aliceSync.until("bob's first keys", func(r map[string]any) bool { return e2eChanged(r, bob.ID) })

	// /keys/query on hs1 asks hs2.
	q := e2eQuery(t, a, alice.Token, bob.ID, alice.ID)
	if f, _ := q["failures"].(map[string]any); len(f) != 0 {
		t.Fatalf("failures: %v", q["failures"])
	}
	dk, _ := path(q, "device_keys", bob.ID, bob.DeviceID).(map[string]any)
	if dk == nil || path(dk, "keys", "ed25519:"+bob.DeviceID) != bob.ed.pub || dk["user_id"] != bob.ID {
		t.Fatalf("bob's device keys through hs1: %v", q)
	}

	// /keys/claim on hs1 claims from hs2: each one-time key once.
	k1, fails := e2eClaim(t, a, alice.Token, bob.ID, bob.DeviceID)
	k2, _ := e2eClaim(t, a, alice.Token, bob.ID, bob.DeviceID)
	k3, _ := e2eClaim(t, a, alice.Token, bob.ID, bob.DeviceID)
	if len(k1) != 1 || len(k2) != 1 || len(fails) != 0 {
		t.Fatalf("claims: %v, %v (failures %v)", k1, k2, fails)
	}
	for id := range k1 {
		if _, again := k2[id]; again {
			t.Fatalf("one-time key %s handed out twice", id)
		}
	}
	if len(k3) != 0 {
		t.Fatalf("third claim of two keys got %v", k3)
	}

	// A to-device message from alice reaches bob's device on hs2, once,
	// even when her client sends the request again.
	send := func(txn string, n int) {
		a.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+txn, alice.Token, map[string]any{
			"messages": map[string]any{bob.ID: map[string]any{bob.DeviceID: map[string]any{"n": n}}},
		})
	}
	send("td1", 1)
	send("td1", 1)
	send("td2", 2)
	seen := map[float64]int{}
	bobSync.until("alice's to-device messages", func(r map[string]any) bool {
		for _, e := range e2eToDevice(r) {
			if e["sender"] != alice.ID || e["type"] != "m.test" {
				t.Fatalf("unexpected to-device event %v", e)
			}
			n, _ := path(e, "content", "n").(float64)
			seen[n]++
		}
		return seen[2] > 0
	})
	if seen[1] != 1 || seen[2] != 1 {
		t.Fatalf("to-device messages seen %v, want each once", seen)
	}

	// Bob logs in on a second device with keys: alice hears of it.
	bob2 := e2eDevice{User: b.Login("bob", "pw"), ed: e2eNewKey(t)}
	bob2.upload(t, b, 1)
	aliceSync.until("bob's second device", func(r map[string]any) bool { return e2eChanged(r, bob.ID) })
	q = e2eQuery(t, a, alice.Token, bob.ID)
	if devices, _ := path(q, "device_keys", bob.ID).(map[string]any); len(devices) != 2 {
		t.Fatalf("bob's devices through hs1 after the second: %v", q)
	}

	// Cross-signing keys: an m.signing_key_update, and the keys in
	// /keys/query.
	master, ssk := e2eNewKey(t), e2eNewKey(t)
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/keys/device_signing/upload", bob.Token, map[string]any{
		"master_key": map[string]any{"user_id": bob.ID, "usage": []string{"master"}, "keys": map[string]any{"ed25519:" + master.pub: master.pub}},
		"self_signing_key": e2eSign(t, bob.ID, "ed25519:"+master.pub, master, map[string]any{
			"user_id": bob.ID, "usage": []string{"self_signing"}, "keys": map[string]any{"ed25519:" + ssk.pub: ssk.pub},
		}),
	})
	aliceSync.until("bob's cross-signing keys", func(r map[string]any) bool { return e2eChanged(r, bob.ID) })
	q = e2eQuery(t, a, alice.Token, bob.ID)
	if path(q, "master_keys", bob.ID, "keys", "ed25519:"+master.pub) != master.pub || path(q, "self_signing_keys", bob.ID) == nil {
		t.Fatalf("bob's cross-signing keys through hs1: %v", q)
	}

	// hs2's /user/devices: both devices, the keys, and a stream_id.
	r := f.FedDo(b, a.SigningKey(), "", "GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape(bob.ID), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("/user/devices: %d %s", r.Status, r.Body)
	}
	devices, _ := r.JSON["devices"].([]any)
	if len(devices) != 2 || r.JSON["user_id"] != bob.ID || path(r.JSON, "master_key", "keys", "ed25519:"+master.pub) != master.pub {
		t.Fatalf("/user/devices: %s", r.Body)
	}
	streamID, _ := r.JSON["stream_id"].(float64)
	if streamID <= 0 {
		t.Fatalf("/user/devices stream_id: %s", r.Body)
	}

	// A new display name, then a deleted device, each reach alice.
	b.MustDo(http.StatusOK, "PUT", "/_matrix/client/v3/devices/"+url.PathEscape(bob.DeviceID), bob.Token, map[string]any{"display_name": "Bob's phone"})
	aliceSync.until("bob's device name", func(r map[string]any) bool { return e2eChanged(r, bob.ID) })
	q = e2eQuery(t, a, alice.Token, bob.ID)
	if n := path(q, "device_keys", bob.ID, bob.DeviceID, "unsigned", "device_display_name"); n != "Bob's phone" {
		t.Fatalf("bob's device name through hs1: %v", q)
	}
	ch := b.MustDo(http.StatusUnauthorized, "DELETE", "/_matrix/client/v3/devices/"+url.PathEscape(bob2.DeviceID), bob.Token, nil)
	b.MustDo(http.StatusOK, "DELETE", "/_matrix/client/v3/devices/"+url.PathEscape(bob2.DeviceID), bob.Token, map[string]any{"auth": map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "pw", "session": ch.String("session"),
	}})
	aliceSync.until("bob's deleted device", func(r map[string]any) bool { return e2eChanged(r, bob.ID) })
	r = f.FedDo(b, a.SigningKey(), "", "GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape(bob.ID), nil)
	devices, _ = r.JSON["devices"].([]any)
	if next, _ := r.JSON["stream_id"].(float64); len(devices) != 1 || next <= streamID {
		t.Fatalf("/user/devices after a deletion (stream_id was %v): %s", streamID, r.Body)
	}

	// Users of a server that cannot be reached are failures.
	q = e2eQuery(t, a, alice.Token, "@carol:unreachable.invalid")
	if path(q, "failures", "unreachable.invalid") == nil {
		t.Fatalf("unreachable server not in failures: %v", q)
	}
}

// The inbound key endpoints refuse malformed requests with 400 (never
// 500), leave out other servers' users, and an m.direct_to_device EDU
// whose sender is not on the sending server is dropped.
func TestE2EEEndpointsMalformed(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice := e2eDevice{User: a.Register("alice", "pw"), ed: e2eNewKey(t)}
	alice.upload(t, a, 1)
	hs2 := b.SigningKey()
	do := func(method, p string, body any) *testserver.Response {
		return f.FedDo(a, hs2, "", method, p, body)
	}
	const query, claim = "/_matrix/federation/v1/user/keys/query", "/_matrix/federation/v1/user/keys/claim"
	for _, p := range []string{query, claim} {
		wantError(t, p+" not JSON", do("POST", p, "not json"), 400, "M_NOT_JSON")
		wantError(t, p+" no body", do("POST", p, nil), 400, "M_NOT_JSON")
		wantError(t, p+" array", do("POST", p, []any{}), 400, "M_BAD_JSON")
		wantError(t, p+" empty object", do("POST", p, map[string]any{}), 400, "M_BAD_JSON")
	}
	wantError(t, "query string", do("POST", query, map[string]any{"device_keys": "x"}), 400, "M_BAD_JSON")
	wantError(t, "query devices", do("POST", query, map[string]any{"device_keys": map[string]any{alice.ID: "x"}}), 400, "M_BAD_JSON")
	wantError(t, "query device ID", do("POST", query, map[string]any{"device_keys": map[string]any{alice.ID: []any{5}}}), 400, "M_BAD_JSON")
	wantError(t, "claim devices", do("POST", claim, map[string]any{"one_time_keys": map[string]any{alice.ID: "x"}}), 400, "M_BAD_JSON")
	wantError(t, "claim algorithm", do("POST", claim, map[string]any{"one_time_keys": map[string]any{alice.ID: map[string]any{alice.DeviceID: 5}}}), 400, "M_BAD_JSON")
	for _, u := range []string{"nobody", "@bob:hs2.test"} {
		r := do("GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape(u), nil)
		if r.Status != 400 {
			t.Errorf("/user/devices/%s: %d %s", u, r.Status, r.Body)
		}
	}

	// Other servers' users are left out; local ones answered.
	r := do("POST", query, map[string]any{"device_keys": map[string]any{alice.ID: []any{}, "@bob:hs2.test": []any{}, "@x:else.test": nil}})
	if r.Status != 200 || path(r.JSON, "device_keys", alice.ID, alice.DeviceID) == nil || len(r.JSON["device_keys"].(map[string]any)) != 1 {
		t.Fatalf("query: %d %s", r.Status, r.Body)
	}
	r = do("POST", claim, map[string]any{"one_time_keys": map[string]any{alice.ID: map[string]any{alice.DeviceID: "signed_curve25519"}, "@bob:hs2.test": map[string]any{"D": "signed_curve25519"}}})
	if r.Status != 200 || len(path(r.JSON, "one_time_keys", alice.ID, alice.DeviceID).(map[string]any)) != 1 || len(r.JSON["one_time_keys"].(map[string]any)) != 1 {
		t.Fatalf("claim: %d %s", r.Status, r.Body)
	}
	r = do("GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape("@nobody:hs1.test"), nil)
	if devices, ok := r.JSON["devices"].([]any); r.Status != 200 || !ok || len(devices) != 0 {
		t.Fatalf("/user/devices of an unknown user: %d %s", r.Status, r.Body)
	}

	// To-device EDUs: one whose sender is on hs1 (not the sending
	// server) is dropped; the good one after it is delivered.
	aliceSync := newSyncer(t, a, alice.User)
	edu := func(sender, id string, n int) map[string]any {
		return map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{
			"sender": sender, "type": "m.test", "message_id": id,
			"messages": map[string]any{alice.ID: map[string]any{"*": map[string]any{"n": n}}},
		}}
	}
	txn := map[string]any{"origin": "hs2.test", "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{},
		"edus": []any{edu("@mallory:hs1.test", "m1", 1), map[string]any{"edu_type": "m.direct_to_device", "content": "junk"}, edu("@bob:hs2.test", "m2", 2), edu("@bob:hs2.test", "m2", 2)}}
	if r := do("PUT", "/_matrix/federation/v1/send/e2ee1", txn); r.Status != 200 {
		t.Fatalf("send: %d %s", r.Status, r.Body)
	}
	var got []map[string]any
	aliceSync.until("bob's to-device message", func(r map[string]any) bool {
		got = append(got, e2eToDevice(r)...)
		return len(got) > 0
	})
	if len(got) != 1 || got[0]["sender"] != "@bob:hs2.test" || path(got[0], "content", "n") != float64(2) {
		t.Fatalf("to-device events: %v", got)
	}
}
