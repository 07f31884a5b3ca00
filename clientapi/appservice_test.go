package clientapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// asqStart starts a test server with these registration files (name to
// YAML).
func asqStart(t *testing.T, regs map[string]string) *testserver.Server {
	t.Helper()
	dir := t.TempDir()
	cfg := "app_service_config_files:\n"
	for name, yaml := range regs {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += "  - " + p + "\n"
	}
	return testserver.Start(t, cfg)
}

// asqRequireASAuth fails the test unless the service's as_token
// authenticates it.
func asqRequireASAuth(t *testing.T, s *testserver.Server, asToken string) {
	t.Helper()
	if r := s.Do("GET", v3+"/account/whoami", asToken, nil); r.Status != http.StatusOK {
		t.Fatalf("as_token authentication failed: whoami answered %d %s", r.Status, r.Body)
	}
}

// asqURL is the homeserver's URL as a fake service learns it, once the
// homeserver has started.
type asqURL struct {
	mu  sync.Mutex
	url string
}

func (u *asqURL) set(s string) { u.mu.Lock(); u.url = s; u.mu.Unlock() }
func (u *asqURL) get() string  { u.mu.Lock(); defer u.mu.Unlock(); return u.url }

// loggedEvent is what the 2015 example prints of each event it receives.
type loggedEvent struct {
	UserID, RoomID, Type string
	Content              map[string]any
}

// exampleAS2015 replicates the Flask application service of the 2015
// "Application Services" example: it knows only the unprefixed paths, logs
// the events pushed to it, and creates a room for every alias it is asked
// about, as the service's own user, through the v1 client API with its
// as_token in the query string.
type exampleAS2015 struct {
	hs      asqURL
	asToken string

	mu     sync.Mutex
	events []loggedEvent
}

func (e *exampleAS2015) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/transactions/"):
		var body struct {
			Events []map[string]any `json:"events"`
		}
		if json.NewDecoder(r.Body).Decode(&body) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		var got []loggedEvent
		for _, ev := range body.Events {
			userID, ok1 := ev["user_id"].(string)
			roomID, ok2 := ev["room_id"].(string)
			typ, ok3 := ev["type"].(string)
			content, ok4 := ev["content"].(map[string]any)
			if !ok1 || !ok2 || !ok3 || !ok4 {
				// Python's KeyError: the Flask app answers 500.
				http.Error(w, "Internal Server Error", http.StatusInternalServerError)
				return
			}
			got = append(got, loggedEvent{UserID: userID, RoomID: roomID, Type: typ, Content: content})
		}
		e.mu.Lock()
		e.events = append(e.events, got...)
		e.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/rooms/"):
		alias := strings.TrimPrefix(r.URL.Path, "/rooms/")
		localpart, _, _ := strings.Cut(alias, ":")
		localpart = strings.TrimPrefix(localpart, "#")
		body, _ := json.Marshal(map[string]string{"room_alias_name": localpart})
		resp, err := http.Post(e.hs.get()+"/_matrix/client/api/v1/createRoom?access_token="+url.QueryEscape(e.asToken),
			"application/json", bytes.NewReader(body))
		if err == nil {
			resp.Body.Close()
		}
		// Like the example, it answers {} whatever createRoom said.
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
	default:
		// Flask's page for routes it does not have, /_matrix/app/v1/* among
		// them.
		http.Error(w, "<h1>Not Found</h1>", http.StatusNotFound)
	}
}

func (e *exampleAS2015) logged() []loggedEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]loggedEvent(nil), e.events...)
}

// The registration of the 2015 example, as published: no id, no
// sender_localpart, and one non-exclusive alias namespace.
const exampleRegistration2015 = `url: "%URL%"
as_token: wfghWEGh3wgWHEf3478sHFWE
hs_token: ugw8243igya57aaABGFfgeyu
namespaces:
  users: []
  aliases:
    - exclusive: false
      regex: "#logged_.*"
  rooms: []
`

func TestAppServiceExample2015(t *testing.T) {
	ex := &exampleAS2015{asToken: "wfghWEGh3wgWHEf3478sHFWE"}
	as := httptest.NewServer(ex)
	defer as.Close()
	s := asqStart(t, map[string]string{"logging.yaml": strings.Replace(exampleRegistration2015, "%URL%", as.URL, 1)})
	ex.hs.set(s.URL)
	asqRequireASAuth(t, s, ex.asToken)
	alice := s.Register("alice", "pw")

	// Resolving an alias nobody created makes the service create the room
	// inside the same request.
	r := s.MustDo(http.StatusOK, "GET", v3+"/directory/room/%23logged_foo:test.local", "", nil)
	roomID := r.String("room_id")
	if !strings.HasPrefix(roomID, "!") {
		t.Fatalf("directory answer without a room: %s", r.Body)
	}
	// It stays created: the service is not asked again.
	if again := s.MustDo(http.StatusOK, "GET", v3+"/directory/room/%23logged_foo:test.local", alice.Token, nil); again.String("room_id") != roomID {
		t.Fatalf("second resolution: %s", again.Body)
	}

	// A join by an alias nobody created: the service's own user (as the
	// example's bot would) joins, and the room appears inside that request.
	j := s.MustDo(http.StatusOK, "POST", v3+"/join/%23logged_bar:test.local", ex.asToken, map[string]any{})
	barID := j.String("room_id")
	if !strings.HasPrefix(barID, "!") || barID == roomID {
		t.Fatalf("join by alias: %s", j.Body)
	}
	// An ordinary user's join by a fresh alias resolves it the same way. The
	// example creates rooms with the createRoom defaults, which the current
	// spec makes private_chat (invite only), so the join itself is refused;
	// what matters is that the alias was found rather than M_NOT_FOUND.
	jb := s.Do("POST", v3+"/join/%23logged_baz:test.local", alice.Token, map[string]any{})
	if jb.Status != http.StatusForbidden || jb.Errcode() != "M_FORBIDDEN" {
		t.Fatalf("join by a fresh alias in the namespace: %d %s", jb.Status, jb.Body)
	}
	s.MustDo(http.StatusOK, "GET", v3+"/directory/room/%23logged_baz:test.local", "", nil)

	// Aliases outside the namespace are not asked about.
	s.MustDo(http.StatusNotFound, "GET", v3+"/directory/room/%23other:test.local", "", nil)

	s.MustDo(http.StatusOK, "PUT", v3+"/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/asq1", ex.asToken,
		map[string]any{"msgtype": "m.text", "body": "logged hello"})
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, ev := range ex.logged() {
			if ev.RoomID == roomID && ev.Type == "m.room.message" && ev.Content["body"] == "logged hello" {
				if !strings.HasPrefix(ev.UserID, "@") {
					t.Fatalf("event logged without a sender: %+v", ev)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the message never reached PUT /transactions; logged %+v", ex.logged())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// userAS is a current-style service that registers users of its namespace
// when asked about them, except those named "nobody".
func userAS(hs *asqURL, asToken string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer hs-bridge" {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"errcode":"M_FORBIDDEN"}`)
			return
		}
		userID, ok := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/users/")
		localpart, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
		if !ok || strings.HasSuffix(localpart, "nobody") {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND"}`)
			return
		}
		body, _ := json.Marshal(map[string]any{"type": "m.login.application_service", "username": localpart})
		req, _ := http.NewRequest("POST", hs.get()+"/_matrix/client/v3/register", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+asToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			if resp != nil {
				resp.Body.Close()
			}
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, `{"errcode":"M_UNKNOWN"}`)
			return
		}
		resp.Body.Close()
		_, _ = io.WriteString(w, "{}")
	}
}

func TestAppServiceUserQuery(t *testing.T) {
	var hs asqURL
	as := httptest.NewServer(userAS(&hs, "as-bridge"))
	defer as.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	s := asqStart(t, map[string]string{
		"bridge.yaml": "id: bridge\nurl: " + as.URL + "\nas_token: as-bridge\nhs_token: hs-bridge\nsender_localpart: bridgebot\n" +
			"namespaces:\n  users: [{exclusive: true, regex: '@bridge_.*'}]\n  aliases: []\n  rooms: []\n",
		"down.yaml": "id: down\nurl: " + down.URL + "\nas_token: as-down\nhs_token: hs-down\nsender_localpart: downbot\n" +
			"namespaces:\n  users: [{exclusive: true, regex: '@down_.*'}]\n  aliases: [{exclusive: true, regex: '#down_.*'}]\n  rooms: []\n",
	})
	hs.set(s.URL)
	asqRequireASAuth(t, s, "as-bridge")
	alice := s.Register("alice", "pw")

	// A profile lookup of an unknown namespaced user creates it.
	p := s.MustDo(http.StatusOK, "GET", v3+"/profile/@bridge_carol:test.local", "", nil)
	if p.String("displayname") != "bridge_carol" {
		t.Fatalf("profile of a lazily created user: %s", p.Body)
	}
	s.MustDo(http.StatusNotFound, "GET", v3+"/profile/@bridge_nobody:test.local", "", nil)

	// So does an invite.
	room := s.MustDo(http.StatusOK, "POST", v3+"/createRoom", alice.Token, map[string]any{}).String("room_id")
	inv := v3 + "/rooms/" + url.PathEscape(room) + "/invite"
	s.MustDo(http.StatusOK, "POST", inv, alice.Token, map[string]any{"user_id": "@bridge_dave:test.local"})
	if r := s.Do("POST", inv, alice.Token, map[string]any{"user_id": "@bridge_nobody:test.local"}); r.Status != http.StatusNotFound {
		t.Fatalf("invite of a user the service does not have: %d %s", r.Status, r.Body)
	}

	// A service that is down: the client gets M_NOT_FOUND, quickly.
	start := time.Now()
	for _, path := range []string{v3 + "/profile/@down_x:test.local", v3 + "/directory/room/%23down_x:test.local"} {
		if r := s.Do("GET", path, alice.Token, nil); r.Status != http.StatusNotFound || r.Errcode() != "M_NOT_FOUND" {
			t.Errorf("GET %s with the service down: %d %s", path, r.Status, r.Body)
		}
	}
	if r := s.Do("POST", inv, alice.Token, map[string]any{"user_id": "@down_x:test.local"}); r.Status != http.StatusNotFound {
		t.Errorf("invite with the service down: %d %s", r.Status, r.Body)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a service that is down held requests for %v", took)
	}
}

func TestAppServicePing(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var gotTxn, gotAuth string
	okAS := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/_matrix/app/v1/ping" {
			http.NotFound(w, r)
			return
		}
		var body struct {
			TransactionID string `json:"transaction_id"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		gotTxn, gotAuth = body.TransactionID, r.Header.Get("Authorization")
		mu.Unlock()
		_, _ = io.WriteString(w, "{}")
	}))
	defer okAS.Close()
	badAS := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"errcode": "M_UNKNOWN_TOKEN"}`)
	}))
	defer badAS.Close()
	downAS := httptest.NewServer(http.NotFoundHandler())
	downAS.Close()
	release := make(chan struct{})
	hangAS := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hangAS.Close()
	defer close(release)

	reg := func(id, u string) string {
		return "id: " + id + "\nurl: " + u + "\nas_token: as-" + id + "\nhs_token: hs-" + id + "\nsender_localpart: " + id + "bot\n" +
			"namespaces:\n  users: []\n  aliases: []\n  rooms: []\n"
	}
	s := asqStart(t, map[string]string{
		"ok.yaml": reg("ok", okAS.URL), "bad.yaml": reg("bad", badAS.URL), "down.yaml": reg("down", downAS.URL),
		"hang.yaml": reg("hang", hangAS.URL), "nourl.yaml": reg("nourl", "null"),
	})
	asqRequireASAuth(t, s, "as-ok")
	const ping = "/_matrix/client/v1/appservice/"

	r := s.MustDo(http.StatusOK, "POST", ping+"ok/ping", "as-ok", map[string]any{"transaction_id": "meow"})
	if _, has := r.JSON["duration_ms"].(float64); !has {
		t.Errorf("ping answer without duration_ms: %s", r.Body)
	}
	mu.Lock()
	if gotTxn != "meow" || gotAuth != "Bearer hs-ok" {
		t.Errorf("service got transaction_id %q, Authorization %q", gotTxn, gotAuth)
	}
	mu.Unlock()

	user := s.Register("alice", "pw")
	for _, c := range []struct{ token, path string }{{user.Token, "ok"}, {"as-ok", "bad"}, {"as-ok", "unknown"}} {
		if r := s.Do("POST", ping+c.path+"/ping", c.token, map[string]any{}); r.Status != http.StatusForbidden || r.Errcode() != "M_FORBIDDEN" {
			t.Errorf("ping of %s by someone else: %d %s", c.path, r.Status, r.Body)
		}
	}
	for _, c := range []struct {
		id, code string
		status   int
	}{
		{"nourl", "M_URL_NOT_SET", http.StatusBadRequest},
		{"down", "M_CONNECTION_FAILED", http.StatusBadGateway},
		{"bad", "M_BAD_STATUS", http.StatusBadGateway},
		{"hang", "M_CONNECTION_TIMEOUT", http.StatusGatewayTimeout},
	} {
		r := s.Do("POST", ping+c.id+"/ping", "as-"+c.id, map[string]any{})
		if r.Status != c.status || r.Errcode() != c.code {
			t.Errorf("ping of %s: %d %s, want %d %s", c.id, r.Status, r.Body, c.status, c.code)
		}
		if c.id == "bad" && (r.JSON["status"] != float64(401) || r.JSON["body"] != `{"errcode": "M_UNKNOWN_TOKEN"}`) {
			t.Errorf("bad status without status and body: %s", r.Body)
		}
	}
}

func TestAppServiceThirdParty(t *testing.T) {
	var mu sync.Mutex
	var queries []url.Values
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer hs-chat" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		mu.Lock()
		queries = append(queries, r.URL.Query())
		mu.Unlock()
		q := r.URL.Query()
		switch r.URL.Path {
		case "/_matrix/app/v1/thirdparty/protocol/chat":
			_, _ = io.WriteString(w, `{"user_fields":["nick"],"location_fields":["channel"],"icon":"mxc://example.org/chat","field_types":{"nick":{"regexp":".*","placeholder":"bob"},"channel":{"regexp":"#.*","placeholder":"#go"}},"instances":[{"network_id":"chatnet","desc":"Chat","fields":{}}]}`)
		case "/_matrix/app/v1/thirdparty/location/chat":
			_ = json.NewEncoder(w).Encode([]any{map[string]any{"alias": "#chat_go:test.local", "protocol": "chat", "fields": map[string]string{"channel": q.Get("channel")}}})
		case "/_matrix/app/v1/thirdparty/user/chat":
			_ = json.NewEncoder(w).Encode([]any{map[string]any{"userid": "@chat_bob:test.local", "protocol": "chat", "fields": map[string]string{"nick": q.Get("nick")}}})
		case "/_matrix/app/v1/thirdparty/location":
			_ = json.NewEncoder(w).Encode([]any{map[string]any{"alias": q.Get("alias"), "protocol": "chat", "fields": map[string]string{"channel": "#go"}}})
		case "/_matrix/app/v1/thirdparty/user":
			_ = json.NewEncoder(w).Encode([]any{map[string]any{"userid": q.Get("userid"), "protocol": "chat", "fields": map[string]string{"nick": "bob"}}})
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED"}`)
		}
	}))
	defer as.Close()
	s := asqStart(t, map[string]string{
		"chat.yaml": "id: chat\nurl: " + as.URL + "\nas_token: as-chat\nhs_token: hs-chat\nsender_localpart: chatbot\nprotocols: [chat]\n" +
			"namespaces:\n  users: [{exclusive: true, regex: '@chat_.*'}]\n  aliases: [{exclusive: true, regex: '#chat_.*'}]\n  rooms: []\n",
	})
	alice := s.Register("alice", "pw")

	s.MustDo(http.StatusUnauthorized, "GET", v3+"/thirdparty/protocols", "", nil)
	r := s.MustDo(http.StatusOK, "GET", v3+"/thirdparty/protocols", alice.Token, nil)
	chat, _ := r.JSON["chat"].(map[string]any)
	if len(r.JSON) != 1 || chat["icon"] != "mxc://example.org/chat" {
		t.Fatalf("protocols: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", v3+"/thirdparty/protocol/chat", alice.Token, nil)
	if inst, _ := r.JSON["instances"].([]any); len(inst) != 1 {
		t.Errorf("protocol: %s", r.Body)
	}
	for _, p := range []string{"/thirdparty/protocol/irc", "/thirdparty/location/irc", "/thirdparty/user/irc"} {
		if r := s.Do("GET", v3+p, alice.Token, nil); r.Status != http.StatusNotFound || r.Errcode() != "M_NOT_FOUND" {
			t.Errorf("GET %s of an unknown protocol: %d %s", p, r.Status, r.Body)
		}
	}

	list := func(path string) []map[string]any {
		t.Helper()
		resp := s.MustDo(http.StatusOK, "GET", v3+path, alice.Token, nil)
		var out []map[string]any
		if err := json.Unmarshal(resp.Body, &out); err != nil {
			t.Fatalf("GET %s: %s", path, resp.Body)
		}
		return out
	}
	if l := list("/thirdparty/location/chat?channel=%23go"); len(l) != 1 || l[0]["fields"].(map[string]any)["channel"] != "#go" {
		t.Errorf("location lookup: %v", l)
	}
	if l := list("/thirdparty/user/chat?nick=bob"); len(l) != 1 || l[0]["fields"].(map[string]any)["nick"] != "bob" {
		t.Errorf("user lookup: %v", l)
	}
	if l := list("/thirdparty/location?alias=%23chat_go:test.local"); len(l) != 1 || l[0]["alias"] != "#chat_go:test.local" {
		t.Errorf("location reverse lookup: %v", l)
	}
	if l := list("/thirdparty/user?userid=@chat_bob:test.local"); len(l) != 1 || l[0]["userid"] != "@chat_bob:test.local" {
		t.Errorf("user reverse lookup: %v", l)
	}
	s.MustDo(http.StatusBadRequest, "GET", v3+"/thirdparty/user", alice.Token, nil)

	// The client's access token, when it came in the query string, is not
	// passed on to the service.
	list("/thirdparty/user/chat?nick=bob&access_token=" + url.QueryEscape(alice.Token))
	mu.Lock()
	defer mu.Unlock()
	for _, q := range queries {
		if q.Has("access_token") {
			t.Errorf("a client's access token was forwarded: %v", q)
		}
	}
}
