package clientapi_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"homeserver/internal/testserver"
	"homeserver/server"
)

// asaBridge is the registration most tests use: an exclusive user and alias
// namespace without the leading underscore, so that normal users run into
// M_EXCLUSIVE rather than the reserved-localpart rule; no URL, so nothing
// is pushed or queried.
const asaBridge = `id: bridge
url: null
as_token: bridge-as-token
hs_token: bridge-hs-token
sender_localpart: _bridge_bot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@br_.*:test\\.local"
  aliases:
    - exclusive: true
      regex: "#br_.*:test\\.local"
`

// asaLimited is a second service, rate limited as services are by default.
const asaLimited = `id: limited
url: null
as_token: limited-as-token
hs_token: limited-hs-token
sender_localpart: _limited_bot
namespaces:
  users:
    - exclusive: false
      regex: "@lim_.*"
`

const (
	asaToken        = "bridge-as-token"
	asaLimitedToken = "limited-as-token"
)

// asaWrite writes registration files into dir and returns the config lines
// that load them.
func asaWrite(t *testing.T, regs ...string) string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i, r := range regs {
		p := filepath.Join(dir, "reg"+string(rune('a'+i))+".yaml")
		if err := os.WriteFile(p, []byte(r), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, `"`+p+`"`)
	}
	return "app_service_config_files: [" + strings.Join(paths, ", ") + "]\n"
}

func asaStart(t *testing.T) *testserver.Server {
	t.Helper()
	return testserver.Start(t, asaWrite(t, asaBridge, asaLimited))
}

// asAs appends ?user_id= (and any other query) to path.
func asAs(path, userID string, extra ...string) string {
	q := url.Values{}
	if userID != "" {
		q.Set("user_id", userID)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	if len(q) == 0 {
		return path
	}
	return path + sep + q.Encode()
}

func asaWantErr(t *testing.T, r *testserver.Response, status int, code string) {
	t.Helper()
	if r.Status != status || r.Errcode() != code {
		t.Fatalf("status %d %s, want %d %s: %s", r.Status, r.Errcode(), status, code, r.Body)
	}
}

// asaRegister registers a user of the bridge's namespace.
func asaRegister(t *testing.T, s *testserver.Server, localpart string) {
	t.Helper()
	s.MustDo(http.StatusOK, "POST", v3+"/register", asaToken, map[string]any{
		"type": "m.login.application_service", "username": localpart, "inhibit_login": true,
	})
}

func TestAppServiceIdentityAssertion(t *testing.T) {
	s := asaStart(t)
	const whoami = v3 + "/account/whoami"

	// The sender exists from start-up, without registering.
	r := s.MustDo(http.StatusOK, "GET", whoami, asaToken, nil)
	if r.String("user_id") != "@_bridge_bot:test.local" || r.JSON["device_id"] != nil {
		t.Fatalf("whoami as the service: %s", r.Body)
	}
	// The as_token also works as the access_token query parameter.
	r = s.MustDo(http.StatusOK, "GET", whoami+"?access_token="+asaToken, "", nil)
	if r.String("user_id") != "@_bridge_bot:test.local" {
		t.Fatalf("whoami with ?access_token=: %s", r.Body)
	}

	alice := s.Register("alice", "pw")
	// Outside the namespaces: an existing user, a remote one, garbage.
	for _, u := range []string{alice.ID, "@br_x:other.org", "not-a-user", "@_limited_bot:test.local"} {
		asaWantErr(t, s.Do("GET", asAs(whoami, u), asaToken, nil), http.StatusForbidden, "M_FORBIDDEN")
	}
	// In the namespace but not registered.
	asaWantErr(t, s.Do("GET", asAs(whoami, "@br_ghost:test.local"), asaToken, nil), http.StatusForbidden, "M_FORBIDDEN")

	asaRegister(t, s, "br_ghost")
	r = s.MustDo(http.StatusOK, "GET", asAs(whoami, "@br_ghost:test.local"), asaToken, nil)
	if r.String("user_id") != "@br_ghost:test.local" {
		t.Fatalf("whoami as a namespace user: %s", r.Body)
	}
	// The sender may be named explicitly.
	s.MustDo(http.StatusOK, "GET", asAs(whoami, "@_bridge_bot:test.local"), asaToken, nil)

	// Tokens that are not an as_token, nor a user's.
	asaWantErr(t, s.Do("GET", whoami, "bridge-hs-token", nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	asaWantErr(t, s.Do("GET", asAs(whoami, "@br_ghost:test.local"), "nope", nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	// A user's own token ignores user_id.
	r = s.MustDo(http.StatusOK, "GET", asAs(whoami, "@br_ghost:test.local"), alice.Token, nil)
	if r.String("user_id") != alice.ID {
		t.Fatalf("user_id honoured for a user's token: %s", r.Body)
	}
}

func TestAppServiceRegistrationAndLogin(t *testing.T) {
	// AS registration works with registration closed.
	yaml := withConfig(t, "enable_registration: true\n", "enable_registration: false\n") + asaWrite(t, asaBridge, asaLimited)
	s := testserver.StartYAML(t, yaml)
	const reg = v3 + "/register"
	asType := "m.login.application_service"

	asaWantErr(t, s.Do("POST", reg, "", map[string]any{"username": "br_a", "password": "pw"}), http.StatusForbidden, "M_FORBIDDEN")

	r := s.MustDo(http.StatusOK, "POST", reg, asaToken, map[string]any{"type": asType, "username": "br_a"})
	if r.String("user_id") != "@br_a:test.local" || r.String("access_token") == "" || r.String("device_id") == "" {
		t.Fatalf("AS registration: %s", r.Body)
	}
	who := s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", r.String("access_token"), nil)
	if who.String("user_id") != "@br_a:test.local" {
		t.Fatalf("whoami with the new user's token: %s", who.Body)
	}
	r = s.MustDo(http.StatusOK, "POST", reg, asaToken, map[string]any{"type": asType, "username": "br_b", "inhibit_login": true})
	if r.String("user_id") != "@br_b:test.local" || r.JSON["access_token"] != nil || r.JSON["device_id"] != nil {
		t.Fatalf("inhibit_login: %s", r.Body)
	}
	asaWantErr(t, s.Do("POST", reg, asaToken, map[string]any{"type": asType, "username": "br_b"}), http.StatusBadRequest, "M_USER_IN_USE")
	// Outside the namespace, or in another service's.
	asaWantErr(t, s.Do("POST", reg, asaToken, map[string]any{"type": asType, "username": "carol"}), http.StatusBadRequest, "M_EXCLUSIVE")
	asaWantErr(t, s.Do("POST", reg, asaLimitedToken, map[string]any{"type": asType, "username": "br_c"}), http.StatusBadRequest, "M_EXCLUSIVE")
	asaWantErr(t, s.Do("POST", reg, asaToken, map[string]any{"type": asType}), http.StatusBadRequest, "M_MISSING_PARAM")
	// Without a valid as_token.
	asaWantErr(t, s.Do("POST", reg, "", map[string]any{"type": asType, "username": "br_c"}), http.StatusUnauthorized, "M_MISSING_TOKEN")
	asaWantErr(t, s.Do("POST", reg, "bridge-hs-token", map[string]any{"type": asType, "username": "br_c"}), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	asaWantErr(t, s.Do("POST", reg+"?access_token=nope", "", map[string]any{"type": asType, "username": "br_c"}), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

	// Login.
	flows := s.MustDo(http.StatusOK, "GET", v3+"/login", "", nil)
	var types []string
	for _, f := range flows.JSON["flows"].([]any) {
		types = append(types, f.(map[string]any)["type"].(string))
	}
	if !slices.Contains(types, asType) || !slices.Contains(types, "m.login.password") {
		t.Fatalf("login flows: %s", flows.Body)
	}
	login := func(token, user string) *testserver.Response {
		return s.Do("POST", v3+"/login", token, map[string]any{
			"type": asType, "identifier": map[string]any{"type": "m.id.user", "user": user},
		})
	}
	r = login(asaToken, "br_b")
	if r.Status != http.StatusOK || r.String("user_id") != "@br_b:test.local" || r.String("access_token") == "" {
		t.Fatalf("AS login: %d %s", r.Status, r.Body)
	}
	s.MustDo(http.StatusOK, "GET", v3+"/account/whoami", r.String("access_token"), nil)
	r = login(asaToken, "@br_a:test.local")
	if r.Status != http.StatusOK || r.String("user_id") != "@br_a:test.local" {
		t.Fatalf("AS login by user ID: %d %s", r.Status, r.Body)
	}
	asaWantErr(t, login(asaToken, "br_nobody"), http.StatusForbidden, "M_FORBIDDEN")
	asaWantErr(t, login(asaLimitedToken, "br_a"), http.StatusBadRequest, "M_EXCLUSIVE")
	asaWantErr(t, login("", "br_a"), http.StatusUnauthorized, "M_MISSING_TOKEN")
	asaWantErr(t, login("bridge-hs-token", "br_a"), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
}

func TestAppServiceExclusiveNamespaces(t *testing.T) {
	s := asaStart(t)
	// Normal users may not take users of an exclusive namespace...
	asaWantErr(t, s.Do("POST", v3+"/register", "", map[string]any{"username": "br_mallory", "password": "pw"}), http.StatusBadRequest, "M_EXCLUSIVE")
	asaWantErr(t, s.Do("GET", v3+"/register/available?username=br_mallory", "", nil), http.StatusBadRequest, "M_EXCLUSIVE")
	// ...but may those of a non-exclusive one.
	s.MustDo(http.StatusOK, "GET", v3+"/register/available?username=lim_x", "", nil)
	s.Register("lim_x", "pw")

	alice := s.Register("alice", "pw")
	room := dirCreateRoom(t, s, alice.Token, map[string]any{"preset": "public_chat"})
	asaWantErr(t, s.Do("PUT", aliasPath("#br_chan:test.local"), alice.Token, map[string]any{"room_id": room}), http.StatusBadRequest, "M_EXCLUSIVE")
	asaWantErr(t, s.Do("POST", v3+"/createRoom", alice.Token, map[string]any{"room_alias_name": "br_new"}), http.StatusBadRequest, "M_EXCLUSIVE")
	s.MustDo(http.StatusOK, "PUT", aliasPath("#general:test.local"), alice.Token, map[string]any{"room_id": room})
	// A service outside its alias namespace.
	asaWantErr(t, s.Do("PUT", aliasPath("#other:test.local"), asaToken, map[string]any{"room_id": room}), http.StatusBadRequest, "M_EXCLUSIVE")
	asaWantErr(t, s.Do("PUT", aliasPath("#br_chan:test.local"), asaLimitedToken, map[string]any{"room_id": room}), http.StatusBadRequest, "M_EXCLUSIVE")

	// The owning service may, without being in the room.
	s.MustDo(http.StatusOK, "PUT", aliasPath("#br_chan:test.local"), asaToken, map[string]any{"room_id": room})
	asaRegister(t, s, "br_puppet")
	bridged := s.MustDo(http.StatusOK, "POST", asAs(v3+"/createRoom", "@br_puppet:test.local"), asaToken, map[string]any{"room_alias_name": "br_new"}).String("room_id")
	if got := s.MustDo(http.StatusOK, "GET", aliasPath("#br_new:test.local"), "", nil).String("room_id"); got != bridged {
		t.Fatalf("#br_new points at %s, want %s", got, bridged)
	}
	// Others may not delete the service's aliases; it may.
	asaWantErr(t, s.Do("DELETE", aliasPath("#br_chan:test.local"), alice.Token, nil), http.StatusBadRequest, "M_EXCLUSIVE")
	s.MustDo(http.StatusOK, "DELETE", aliasPath("#br_chan:test.local"), asaToken, nil)
}

func TestAppServiceTimestampsAndTransactions(t *testing.T) {
	s := asaStart(t)
	asaRegister(t, s, "br_p")
	const puppet = "@br_p:test.local"
	room := dirCreateRoom(t, s, asaToken, map[string]any{"preset": "public_chat"})
	s.MustDo(http.StatusOK, "POST", asAs(roomPath(room, "/join"), puppet), asaToken, map[string]any{})

	eventTS := func(eventID string) float64 {
		t.Helper()
		r := s.MustDo(http.StatusOK, "GET", roomPath(room, "/event/"+url.PathEscape(eventID)), asaToken, nil)
		ts, _ := r.JSON["origin_server_ts"].(float64)
		return ts
	}
	send := func(token, user, txn string, extra ...string) *testserver.Response {
		return s.Do("PUT", asAs(roomPath(room, "/send/m.room.message/"+txn), user, extra...), token, map[string]any{"msgtype": "m.text", "body": txn})
	}

	r := send(asaToken, puppet, "t1", "ts", "1234567890123")
	if r.Status != http.StatusOK {
		t.Fatalf("send with ts: %d %s", r.Status, r.Body)
	}
	first := r.String("event_id")
	if got := eventTS(first); got != 1234567890123 {
		t.Fatalf("origin_server_ts = %v, want 1234567890123", got)
	}
	st := s.MustDo(http.StatusOK, "PUT", asAs(roomPath(room, "/state/m.room.topic"), "", "ts", "1000"), asaToken, map[string]any{"topic": "old"})
	if got := eventTS(st.String("event_id")); got != 1000 {
		t.Fatalf("state origin_server_ts = %v, want 1000", got)
	}
	asaWantErr(t, send(asaToken, puppet, "bad", "ts", "yesterday"), http.StatusBadRequest, "M_INVALID_PARAM")

	// Transaction IDs are scoped to the service and the user it acts as.
	if again := send(asaToken, puppet, "t1").String("event_id"); again != first {
		t.Fatalf("retried transaction gave %s, want %s", again, first)
	}
	if other := send(asaToken, "", "t1").String("event_id"); other == "" || other == first {
		t.Fatalf("the sender's t1 gave %q (puppet's %s)", other, first)
	}

	// Users may not massage timestamps: ts is ignored.
	alice := s.Register("alice", "pw")
	s.MustDo(http.StatusOK, "POST", roomPath(room, "/join"), alice.Token, map[string]any{})
	id := send(alice.Token, "", "a1", "ts", "1000").String("event_id")
	if got := eventTS(id); got == 1000 || got == 0 {
		t.Fatalf("a user's ts was honoured: %v", got)
	}
}

func TestAppServiceRateLimits(t *testing.T) {
	yaml := withConfig(t, "rc_message: {per_second: 0, burst_count: 0}\n", "rc_message: {per_second: 0.001, burst_count: 2}\n") +
		asaWrite(t, asaBridge, asaLimited)
	s := testserver.StartYAML(t, yaml)
	alice := s.Register("alice", "pw")
	room := dirCreateRoom(t, s, alice.Token, map[string]any{"preset": "public_chat"})
	s.MustDo(http.StatusOK, "POST", roomPath(room, "/join"), asaToken, map[string]any{})
	s.MustDo(http.StatusOK, "POST", roomPath(room, "/join"), asaLimitedToken, map[string]any{})
	send := func(token, txn string) *testserver.Response {
		return s.Do("PUT", roomPath(room, "/send/m.room.message/"+txn), token, map[string]any{"msgtype": "m.text", "body": txn})
	}
	// rate_limited: false.
	for i := range 6 {
		if r := send(asaToken, "b"+string(rune('0'+i))); r.Status != http.StatusOK {
			t.Fatalf("unlimited service, message %d: %d %s", i, r.Status, r.Body)
		}
	}
	// The default: limited like users.
	for _, tok := range []string{asaLimitedToken, alice.Token} {
		send(tok, "x0")
		send(tok, "x1")
		asaWantErr(t, send(tok, "x2"), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	}
}

func TestAppServiceNetworkDirectory(t *testing.T) {
	s := asaStart(t)
	alice := s.Register("alice", "pw")
	bridged := dirCreateRoom(t, s, asaToken, map[string]any{"preset": "public_chat", "name": "Bridged"})
	public := dirCreateRoom(t, s, alice.Token, map[string]any{"visibility": "public"})
	path := func(network, roomID string) string {
		return v3 + "/directory/list/appservice/" + url.PathEscape(network) + "/" + url.PathEscape(roomID)
	}
	asaWantErr(t, s.Do("PUT", path("irc", bridged), alice.Token, map[string]any{"visibility": "public"}), http.StatusForbidden, "M_FORBIDDEN")
	asaWantErr(t, s.Do("PUT", path("irc", bridged), asaToken, map[string]any{"visibility": "sideways"}), http.StatusBadRequest, "M_INVALID_PARAM")
	asaWantErr(t, s.Do("PUT", path("irc", "!nope:test.local"), asaToken, map[string]any{"visibility": "public"}), http.StatusNotFound, "M_NOT_FOUND")
	s.MustDo(http.StatusOK, "PUT", path("irc", bridged), asaToken, map[string]any{"visibility": "public"})

	list := func(body map[string]any) []string {
		t.Helper()
		r := s.MustDo(http.StatusOK, "POST", v3+"/publicRooms", alice.Token, body)
		var ids []string
		for _, c := range r.JSON["chunk"].([]any) {
			ids = append(ids, c.(map[string]any)["room_id"].(string))
		}
		slices.Sort(ids)
		return ids
	}
	both := []string{bridged, public}
	slices.Sort(both)
	for _, tc := range []struct {
		name string
		body map[string]any
		want []string
	}{
		{"server list", map[string]any{}, []string{public}},
		{"network", map[string]any{"third_party_instance_id": "irc"}, []string{bridged}},
		{"service|network", map[string]any{"third_party_instance_id": "bridge|irc"}, []string{bridged}},
		{"other network", map[string]any{"third_party_instance_id": "slack"}, nil},
		{"all networks", map[string]any{"include_all_networks": true}, both},
	} {
		if got := list(tc.body); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if r := s.MustDo(http.StatusOK, "GET", v3+"/publicRooms", "", nil); strings.Contains(string(r.Body), bridged) {
		t.Errorf("GET /publicRooms lists the network's room: %s", r.Body)
	}
	s.MustDo(http.StatusOK, "PUT", path("irc", bridged), asaToken, map[string]any{"visibility": "private"})
	if got := list(map[string]any{"third_party_instance_id": "irc"}); len(got) != 0 {
		t.Errorf("after withdrawing: %v", got)
	}
}

// Start-up refuses registrations that clash with the database, with one
// line naming the file and the field.
func TestAppServiceStartupChecks(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	s.Stop()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(reg string) (*server.Server, string, error) {
		dir := t.TempDir()
		p := filepath.Join(dir, "reg.yaml")
		if err := os.WriteFile(p, []byte(reg), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := *s.Config
		cfg.AppServiceConfigFiles = []string{p}
		srv, err := server.New(context.Background(), &cfg, log)
		return srv, p, err
	}
	for _, tc := range []struct {
		name, reg, want string
	}{
		{"as_token of a user", strings.Replace(asaBridge, asaToken, alice.Token, 1), "as_token: is the access token of an existing user"},
		{"sender is a user", strings.Replace(asaBridge, "_bridge_bot", "alice", 1), "sender_localpart: @alice:test.local is an existing user"},
		{"invalid sender", strings.Replace(asaBridge, "_bridge_bot", "Bot", 1), "sender_localpart: cannot create"},
		{"missing hs_token", strings.Replace(asaBridge, "hs_token: bridge-hs-token\n", "", 1), "hs_token: missing"},
	} {
		srv, p, err := start(tc.reg)
		if err == nil {
			_ = srv.Shutdown(context.Background())
			t.Errorf("%s: start-up succeeded", tc.name)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, p+": ") || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("%s: %q, want %q naming %s", tc.name, msg, tc.want, p)
		}
	}
	// A good registration starts, creating its sender once; restarting
	// finds it its own.
	for range 2 {
		srv, _, err := start(asaBridge)
		if err != nil {
			t.Fatal(err)
		}
		acc, err := srv.Accounts().GetAccount(context.Background(), "@_bridge_bot:test.local")
		if err != nil || acc.AppServiceID != "bridge" {
			t.Errorf("sender: %+v, %v", acc, err)
		}
		if srv.AppServices().ByID("bridge") == nil {
			t.Error("AppServices() lacks the bridge")
		}
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
