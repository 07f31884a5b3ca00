package clientapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

const pr = "/_matrix/client/v3/pushrules/global/"

func ruleIDs(t *testing.T, v any) []string {
	t.Helper()
	var ids []string
	for _, r := range v.([]any) {
		ids = append(ids, r.(map[string]any)["rule_id"].(string))
	}
	return ids
}

func TestPushRulesAPI(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")

	all := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/pushrules/", alice.Token, nil)
	global := all.JSON["global"].(map[string]any)
	if got := strings.Join(ruleIDs(t, global["override"]), ","); got != ".m.rule.master,.m.rule.suppress_notices,.m.rule.invite_for_me,.m.rule.member_event,.m.rule.is_user_mention,.m.rule.is_room_mention,.m.rule.tombstone,.m.rule.reaction,.m.rule.room.server_acl,.m.rule.suppress_edits" {
		t.Fatalf("override: %s", got)
	}
	if got := strings.Join(ruleIDs(t, global["underride"]), ","); got != ".m.rule.call,.m.rule.encrypted_room_one_to_one,.m.rule.room_one_to_one,.m.rule.message,.m.rule.encrypted" {
		t.Fatalf("underride: %s", got)
	}
	if len(global["content"].([]any)) != 0 {
		t.Fatalf("legacy content defaults: %s", all.Body)
	}
	invite := s.MustDo(http.StatusOK, "GET", pr+"override/.m.rule.invite_for_me", alice.Token, nil)
	if !strings.Contains(string(invite.Body), `"pattern":"@alice:test.local"`) {
		t.Fatalf("invite_for_me: %s", invite.Body)
	}

	// Content rules: created on top, before/after, errors.
	s.MustDo(http.StatusOK, "PUT", pr+"content/a", alice.Token, map[string]any{"pattern": "a*", "actions": []any{"notify"}})
	s.MustDo(http.StatusOK, "PUT", pr+"content/b", alice.Token, map[string]any{"pattern": "b", "actions": []any{"notify"}})
	s.MustDo(http.StatusOK, "PUT", pr+"content/c?after=a", alice.Token, map[string]any{"pattern": "c", "actions": []any{}})
	s.MustDo(http.StatusOK, "PUT", pr+"content/d?before=b", alice.Token, map[string]any{"pattern": "d", "actions": []any{"dont_notify"}})
	kind := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/pushrules/global/", alice.Token, nil)
	if got := strings.Join(ruleIDs(t, kind.JSON["content"]), ","); got != "d,b,a,c" {
		t.Fatalf("content order %s", got)
	}
	// An update without before/after keeps the rule's place.
	s.MustDo(http.StatusOK, "PUT", pr+"content/a", alice.Token, map[string]any{"pattern": "aa*", "actions": []any{}})
	kind = s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/pushrules/global/", alice.Token, nil)
	if got := strings.Join(ruleIDs(t, kind.JSON["content"]), ","); got != "d,b,a,c" {
		t.Fatalf("content order after update %s", got)
	}
	if r := s.MustDo(http.StatusBadRequest, "PUT", pr+"content/e?before=nope", alice.Token, map[string]any{"pattern": "e", "actions": []any{}}); r.Errcode() != "M_UNKNOWN" {
		t.Fatalf("unknown before: %s", r.Body)
	}
	if r := s.MustDo(http.StatusBadRequest, "PUT", pr+"content/e?before=.m.rule.master", alice.Token, map[string]any{"pattern": "e", "actions": []any{}}); r.Errcode() != "M_UNKNOWN" {
		t.Fatalf("relative to default: %s", r.Body)
	}
	for _, bad := range []string{pr + "content/.mine", pr + "nokind/x", "/_matrix/client/v3/pushrules/device/content/x"} {
		if r := s.Do("PUT", bad, alice.Token, map[string]any{"pattern": "e", "actions": []any{}}); r.Status != http.StatusBadRequest || r.Errcode() != "M_INVALID_PARAM" {
			t.Fatalf("%s: %d %s", bad, r.Status, r.Body)
		}
	}
	if r := s.Do("PUT", pr+"content/e", alice.Token, map[string]any{"actions": []any{}}); r.Status != http.StatusBadRequest {
		t.Fatalf("content without pattern: %d %s", r.Status, r.Body)
	}
	if r := s.Do("PUT", pr+"content/e", alice.Token, map[string]any{"pattern": "x", "actions": []any{"explode"}}); r.Status != http.StatusBadRequest {
		t.Fatalf("bad action: %d %s", r.Status, r.Body)
	}
	// dont_notify is historical: stripped.
	d := s.MustDo(http.StatusOK, "GET", pr+"content/d/actions", alice.Token, nil)
	if string(d.Body) != `{"actions":[]}` {
		t.Fatalf("d actions %s", d.Body)
	}

	// enabled and actions, on user and default rules.
	s.MustDo(http.StatusOK, "PUT", pr+"content/a/enabled", alice.Token, map[string]any{"enabled": false})
	if r := s.MustDo(http.StatusOK, "GET", pr+"content/a/enabled", alice.Token, nil); string(r.Body) != `{"enabled":false}` {
		t.Fatalf("enabled %s", r.Body)
	}
	s.MustDo(http.StatusOK, "PUT", pr+"override/.m.rule.master/enabled", alice.Token, map[string]any{"enabled": true})
	s.MustDo(http.StatusOK, "PUT", pr+"underride/.m.rule.message/actions", alice.Token, map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "bing"}}})
	m := s.MustDo(http.StatusOK, "GET", pr+"underride/.m.rule.message", alice.Token, nil)
	if !strings.Contains(string(m.Body), `"bing"`) || m.JSON["default"] != true {
		t.Fatalf("message %s", m.Body)
	}
	if r := s.MustDo(http.StatusOK, "GET", pr+"override/.m.rule.master", alice.Token, nil); r.JSON["enabled"] != true {
		t.Fatalf("master %s", r.Body)
	}

	// Deleting: user rules go, default rules stay, unknown ones are 404.
	s.MustDo(http.StatusOK, "DELETE", pr+"content/b", alice.Token, nil)
	if r := s.MustDo(http.StatusNotFound, "GET", pr+"content/b", alice.Token, nil); r.Errcode() != "M_NOT_FOUND" {
		t.Fatalf("deleted: %s", r.Body)
	}
	s.MustDo(http.StatusNotFound, "DELETE", pr+"content/b", alice.Token, nil)
	s.MustDo(http.StatusNotFound, "PUT", pr+"content/b/enabled", alice.Token, map[string]any{"enabled": true})
	s.MustDo(http.StatusNotFound, "GET", pr+"override/nope/actions", alice.Token, nil)
	s.MustDo(http.StatusBadRequest, "DELETE", pr+"override/.m.rule.master", alice.Token, nil)

	// Room and sender rules with IDs that need escaping; overrides with
	// conditions; it all survives a restart and shows in m.push_rules.
	s.MustDo(http.StatusOK, "PUT", pr+"room/"+url.PathEscape("!room:test.local"), alice.Token, map[string]any{"actions": []any{}})
	s.MustDo(http.StatusOK, "PUT", pr+"sender/"+url.PathEscape("@bob:test.local"), alice.Token, map[string]any{"actions": []any{"notify"}})
	s.MustDo(http.StatusOK, "PUT", pr+"override/mine", alice.Token, map[string]any{
		"conditions": []any{map[string]any{"kind": "event_match", "key": "type", "pattern": "org.example"}}, "actions": []any{"notify"}})
	s.Restart()
	g := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/pushrules/", alice.Token, nil).JSON["global"].(map[string]any)
	if got := strings.Join(ruleIDs(t, g["override"])[:2], ","); got != ".m.rule.master,mine" {
		t.Fatalf("override after restart: %s", got)
	}
	if got := ruleIDs(t, g["room"]); len(got) != 1 || got[0] != "!room:test.local" {
		t.Fatalf("room: %v", got)
	}
	ad := s.MustDo(http.StatusOK, "GET", "/_matrix/client/v3/user/"+url.PathEscape(alice.ID)+"/account_data/m.push_rules", alice.Token, nil)
	if !strings.Contains(string(ad.Body), `"rule_id":"mine"`) {
		t.Fatalf("m.push_rules: %s", ad.Body)
	}
}

// gateway is a loopback push gateway.
type gateway struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []map[string]any
	down   atomic.Bool
	reject atomic.Bool
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_matrix/push/v1/notify" {
			http.NotFound(w, r)
			return
		}
		if g.down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		n := m["notification"].(map[string]any)
		var rejected []string
		if g.reject.Load() {
			rejected = append(rejected, n["devices"].([]any)[0].(map[string]any)["pushkey"].(string))
		}
		g.mu.Lock()
		g.got = append(g.got, n)
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateway) notifications() []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]any(nil), g.got...)
}

// waitFor polls cond for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPushEndToEnd(t *testing.T) {
	// The gateway listens on loopback, which push connections avoid
	// unless allowed.
	s := testserver.Start(t, "ip_range_whitelist: ['127.0.0.1']\n")
	s.Srv.Push().SetBackoff(20*time.Millisecond, 200*time.Millisecond)
	gw := newGateway(t)
	alice, bob := s.Register("alice", "pw"), s.Register("bob", "pw")
	v3 := "/_matrix/client/v3"
	setPusher := func(u testserver.User, key string) {
		s.MustDo(http.StatusOK, "POST", v3+"/pushers/set", u.Token, map[string]any{
			"pushkey": key, "kind": "http", "app_id": "org.example.app", "app_display_name": "App",
			"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": gw.srv.URL + "/_matrix/push/v1/notify", "format": "event_id_only"},
		})
	}
	// Validation.
	if r := s.Do("POST", v3+"/pushers/set", bob.Token, map[string]any{
		"pushkey": "k", "kind": "http", "app_id": "a", "app_display_name": "A", "device_display_name": "D", "lang": "en",
		"data": map[string]any{"url": "http://x/notify"}}); r.Status != http.StatusBadRequest {
		t.Fatalf("bad url accepted: %s", r.Body)
	}
	setPusher(bob, "bobkey")
	ps := s.MustDo(http.StatusOK, "GET", v3+"/pushers", bob.Token, nil)
	if list := ps.JSON["pushers"].([]any); len(list) != 1 || list[0].(map[string]any)["pushkey"] != "bobkey" {
		t.Fatalf("pushers: %s", ps.Body)
	}

	// A DM wakes the phone.
	dm := s.MustDo(http.StatusOK, "POST", v3+"/createRoom", alice.Token, map[string]any{"invite": []string{bob.ID}, "is_direct": true}).String("room_id")
	waitFor(t, "invite push", func() bool { return len(gw.notifications()) == 1 })
	if n := gw.notifications()[0]; n["room_id"] != dm || n["prio"] != "high" {
		t.Fatalf("invite push: %v", n)
	}
	s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(dm), bob.Token, map[string]any{})
	send := func(u testserver.User, room string, content map[string]any) string {
		return s.MustDo(http.StatusOK, "PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/%d", v3, url.PathEscape(room), time.Now().UnixNano()), u.Token, content).String("event_id")
	}
	ev1 := send(alice, dm, map[string]any{"msgtype": "m.text", "body": "hi bob"})
	waitFor(t, "dm push", func() bool { return len(gw.notifications()) == 2 })
	n := gw.notifications()[1]
	dev := n["devices"].([]any)[0].(map[string]any)
	if n["event_id"] != ev1 || dev["pushkey"] != "bobkey" || n["prio"] != "high" || n["counts"].(map[string]any)["unread"].(float64) != 2 {
		t.Fatalf("dm push: %v", n)
	}
	if dev["data"].(map[string]any)["url"] != nil || dev["data"].(map[string]any)["format"] != "event_id_only" || n["type"] != nil {
		t.Fatalf("event_id_only: %v", n)
	}
	// Alice's own message did not notify her.
	if r := s.MustDo(http.StatusOK, "GET", v3+"/notifications", alice.Token, nil); len(r.JSON["notifications"].([]any)) != 0 {
		t.Fatalf("alice notified: %s", r.Body)
	}

	// A group room: plain messages notify (low prio); a mention is a highlight.
	group := s.MustDo(http.StatusOK, "POST", v3+"/createRoom", alice.Token, map[string]any{"preset": "public_chat"}).String("room_id")
	carol := s.Register("carol", "pw")
	s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(group), bob.Token, map[string]any{})
	s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(group), carol.Token, map[string]any{})
	send(alice, group, map[string]any{"msgtype": "m.text", "body": "hello all"})
	mention := send(alice, group, map[string]any{"msgtype": "m.text", "body": "bob: look", "m.mentions": map[string]any{"user_ids": []string{bob.ID}}})
	waitFor(t, "group pushes", func() bool { return len(gw.notifications()) == 4 })
	if n := gw.notifications()[3]; n["event_id"] != mention || n["devices"].([]any)[0].(map[string]any)["tweaks"].(map[string]any)["highlight"] != true {
		t.Fatalf("mention push: %v", n)
	}
	if n := gw.notifications()[2]; n["prio"] != "low" {
		t.Fatalf("plain group message: %v", n)
	}
	hl := s.MustDo(http.StatusOK, "GET", v3+"/notifications?only=highlight", bob.Token, nil)
	if list := hl.JSON["notifications"].([]any); len(list) != 1 || list[0].(map[string]any)["event"].(map[string]any)["event_id"] != mention {
		t.Fatalf("highlights: %s", hl.Body)
	}

	// Counts in /sync; a read receipt resets them.
	counts := func(room string) map[string]any {
		r := s.MustDo(http.StatusOK, "GET", v3+"/sync", bob.Token, nil)
		jr := r.JSON["rooms"].(map[string]any)["join"].(map[string]any)[room].(map[string]any)
		c, _ := jr["unread_notifications"].(map[string]any)
		return c
	}
	if c := counts(group); c["notification_count"] != 2.0 || c["highlight_count"] != 1.0 {
		t.Fatalf("group counts %v", c)
	}
	// The invite and the message.
	if c := counts(dm); c["notification_count"] != 2.0 || c["highlight_count"] != 0.0 {
		t.Fatalf("dm counts %v", c)
	}
	s.MustDo(http.StatusOK, "POST", fmt.Sprintf("%s/rooms/%s/receipt/m.read/%s", v3, url.PathEscape(group), url.PathEscape(mention)), bob.Token, map[string]any{})
	if c := counts(group); c["notification_count"] != 0.0 || c["highlight_count"] != 0.0 {
		t.Fatalf("group counts after receipt %v", c)
	}

	// A muted room (room rule with no actions) does not push.
	s.MustDo(http.StatusOK, "PUT", pr+"room/"+url.PathEscape(group), bob.Token, map[string]any{"actions": []any{"dont_notify"}})
	send(alice, group, map[string]any{"msgtype": "m.text", "body": "muted"})
	marker := send(alice, dm, map[string]any{"msgtype": "m.text", "body": "after mute"})
	waitFor(t, "marker push", func() bool { return len(gw.notifications()) == 5 })
	if n := gw.notifications()[4]; n["event_id"] != marker {
		t.Fatalf("muted room pushed: %v", n)
	}

	// Gateway down, server restarted, gateway up: every notification once.
	gw.down.Store(true)
	var sent []string
	for i := range 3 {
		sent = append(sent, send(alice, dm, map[string]any{"msgtype": "m.text", "body": fmt.Sprint("while down ", i)}))
	}
	time.Sleep(100 * time.Millisecond)
	s.Restart()
	s.Srv.Push().SetBackoff(20*time.Millisecond, 200*time.Millisecond)
	sent = append(sent, send(alice, dm, map[string]any{"msgtype": "m.text", "body": "after restart"}))
	gw.down.Store(false)
	waitFor(t, "catch-up", func() bool { return len(gw.notifications()) >= 9 })
	time.Sleep(200 * time.Millisecond)
	got := gw.notifications()[5:]
	if len(got) != len(sent) {
		t.Fatalf("%d pushes after outage, want %d", len(got), len(sent))
	}
	for i, n := range got {
		if n["event_id"] != sent[i] {
			t.Fatalf("push %d is %v, want %s", i, n["event_id"], sent[i])
		}
	}

	// A rejected pushkey removes the pusher.
	gw.reject.Store(true)
	send(alice, dm, map[string]any{"msgtype": "m.text", "body": "rejected"})
	waitFor(t, "pusher removed", func() bool {
		r := s.MustDo(http.StatusOK, "GET", v3+"/pushers", bob.Token, nil)
		return len(r.JSON["pushers"].([]any)) == 0
	})
	before := len(gw.notifications())
	send(alice, dm, map[string]any{"msgtype": "m.text", "body": "nobody listens"})
	time.Sleep(200 * time.Millisecond)
	if len(gw.notifications()) != before {
		t.Fatal("pushed to a removed pusher")
	}

	// The full format carries the event; kind null deletes a pusher.
	gw.reject.Store(false)
	s.MustDo(http.StatusOK, "POST", v3+"/pushers/set", carol.Token, map[string]any{
		"pushkey": "carolkey", "kind": "http", "app_id": "org.example.app", "app_display_name": "App",
		"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": gw.srv.URL + "/_matrix/push/v1/notify"},
	})
	full := send(alice, group, map[string]any{"msgtype": "m.text", "body": "full format"})
	waitFor(t, "full push", func() bool { return len(gw.notifications()) == before+1 })
	if n := gw.notifications()[before]; n["event_id"] != full || n["type"] != "m.room.message" || n["sender"] != alice.ID ||
		n["content"].(map[string]any)["body"] != "full format" {
		t.Fatalf("full format: %v", n)
	}
	s.MustDo(http.StatusOK, "POST", v3+"/pushers/set", carol.Token, map[string]any{"pushkey": "carolkey", "app_id": "org.example.app", "kind": nil})
	if r := s.MustDo(http.StatusOK, "GET", v3+"/pushers", carol.Token, nil); len(r.JSON["pushers"].([]any)) != 0 {
		t.Fatalf("kind null: %s", r.Body)
	}
}

func TestUnreadThreadNotificationsAndPaging(t *testing.T) {
	s := testserver.Start(t, "")
	alice, bob := s.Register("alice", "pw"), s.Register("bob", "pw")
	v3 := "/_matrix/client/v3"
	room := s.MustDo(http.StatusOK, "POST", v3+"/createRoom", alice.Token, map[string]any{"preset": "public_chat"}).String("room_id")
	s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(room), bob.Token, map[string]any{})
	s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(room), s.Register("carol", "pw").Token, map[string]any{})
	send := func(content map[string]any) string {
		return s.MustDo(http.StatusOK, "PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/%d", v3, url.PathEscape(room), time.Now().UnixNano()), alice.Token, content).String("event_id")
	}
	root := send(map[string]any{"msgtype": "m.text", "body": "root"})
	for i := range 2 {
		send(map[string]any{"msgtype": "m.text", "body": fmt.Sprint("reply ", i),
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})
	}
	waitFor(t, "notifications", func() bool {
		r := s.MustDo(http.StatusOK, "GET", v3+"/notifications", bob.Token, nil)
		return len(r.JSON["notifications"].([]any)) == 3
	})
	f := url.QueryEscape(`{"room":{"timeline":{"unread_thread_notifications":true}}}`)
	r := s.MustDo(http.StatusOK, "GET", v3+"/sync?filter="+f, bob.Token, nil)
	jr := r.JSON["rooms"].(map[string]any)["join"].(map[string]any)[room].(map[string]any)
	if c := jr["unread_notifications"].(map[string]any); c["notification_count"] != 1.0 {
		t.Fatalf("main counts: %v", jr["unread_notifications"])
	}
	th := jr["unread_thread_notifications"].(map[string]any)[root].(map[string]any)
	if th["notification_count"] != 2.0 {
		t.Fatalf("thread counts: %v", jr["unread_thread_notifications"])
	}
	// Without the filter option, one total.
	r = s.MustDo(http.StatusOK, "GET", v3+"/sync", bob.Token, nil)
	jr = r.JSON["rooms"].(map[string]any)["join"].(map[string]any)[room].(map[string]any)
	if c := jr["unread_notifications"].(map[string]any); c["notification_count"] != 3.0 || jr["unread_thread_notifications"] != nil {
		t.Fatalf("total counts: %s", r.Body)
	}

	// Paging backwards through /notifications.
	p1 := s.MustDo(http.StatusOK, "GET", v3+"/notifications?limit=2", bob.Token, nil)
	if len(p1.JSON["notifications"].([]any)) != 2 || p1.String("next_token") == "" {
		t.Fatalf("page 1: %s", p1.Body)
	}
	p2 := s.MustDo(http.StatusOK, "GET", v3+"/notifications?limit=2&from="+p1.String("next_token"), bob.Token, nil)
	list := p2.JSON["notifications"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["event"].(map[string]any)["event_id"] != root || list[0].(map[string]any)["read"] != false {
		t.Fatalf("page 2: %s", p2.Body)
	}
	if r := s.Do("GET", v3+"/notifications?from=xyz", bob.Token, nil); r.Status != http.StatusBadRequest {
		t.Fatalf("bad from: %s", r.Body)
	}
}

// A room version 12 creator has no entry in the power levels' users (their
// power is infinite), and their @room mention notifies everyone; a member
// at level 0 cannot.
func TestRoomMentionByV12Creator(t *testing.T) {
	s := testserver.Start(t, "")
	alice, bob, carol := s.Register("alice", "pw"), s.Register("bob", "pw"), s.Register("carol", "pw")
	room := s.MustDo(http.StatusOK, "POST", v3+"/createRoom", alice.Token, map[string]any{"preset": "public_chat", "room_version": "12"}).String("room_id")
	for _, u := range []testserver.User{bob, carol} {
		s.MustDo(http.StatusOK, "POST", v3+"/join/"+url.PathEscape(room), u.Token, map[string]any{})
	}
	send := func(u testserver.User, body string) string {
		return s.MustDo(http.StatusOK, "PUT", fmt.Sprintf("%s/rooms/%s/send/m.room.message/%d", v3, url.PathEscape(room), time.Now().UnixNano()), u.Token,
			map[string]any{"msgtype": "m.text", "body": body, "m.mentions": map[string]any{"room": true}}).String("event_id")
	}
	byBob := send(bob, "@room from bob")
	byAlice := send(alice, "@room from alice")
	highlights := func(u testserver.User) []string {
		var ids []string
		for _, n := range s.MustDo(http.StatusOK, "GET", v3+"/notifications?only=highlight", u.Token, nil).JSON["notifications"].([]any) {
			ids = append(ids, n.(map[string]any)["event"].(map[string]any)["event_id"].(string))
		}
		return ids
	}
	waitFor(t, "alice's @room to highlight", func() bool { return len(highlights(carol)) > 0 })
	if got := highlights(carol); len(got) != 1 || got[0] != byAlice {
		t.Fatalf("carol's highlights %v, want only alice's %s (not bob's %s)", got, byAlice, byBob)
	}
	if got := highlights(bob); len(got) != 1 || got[0] != byAlice {
		t.Fatalf("bob's highlights %v, want alice's %s", got, byAlice)
	}
}

// A user is not notified of messages from users they ignore.
func TestNoNotificationsFromIgnoredUsers(t *testing.T) {
	s := testserver.Start(t, "")
	alice, bob, carol := s.Register("alice", "pw"), s.Register("bob", "pw"), s.Register("carol", "pw")
	room := s.CreatePublicRoom(alice)
	s.Join(bob, room)
	s.Join(carol, room)
	s.MustDo(http.StatusOK, "PUT", v3+"/user/"+url.PathEscape(alice.ID)+"/account_data/m.ignored_user_list", alice.Token,
		map[string]any{"ignored_users": map[string]any{bob.ID: map[string]any{}}})
	ignored := s.SendText(bob, room, "from an ignored user")
	shown := s.SendText(carol, room, "from carol")
	var ids []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r := s.MustDo(http.StatusOK, "GET", v3+"/notifications", alice.Token, nil)
		ids = ids[:0]
		list, _ := r.JSON["notifications"].([]any)
		for _, n := range list {
			ev, _ := n.(map[string]any)["event"].(map[string]any)
			id, _ := ev["event_id"].(string)
			ids = append(ids, id)
		}
		if slices.Contains(ids, shown) || time.Now().After(deadline) {
			break
		}
	}
	if !slices.Contains(ids, shown) || slices.Contains(ids, ignored) {
		t.Fatalf("notifications %v: want carol's %s and not bob's %s", ids, shown, ignored)
	}
	// Nor counted as unread.
	r := s.MustDo(http.StatusOK, "GET", v3+"/sync", alice.Token, nil)
	jr := r.JSON["rooms"].(map[string]any)["join"].(map[string]any)[room].(map[string]any)
	if c := jr["unread_notifications"].(map[string]any); c["notification_count"] != 1.0 {
		t.Fatalf("unread counts %v: want carol's message only", c)
	}
}
