package clientapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"homeserver/internal/testserver"
)

const kbAlg = "m.megolm_backup.v1.curve25519-aes-sha2"

var kbAuthData = map[string]any{"public_key": "abcdefg", "signatures": map[string]any{}}

// kbCreate creates a backup version and returns it.
func kbCreate(t *testing.T, s *testserver.Server, token string) string {
	t.Helper()
	r := s.MustDo(http.StatusOK, "POST", v3+"/room_keys/version", token, map[string]any{"algorithm": kbAlg, "auth_data": kbAuthData})
	v := r.String("version")
	if v == "" {
		t.Fatalf("create version: %s", r.Body)
	}
	return v
}

// kbKey is a key of the given quality; tag ends up in its session_data, so
// that tests can tell which of two keys the server kept.
func kbKey(fmi, fc int, verified bool, tag string) map[string]any {
	return map[string]any{
		"first_message_index": fmi, "forwarded_count": fc, "is_verified": verified,
		"session_data": map[string]any{"ephemeral": "e", "ciphertext": tag, "mac": "m"},
	}
}

// kbKeys is the path of the keys of a whole version, a room or a session.
func kbKeys(version string, ids ...string) string {
	p := v3 + "/room_keys/keys"
	for _, id := range ids {
		p += "/" + url.PathEscape(id)
	}
	return p + "?version=" + url.QueryEscape(version)
}

// kbTag returns the tag of a key as GET answers it.
func kbTag(t *testing.T, key any) string {
	t.Helper()
	k, _ := key.(map[string]any)
	sd, _ := k["session_data"].(map[string]any)
	tag, _ := sd["ciphertext"].(string)
	if tag == "" {
		t.Fatalf("key without a tag: %v", key)
	}
	return tag
}

// kbCounts returns the etag and count of an update answer, checking their types.
func kbCounts(t *testing.T, r *testserver.Response) (string, int) {
	t.Helper()
	etag, ok := r.JSON["etag"].(string)
	count, ok2 := r.JSON["count"].(float64)
	if !ok || !ok2 || etag == "" || len(r.JSON) != 2 {
		t.Fatalf("want {etag, count}: %s", r.Body)
	}
	return etag, int(count)
}

// kbInfo returns the etag and count GET /room_keys/version/{version} reports.
func kbInfo(t *testing.T, s *testserver.Server, token, version string) (string, int) {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", v3+"/room_keys/version/"+version, token, nil)
	return r.String("etag"), int(r.JSON["count"].(float64))
}

func TestKeyBackupVersionLifecycle(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "allow_guest_access: true\n")
	alice := s.Register("alice", "correct horse")
	base := v3 + "/room_keys/version"

	wantErr(t, s.Do("GET", base, alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", base+"/1", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")

	if v := kbCreate(t, s, alice.Token); v != "1" {
		t.Fatalf("first version %q", v)
	}
	for _, p := range []string{base, base + "/1"} {
		r := s.MustDo(http.StatusOK, "GET", p, alice.Token, nil)
		auth, _ := r.JSON["auth_data"].(map[string]any)
		if r.String("algorithm") != kbAlg || auth["public_key"] != "abcdefg" || r.JSON["count"] != float64(0) ||
			r.String("etag") == "" || r.String("version") != "1" || len(r.JSON) != 5 {
			t.Fatalf("GET %s: %s", p, r.Body)
		}
	}

	// A new version becomes the current one; the old one stays readable.
	if v := kbCreate(t, s, alice.Token); v != "2" {
		t.Fatalf("second version %q", v)
	}
	if r := s.MustDo(http.StatusOK, "GET", base, alice.Token, nil); r.String("version") != "2" {
		t.Fatalf("current: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "GET", base+"/1", alice.Token, nil)

	// Update: only auth_data changes.
	newAuth := map[string]any{"public_key": "hijklmn", "signatures": map[string]any{}}
	r := s.MustDo(http.StatusOK, "PUT", base+"/2", alice.Token, map[string]any{"algorithm": kbAlg, "auth_data": newAuth})
	if string(r.Body) != "{}" {
		t.Fatalf("PUT answer: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "PUT", base+"/2", alice.Token, map[string]any{"algorithm": kbAlg, "auth_data": newAuth, "version": "2"})
	r = s.MustDo(http.StatusOK, "GET", base+"/2", alice.Token, nil)
	if auth, _ := r.JSON["auth_data"].(map[string]any); auth["public_key"] != "hijklmn" || r.String("algorithm") != kbAlg {
		t.Fatalf("after update: %s", r.Body)
	}
	for _, c := range []struct {
		name, path string
		body       any
		status     int
		errcode    string
	}{
		{"other algorithm", base + "/2", map[string]any{"algorithm": "m.other", "auth_data": newAuth}, 400, "M_INVALID_PARAM"},
		{"version mismatch", base + "/2", map[string]any{"algorithm": kbAlg, "auth_data": newAuth, "version": "1"}, 400, "M_INVALID_PARAM"},
		{"version of wrong type", base + "/2", map[string]any{"algorithm": kbAlg, "auth_data": newAuth, "version": 2}, 400, "M_BAD_JSON"},
		{"no algorithm", base + "/2", map[string]any{"auth_data": newAuth}, 400, "M_MISSING_PARAM"},
		{"no auth_data", base + "/2", map[string]any{"algorithm": kbAlg}, 400, "M_MISSING_PARAM"},
		{"auth_data not an object", base + "/2", map[string]any{"algorithm": kbAlg, "auth_data": "x"}, 400, "M_BAD_JSON"},
		{"not JSON", base + "/2", "{", 400, "M_NOT_JSON"},
		{"unknown version", base + "/99", map[string]any{"algorithm": kbAlg, "auth_data": newAuth}, 404, "M_NOT_FOUND"},
		{"version not a number", base + "/abc", map[string]any{"algorithm": kbAlg, "auth_data": newAuth}, 404, "M_NOT_FOUND"},
	} {
		wantErr(t, s.Do("PUT", c.path, alice.Token, c.body), c.status, c.errcode)
	}

	// Creation needs algorithm and an object auth_data.
	for _, c := range []struct {
		body    any
		errcode string
	}{
		{map[string]any{"auth_data": kbAuthData}, "M_MISSING_PARAM"},
		{map[string]any{"algorithm": kbAlg}, "M_MISSING_PARAM"},
		{map[string]any{"algorithm": kbAlg, "auth_data": "x"}, "M_BAD_JSON"},
		{map[string]any{"algorithm": kbAlg, "auth_data": nil}, "M_BAD_JSON"},
		{map[string]any{"algorithm": 1, "auth_data": kbAuthData}, "M_BAD_JSON"},
		{map[string]any{"algorithm": "", "auth_data": kbAuthData}, "M_INVALID_PARAM"},
		{"[]", "M_BAD_JSON"},
		{"nope", "M_NOT_JSON"},
	} {
		wantErr(t, s.Do("POST", base, alice.Token, c.body), http.StatusBadRequest, c.errcode)
	}

	// Delete: the version goes, deleting it again succeeds, the previous
	// version becomes current again, and numbers are never reused.
	r = s.MustDo(http.StatusOK, "DELETE", base+"/2", alice.Token, nil)
	if string(r.Body) != "{}" {
		t.Fatalf("DELETE answer: %s", r.Body)
	}
	wantErr(t, s.Do("GET", base+"/2", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("PUT", base+"/2", alice.Token, map[string]any{"algorithm": kbAlg, "auth_data": newAuth}), http.StatusNotFound, "M_NOT_FOUND")
	s.MustDo(http.StatusOK, "DELETE", base+"/2", alice.Token, nil)
	wantErr(t, s.Do("DELETE", base+"/99", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("DELETE", base+"/abc", alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	if r := s.MustDo(http.StatusOK, "GET", base, alice.Token, nil); r.String("version") != "1" {
		t.Fatalf("current after delete: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "DELETE", base+"/1", alice.Token, nil)
	wantErr(t, s.Do("GET", base, alice.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	if v := kbCreate(t, s, alice.Token); v != "3" {
		t.Fatalf("version after deletions %q, want 3", v)
	}

	// The other prefixes; authentication; guests.
	if r := s.MustDo(http.StatusOK, "GET", "/_matrix/client/r0/room_keys/version", alice.Token, nil); r.String("version") != "3" {
		t.Fatalf("r0: %s", r.Body)
	}
	wantErr(t, s.Do("GET", base, "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
	guest := s.MustDo(http.StatusOK, "POST", v3+"/register?kind=guest", "", map[string]any{}).String("access_token")
	wantErr(t, s.Do("GET", base, guest, nil), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	wantErr(t, s.Do("POST", base, guest, map[string]any{"algorithm": kbAlg, "auth_data": kbAuthData}), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	wantErr(t, s.Do("GET", kbKeys("1"), guest, nil), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
}

func TestKeyBackupKeys(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "correct horse")
	tok := alice.Token

	// Without any backup, every keys request is 404.
	wantErr(t, s.Do("PUT", kbKeys("1", "!a:test.local", "s1"), tok, kbKey(0, 0, false, "x")), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", kbKeys("1"), tok, nil), http.StatusNotFound, "M_NOT_FOUND")

	v := kbCreate(t, s, tok)
	etag0, _ := kbInfo(t, s, tok, v)
	roomA, roomB, roomC := "!a:test.local", "!sl/ash:test.local", "!c"

	// One session.
	r := s.MustDo(http.StatusOK, "PUT", kbKeys(v, roomA, "s1"), tok, kbKey(3, 1, false, "a1"))
	etag1, count := kbCounts(t, r)
	if count != 1 || etag1 == etag0 {
		t.Fatalf("first key: %s (etag before %s)", r.Body, etag0)
	}
	r = s.MustDo(http.StatusOK, "GET", kbKeys(v, roomA, "s1"), tok, nil)
	if r.JSON["first_message_index"] != float64(3) || r.JSON["forwarded_count"] != float64(1) || r.JSON["is_verified"] != false ||
		kbTag(t, r.JSON) != "a1" || len(r.JSON) != 4 {
		t.Fatalf("GET session: %s", r.Body)
	}

	// One room (whose ID needs escaping), then several rooms.
	r = s.MustDo(http.StatusOK, "PUT", kbKeys(v, roomB), tok, map[string]any{"sessions": map[string]any{
		"s2": kbKey(0, 0, true, "b2"), "s3": kbKey(1, 0, false, "b3"),
	}})
	etag2, count := kbCounts(t, r)
	if count != 3 || etag2 == etag1 {
		t.Fatalf("room PUT: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "PUT", kbKeys(v), tok, map[string]any{"rooms": map[string]any{
		roomA: map[string]any{"sessions": map[string]any{"s4": kbKey(0, 0, false, "a4")}},
		roomC: map[string]any{"sessions": map[string]any{"s5": kbKey(0, 0, false, "c5")}},
	}})
	etag3, count := kbCounts(t, r)
	if count != 5 || etag3 == etag2 {
		t.Fatalf("bulk PUT: %s", r.Body)
	}
	if e, c := kbInfo(t, s, tok, v); e != etag3 || c != 5 {
		t.Fatalf("version info: etag %s count %d, want %s 5", e, c, etag3)
	}

	r = s.MustDo(http.StatusOK, "GET", kbKeys(v), tok, nil)
	rooms, _ := r.JSON["rooms"].(map[string]any)
	want := map[string]map[string]string{roomA: {"s1": "a1", "s4": "a4"}, roomB: {"s2": "b2", "s3": "b3"}, roomC: {"s5": "c5"}}
	if len(rooms) != len(want) || len(r.JSON) != 1 {
		t.Fatalf("GET all: %s", r.Body)
	}
	for room, sessions := range want {
		got, _ := rooms[room].(map[string]any)["sessions"].(map[string]any)
		if len(got) != len(sessions) {
			t.Fatalf("GET all, room %s: %s", room, r.Body)
		}
		for sid, tag := range sessions {
			if kbTag(t, got[sid]) != tag {
				t.Fatalf("GET all, %s/%s: %s", room, sid, r.Body)
			}
		}
	}
	r = s.MustDo(http.StatusOK, "GET", kbKeys(v, roomB), tok, nil)
	if sessions, _ := r.JSON["sessions"].(map[string]any); len(sessions) != 2 || kbTag(t, sessions["s2"]) != "b2" || len(r.JSON) != 1 {
		t.Fatalf("GET room: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", kbKeys(v, "!empty:test.local"), tok, nil)
	if string(r.Body) != `{"sessions":{}}` {
		t.Fatalf("GET room without keys: %s", r.Body)
	}
	wantErr(t, s.Do("GET", kbKeys(v, roomA, "nope"), tok, nil), http.StatusNotFound, "M_NOT_FOUND")

	// Uploads that change nothing keep the etag: the same key again, a
	// worse one, and an empty upload.
	for _, body := range []struct {
		path string
		body any
	}{
		{kbKeys(v, roomA, "s1"), kbKey(3, 1, false, "a1")},
		{kbKeys(v, roomA, "s1"), kbKey(4, 1, false, "worse")},
		{kbKeys(v, roomA), map[string]any{"sessions": map[string]any{}}},
		{kbKeys(v), map[string]any{"rooms": map[string]any{}}},
	} {
		e, c := kbCounts(t, s.MustDo(http.StatusOK, "PUT", body.path, tok, body.body))
		if e != etag3 || c != 5 {
			t.Fatalf("no-op PUT %s: etag %s count %d, want %s 5", body.path, e, c, etag3)
		}
	}
	if kbTag(t, s.MustDo(http.StatusOK, "GET", kbKeys(v, roomA, "s1"), tok, nil).JSON) != "a1" {
		t.Fatal("a worse key replaced a better one")
	}

	// Deletes at each level; deleting nothing keeps the etag.
	e, c := kbCounts(t, s.MustDo(http.StatusOK, "DELETE", kbKeys(v, roomA, "s1"), tok, nil))
	if c != 4 || e == etag3 {
		t.Fatalf("delete session: etag %s count %d", e, c)
	}
	wantErr(t, s.Do("GET", kbKeys(v, roomA, "s1"), tok, nil), http.StatusNotFound, "M_NOT_FOUND")
	for _, p := range []string{kbKeys(v, roomA, "s1"), kbKeys(v, "!none:test.local")} {
		if e2, c2 := kbCounts(t, s.MustDo(http.StatusOK, "DELETE", p, tok, nil)); e2 != e || c2 != 4 {
			t.Fatalf("delete of nothing at %s: etag %s count %d, want %s 4", p, e2, c2, e)
		}
	}
	e2, c := kbCounts(t, s.MustDo(http.StatusOK, "DELETE", kbKeys(v, roomB), tok, nil))
	if c != 2 || e2 == e {
		t.Fatalf("delete room: etag %s count %d", e2, c)
	}
	if sessions, _ := s.MustDo(http.StatusOK, "GET", kbKeys(v, roomB), tok, nil).JSON["sessions"].(map[string]any); len(sessions) != 0 {
		t.Fatalf("room keys after delete: %v", sessions)
	}
	e3, c := kbCounts(t, s.MustDo(http.StatusOK, "DELETE", kbKeys(v), tok, nil))
	if c != 0 || e3 == e2 {
		t.Fatalf("delete all: etag %s count %d", e3, c)
	}
	if r := s.MustDo(http.StatusOK, "GET", kbKeys(v), tok, nil); string(r.Body) != `{"rooms":{}}` {
		t.Fatalf("GET all after delete: %s", r.Body)
	}
	if e, c := kbInfo(t, s, tok, v); e != e3 || c != 0 {
		t.Fatalf("version info after deletes: etag %s count %d", e, c)
	}

	// A bulk upload larger than the store's batches.
	bulk := map[string]any{}
	for i := range 1234 {
		room := fmt.Sprintf("!r%d:test.local", i%3)
		if bulk[room] == nil {
			bulk[room] = map[string]any{"sessions": map[string]any{}}
		}
		bulk[room].(map[string]any)["sessions"].(map[string]any)[fmt.Sprintf("sess%04d", i)] = kbKey(5, 0, false, "old")
	}
	if _, c := kbCounts(t, s.MustDo(http.StatusOK, "PUT", kbKeys(v), tok, map[string]any{"rooms": bulk})); c != 1234 {
		t.Fatalf("bulk count %d", c)
	}
	if _, c := kbInfo(t, s, tok, v); c != 1234 {
		t.Fatalf("bulk version count %d", c)
	}
	// The same sessions again, every other one with a better key.
	for i := range 1234 {
		room := fmt.Sprintf("!r%d:test.local", i%3)
		k := kbKey(6, 0, false, "worse")
		if i%2 == 0 {
			k = kbKey(4, 0, false, "better")
		}
		bulk[room].(map[string]any)["sessions"].(map[string]any)[fmt.Sprintf("sess%04d", i)] = k
	}
	if _, c := kbCounts(t, s.MustDo(http.StatusOK, "PUT", kbKeys(v), tok, map[string]any{"rooms": bulk})); c != 1234 {
		t.Fatalf("bulk count after re-upload %d", c)
	}
	r = s.MustDo(http.StatusOK, "GET", kbKeys(v), tok, nil)
	tags := map[string]int{}
	for _, room := range r.JSON["rooms"].(map[string]any) {
		for _, k := range room.(map[string]any)["sessions"].(map[string]any) {
			tags[kbTag(t, k)]++
		}
	}
	if tags["better"] != 617 || tags["old"] != 617 || len(tags) != 2 {
		t.Fatalf("after re-upload: %v", tags)
	}

	// The version parameter: required, and naming a live version.
	for _, m := range []string{"PUT", "GET", "DELETE"} {
		var body any
		if m == "PUT" {
			body = kbKey(0, 0, false, "x")
		}
		p := v3 + "/room_keys/keys/" + url.PathEscape(roomA) + "/s9"
		wantErr(t, s.Do(m, p, tok, body), http.StatusBadRequest, "M_MISSING_PARAM")
		wantErr(t, s.Do(m, p+"?version=", tok, body), http.StatusBadRequest, "M_MISSING_PARAM")
		wantErr(t, s.Do(m, kbKeys("99", roomA, "s9"), tok, body), http.StatusNotFound, "M_NOT_FOUND")
		wantErr(t, s.Do(m, kbKeys("x1", roomA, "s9"), tok, body), http.StatusNotFound, "M_NOT_FOUND")
	}

	// Uploads go to the current version only; older versions stay
	// readable and deletable.
	v2 := kbCreate(t, s, tok)
	for _, p := range []struct {
		path string
		body any
	}{
		{kbKeys(v, roomA, "s9"), kbKey(0, 0, false, "x")},
		{kbKeys(v, roomA), map[string]any{"sessions": map[string]any{"s9": kbKey(0, 0, false, "x")}}},
		{kbKeys(v), map[string]any{"rooms": map[string]any{}}},
	} {
		r := s.Do("PUT", p.path, tok, p.body)
		wantErr(t, r, http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
		if r.String("current_version") != v2 {
			t.Fatalf("current_version: %s", r.Body)
		}
	}
	if _, c := kbInfo(t, s, tok, v); c != 1234 {
		t.Fatalf("old version count %d", c)
	}
	if r := s.MustDo(http.StatusOK, "GET", kbKeys(v, "!r1:test.local", "sess0001"), tok, nil); kbTag(t, r.JSON) != "old" {
		t.Fatalf("old version key: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "PUT", kbKeys(v2, roomA, "s9"), tok, kbKey(0, 0, false, "new"))
	if r := s.MustDo(http.StatusOK, "GET", kbKeys(v2), tok, nil); len(r.JSON["rooms"].(map[string]any)) != 1 {
		t.Fatalf("versions share keys: %s", r.Body)
	}
	// Deleting the newer version makes the older one current again; a
	// deleted version takes no keys and has none.
	s.MustDo(http.StatusOK, "DELETE", v3+"/room_keys/version/"+v2, tok, nil)
	wantErr(t, s.Do("PUT", kbKeys(v2, roomA, "s9"), tok, kbKey(0, 0, false, "x")), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", kbKeys(v2), tok, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("DELETE", kbKeys(v2), tok, nil), http.StatusNotFound, "M_NOT_FOUND")
	s.MustDo(http.StatusOK, "PUT", kbKeys(v, roomA, "s9"), tok, kbKey(0, 0, false, "x"))
}

func TestKeyBackupReplaceRules(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "correct horse")
	v := kbCreate(t, s, alice.Token)
	room := "!room:test.local"

	type quality struct {
		verified bool
		fmi, fc  int
	}
	cases := []struct {
		name          string
		existing, new quality
		replaced      bool
	}{
		{"verified beats unverified despite worse index and count", quality{false, 0, 0}, quality{true, 9, 9}, true},
		{"unverified loses to verified despite better index and count", quality{true, 9, 9}, quality{false, 0, 0}, false},
		{"lower first_message_index wins despite higher count", quality{false, 5, 0}, quality{false, 4, 9}, true},
		{"higher first_message_index loses despite lower count", quality{true, 4, 9}, quality{true, 5, 0}, false},
		{"equal index, lower forwarded_count wins", quality{true, 2, 3}, quality{true, 2, 2}, true},
		{"equal index, higher forwarded_count loses", quality{false, 2, 2}, quality{false, 2, 3}, false},
		{"equal in everything keeps the existing key", quality{true, 1, 1}, quality{true, 1, 1}, false},
	}
	// One loop rather than subtests: the server's helpers fail the test
	// that started it.
	for i, c := range cases {
		sid := fmt.Sprintf("session%d", i)
		s.MustDo(http.StatusOK, "PUT", kbKeys(v, room, sid), alice.Token, kbKey(c.existing.fmi, c.existing.fc, c.existing.verified, "existing"))
		etag, count := kbInfo(t, s, alice.Token, v)
		// Through the bulk endpoint, which must apply the same rule.
		r := s.MustDo(http.StatusOK, "PUT", kbKeys(v), alice.Token, map[string]any{"rooms": map[string]any{
			room: map[string]any{"sessions": map[string]any{sid: kbKey(c.new.fmi, c.new.fc, c.new.verified, "new")}},
		}})
		e, n := kbCounts(t, r)
		if n != count {
			t.Fatalf("%s: count %d, want %d", c.name, n, count)
		}
		if (e != etag) != c.replaced {
			t.Fatalf("%s: etag %s -> %s, replaced %v", c.name, etag, e, c.replaced)
		}
		got := s.MustDo(http.StatusOK, "GET", kbKeys(v, room, sid), alice.Token, nil)
		want, q := "existing", c.existing
		if c.replaced {
			want, q = "new", c.new
		}
		if kbTag(t, got.JSON) != want || got.JSON["is_verified"] != q.verified ||
			got.JSON["first_message_index"] != float64(q.fmi) || got.JSON["forwarded_count"] != float64(q.fc) {
			t.Fatalf("%s: kept %s, want the %s key", c.name, got.Body, want)
		}
	}
}

func TestKeyBackupOtherUsers(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "correct horse")
	bob := s.Register("bob", "battery staple")
	v := kbCreate(t, s, alice.Token)
	room := "!room:test.local"
	s.MustDo(http.StatusOK, "PUT", kbKeys(v, room, "s1"), alice.Token, kbKey(0, 0, true, "alice"))

	// Bob has no backup: alice's version does not exist for him.
	wantErr(t, s.Do("GET", v3+"/room_keys/version", bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("GET", v3+"/room_keys/version/"+v, bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("PUT", v3+"/room_keys/version/"+v, bob.Token, map[string]any{"algorithm": kbAlg, "auth_data": kbAuthData}), http.StatusNotFound, "M_NOT_FOUND")
	wantErr(t, s.Do("DELETE", v3+"/room_keys/version/"+v, bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	for _, p := range []string{kbKeys(v), kbKeys(v, room), kbKeys(v, room, "s1")} {
		wantErr(t, s.Do("GET", p, bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
		wantErr(t, s.Do("DELETE", p, bob.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	}
	wantErr(t, s.Do("PUT", kbKeys(v, room, "s1"), bob.Token, kbKey(0, 0, true, "bob")), http.StatusNotFound, "M_NOT_FOUND")

	// His own backup has the same version string but is his alone.
	if bv := kbCreate(t, s, bob.Token); bv != v {
		t.Fatalf("bob's first version %q", bv)
	}
	s.MustDo(http.StatusOK, "PUT", kbKeys(v, room, "s1"), bob.Token, kbKey(9, 9, false, "bob"))
	s.MustDo(http.StatusOK, "DELETE", v3+"/room_keys/version/"+v, bob.Token, nil)
	r := s.MustDo(http.StatusOK, "GET", kbKeys(v, room, "s1"), alice.Token, nil)
	if kbTag(t, r.JSON) != "alice" {
		t.Fatalf("alice's key: %s", r.Body)
	}
	if _, c := kbInfo(t, s, alice.Token, v); c != 1 {
		t.Fatalf("alice's count %d", c)
	}
}

func TestKeyBackupMalformed(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "correct horse")
	tok := alice.Token
	v := kbCreate(t, s, tok)
	room := "!room:test.local"
	session := kbKeys(v, room, "s1")
	inRoom := kbKeys(v, room)
	all := kbKeys(v)

	// without returns a valid key without field f, with returns it with f set.
	without := func(f string) map[string]any {
		k := kbKey(0, 0, false, "x")
		delete(k, f)
		return k
	}
	with := func(f string, val any) map[string]any {
		k := kbKey(0, 0, false, "x")
		k[f] = val
		return k
	}
	rooms := func(r any) map[string]any { return map[string]any{"rooms": r} }
	sessions := func(s any) map[string]any { return map[string]any{"sessions": s} }

	cases := []struct {
		name    string
		path    string
		body    any
		status  int
		errcode string
	}{
		{"not JSON", session, "{", 400, "M_NOT_JSON"},
		{"empty body", session, "", 400, "M_NOT_JSON"},
		{"array", session, "[]", 400, "M_BAD_JSON"},
		{"NUL character", session, `{"first_message_index":0,"forwarded_count":0,"is_verified":false,"session_data":{"c":"\u0000"}}`, 400, "M_BAD_JSON"},
		{"empty object", session, map[string]any{}, 400, "M_MISSING_PARAM"},
		{"no first_message_index", session, without("first_message_index"), 400, "M_MISSING_PARAM"},
		{"no forwarded_count", session, without("forwarded_count"), 400, "M_MISSING_PARAM"},
		{"no is_verified", session, without("is_verified"), 400, "M_MISSING_PARAM"},
		{"no session_data", session, without("session_data"), 400, "M_MISSING_PARAM"},
		{"first_message_index string", session, with("first_message_index", "1"), 400, "M_BAD_JSON"},
		{"first_message_index fraction", session, with("first_message_index", 1.5), 400, "M_BAD_JSON"},
		{"first_message_index exponent", session, `{"first_message_index":1e3,"forwarded_count":0,"is_verified":false,"session_data":{}}`, 400, "M_BAD_JSON"},
		{"first_message_index null", session, with("first_message_index", nil), 400, "M_BAD_JSON"},
		{"first_message_index negative", session, with("first_message_index", -1), 400, "M_INVALID_PARAM"},
		{"first_message_index huge", session, `{"first_message_index":123456789012345678901234567890,"forwarded_count":0,"is_verified":false,"session_data":{}}`, 400, "M_INVALID_PARAM"},
		{"first_message_index above 2^53", session, with("first_message_index", int64(1)<<53), 400, "M_INVALID_PARAM"},
		{"forwarded_count bool", session, with("forwarded_count", true), 400, "M_BAD_JSON"},
		{"forwarded_count negative", session, with("forwarded_count", -3), 400, "M_INVALID_PARAM"},
		{"is_verified string", session, with("is_verified", "true"), 400, "M_BAD_JSON"},
		{"is_verified number", session, with("is_verified", 1), 400, "M_BAD_JSON"},
		{"is_verified null", session, with("is_verified", nil), 400, "M_BAD_JSON"},
		{"session_data string", session, with("session_data", "base64"), 400, "M_BAD_JSON"},
		{"session_data array", session, with("session_data", []any{}), 400, "M_BAD_JSON"},
		{"session_data null", session, with("session_data", nil), 400, "M_BAD_JSON"},
		{"no sessions", inRoom, map[string]any{}, 400, "M_MISSING_PARAM"},
		{"sessions array", inRoom, sessions([]any{}), 400, "M_BAD_JSON"},
		{"sessions null", inRoom, sessions(nil), 400, "M_BAD_JSON"},
		{"session not an object", inRoom, sessions(map[string]any{"s1": 5}), 400, "M_BAD_JSON"},
		{"bad key in room", inRoom, sessions(map[string]any{"s1": with("is_verified", "no")}), 400, "M_BAD_JSON"},
		{"empty session ID", inRoom, sessions(map[string]any{"": kbKey(0, 0, false, "x")}), 400, "M_INVALID_PARAM"},
		{"no rooms", all, map[string]any{}, 400, "M_MISSING_PARAM"},
		{"rooms array", all, rooms([]any{}), 400, "M_BAD_JSON"},
		{"rooms string", all, rooms("x"), 400, "M_BAD_JSON"},
		{"not a room ID", all, rooms(map[string]any{"@alice:test.local": sessions(map[string]any{})}), 400, "M_INVALID_PARAM"},
		{"room not an object", all, rooms(map[string]any{room: []any{}}), 400, "M_BAD_JSON"},
		{"room without sessions", all, rooms(map[string]any{room: map[string]any{}}), 400, "M_MISSING_PARAM"},
		{"one bad key among good ones", all, rooms(map[string]any{
			room:             sessions(map[string]any{"good": kbKey(0, 0, false, "x")}),
			"!other:test.lo": sessions(map[string]any{"good2": kbKey(0, 0, false, "x"), "bad": without("forwarded_count")}),
		}), 400, "M_MISSING_PARAM"},
		{"room ID in path", kbKeys(v, "not-a-room", "s1"), kbKey(0, 0, false, "x"), 400, "M_INVALID_PARAM"},
		{"overlong session ID", kbKeys(v, room, strings.Repeat("s", 256)), kbKey(0, 0, false, "x"), 400, "M_INVALID_PARAM"},
		{"huge session body", session, with("session_data", map[string]any{"c": strings.Repeat("A", 1<<20)}), 413, "M_TOO_LARGE"},
		{"huge bulk body", all, rooms(map[string]any{room: sessions(map[string]any{"s": with("session_data", map[string]any{"c": strings.Repeat("A", 5<<20)})})}), 413, "M_TOO_LARGE"},
	}
	// Too many keys in one (otherwise acceptable) request.
	many := map[string]any{}
	for i := range 10001 {
		many[fmt.Sprintf("s%d", i)] = kbKey(0, 0, false, "x")
	}
	cases = append(cases, struct {
		name    string
		path    string
		body    any
		status  int
		errcode string
	}{"too many keys", inRoom, sessions(many), 413, "M_TOO_LARGE"})

	for _, c := range cases {
		r := s.Do("PUT", c.path, tok, c.body)
		if r.Status != c.status || r.Errcode() != c.errcode {
			t.Errorf("%s: got %d %q, want %d %s: %.300s", c.name, r.Status, r.Errcode(), c.status, c.errcode, r.Body)
		}
	}
	// Nothing of it was stored.
	if e, c := kbInfo(t, s, tok, v); c != 0 || e != "0" {
		t.Fatalf("after malformed uploads: etag %s count %d", e, c)
	}
	if r := s.MustDo(http.StatusOK, "GET", all, tok, nil); string(r.Body) != `{"rooms":{}}` {
		t.Fatalf("keys after malformed uploads: %s", r.Body)
	}
	// GET and DELETE check the path too.
	wantErr(t, s.Do("GET", kbKeys(v, "not-a-room"), tok, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	wantErr(t, s.Do("DELETE", kbKeys(v, "not-a-room", "s1"), tok, nil), http.StatusBadRequest, "M_INVALID_PARAM")
}

func TestKeyBackupSurvivesRestart(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "correct horse")
	kbCreate(t, s, alice.Token)
	v := kbCreate(t, s, alice.Token)
	s.MustDo(http.StatusOK, "DELETE", v3+"/room_keys/version/"+v, alice.Token, nil)
	v = kbCreate(t, s, alice.Token) // "3"
	room := "!room:test.local"
	s.MustDo(http.StatusOK, "PUT", kbKeys(v, room, "s1"), alice.Token, kbKey(1, 2, true, "kept"))
	etag, _ := kbInfo(t, s, alice.Token, v)

	s.Restart()

	r := s.MustDo(http.StatusOK, "GET", v3+"/room_keys/version", alice.Token, nil)
	if r.String("version") != v || r.String("etag") != etag || r.JSON["count"] != float64(1) {
		t.Fatalf("current version after restart: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", kbKeys(v, room, "s1"), alice.Token, nil)
	if kbTag(t, r.JSON) != "kept" || r.JSON["first_message_index"] != float64(1) || r.JSON["forwarded_count"] != float64(2) || r.JSON["is_verified"] != true {
		t.Fatalf("key after restart: %s", r.Body)
	}
	if next := kbCreate(t, s, alice.Token); next != "4" {
		t.Fatalf("version after restart %q, want 4", next)
	}
}

// kbDo is a request for goroutines other than the test's: it returns its
// failures instead of ending the test.
func kbDo(s *testserver.Server, method, path, token string, body any) (int, []byte, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return 0, nil, err
	}
	req, err := http.NewRequest(method, s.URL+path, bytes.NewReader(data))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

func TestKeyBackupConcurrency(t *testing.T) {
	t.Parallel()
	s := testserver.Start(t, "")
	alice := s.Register("alice", "correct horse")
	v := kbCreate(t, s, alice.Token)
	room := "!room:test.local"

	// Two devices upload keys of different quality for the same sessions
	// at the same time: whatever the interleaving, the better key stays.
	const sessions = 25
	type result struct {
		status int
		body   []byte
		err    error
	}
	results := make(chan result, 2*sessions)
	var wg sync.WaitGroup
	for i := range sessions {
		sid := fmt.Sprintf("s%d", i)
		good := kbKey(0, 0, true, "good")
		bad := kbKey(7, 3, false, "bad")
		for _, key := range []map[string]any{bad, good} {
			wg.Go(func() {
				status, body, err := kbDo(s, "PUT", kbKeys(v, room, sid), alice.Token, key)
				results <- result{status, body, err}
			})
		}
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil || r.status != http.StatusOK {
			t.Fatalf("concurrent PUT: %d %s %v", r.status, r.body, r.err)
		}
	}
	r := s.MustDo(http.StatusOK, "GET", kbKeys(v, room), alice.Token, nil)
	got, _ := r.JSON["sessions"].(map[string]any)
	if len(got) != sessions {
		t.Fatalf("sessions: %s", r.Body)
	}
	for sid, k := range got {
		if kbTag(t, k) != "good" {
			t.Fatalf("session %s kept the worse key: %v", sid, k)
		}
	}
	if _, c := kbInfo(t, s, alice.Token, v); c != sessions {
		t.Fatalf("count %d, want %d", c, sessions)
	}

	// Concurrent creations each get their own, new version, and the last
	// one is current.
	const creations = 10
	versions := make(chan string, creations)
	errs := make(chan error, creations)
	for range creations {
		wg.Go(func() {
			status, body, err := kbDo(s, "POST", v3+"/room_keys/version", alice.Token, map[string]any{"algorithm": kbAlg, "auth_data": kbAuthData})
			var out struct{ Version string }
			if err == nil && status != http.StatusOK {
				err = fmt.Errorf("status %d: %s", status, body)
			}
			if err == nil {
				err = json.Unmarshal(body, &out)
			}
			if err != nil {
				errs <- err
				return
			}
			versions <- out.Version
		})
	}
	wg.Wait()
	close(versions)
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent create: %v", err)
	}
	seen := map[string]bool{}
	for v := range versions {
		seen[v] = true
	}
	for i := 2; i <= creations+1; i++ {
		if !seen[fmt.Sprint(i)] {
			t.Fatalf("versions %v, want 2..%d", seen, creations+1)
		}
	}
	if r := s.MustDo(http.StatusOK, "GET", v3+"/room_keys/version", alice.Token, nil); r.String("version") != fmt.Sprint(creations+1) {
		t.Fatalf("current after concurrent creations: %s", r.Body)
	}
}
