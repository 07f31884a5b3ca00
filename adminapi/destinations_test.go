package adminapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

const destinationsPath = mrdBase + "/v1/federation/destinations"

// destWait polls hs's record of destination until ok accepts it.
func destWait(t *testing.T, s *testserver.Server, admin testserver.User, destination, what string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := s.Do("GET", destinationsPath+"/"+destination, admin.Token, nil)
		if r.Status == http.StatusOK && ok(r.JSON) {
			return r.JSON
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %d %s", what, r.Status, r.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func destNames(t *testing.T, r *testserver.Response) []string {
	t.Helper()
	list, ok := r.JSON["destinations"].([]any)
	if !ok {
		t.Fatalf("no destinations: %s", r.Body)
	}
	out := []string{}
	for _, d := range list {
		out = append(out, d.(map[string]any)["destination"].(string))
	}
	return out
}

func TestAdminDestinations(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	a, b := f.Servers["hs1.test"], f.Servers["hs2.test"]
	admin := a.Register("admin", "pw")
	mrdMakeAdmin(t, a, admin)
	alice := a.Register("alice", "pw")
	bob := b.Register("bob", "pw")
	room := a.CreatePublicRoom(alice)
	b.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room)+"?server_name=hs1.test", bob.Token, map[string]any{})
	a.SendText(alice, room, "hello hs2")

	// Delivery is recorded: no backoff, and the last event delivered.
	d := destWait(t, a, admin, "hs2.test", "a delivery", func(d map[string]any) bool {
		return d["last_successful_stream_ordering"] != nil
	})
	if d["destination"] != "hs2.test" || d["retry_last_ts"] != float64(0) || d["retry_interval"] != float64(0) || d["failure_ts"] != nil {
		t.Fatalf("healthy destination: %v", d)
	}
	r := a.MustDo(http.StatusOK, "GET", destinationsPath, admin.Token, nil)
	if got := destNames(t, r); len(got) != 1 || got[0] != "hs2.test" || r.JSON["total"] != float64(1) || r.JSON["next_token"] != nil {
		t.Fatalf("list: %s", r.Body)
	}
	rooms := a.MustDo(http.StatusOK, "GET", destinationsPath+"/hs2.test/rooms", admin.Token, nil)
	list, _ := rooms.JSON["rooms"].([]any)
	if len(list) != 1 || rooms.JSON["total"] != float64(1) {
		t.Fatalf("rooms: %s", rooms.Body)
	}
	if entry := list[0].(map[string]any); entry["room_id"] != room || entry["stream_ordering"].(float64) <= 0 {
		t.Fatalf("room entry: %v", entry)
	}

	for q, want := range map[string]int{"?destination=HS2": 1, "?destination=nomatch": 0, "?order_by=retry_last_ts&dir=b": 1, "?from=1": 0} {
		r := a.MustDo(http.StatusOK, "GET", destinationsPath+q, admin.Token, nil)
		if got := destNames(t, r); len(got) != want {
			t.Errorf("%s: %v, want %d", q, got, want)
		}
	}
	r = a.MustDo(http.StatusOK, "GET", destinationsPath+"?limit=0", admin.Token, nil)
	if r.JSON["total"] != float64(1) || len(destNames(t, r)) != 0 {
		t.Errorf("limit=0: %s", r.Body)
	}
	for _, q := range []string{"?from=-1", "?limit=x", "?order_by=name", "?dir=z"} {
		mrdWantErr(t, a.Do("GET", destinationsPath+q, admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	}
	for _, q := range []string{"?from=-1", "?dir=z"} {
		mrdWantErr(t, a.Do("GET", destinationsPath+"/hs2.test/rooms"+q, admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	}
	// A destination that is not failing needs no reset.
	mrdWantErr(t, a.Do("POST", destinationsPath+"/hs2.test/reset_connection", admin.Token, map[string]any{}), http.StatusBadRequest, "M_UNKNOWN")
	mrdWantErr(t, a.Do("GET", destinationsPath+"/hs3.test", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, a.Do("GET", destinationsPath+"/hs3.test/rooms", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, a.Do("POST", destinationsPath+"/hs3.test/reset_connection", admin.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
	for _, p := range []string{"", "/hs2.test", "/hs2.test/rooms"} {
		mrdWantErr(t, a.Do("GET", destinationsPath+p, alice.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	}
	mrdWantErr(t, a.Do("POST", destinationsPath+"/hs2.test/reset_connection", alice.Token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")

	// hs2 goes down: the failures are recorded. First the message must
	// have reached hs2 and its delivery been recorded (the first delivery
	// seen above may be of an earlier event): the last delivery then stays.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := b.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=5", bob.Token, nil)
		if strings.Contains(string(r.Body), "hello hs2") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hs2 never got the message: %s", r.Body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var delivered float64
	for stable := 0; stable < 3; {
		d = destWait(t, a, admin, "hs2.test", "a delivery", func(d map[string]any) bool {
			return d["last_successful_stream_ordering"] != nil
		})
		if v := d["last_successful_stream_ordering"].(float64); v == delivered {
			stable++
		} else {
			delivered, stable = v, 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Stop()
	a.SendText(alice, room, "while hs2 is down")
	failing := destWait(t, a, admin, "hs2.test", "a failure", func(d map[string]any) bool {
		return d["retry_last_ts"].(float64) > 0 && d["failure_ts"] != nil && d["retry_interval"].(float64) > 0
	})
	// The recorded wait is the queue's: from 200ms, doubling, up to 2s.
	if iv := failing["retry_interval"].(float64); iv < 200 || iv > 2000 {
		t.Errorf("retry_interval %v outside the configured backoff", iv)
	}
	if failing["last_successful_stream_ordering"] != delivered {
		t.Fatalf("a failure changed the last delivery: %v", failing)
	}
	r = a.MustDo(http.StatusOK, "GET", destinationsPath+"?order_by=failure_ts", admin.Token, nil)
	if got := destNames(t, r); len(got) != 1 {
		t.Fatalf("list while failing: %s", r.Body)
	}

	// Back up, and reset: the backoff ends now and the queue delivers.
	b.Restart()
	a.MustDo(http.StatusOK, "POST", destinationsPath+"/hs2.test/reset_connection", admin.Token, map[string]any{})
	reset := a.MustDo(http.StatusOK, "GET", destinationsPath+"/hs2.test", admin.Token, nil).JSON
	if reset["retry_last_ts"] != float64(0) || reset["retry_interval"] != float64(0) || reset["failure_ts"] != nil {
		t.Fatalf("after reset_connection: %v", reset)
	}
	destWait(t, a, admin, "hs2.test", "the delivery after the reset", func(d map[string]any) bool {
		last, _ := d["last_successful_stream_ordering"].(float64)
		return last > delivered && d["retry_last_ts"] == float64(0) && d["failure_ts"] == nil
	})
}

// A server that does not federate has no destinations.
func TestAdminDestinationsWithoutFederation(t *testing.T) {
	s := testserver.Start(t, "")
	admin := s.Register("admin", "pw")
	mrdMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	r := s.MustDo(http.StatusOK, "GET", destinationsPath, admin.Token, nil)
	if got := destNames(t, r); len(got) != 0 || r.JSON["total"] != float64(0) {
		t.Fatalf("list: %s", r.Body)
	}
	mrdWantErr(t, s.Do("GET", destinationsPath+"/other.example", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, s.Do("GET", destinationsPath+"/other.example/rooms", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, s.Do("POST", destinationsPath+"/other.example/reset_connection", admin.Token, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, s.Do("GET", destinationsPath+"?limit=-1", admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	mrdWantErr(t, s.Do("GET", destinationsPath, bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
}
