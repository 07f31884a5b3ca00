package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// loadSet writes registration files and loads them.
func loadSet(t *testing.T, regs ...string) *Set {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i, r := range regs {
		p := filepath.Join(dir, fmt.Sprintf("as%d.yaml", i))
		if err := os.WriteFile(p, []byte(r), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	set, err := Load(paths, nil)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func reg(id, url, users, aliases string, protocols ...string) string {
	s := fmt.Sprintf("id: %s\nurl: %q\nas_token: as-%s\nhs_token: hs-%s\nsender_localpart: %s\nnamespaces:\n  users: [{exclusive: true, regex: %q}]\n  aliases: [{exclusive: true, regex: %q}]\n",
		id, url, id, id, id, users, aliases)
	if len(protocols) > 0 {
		b, _ := json.Marshal(protocols)
		s += "protocols: " + string(b) + "\n"
	}
	return s
}

// recorder is a fake service that records the requests it gets.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (r *recorder) record(req *http.Request) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
}

func (r *recorder) paths() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.reqs {
		out = append(out, q.URL.Path)
	}
	return out
}

func TestQueryAliasPrefixed(t *testing.T) {
	var rec recorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.record(r)
		if r.Header.Get("Authorization") != "Bearer hs-irc" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		if r.URL.Path == "/_matrix/app/v1/rooms/#irc_python:hs" {
			_, _ = io.WriteString(w, "{}")
			return
		}
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND"}`)
	}))
	defer srv.Close()
	q := NewQuerier(loadSet(t, reg("irc", srv.URL, "@irc_.*", "#irc_.*")), time.Second, nil)
	ctx := context.Background()
	if !q.QueryAlias(ctx, "#irc_python:hs") {
		t.Fatal("QueryAlias of an alias the service has = false")
	}
	if q.QueryAlias(ctx, "#irc_nope:hs") {
		t.Fatal("QueryAlias of an alias the service answers 404 for = true")
	}
	if q.QueryAlias(ctx, "#other:hs") {
		t.Fatal("QueryAlias outside every namespace = true")
	}
	// A Matrix 404 is an answer: the legacy path is not tried.
	want := []string{"/_matrix/app/v1/rooms/#irc_python:hs", "/_matrix/app/v1/rooms/#irc_nope:hs"}
	if got := rec.paths(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("requests %v, want %v", got, want)
	}
}

func TestQueryLegacyFallback(t *testing.T) {
	var rec recorder
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.record(r)
		switch {
		case r.URL.Query().Get("access_token") != "hs-old":
			w.WriteHeader(http.StatusNotFound) // the framework's page: no such route
			_, _ = io.WriteString(w, "<h1>Not Found</h1>")
		case r.URL.Path == "/rooms/#old_x:hs", r.URL.Path == "/users/@old_x:hs":
			_, _ = io.WriteString(w, "{}")
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	q := NewQuerier(loadSet(t, reg("old", srv.URL, "@old_.*", "#old_.*")), time.Second, nil)
	if !q.QueryAlias(context.Background(), "#old_x:hs") {
		t.Fatal("QueryAlias through the legacy path = false")
	}
	if !q.QueryUser(context.Background(), "@old_x:hs") {
		t.Fatal("QueryUser through the legacy path = false")
	}
	want := []string{"/_matrix/app/v1/rooms/#old_x:hs", "/rooms/#old_x:hs", "/_matrix/app/v1/users/@old_x:hs", "/users/@old_x:hs"}
	if got := rec.paths(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("requests %v, want %v", got, want)
	}
}

func TestQueryServiceDown(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	block := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(block)
	q := NewQuerier(loadSet(t,
		reg("down", down.URL, "@down_.*", "#down_.*"),
		reg("hang", hang.URL, "@hang_.*", "#hang_.*"),
	), 200*time.Millisecond, nil)
	for _, c := range []struct {
		name string
		f    func() bool
	}{
		{"down alias", func() bool { return q.QueryAlias(context.Background(), "#down_x:hs") }},
		{"down user", func() bool { return q.QueryUser(context.Background(), "@down_x:hs") }},
		{"hanging alias", func() bool { return q.QueryAlias(context.Background(), "#hang_x:hs") }},
		{"hanging user", func() bool { return q.QueryUser(context.Background(), "@hang_x:hs") }},
	} {
		start := time.Now()
		if c.f() {
			t.Errorf("%s: found", c.name)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s: took %v", c.name, took)
		}
	}
}

func TestPing(t *testing.T) {
	var got struct {
		auth string
		body map[string]any
	}
	var mu sync.Mutex
	okSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/_matrix/app/v1/ping" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		mu.Lock()
		got.auth = r.Header.Get("Authorization")
		_ = json.NewDecoder(r.Body).Decode(&got.body)
		mu.Unlock()
		_, _ = io.WriteString(w, "{}")
	}))
	defer okSrv.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"errcode": "M_UNKNOWN_TOKEN"}`)
	}))
	defer bad.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	block := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(block)

	set := loadSet(t,
		reg("ok", okSrv.URL, "@ok_.*", "#ok_.*"),
		reg("bad", bad.URL, "@bad_.*", "#bad_.*"),
		reg("down", down.URL, "@down_.*", "#down_.*"),
		reg("hang", hang.URL, "@hang_.*", "#hang_.*"),
		"id: nourl\nurl: null\nas_token: as-nourl\nhs_token: hs-nourl\nsender_localpart: nourl\nnamespaces: {users: [], aliases: [], rooms: []}\n",
	)
	q := NewQuerier(set, 300*time.Millisecond, nil)
	ctx := context.Background()

	if _, err := q.Ping(ctx, set.ByID("ok"), "meow"); err != nil {
		t.Fatalf("ping: %v", err)
	}
	mu.Lock()
	if got.auth != "Bearer hs-ok" || got.body["transaction_id"] != "meow" {
		t.Errorf("service got auth %q body %v", got.auth, got.body)
	}
	mu.Unlock()

	var se *StatusError
	if _, err := q.Ping(ctx, set.ByID("bad"), ""); !errors.As(err, &se) || se.Status != 401 || se.Body != `{"errcode": "M_UNKNOWN_TOKEN"}` {
		t.Errorf("bad status: %v", err)
	}
	if _, err := q.Ping(ctx, set.ByID("down"), ""); !errors.Is(err, ErrConnectionFailed) {
		t.Errorf("down: %v", err)
	}
	if _, err := q.Ping(ctx, set.ByID("hang"), ""); !errors.Is(err, ErrConnectionTimeout) {
		t.Errorf("hanging: %v", err)
	}
	if _, err := q.Ping(ctx, set.ByID("nourl"), ""); !errors.Is(err, ErrNoURL) {
		t.Errorf("no url: %v", err)
	}
}

// thirdPartyService answers the third-party API for one network on the
// given prefix.
func thirdPartyService(t *testing.T, prefix, network string, rec *recorder) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.record(r)
		switch r.URL.Path {
		case prefix + "/thirdparty/protocol/chat":
			fmt.Fprintf(w, `{"user_fields":["nick"],"location_fields":["channel"],"icon":"mxc://x/y","field_types":{},"instances":[{"network_id":%q,"desc":%q,"fields":{}}]}`, network, network)
		case prefix + "/thirdparty/location/chat":
			fmt.Fprintf(w, `[{"alias":"#chat_%s:hs","protocol":"chat","fields":{"channel":%q}}]`, network, r.URL.Query().Get("channel"))
		case prefix + "/thirdparty/user/chat":
			fmt.Fprintf(w, `[{"userid":"@chat_%s:hs","protocol":"chat","fields":{"nick":%q}}]`, network, r.URL.Query().Get("nick"))
		case prefix + "/thirdparty/location":
			fmt.Fprintf(w, `[{"alias":%q,"protocol":"chat","fields":{}}]`, r.URL.Query().Get("alias"))
		case prefix + "/thirdparty/user":
			fmt.Fprintf(w, `[{"userid":%q,"protocol":"chat","fields":{}}]`, r.URL.Query().Get("userid"))
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
}

func TestThirdParty(t *testing.T) {
	var recA, recB recorder
	a := thirdPartyService(t, "/_matrix/app/v1", "a", &recA)
	defer a.Close()
	b := thirdPartyService(t, "/_matrix/app/unstable", "b", &recB) // an older service
	defer b.Close()
	q := NewQuerier(loadSet(t,
		reg("a", a.URL, "@a_.*", "#a_.*", "chat"),
		reg("b", b.URL, "@b_.*", "#b_.*", "chat"),
		reg("c", a.URL, "@c_.*", "#c_.*"), // declares no protocol: never asked
	), time.Second, nil)
	ctx := context.Background()

	all := q.Protocols(ctx)
	chat, found := all["chat"]
	if len(all) != 1 || !found {
		t.Fatalf("protocols %v", all)
	}
	if inst, _ := chat["instances"].([]any); len(inst) != 2 {
		t.Errorf("instances of both services merged: %v", chat["instances"])
	}
	if _, found := q.Protocol(ctx, "irc"); found || q.Declared("irc") {
		t.Error("an undeclared protocol was found")
	}

	locs := q.ThirdParty(ctx, "location", "chat", url.Values{"channel": {"#go"}})
	if len(locs) != 2 {
		t.Fatalf("locations %s", locs)
	}
	var l struct{ Fields map[string]string }
	_ = json.Unmarshal(locs[0], &l)
	if l.Fields["channel"] != "#go" {
		t.Errorf("query string not forwarded: %s", locs[0])
	}
	if users := q.ThirdParty(ctx, "user", "chat", url.Values{"nick": {"bob"}}); len(users) != 2 {
		t.Errorf("users %s", users)
	}
	if users := q.ThirdParty(ctx, "user", "", url.Values{"userid": {"@a_bob:hs"}}); len(users) != 2 {
		t.Errorf("reverse users %s", users)
	}
	if locs := q.ThirdParty(ctx, "location", "", url.Values{"alias": {"#a_x:hs"}}); len(locs) != 2 {
		t.Errorf("reverse locations %s", locs)
	}
	for _, p := range recA.paths() {
		if p[:len("/_matrix/app/v1/")] != "/_matrix/app/v1/" {
			t.Errorf("service a asked on %s", p)
		}
	}
}
