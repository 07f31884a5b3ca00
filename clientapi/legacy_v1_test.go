package clientapi_test

import (
	"bytes"
	"encoding/json"
	"image/png"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// The rest of the 2015 API: api/v1 registration, sending and redacting
// without a transaction ID, the v2_alpha prefix, presence lists, the login
// fallback page and identicons.

const v2Alpha = "/_matrix/client/v2_alpha"

func v1Register(t testing.TB, s *testserver.Server, user, password string) testserver.User {
	t.Helper()
	r := s.MustDo(http.StatusOK, "POST", lgV1+"/register", "", map[string]any{
		"type": "m.login.password", "user": user, "password": password,
	})
	if r.String("access_token") == "" || r.String("home_server") != testserver.ServerName {
		t.Fatalf("v1 register answered %s", r.Body)
	}
	return testserver.User{ID: r.String("user_id"), Token: r.String("access_token"), Password: password}
}

func v1Send(t testing.TB, s *testserver.Server, u testserver.User, roomID, body string) string {
	t.Helper()
	id := s.MustDo(http.StatusOK, "POST", lgRoomPath(lgV1, roomID, "/send/m.room.message"), u.Token,
		map[string]any{"msgtype": "m.text", "body": body}).String("event_id")
	if !strings.HasPrefix(id, "$") {
		t.Fatalf("send answered event_id %q", id)
	}
	return id
}

func TestV1EndToEnd(t *testing.T) {
	s := testserver.Start(t, "")

	var flows struct {
		Flows []map[string]any `json:"flows"`
	}
	lgDecode(t, s.MustDo(http.StatusOK, "GET", lgV1+"/register", "", nil), &flows)
	if len(flows.Flows) != 1 || flows.Flows[0]["type"] != "m.login.password" {
		t.Fatalf("v1 register flows: %+v", flows)
	}
	alice := v1Register(t, s, "alice", "pw-alice")
	if alice.ID != "@alice:"+testserver.ServerName {
		t.Fatalf("user_id %q", alice.ID)
	}
	// The same name again is taken.
	lgWantErr(t, s.Do("POST", lgV1+"/register", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "x"}),
		http.StatusBadRequest, "M_USER_IN_USE")
	// The 2015 login body: "user" rather than an identifier.
	lgDecode(t, s.MustDo(http.StatusOK, "GET", lgV1+"/login", "", nil), &flows)
	if !slices.ContainsFunc(flows.Flows, func(f map[string]any) bool { return f["type"] == "m.login.password" }) {
		t.Fatalf("v1 login flows: %+v", flows)
	}
	login := s.MustDo(http.StatusOK, "POST", lgV1+"/login", "", map[string]any{"type": "m.login.password", "user": "alice", "password": "pw-alice"})
	if login.String("user_id") != alice.ID || login.String("access_token") == "" {
		t.Fatalf("v1 login: %s", login.Body)
	}

	roomID := lgCreateRoom(t, s, alice, map[string]any{"preset": "private_chat"})
	first := v1Send(t, s, alice, roomID, "one")
	second := v1Send(t, s, alice, roomID, "one")
	if first == second {
		t.Fatalf("two POSTs without a transaction ID gave the same event %s", first)
	}

	got := lgInitialSync(t, s, lgV1, alice, "")
	room := lgFind(got.Rooms, roomID)
	if room == nil || room.Messages == nil {
		t.Fatalf("initialSync lacks the room: %+v", got.Rooms)
	}
	var ids []string
	for _, e := range room.Messages.Chunk {
		if e.Type == "m.room.message" {
			ids = append(ids, e.EventID)
		}
	}
	if !slices.Equal(ids, []string{first, second}) {
		t.Fatalf("initialSync messages %v, want [%s %s]", ids, first, second)
	}

	// The event stream from initialSync's end wakes for a message sent
	// after. Alice's own presence (her stream request marks her online)
	// may come first: follow the stream until the message arrives.
	from := got.End
	for range 3 {
		st := lgEvents(t, s, lgV1, alice, "?timeout=1000&from="+url.QueryEscape(from))
		from = st.End
		if len(st.Chunk) == 0 {
			break
		}
	}
	done := make(chan []lgEvent, 1)
	go func() {
		var evs []lgEvent
		from := from
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			var out lgStream
			r := s.Do("GET", lgV1+"/events?timeout=20000&from="+url.QueryEscape(from), alice.Token, nil)
			if r.Status != http.StatusOK || json.Unmarshal(r.Body, &out) != nil {
				break
			}
			evs = append(evs, out.Chunk...)
			if slices.ContainsFunc(out.Chunk, func(e lgEvent) bool { return e.Type == "m.room.message" }) {
				break
			}
			from = out.End
		}
		done <- evs
	}()
	time.Sleep(300 * time.Millisecond)
	third := v1Send(t, s, alice, roomID, "three")
	select {
	case evs := <-done:
		if !slices.ContainsFunc(evs, func(e lgEvent) bool { return e.EventID == third }) {
			t.Fatalf("events after %s: %+v", from, evs)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("/events did not wake for the new message")
	}
}

func TestV1RegisterChecks(t *testing.T) {
	t.Run("v3 body still served", func(t *testing.T) {
		s := testserver.Start(t, "")
		r := s.MustDo(http.StatusUnauthorized, "POST", lgV1+"/register", "", map[string]any{"username": "bob", "password": "pw"})
		if r.String("session") == "" {
			t.Fatalf("no UIA session: %s", r.Body)
		}
		lgWantErr(t, s.Do("POST", lgV1+"/register", "", map[string]any{"type": "m.login.password", "user": "carol"}),
			http.StatusBadRequest, "M_MISSING_PARAM")
		lgWantErr(t, s.Do("POST", lgV1+"/register", "", map[string]any{"type": "m.login.password", "user": "Bad Name!", "password": "x"}),
			http.StatusBadRequest, "M_INVALID_USERNAME")
		// GET /register exists under api/v1 only.
		if r := s.Do("GET", "/_matrix/client/v3/register", "", nil); r.Status == http.StatusOK {
			t.Fatalf("GET v3/register answered 200: %s", r.Body)
		}
	})
	t.Run("registration disabled", func(t *testing.T) {
		s := testserver.StartYAML(t, strings.Replace(testserver.BaseConfig, "enable_registration: true", "enable_registration: false", 1))
		lgWantErr(t, s.Do("POST", lgV1+"/register", "", map[string]any{"type": "m.login.password", "user": "dave", "password": "pw"}),
			http.StatusForbidden, "M_FORBIDDEN")
		if r := s.MustDo(http.StatusOK, "GET", lgV1+"/register", "", nil); !strings.Contains(string(r.Body), `"flows":[]`) {
			t.Fatalf("flows with registration off: %s", r.Body)
		}
	})
	t.Run("token required", func(t *testing.T) {
		s := testserver.Start(t, "registration_requires_token: true\nregistration_tokens: [tok]\n")
		lgWantErr(t, s.Do("POST", lgV1+"/register", "", map[string]any{"type": "m.login.password", "user": "erin", "password": "pw"}),
			http.StatusForbidden, "M_FORBIDDEN")
	})
	t.Run("rate limited", func(t *testing.T) {
		yaml := strings.Replace(testserver.BaseConfig, "rc_registration: {per_second: 0, burst_count: 0}",
			"rc_registration: {per_second: 0.001, burst_count: 1}", 1)
		s := testserver.StartYAML(t, yaml)
		v1Register(t, s, "frank", "pw")
		lgWantErr(t, s.Do("POST", lgV1+"/register", "", map[string]any{"type": "m.login.password", "user": "gina", "password": "pw"}),
			http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	})
}

func TestV1RedactWithoutTxn(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	roomID := s.CreateRoom(alice, nil)
	target := v1Send(t, s, alice, roomID, "oops")
	// Under every client prefix, as Synapse.
	for _, prefix := range []string{lgV1, "/_matrix/client/v3"} {
		r1 := s.MustDo(http.StatusOK, "POST", lgRoomPath(prefix, roomID, "/redact/"+url.PathEscape(target)), alice.Token, map[string]any{"reason": "typo"})
		r2 := s.MustDo(http.StatusOK, "POST", lgRoomPath(prefix, roomID, "/redact/"+url.PathEscape(target)), alice.Token, map[string]any{})
		if r1.String("event_id") == "" || r1.String("event_id") == r2.String("event_id") {
			t.Fatalf("%s: redactions %s and %s", prefix, r1.Body, r2.Body)
		}
	}
	ev := s.MustDo(http.StatusOK, "GET", lgRoomPath(lgV1, roomID, "/event/"+url.PathEscape(target)), alice.Token, nil)
	if c, _ := ev.JSON["content"].(map[string]any); len(c) != 0 {
		t.Fatalf("redacted event still has content: %s", ev.Body)
	}
	// The PUT form stays idempotent.
	p := lgRoomPath(lgV1, roomID, "/send/m.room.message/same-txn")
	a := s.MustDo(http.StatusOK, "PUT", p, alice.Token, map[string]any{"msgtype": "m.text", "body": "x"}).String("event_id")
	b := s.MustDo(http.StatusOK, "PUT", p, alice.Token, map[string]any{"msgtype": "m.text", "body": "x"}).String("event_id")
	if a != b {
		t.Fatalf("PUT with one txn ID made %s and %s", a, b)
	}
}

func TestV2AlphaSyncFilter(t *testing.T) {
	s := testserver.Start(t, "")
	// Registration under v2_alpha is today's user-interactive one.
	first := s.MustDo(http.StatusUnauthorized, "POST", v2Alpha+"/register", "", map[string]any{"username": "alice", "password": "pw"})
	r := s.MustDo(http.StatusOK, "POST", v2Alpha+"/register", "", map[string]any{
		"username": "alice", "password": "pw", "auth": map[string]any{"type": "m.login.dummy", "session": first.String("session")},
	})
	alice := testserver.User{ID: r.String("user_id"), Token: r.String("access_token")}
	me := url.PathEscape(alice.ID)

	fid := s.MustDo(http.StatusOK, "POST", v2Alpha+"/user/"+me+"/filter", alice.Token,
		map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 1}}}).String("filter_id")
	if fid == "" {
		t.Fatal("no filter_id")
	}
	f := s.MustDo(http.StatusOK, "GET", v2Alpha+"/user/"+me+"/filter/"+fid, alice.Token, nil)
	if !strings.Contains(string(f.Body), `"limit":1`) {
		t.Fatalf("filter read back: %s", f.Body)
	}
	roomID := s.CreateRoom(alice, nil)
	s.SendText(alice, roomID, "a")
	last := s.SendText(alice, roomID, "b")
	sy := s.MustDo(http.StatusOK, "GET", v2Alpha+"/sync?filter="+fid, alice.Token, nil)
	var sync struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				Timeline struct {
					Events []lgEvent `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	lgDecode(t, sy, &sync)
	tl := sync.Rooms.Join[roomID].Timeline.Events
	if sync.NextBatch == "" || len(tl) != 1 || tl[0].EventID != last {
		t.Fatalf("v2_alpha sync with filter: %s", sy.Body)
	}

	// Account data, tags and receipts.
	s.MustDo(http.StatusOK, "PUT", v2Alpha+"/user/"+me+"/account_data/org.example", alice.Token, map[string]any{"k": 1})
	s.MustDo(http.StatusOK, "PUT", v2Alpha+"/user/"+me+"/rooms/"+url.PathEscape(roomID)+"/account_data/org.example", alice.Token, map[string]any{"k": 2})
	s.MustDo(http.StatusOK, "PUT", v2Alpha+"/user/"+me+"/rooms/"+url.PathEscape(roomID)+"/tags/u.work", alice.Token, map[string]any{"order": 0.5})
	tags := s.MustDo(http.StatusOK, "GET", v2Alpha+"/user/"+me+"/rooms/"+url.PathEscape(roomID)+"/tags", alice.Token, nil)
	if !strings.Contains(string(tags.Body), "u.work") {
		t.Fatalf("tags: %s", tags.Body)
	}
	s.MustDo(http.StatusOK, "POST", v2Alpha+"/rooms/"+url.PathEscape(roomID)+"/receipt/m.read/"+url.PathEscape(last), alice.Token, map[string]any{})
	s.MustDo(http.StatusOK, "GET", v2Alpha+"/account/3pid", alice.Token, nil)

	// Only the v2 alpha endpoints: nothing newer answers there.
	for _, p := range []string{"/createRoom", "/account/whoami", "/joined_rooms", "/initialSync"} {
		method := "GET"
		if p == "/createRoom" {
			method = "POST"
		}
		lgWantErr(t, s.Do(method, v2Alpha+p, alice.Token, map[string]any{}), http.StatusNotFound, "M_UNRECOGNIZED")
	}
	v := s.MustDo(http.StatusOK, "GET", "/_matrix/client/versions", "", nil)
	if strings.Contains(string(v.Body), "v2") || strings.Contains(string(v.Body), "alpha") {
		t.Fatalf("/versions advertises v2 alpha: %s", v.Body)
	}
}

type presenceListEntry struct {
	Accepted      bool   `json:"accepted"`
	UserID        string `json:"user_id"`
	Presence      string `json:"presence"`
	LastActiveAgo *int64 `json:"last_active_ago"`
}

func getPresenceList(t testing.TB, s *testserver.Server, u testserver.User) []presenceListEntry {
	t.Helper()
	var out []presenceListEntry
	lgDecode(t, s.MustDo(http.StatusOK, "GET", lgV1+"/presence/list/"+url.PathEscape(u.ID), u.Token, nil), &out)
	return out
}

func TestPresenceList(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	carol := s.Register("carol", "pw")
	s.MustDo(http.StatusOK, "PUT", lgV1+"/presence/"+url.PathEscape(bob.ID)+"/status", bob.Token, map[string]any{"presence": "online"})
	path := lgV1 + "/presence/list/" + url.PathEscape(alice.ID)

	if l := getPresenceList(t, s, alice); len(l) != 0 {
		t.Fatalf("new list: %+v", l)
	}
	// Unknown local users, remote users and oneself are not kept.
	s.MustDo(http.StatusOK, "POST", path, alice.Token, map[string]any{
		"invite": []string{bob.ID, "@nobody:" + testserver.ServerName, "@remote:elsewhere.example", alice.ID, ""},
	})
	l := getPresenceList(t, s, alice)
	if len(l) != 1 || l[0].UserID != bob.ID || !l[0].Accepted || l[0].Presence != "online" || l[0].LastActiveAgo == nil {
		t.Fatalf("list after invite: %s", s.Do("GET", path, alice.Token, nil).Body)
	}

	// Only the owner reads or edits the list.
	lgWantErr(t, s.Do("GET", path, bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	lgWantErr(t, s.Do("POST", path, bob.Token, map[string]any{"drop": []string{bob.ID}}), http.StatusForbidden, "M_FORBIDDEN")
	lgWantErr(t, s.Do("GET", path, "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
	// Malformed bodies.
	lgWantErr(t, s.Do("POST", path, alice.Token, map[string]any{"invite": "bob"}), http.StatusBadRequest, "M_BAD_JSON")
	lgWantErr(t, s.Do("POST", path, alice.Token, map[string]any{"invite": []any{1}}), http.StatusBadRequest, "M_BAD_JSON")
	lgWantErr(t, s.Do("POST", path, alice.Token, map[string]any{"invite": []string{"bob"}}), http.StatusBadRequest, "M_INVALID_PARAM")
	lgWantErr(t, s.Do("POST", path, alice.Token, "not json"), http.StatusBadRequest, "M_NOT_JSON")

	// Invite and drop in one request; the list survives a restart.
	s.MustDo(http.StatusOK, "POST", path, alice.Token, map[string]any{"invite": []string{carol.ID}, "drop": []string{bob.ID}})
	s.Restart()
	l = getPresenceList(t, s, alice)
	if len(l) != 1 || l[0].UserID != carol.ID || l[0].Presence != "offline" {
		t.Fatalf("list after restart: %+v", l)
	}
	s.MustDo(http.StatusOK, "POST", path, alice.Token, map[string]any{"drop": []string{carol.ID}})
	if l := getPresenceList(t, s, alice); len(l) != 0 {
		t.Fatalf("list after drop: %+v", l)
	}
}

func TestLoginFallback(t *testing.T) {
	s := testserver.Start(t, "")
	r := s.MustDo(http.StatusOK, "GET", "/_matrix/static/client/login/", "", nil)
	csp := r.Header.Get("Content-Security-Policy")
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") || !strings.Contains(csp, "default-src 'none'") ||
		!strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("page headers: %v", r.Header)
	}
	if !strings.Contains(string(r.Body), `src="login.js"`) || !strings.Contains(string(r.Body), "<form") {
		t.Fatalf("page body: %s", r.Body)
	}
	js := s.MustDo(http.StatusOK, "GET", "/_matrix/static/client/login/login.js", "", nil)
	if !strings.HasPrefix(js.Header.Get("Content-Type"), "text/javascript") ||
		!strings.Contains(string(js.Body), "/_matrix/client/v3/login") || !strings.Contains(string(js.Body), "matrixLogin.onLogin") {
		t.Fatalf("script: %v %s", js.Header, js.Body)
	}
	s.MustDo(http.StatusOK, "GET", "/_matrix/static/client/login/login.css", "", nil)
	// Without the slash, the page redirects to it (keeping the query).
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(s.URL + "/_matrix/static/client/login?device_id=ABC")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/_matrix/static/client/login/?device_id=ABC" {
		t.Fatalf("no-slash: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	lgWantErr(t, s.Do("GET", "/_matrix/static/client/login/other.js", "", nil), http.StatusNotFound, "M_UNRECOGNIZED")
}

func profileAvatar(t testing.TB, s *testserver.Server, userID string) string {
	t.Helper()
	r := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(userID), "", nil)
	return r.String("avatar_url")
}

func TestIdenticon(t *testing.T) {
	const path = "/_matrix/media/v1/identicon/"
	t.Run("off", func(t *testing.T) {
		s := testserver.Start(t, "")
		lgWantErr(t, s.Do("GET", path+"alice", "", nil), http.StatusNotFound, "M_UNRECOGNIZED")
		u := v1Register(t, s, "alice", "pw")
		if a := profileAvatar(t, s, u.ID); a != "" {
			t.Fatalf("avatar with identicons off: %q", a)
		}
	})
	t.Run("on", func(t *testing.T) {
		s := testserver.Start(t, "enable_identicons: true\n")
		r := s.MustDo(http.StatusOK, "GET", path+"alice", "", nil)
		if r.Header.Get("Content-Type") != "image/png" {
			t.Fatalf("content type %q", r.Header.Get("Content-Type"))
		}
		img, err := png.Decode(bytes.NewReader(r.Body))
		if err != nil || img.Bounds().Dx() != 96 || img.Bounds().Dy() != 96 {
			t.Fatalf("default identicon: %v %v", err, img)
		}
		again := s.MustDo(http.StatusOK, "GET", path+"alice", "", nil)
		other := s.MustDo(http.StatusOK, "GET", path+"bob", "", nil)
		if !bytes.Equal(r.Body, again.Body) || bytes.Equal(r.Body, other.Body) {
			t.Fatal("identicons are not deterministic per name")
		}
		sized := s.MustDo(http.StatusOK, "GET", path+"alice?width=40&height=30", "", nil)
		if img, err := png.Decode(bytes.NewReader(sized.Body)); err != nil || img.Bounds().Dx() != 40 || img.Bounds().Dy() != 30 {
			t.Fatalf("sized identicon: %v", err)
		}
		for _, q := range []string{"?width=0", "?height=513", "?width=x"} {
			lgWantErr(t, s.Do("GET", path+"alice"+q, "", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		}

		// New users, registered either way, get theirs as avatar.
		for _, u := range []testserver.User{v1Register(t, s, "carol", "pw"), s.Register("dave", "pw")} {
			avatar := profileAvatar(t, s, u.ID)
			if !strings.HasPrefix(avatar, "mxc://"+testserver.ServerName+"/") {
				t.Fatalf("%s avatar %q", u.ID, avatar)
			}
			d := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v1/media/download/"+strings.TrimPrefix(avatar, "mxc://"), u.Token, nil)
			if !bytes.Equal(d.Body, s.MustDo(http.StatusOK, "GET", path+url.PathEscape(u.ID), "", nil).Body) {
				t.Fatalf("%s avatar is not their identicon", u.ID)
			}
		}
	})
}
