package clientapi_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"homeserver/internal/testserver"
	"homeserver/pdu"
)

// Helpers of the end-to-end encryption tests start with ks.

var ksTxn atomic.Int64

func ksNextTxn() string { return fmt.Sprintf("kstxn%d", ksTxn.Add(1)) }

// ksKey is an ed25519 key pair standing in for a device's or a
// cross-signing key.
type ksKey struct {
	pub  string
	priv ed25519.PrivateKey
}

func ksNewKey(t *testing.T) ksKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return ksKey{pub: base64.RawStdEncoding.EncodeToString(pub), priv: priv}
}

// ksSign signs obj as entity (a user ID) with key ID keyID.
func ksSign(t *testing.T, entity, keyID string, k ksKey, obj map[string]any) map[string]any {
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

// ksDevice is a logged-in device with its identity key.
type ksDevice struct {
	testserver.User
	ed    ksKey
	curve string
}

func ksNewDevice(t *testing.T, u testserver.User) ksDevice {
	return ksDevice{User: u, ed: ksNewKey(t), curve: ksNewKey(t).pub}
}

func (d ksDevice) deviceKeys(t *testing.T) map[string]any {
	return ksSign(t, d.ID, "ed25519:"+d.DeviceID, d.ed, map[string]any{
		"user_id": d.ID, "device_id": d.DeviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]any{"ed25519:" + d.DeviceID: d.ed.pub, "curve25519:" + d.DeviceID: d.curve},
	})
}

// otks returns n signed one-time keys named from start on.
func (d ksDevice) otks(t *testing.T, start, n int) map[string]any {
	out := map[string]any{}
	for i := start; i < start+n; i++ {
		out[fmt.Sprintf("signed_curve25519:K%04d", i)] = ksSign(t, d.ID, "ed25519:"+d.DeviceID, d.ed,
			map[string]any{"key": ksNewKey(t).pub})
	}
	return out
}

func (d ksDevice) fallback(t *testing.T, id string) map[string]any {
	return map[string]any{"signed_curve25519:" + id: ksSign(t, d.ID, "ed25519:"+d.DeviceID, d.ed,
		map[string]any{"key": ksNewKey(t).pub, "fallback": true})}
}

func ksUpload(t *testing.T, s *testserver.Server, d ksDevice, body map[string]any) map[string]any {
	t.Helper()
	r := s.MustDo(http.StatusOK, "POST", v3+"/keys/upload", d.Token, body)
	counts, _ := r.JSON["one_time_key_counts"].(map[string]any)
	if counts == nil {
		t.Fatalf("no one_time_key_counts: %s", r.Body)
	}
	return counts
}

// ksQuery is the /keys/query answer.
type ksQuery struct {
	Failures        map[string]any                               `json:"failures"`
	DeviceKeys      map[string]map[string]map[string]any         `json:"device_keys"`
	MasterKeys      map[string]map[string]any                    `json:"master_keys"`
	SelfSigningKeys map[string]map[string]any                    `json:"self_signing_keys"`
	UserSigningKeys map[string]map[string]any                    `json:"user_signing_keys"`
	OneTimeKeys     map[string]map[string]map[string]interface{} `json:"one_time_keys"`
}

func ksQueryKeys(t *testing.T, s *testserver.Server, token string, users ...string) ksQuery {
	t.Helper()
	want := map[string][]string{}
	for _, u := range users {
		want[u] = []string{}
	}
	r := s.MustDo(http.StatusOK, "POST", v3+"/keys/query", token, map[string]any{"device_keys": want})
	var q ksQuery
	if err := json.Unmarshal(r.Body, &q); err != nil {
		t.Fatal(err)
	}
	return q
}

func ksClaim(t *testing.T, s *testserver.Server, token string, user, device, alg string) (string, map[string]any) {
	t.Helper()
	r := s.MustDo(http.StatusOK, "POST", v3+"/keys/claim", token, map[string]any{
		"one_time_keys": map[string]any{user: map[string]string{device: alg}}})
	var q ksQuery
	if err := json.Unmarshal(r.Body, &q); err != nil {
		t.Fatal(err)
	}
	for name, v := range q.OneTimeKeys[user][device] {
		obj, _ := v.(map[string]any)
		return name, obj
	}
	return "", nil
}

// ksSyncResp is the part of /sync these tests read.
type ksSyncResp struct {
	NextBatch   string `json:"next_batch"`
	DeviceLists struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
	OTKCounts    map[string]int `json:"device_one_time_keys_count"`
	FallbackType []string       `json:"device_unused_fallback_key_types"`
	ToDevice     struct {
		Events []struct {
			Sender  string         `json:"sender"`
			Type    string         `json:"type"`
			Content map[string]any `json:"content"`
		} `json:"events"`
	} `json:"to_device"`
}

func ksSync(t *testing.T, s *testserver.Server, token, since string) ksSyncResp {
	t.Helper()
	q := url.Values{"timeout": {"0"}}
	if since != "" {
		q.Set("since", since)
	}
	r := s.MustDo(http.StatusOK, "GET", v3+"/sync?"+q.Encode(), token, nil)
	var out ksSyncResp
	if err := json.Unmarshal(r.Body, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestKeysUploadQueryClaim(t *testing.T) {
	s := testserver.Start(t, "")
	alice := ksNewDevice(t, s.Register("alice", "pw"))
	bob := ksNewDevice(t, s.Register("bob", "pw"))
	s.MustDo(http.StatusOK, "PUT", v3+"/devices/"+alice.DeviceID, alice.Token, map[string]any{"display_name": "Alice's phone"})

	counts := ksUpload(t, s, alice, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": alice.otks(t, 0, 3)})
	if counts["signed_curve25519"] != float64(3) {
		t.Fatalf("counts %v, want 3 signed_curve25519", counts)
	}
	// The same upload again changes nothing (a retried request).
	ksUpload(t, s, alice, map[string]any{"device_keys": alice.deviceKeys(t)})

	q := ksQueryKeys(t, s, bob.Token, alice.ID, bob.ID, "@carol:elsewhere.example")
	dk := q.DeviceKeys[alice.ID][alice.DeviceID]
	if dk == nil || dk["device_id"] != alice.DeviceID {
		t.Fatalf("alice's device keys missing: %+v", q.DeviceKeys)
	}
	if un, _ := dk["unsigned"].(map[string]any); un["device_display_name"] != "Alice's phone" {
		t.Fatalf("unsigned = %v", dk["unsigned"])
	}
	if len(q.DeviceKeys[bob.ID]) != 0 {
		t.Fatalf("bob has no keys yet, got %v", q.DeviceKeys[bob.ID])
	}
	if _, ok := q.Failures["elsewhere.example"]; !ok {
		t.Fatalf("an unreachable server is a failure: %v", q.Failures)
	}
	// The device keys served are those uploaded, signature intact.
	raw, _ := json.Marshal(dk)
	pub, _ := base64.RawStdEncoding.DecodeString(alice.ed.pub)
	if err := pdu.VerifyJSON(raw, alice.ID, "ed25519:"+alice.DeviceID, pub); err != nil {
		t.Fatalf("served device keys do not verify: %v", err)
	}

	// Claims hand the keys out oldest first, each once; then the fallback.
	ksUpload(t, s, alice, map[string]any{"fallback_keys": alice.fallback(t, "FB1")})
	seen := map[string]bool{}
	for range 3 {
		name, obj := ksClaim(t, s, bob.Token, alice.ID, alice.DeviceID, "signed_curve25519")
		if name == "" || seen[name] || obj["fallback"] == true {
			t.Fatalf("claim gave %q %v (seen %v)", name, obj, seen)
		}
		seen[name] = true
	}
	sy := ksSync(t, s, alice.Token, "")
	if sy.OTKCounts["signed_curve25519"] != 0 || !slices.Equal(sy.FallbackType, []string{"signed_curve25519"}) {
		t.Fatalf("after claims: counts %v fallback %v", sy.OTKCounts, sy.FallbackType)
	}
	for range 2 {
		name, obj := ksClaim(t, s, bob.Token, alice.ID, alice.DeviceID, "signed_curve25519")
		if name != "signed_curve25519:FB1" || obj["fallback"] != true {
			t.Fatalf("exhausted device gave %q %v, want the fallback key", name, obj)
		}
	}
	sy = ksSync(t, s, alice.Token, sy.NextBatch)
	if len(sy.FallbackType) != 0 {
		t.Fatalf("a used fallback key is not unused: %v", sy.FallbackType)
	}
	// A new fallback key is unused again.
	ksUpload(t, s, alice, map[string]any{"fallback_keys": alice.fallback(t, "FB2")})
	if sy = ksSync(t, s, alice.Token, sy.NextBatch); !slices.Equal(sy.FallbackType, []string{"signed_curve25519"}) {
		t.Fatalf("new fallback key: %v", sy.FallbackType)
	}
	// Unknown devices and algorithms are simply absent.
	if name, _ := ksClaim(t, s, bob.Token, alice.ID, "NOSUCHDEVICE", "signed_curve25519"); name != "" {
		t.Fatalf("claimed %q from a device that does not exist", name)
	}
	if name, _ := ksClaim(t, s, bob.Token, alice.ID, alice.DeviceID, "curve25519"); name != "" {
		t.Fatalf("claimed %q of an algorithm never uploaded", name)
	}
}

func TestKeysUploadRejects(t *testing.T) {
	s := testserver.Start(t, "")
	alice := ksNewDevice(t, s.Register("alice", "pw"))
	bob := ksNewDevice(t, s.Register("bob", "pw"))
	other := ksNewDevice(t, s.Login("alice", "pw"))

	up := func(d ksDevice, body any) *testserver.Response {
		return s.Do("POST", v3+"/keys/upload", d.Token, body)
	}
	// Signed OTKs need the device's key first.
	wantErr(t, up(alice, map[string]any{"one_time_keys": alice.otks(t, 0, 1)}), http.StatusBadRequest, "M_INVALID_PARAM")

	// Keys of another user, or of another device of the same user.
	wantErr(t, up(bob, map[string]any{"device_keys": alice.deviceKeys(t)}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, up(other, map[string]any{"device_keys": alice.deviceKeys(t)}), http.StatusBadRequest, "M_INVALID_PARAM")
	// A bad signature: signed by a key other than the one it publishes.
	forged := alice
	forged.ed = ksNewKey(t)
	bad := forged.deviceKeys(t)
	bad["keys"].(map[string]any)["ed25519:"+alice.DeviceID] = alice.ed.pub
	wantErr(t, up(alice, map[string]any{"device_keys": bad}), http.StatusBadRequest, "M_INVALID_SIGNATURE")
	unsigned := alice.deviceKeys(t)
	delete(unsigned, "signatures")
	wantErr(t, up(alice, map[string]any{"device_keys": unsigned}), http.StatusBadRequest, "M_INVALID_SIGNATURE")

	ksUpload(t, s, alice, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": alice.otks(t, 0, 2)})
	// Published device keys may not change.
	changed := alice
	changed.curve = ksNewKey(t).pub
	wantErr(t, up(alice, map[string]any{"device_keys": changed.deviceKeys(t)}), http.StatusBadRequest, "M_INVALID_PARAM")
	// A one-time key ID may not be reused for another key.
	wantErr(t, up(alice, map[string]any{"one_time_keys": alice.otks(t, 0, 1)}), http.StatusBadRequest, "M_INVALID_PARAM")
	// A one-time key signed by someone else.
	wantErr(t, up(alice, map[string]any{"one_time_keys": map[string]any{
		"signed_curve25519:X1": ksSign(t, alice.ID, "ed25519:"+alice.DeviceID, ksNewKey(t), map[string]any{"key": "abc"}),
	}}), http.StatusBadRequest, "M_INVALID_SIGNATURE")

	for name, body := range map[string]string{
		"not an object":        `[]`,
		"device_keys a string": `{"device_keys": "x"}`,
		"keys not strings":     `{"device_keys": {"user_id": "` + alice.ID + `", "device_id": "` + alice.DeviceID + `", "algorithms": [], "keys": {"ed25519:` + alice.DeviceID + `": 5}}}`,
		"otk a number":         `{"one_time_keys": {"curve25519:A": 5}}`,
		"otk an array":         `{"one_time_keys": {"curve25519:A": []}}`,
		"otk without key":      `{"one_time_keys": {"signed_curve25519:A": {"signatures": {}}}}`,
		"signed otk as string": `{"one_time_keys": {"signed_curve25519:A": "abc"}}`,
		"otks not an object":   `{"one_time_keys": []}`,
	} {
		r := up(alice, body)
		if r.Status != http.StatusBadRequest || (r.Errcode() != "M_BAD_JSON" && r.Errcode() != "M_NOT_JSON") {
			t.Errorf("%s: %d %s", name, r.Status, r.Body)
		}
	}
	wantErr(t, up(alice, map[string]any{"one_time_keys": map[string]any{"nocolon": "abc"}}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, up(alice, map[string]any{"fallback_keys": map[string]any{"curve25519:A": "a", "curve25519:B": "b"}}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("POST", v3+"/keys/upload/OTHERDEVICE", alice.Token, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("POST", v3+"/keys/query", alice.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, s.Do("POST", v3+"/keys/query", alice.Token, map[string]any{"device_keys": map[string]any{"@a:b": "x"}}), http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, s.Do("POST", v3+"/keys/query", alice.Token, map[string]any{"device_keys": map[string]any{"nobody": []string{}}}), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("POST", v3+"/keys/claim", alice.Token, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, s.Do("POST", v3+"/keys/claim", alice.Token, map[string]any{"one_time_keys": map[string]any{alice.ID: []string{}}}), http.StatusBadRequest, "M_BAD_JSON")
	wantErr(t, s.Do("GET", v3+"/keys/changes?from=s1_0_0_0_0_0_0", alice.Token, nil), http.StatusBadRequest, "M_MISSING_PARAM")
	wantErr(t, s.Do("GET", v3+"/keys/changes?from=garbage&to=s1_0_0_0_0_0_0", alice.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	// Nothing above was stored.
	if sy := ksSync(t, s, alice.Token, ""); sy.OTKCounts["signed_curve25519"] != 2 {
		t.Fatalf("counts %v after rejected uploads, want 2", sy.OTKCounts)
	}
}

// Two claimers racing for the keys of one device never get the same key.
func TestKeysConcurrentClaims(t *testing.T) {
	s := testserver.Start(t, "")
	alice := ksNewDevice(t, s.Register("alice", "pw"))
	const keys, claimers = 30, 10
	ksUpload(t, s, alice, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": alice.otks(t, 0, keys),
		"fallback_keys": alice.fallback(t, "FB")})
	users := make([]testserver.User, claimers)
	for i := range users {
		users[i] = s.Register(fmt.Sprintf("claimer%d", i), "pw")
	}
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range keys / claimers * 2 {
				r := s.Do("POST", v3+"/keys/claim", u.Token, map[string]any{
					"one_time_keys": map[string]any{alice.ID: map[string]string{alice.DeviceID: "signed_curve25519"}}})
				if r.Status != http.StatusOK {
					t.Errorf("claim: %d %s", r.Status, r.Body)
					return
				}
				var q ksQuery
				_ = json.Unmarshal(r.Body, &q)
				mu.Lock()
				for name := range q.OneTimeKeys[alice.ID][alice.DeviceID] {
					got[name]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fallbacks := got["signed_curve25519:FB"]
	delete(got, "signed_curve25519:FB")
	if len(got) != keys || fallbacks != keys {
		t.Fatalf("claimed %d distinct one-time keys and %d fallbacks, want %d and %d", len(got), fallbacks, keys, keys)
	}
	for name, n := range got {
		if n != 1 {
			t.Fatalf("one-time key %s handed out %d times", name, n)
		}
	}
}

func TestDeviceListsInSync(t *testing.T) {
	s := testserver.Start(t, "")
	alice := ksNewDevice(t, s.Register("alice", "pw"))
	bob := ksNewDevice(t, s.Register("bob", "pw"))
	carol := ksNewDevice(t, s.Register("carol", "pw"))
	roomID := s.CreateRoom(alice.User, map[string]any{"preset": "public_chat"})
	s.Join(carol.User, roomID)
	a0 := ksSync(t, s, alice.Token, "")
	b0 := ksSync(t, s, bob.Token, "")

	// Bob's keys are nobody's business until he shares a room with them;
	// his own other devices learn of them.
	ksUpload(t, s, bob, map[string]any{"device_keys": bob.deviceKeys(t)})
	a1 := ksSync(t, s, alice.Token, a0.NextBatch)
	if len(a1.DeviceLists.Changed) != 0 {
		t.Fatalf("alice shares no room with bob yet: %v", a1.DeviceLists.Changed)
	}
	b1 := ksSync(t, s, bob.Token, b0.NextBatch)
	if !slices.Equal(b1.DeviceLists.Changed, []string{bob.ID}) {
		t.Fatalf("bob's own change: %v", b1.DeviceLists.Changed)
	}

	// Bob joins: alice learns he is to be tracked, and bob learns of the
	// room's members.
	s.Join(bob.User, roomID)
	a2 := ksSync(t, s, alice.Token, a1.NextBatch)
	if !slices.Equal(a2.DeviceLists.Changed, []string{bob.ID}) {
		t.Fatalf("after bob joined, alice's changed = %v", a2.DeviceLists.Changed)
	}
	b2 := ksSync(t, s, bob.Token, b1.NextBatch)
	if !slices.Equal(b2.DeviceLists.Changed, []string{alice.ID, carol.ID}) {
		t.Fatalf("after joining, bob's changed = %v", b2.DeviceLists.Changed)
	}

	// A new device of bob's, and its deletion, reach alice.
	bob2 := ksNewDevice(t, s.Login("bob", "pw"))
	ksUpload(t, s, bob2, map[string]any{"device_keys": bob2.deviceKeys(t)})
	a3 := ksSync(t, s, alice.Token, a2.NextBatch)
	if !slices.Equal(a3.DeviceLists.Changed, []string{bob.ID}) {
		t.Fatalf("bob's new device: alice's changed = %v", a3.DeviceLists.Changed)
	}
	if q := ksQueryKeys(t, s, alice.Token, bob.ID); len(q.DeviceKeys[bob.ID]) != 2 {
		t.Fatalf("bob's devices: %v", q.DeviceKeys[bob.ID])
	}
	s.MustDo(http.StatusOK, "POST", v3+"/logout", bob2.Token, nil)
	a4 := ksSync(t, s, alice.Token, a3.NextBatch)
	if !slices.Equal(a4.DeviceLists.Changed, []string{bob.ID}) {
		t.Fatalf("bob's device deleted: alice's changed = %v", a4.DeviceLists.Changed)
	}
	if q := ksQueryKeys(t, s, alice.Token, bob.ID); len(q.DeviceKeys[bob.ID]) != 1 {
		t.Fatalf("deleted device still has keys: %v", q.DeviceKeys[bob.ID])
	}

	// /keys/changes covers the same window as the syncs did.
	r := s.MustDo(http.StatusOK, "GET", v3+"/keys/changes?from="+url.QueryEscape(a0.NextBatch)+"&to="+url.QueryEscape(a4.NextBatch), alice.Token, nil)
	var ch struct{ Changed, Left []string }
	_ = json.Unmarshal(r.Body, &ch)
	if !slices.Equal(ch.Changed, []string{bob.ID}) || len(ch.Left) != 0 {
		t.Fatalf("keys/changes = %s", r.Body)
	}

	// Bob leaves the only room they shared: alice may stop tracking him,
	// but carol, still in a room with alice, is not left.
	s.MustDo(http.StatusOK, "POST", rmRoom(roomID)+"/leave", bob.Token, map[string]any{})
	a5 := ksSync(t, s, alice.Token, a4.NextBatch)
	if !slices.Equal(a5.DeviceLists.Left, []string{bob.ID}) || len(a5.DeviceLists.Changed) != 0 {
		t.Fatalf("after bob left: %+v", a5.DeviceLists)
	}
	b5 := ksSync(t, s, bob.Token, b2.NextBatch)
	if l := b5.DeviceLists.Left; !slices.Equal(l, []string{alice.ID, carol.ID}) {
		t.Fatalf("bob left the room: his left = %v", l)
	}
	// Changes of users who share no room no longer reach alice.
	bob3 := ksNewDevice(t, s.Login("bob", "pw"))
	ksUpload(t, s, bob3, map[string]any{"device_keys": bob3.deviceKeys(t)})
	if a6 := ksSync(t, s, alice.Token, a5.NextBatch); len(a6.DeviceLists.Changed) != 0 {
		t.Fatalf("alice no longer shares a room with bob: %v", a6.DeviceLists.Changed)
	}
}

// A device-list change wakes a long-polling sync of someone in a shared room.
func TestDeviceListChangeWakesSync(t *testing.T) {
	s := testserver.Start(t, "")
	alice := ksNewDevice(t, s.Register("alice", "pw"))
	bob := ksNewDevice(t, s.Register("bob", "pw"))
	roomID := s.CreateRoom(alice.User, map[string]any{"preset": "public_chat"})
	s.Join(bob.User, roomID)
	since := ksSync(t, s, alice.Token, "").NextBatch
	done := make(chan ksSyncResp, 1)
	go func() {
		r := s.Do("GET", v3+"/sync?timeout=20000&since="+url.QueryEscape(since), alice.Token, nil)
		var out ksSyncResp
		_ = json.Unmarshal(r.Body, &out)
		done <- out
	}()
	// Whether or not the sync is parked yet, the change is in its answer.
	ksUpload(t, s, bob, map[string]any{"device_keys": bob.deviceKeys(t)})
	if got := <-done; !slices.Equal(got.DeviceLists.Changed, []string{bob.ID}) {
		t.Fatalf("woken sync: %+v", got.DeviceLists)
	}
}

func TestSendToDevice(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	bob2 := s.Login("bob", "pw")
	send := func(txn string, messages map[string]any) {
		t.Helper()
		s.MustDo(http.StatusOK, "PUT", v3+"/sendToDevice/m.test/"+txn, alice.Token, map[string]any{"messages": messages})
	}
	b0 := ksSync(t, s, bob.Token, "")
	send("t1", map[string]any{bob.ID: map[string]any{bob.DeviceID: map[string]any{"n": 1}}})
	send("t1", map[string]any{bob.ID: map[string]any{bob.DeviceID: map[string]any{"n": 1}}}) // retried
	send("t2", map[string]any{bob.ID: map[string]any{"*": map[string]any{"n": 2}}, "@x:remote.example": map[string]any{"D": map[string]any{}}})
	send("t3", map[string]any{bob.ID: map[string]any{"NOSUCHDEVICE": map[string]any{"n": 3}}})

	ns := func(r ksSyncResp) []float64 {
		var out []float64
		for _, e := range r.ToDevice.Events {
			if e.Sender != alice.ID || e.Type != "m.test" {
				t.Fatalf("to-device event %+v", e)
			}
			out = append(out, e.Content["n"].(float64))
		}
		return out
	}
	b1 := ksSync(t, s, bob.Token, b0.NextBatch)
	if got := ns(b1); !slices.Equal(got, []float64{1, 2}) {
		t.Fatalf("bob's device got %v, want [1 2]", got)
	}
	// Not acknowledged yet: the same token gives them again, even after a
	// restart.
	s.Restart()
	if got := ns(ksSync(t, s, bob.Token, b0.NextBatch)); !slices.Equal(got, []float64{1, 2}) {
		t.Fatalf("unacknowledged messages after restart: %v", got)
	}
	if got := ns(ksSync(t, s, bob2.Token, "")); !slices.Equal(got, []float64{2}) {
		t.Fatalf("bob's other device got %v, want [2]", got)
	}
	// Syncing on from the token that delivered them acknowledges them.
	b2 := ksSync(t, s, bob.Token, b1.NextBatch)
	if len(b2.ToDevice.Events) != 0 {
		t.Fatalf("acknowledged messages came again: %v", ns(b2))
	}
	if got := ns(ksSync(t, s, bob.Token, b0.NextBatch)); len(got) != 0 {
		t.Fatalf("acknowledged messages were not deleted: %v", got)
	}

	// A backlog comes 100 at a time, in order, none lost or repeated.
	for i := range 250 {
		send(fmt.Sprintf("bulk%d", i), map[string]any{bob.ID: map[string]any{bob.DeviceID: map[string]any{"n": i}}})
	}
	var all []float64
	since := b2.NextBatch
	for range 5 {
		r := ksSync(t, s, bob.Token, since)
		if len(r.ToDevice.Events) > 100 {
			t.Fatalf("%d messages in one sync", len(r.ToDevice.Events))
		}
		all = append(all, ns(r)...)
		since = r.NextBatch
	}
	if len(all) != 250 || !sort.Float64sAreSorted(all) || all[0] != 0 || all[249] != 249 {
		t.Fatalf("backlog delivered as %d messages: %v", len(all), all)
	}

	// Deleting a device deletes what waits for it.
	send("t4", map[string]any{bob.ID: map[string]any{bob2.DeviceID: map[string]any{"n": 4}}})
	s.MustDo(http.StatusOK, "POST", v3+"/logout", bob2.Token, nil)
	bob2 = s.Login("bob", "pw")
	if got := ns(ksSync(t, s, bob2.Token, "")); len(got) != 0 {
		t.Fatalf("new session got the old device's messages: %v", got)
	}

	// A to-device message wakes the recipient's long-poll (once bob has
	// seen his own device list change).
	since = ksSync(t, s, bob.Token, since).NextBatch
	done := make(chan []float64, 1)
	go func() {
		r := s.Do("GET", v3+"/sync?timeout=20000&since="+url.QueryEscape(since), bob.Token, nil)
		var out ksSyncResp
		_ = json.Unmarshal(r.Body, &out)
		var got []float64
		for _, e := range out.ToDevice.Events {
			got = append(got, e.Content["n"].(float64))
		}
		done <- got
	}()
	send("t5", map[string]any{bob.ID: map[string]any{bob.DeviceID: map[string]any{"n": 5}}})
	if got := <-done; !slices.Equal(got, []float64{5}) {
		t.Fatalf("woken sync got %v", got)
	}

	bad := func(body any, status int, errcode string) {
		t.Helper()
		wantErr(t, s.Do("PUT", v3+"/sendToDevice/m.test/"+ksNextTxn(), alice.Token, body), status, errcode)
	}
	bad(map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
	bad(`{"messages": []}`, http.StatusBadRequest, "M_BAD_JSON")
	bad(map[string]any{"messages": map[string]any{bob.ID: map[string]any{"D": "text"}}}, http.StatusBadRequest, "M_BAD_JSON")
	bad(map[string]any{"messages": map[string]any{bob.ID: []string{}}}, http.StatusBadRequest, "M_BAD_JSON")
	bad(map[string]any{"messages": map[string]any{"not-a-user": map[string]any{"D": map[string]any{}}}}, http.StatusBadRequest, "M_INVALID_PARAM")
	bad(map[string]any{"messages": map[string]any{bob.ID: map[string]any{"D": map[string]any{"x": strings.Repeat("a", 70000)}}}},
		http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	huge := map[string]any{}
	for i := range 10001 {
		huge[fmt.Sprintf("D%d", i)] = map[string]any{}
	}
	bad(map[string]any{"messages": map[string]any{bob.ID: huge}}, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	bad(`{"messages": {"`+bob.ID+`": {"D": {"x": "`+strings.Repeat("a", 9<<20)+`"}}}}`, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
}

func TestCrossSigning(t *testing.T) {
	s := testserver.Start(t, "")
	alice := ksNewDevice(t, s.Register("alice", "pw"))
	bob := ksNewDevice(t, s.Register("bob", "pw"))
	carol := ksNewDevice(t, s.Register("carol", "pw"))
	ksUpload(t, s, alice, map[string]any{"device_keys": alice.deviceKeys(t)})
	ksUpload(t, s, bob, map[string]any{"device_keys": bob.deviceKeys(t)})

	type xs struct{ master, ssk, usk ksKey }
	keysOf := func(user string) (xs, map[string]any) {
		k := xs{ksNewKey(t), ksNewKey(t), ksNewKey(t)}
		csKey := func(usage string, kk ksKey) map[string]any {
			return map[string]any{"user_id": user, "usage": []string{usage}, "keys": map[string]any{"ed25519:" + kk.pub: kk.pub}}
		}
		body := map[string]any{
			"master_key":       csKey("master", k.master),
			"self_signing_key": ksSign(t, user, "ed25519:"+k.master.pub, k.master, csKey("self_signing", k.ssk)),
			"user_signing_key": ksSign(t, user, "ed25519:"+k.master.pub, k.master, csKey("user_signing", k.usk)),
		}
		return k, body
	}
	ak, abody := keysOf(alice.ID)
	// The first upload needs no password; the same keys again neither.
	s.MustDo(http.StatusOK, "POST", v3+"/keys/device_signing/upload", alice.Token, abody)
	s.MustDo(http.StatusOK, "POST", v3+"/keys/device_signing/upload", alice.Token, abody)
	// New keys do.
	_, abody2 := keysOf(alice.ID)
	r := s.Do("POST", v3+"/keys/device_signing/upload", alice.Token, abody2)
	if r.Status != http.StatusUnauthorized || r.JSON["flows"] == nil {
		t.Fatalf("replacing keys without auth: %d %s", r.Status, r.Body)
	}
	bk, bbody := keysOf(bob.ID)
	// Bob's master key comes signed by his device too (as clients do), and
	// his client sends that signature again: accepted, nothing to add.
	bobMasterSigned := ksSign(t, bob.ID, "ed25519:"+bob.DeviceID, bob.ed, bbody["master_key"].(map[string]any))
	bbody["master_key"] = bobMasterSigned
	s.MustDo(http.StatusOK, "POST", v3+"/keys/device_signing/upload", bob.Token, bbody)
	r = s.MustDo(http.StatusOK, "POST", v3+"/keys/signatures/upload", bob.Token, map[string]any{
		bob.ID: map[string]any{bk.master.pub: bobMasterSigned}})
	if f, _ := r.JSON["failures"].(map[string]any); len(f) != 0 {
		t.Fatalf("re-sent device signature of the master key: %s", r.Body)
	}

	// Bad uploads (by carol, who has none yet, so no auth is asked).
	_, cbody := keysOf(carol.ID)
	cbody["self_signing_key"] = ksSign(t, carol.ID, "ed25519:"+ksNewKey(t).pub, ksNewKey(t), map[string]any{
		"user_id": carol.ID, "usage": []string{"self_signing"}, "keys": map[string]any{"ed25519:" + ak.ssk.pub: ak.ssk.pub}})
	wantErr(t, s.Do("POST", v3+"/keys/device_signing/upload", carol.Token, cbody), http.StatusBadRequest, "M_INVALID_SIGNATURE")
	_, cbody = keysOf(carol.ID)
	delete(cbody, "master_key")
	wantErr(t, s.Do("POST", v3+"/keys/device_signing/upload", carol.Token, cbody), http.StatusBadRequest, "M_MISSING_PARAM")
	_, cbody = keysOf(carol.ID)
	cbody["master_key"].(map[string]any)["user_id"] = alice.ID
	wantErr(t, s.Do("POST", v3+"/keys/device_signing/upload", carol.Token, cbody), http.StatusBadRequest, "M_INVALID_PARAM")
	// A key named like one of the user's devices.
	clash := ksNewKey(t)
	r = s.MustDo(http.StatusOK, "POST", v3+"/login", "", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": "carol"}, "password": "pw", "device_id": clash.pub})
	collide := map[string]any{"master_key": map[string]any{"user_id": carol.ID, "usage": []string{"master"},
		"keys": map[string]any{"ed25519:" + clash.pub: clash.pub}}}
	wantErr(t, s.Do("POST", v3+"/keys/device_signing/upload", carol.Token, collide), http.StatusForbidden, "M_FORBIDDEN")

	// Alice signs her device with her self-signing key, and bob's master
	// key with her user-signing key.
	sigBody := func(signer string, k ksKey, obj map[string]any) map[string]any {
		return ksSign(t, signer, "ed25519:"+k.pub, k, obj)
	}
	q := ksQueryKeys(t, s, alice.Token, alice.ID, bob.ID)
	aliceDev := q.DeviceKeys[alice.ID][alice.DeviceID]
	delete(aliceDev, "unsigned")
	bobMaster := q.MasterKeys[bob.ID]
	if bobMaster == nil || q.SelfSigningKeys[bob.ID] == nil || q.UserSigningKeys[bob.ID] != nil || q.UserSigningKeys[alice.ID] == nil {
		t.Fatalf("cross-signing keys in query: %+v", q)
	}
	r = s.MustDo(http.StatusOK, "POST", v3+"/keys/signatures/upload", alice.Token, map[string]any{
		alice.ID: map[string]any{alice.DeviceID: sigBody(alice.ID, ak.ssk, aliceDev)},
		bob.ID:   map[string]any{bk.master.pub: sigBody(alice.ID, ak.usk, bobMaster)},
	})
	if f, _ := r.JSON["failures"].(map[string]any); len(f) != 0 {
		t.Fatalf("failures: %s", r.Body)
	}
	sigsOf := func(obj map[string]any, signer string) map[string]any {
		all, _ := obj["signatures"].(map[string]any)
		m, _ := all[signer].(map[string]any)
		return m
	}
	for _, viewer := range []ksDevice{alice, carol} {
		q := ksQueryKeys(t, s, viewer.Token, alice.ID, bob.ID)
		if _, ok := sigsOf(q.DeviceKeys[alice.ID][alice.DeviceID], alice.ID)["ed25519:"+ak.ssk.pub]; !ok {
			t.Fatalf("%s does not see alice's self-signing signature of her device", viewer.ID)
		}
		_, sees := sigsOf(q.MasterKeys[bob.ID], alice.ID)["ed25519:"+ak.usk.pub]
		if sees != (viewer.ID == alice.ID) {
			t.Fatalf("%s sees alice's user-signing signature of bob: %v (only alice may)", viewer.ID, sees)
		}
	}
	// Signatures that do not verify, of unknown keys, or of altered
	// objects are reported, not stored.
	tampered := sigBody(alice.ID, ak.ssk, aliceDev)
	tampered["algorithms"] = []string{"x"}
	forged := sigBody(alice.ID, ksNewKey(t), aliceDev)
	r = s.MustDo(http.StatusOK, "POST", v3+"/keys/signatures/upload", alice.Token, map[string]any{
		alice.ID: map[string]any{alice.DeviceID: tampered, "NOSUCHDEVICE": sigBody(alice.ID, ak.ssk, aliceDev)},
		bob.ID:   map[string]any{"notbobsmaster": sigBody(alice.ID, ak.usk, bobMaster)},
	})
	f, _ := r.JSON["failures"].(map[string]any)
	if len(f[alice.ID].(map[string]any)) != 2 || len(f[bob.ID].(map[string]any)) != 1 {
		t.Fatalf("failures: %s", r.Body)
	}
	// A forged signature: made with another key, filed under the
	// self-signing key's ID.
	for _, v := range sigsOf(forged, alice.ID) {
		forged["signatures"] = map[string]any{alice.ID: map[string]any{"ed25519:" + ak.ssk.pub: v}}
	}
	r = s.MustDo(http.StatusOK, "POST", v3+"/keys/signatures/upload", alice.Token, map[string]any{alice.ID: map[string]any{alice.DeviceID: forged}})
	f, _ = r.JSON["failures"].(map[string]any)
	if e, _ := f[alice.ID].(map[string]any)[alice.DeviceID].(map[string]any); e["errcode"] != "M_INVALID_SIGNATURE" {
		t.Fatalf("forged signature: %s", r.Body)
	}
	wantErr(t, s.Do("POST", v3+"/keys/signatures/upload", alice.Token, `[]`), http.StatusBadRequest, "M_BAD_JSON")
}

// Every end-to-end encryption endpoint answers malformed bodies and missing
// tokens with the spec's errors, never a 500.
func TestKeysMalformedBodies(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	for _, e := range []struct {
		method, path string
		limit        int
	}{
		{"POST", v3 + "/keys/upload", 4 << 20},
		{"POST", v3 + "/keys/query", 4 << 20},
		{"POST", v3 + "/keys/claim", 4 << 20},
		{"POST", v3 + "/keys/device_signing/upload", 4 << 20},
		{"POST", v3 + "/keys/signatures/upload", 4 << 20},
		{"PUT", v3 + "/sendToDevice/m.test/" + ksNextTxn(), 8 << 20},
	} {
		for _, c := range []struct {
			body    any
			status  int
			errcode string
		}{
			{nil, 400, "M_NOT_JSON"},
			{"", 400, "M_NOT_JSON"},
			{"{not json", 400, "M_NOT_JSON"},
			{"{} x", 400, "M_NOT_JSON"},
			{"[]", 400, "M_BAD_JSON"},
			{"null", 400, "M_BAD_JSON"},
			{`"s"`, 400, "M_BAD_JSON"},
			{`{"x":"` + strings.Repeat("a", e.limit) + `"}`, 413, "M_TOO_LARGE"},
		} {
			r := s.Do(e.method, e.path, alice.Token, c.body)
			if r.Status != c.status || r.Errcode() != c.errcode {
				t.Errorf("%s %s with %.20q: %d %s, want %d %s", e.method, e.path, c.body, r.Status, r.Errcode(), c.status, c.errcode)
			}
		}
		wantErr(t, s.Do(e.method, e.path, "", "{}"), http.StatusUnauthorized, "M_MISSING_TOKEN")
		wantErr(t, s.Do(e.method, e.path, "nope", "{}"), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	}
	wantErr(t, s.Do("GET", v3+"/keys/changes?from=s0_0_0_0_0&to=s0_0_0_0_0", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
	wantErr(t, s.Do("GET", v3+"/keys/upload", alice.Token, nil), http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	wantErr(t, s.Do("POST", v3+"/sendToDevice/m.test", alice.Token, "{}"), http.StatusNotFound, "M_UNRECOGNIZED")
}

// Guests may publish and fetch keys and send to-device messages, as the
// guest access module lists; cross-signing and /keys/changes are not theirs.
func TestKeysGuests(t *testing.T) {
	s := testserver.Start(t, "allow_guest_access: true\n")
	r := s.MustDo(http.StatusOK, "POST", v3+"/register?kind=guest", "", map[string]any{})
	guest := ksNewDevice(t, testserver.User{ID: r.String("user_id"), Token: r.String("access_token"), DeviceID: r.String("device_id")})
	alice := s.Register("alice", "pw")
	ksUpload(t, s, guest, map[string]any{"device_keys": guest.deviceKeys(t), "one_time_keys": guest.otks(t, 0, 1)})
	ksQueryKeys(t, s, guest.Token, alice.ID)
	s.MustDo(http.StatusOK, "POST", v3+"/keys/claim", guest.Token, map[string]any{"one_time_keys": map[string]any{}})
	s.MustDo(http.StatusOK, "PUT", v3+"/sendToDevice/m.test/"+ksNextTxn(), guest.Token, map[string]any{
		"messages": map[string]any{alice.ID: map[string]any{"*": map[string]any{}}}})
	for _, e := range []struct{ method, path string }{
		{"POST", v3 + "/keys/device_signing/upload"},
		{"POST", v3 + "/keys/signatures/upload"},
		{"GET", v3 + "/keys/changes?from=s0_0_0_0_0&to=s0_0_0_0_0"},
	} {
		wantErr(t, s.Do(e.method, e.path, guest.Token, map[string]any{}), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	}
}
