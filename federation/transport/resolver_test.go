package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"homeserver/federation/transport"
)

func TestValidServerName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"matrix.org", true},
		{"matrix.org:8888", true},
		{"1.2.3.4", true},
		{"1.2.3.4:1234", true},
		{"[1234:5678::abcd]", true},
		{"[1234:5678::abcd]:5678", true},
		{"[::ffff:1.2.3.4]", true},
		{"localhost", true},
		{"Example-1.ORG", true},
		{"a-.b", true}, // the grammar allows any dns-char
		{"", false},
		{"exa mple.org", false},
		{"example.org.", false},
		{"a..b", false},
		{".example.org", false},
		{"example_org", false},
		{"ex%61mple.org", false},
		{"example.org:", false},
		{"example.org:0", false},
		{"example.org:65536", false},
		{"example.org:123456", false},
		{"example.org:http", false},
		{"example.org:-1", false},
		{"example.org:80:80", false},
		{"[::1", false},
		{"[::1]x", false},
		{"[::1]:", false},
		{"[fe80::1%eth0]", false},
		{"[1.2.3.4]", false},
		{"[example.org]", false},
		{"::1", false},
		{"1.2.3", false},
		{"01.2.3.4", false},
		{"1.2.3.256", false},
		{"999.1.1.1", false},
		{"example.123", false},
		{"user@example.org", false},
		{"example.org/path", false},
		{strings.Repeat("a", 256), false},
		{strings.Repeat("a.", 127) + "a", true},
		{"\u00e9xample.org", false},
	}
	for _, tt := range tests {
		if got := transport.ValidServerName(tt.name); got != tt.ok {
			t.Errorf("ValidServerName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
}

func srv(target string, port uint16) *net.SRV {
	return &net.SRV{Target: target, Port: port, Priority: 10, Weight: 5}
}

func TestResolve(t *testing.T) {
	ca := newCA(t)
	big := `{"m.server":"big.example.test:1","pad":"` + strings.Repeat("x", 70<<10) + `"}`
	wk := newWKServer(t, ca, map[string]http.HandlerFunc{
		"wk-ip.test":      wkJSON(`{"m.server":"5.6.7.8"}`),
		"wk-ip-port.test": wkJSON(`{"m.server":"[2001:db8::2]:9000"}`),
		"wk-port.test":    wkJSON(`{"m.server":"deleg.test:9001"}`),
		"wk-srv.test":     wkJSON(`{"m.server":"srvdeleg.test"}`),
		"wk-oldsrv.test":  wkJSON(`{"m.server":"oldsrv.test"}`),
		"wk-both.test":    wkJSON(`{"m.server":"both.test"}`),
		"wk-plain.test":   wkJSON(`{"m.server":"plain.test"}`, "Content-Type", "text/plain"),
		"wk-redirect.test": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.test/.well-known/matrix/server", http.StatusFound)
		},
		"elsewhere.test": wkJSON(`{"m.server":"redirected.test:1"}`),
		"wk-loop.test": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://wk-loop.test/.well-known/matrix/server", http.StatusMovedPermanently)
		},
		"wk-http.test": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://elsewhere.test/.well-known/matrix/server", http.StatusFound)
		},
		"wk-badjson.test":  wkJSON(`{"m.server":`),
		"wk-badname.test":  wkJSON(`{"m.server":"bad name"}`),
		"wk-notstr.test":   wkJSON(`{"m.server":42}`),
		"wk-noserver.test": wkJSON(`{}`),
		"wk-array.test":    wkJSON(`["m.server"]`),
		"wk-big.test":      wkJSON(big),
		"wk-500.test":      wkStatus(http.StatusInternalServerError),
		"wk-204.test":      wkStatus(http.StatusNoContent),
	})
	dns := &fakeDNS{
		srv: map[string][]*net.SRV{
			"_matrix-fed._tcp.srvdeleg.test":   {srv("fed1.test.", 7001), srv("fed2.test.", 7002)},
			"_matrix._tcp.oldsrv.test":         {srv("legacy.test.", 7003)},
			"_matrix-fed._tcp.both.test":       {srv("new.test.", 7004)},
			"_matrix._tcp.both.test":           {srv("old.test.", 7005)},
			"_matrix-fed._tcp.nowk.test":       {srv("fed.test.", 8000)},
			"_matrix._tcp.nowk-old.test":       {srv("fedold.test.", 8001)},
			"_matrix-fed._tcp.nowk-dot.test":   {srv(".", 0)},
			"_matrix-fed._tcp.wk-badjson.test": {srv("fallback.test.", 8002)},
		},
		srvErr: map[string]error{
			"_matrix-fed._tcp.srvfail.test": &net.DNSError{Err: "server misbehaving", Name: "srvfail.test", IsTemporary: true},
		},
	}
	r := transport.NewResolver(transport.ResolverOptions{
		HTTP:      wk.client(),
		DNS:       dns,
		Overrides: map[string]string{"over.test": "127.0.0.1:1"},
	})
	type tg = transport.Target
	tests := []struct {
		name string
		want []tg
	}{
		// Step 1: IP literals.
		{"1.2.3.4", []tg{{"1.2.3.4:8448", "1.2.3.4"}}},
		{"1.2.3.4:99", []tg{{"1.2.3.4:99", "1.2.3.4:99"}}},
		{"[::1]", []tg{{"[::1]:8448", "[::1]"}}},
		{"[2001:db8::1]:443", []tg{{"[2001:db8::1]:443", "[2001:db8::1]:443"}}},
		// Step 2: explicit port.
		{"explicit.test:1234", []tg{{"explicit.test:1234", "explicit.test:1234"}}},
		// Step 3: well-known.
		{"wk-ip.test", []tg{{"5.6.7.8:8448", "5.6.7.8"}}},
		{"wk-ip-port.test", []tg{{"[2001:db8::2]:9000", "[2001:db8::2]:9000"}}},
		{"wk-port.test", []tg{{"deleg.test:9001", "deleg.test:9001"}}},
		{"wk-srv.test", []tg{{"fed1.test:7001", "srvdeleg.test"}, {"fed2.test:7002", "srvdeleg.test"}}},
		{"wk-oldsrv.test", []tg{{"legacy.test:7003", "oldsrv.test"}}},
		{"wk-both.test", []tg{{"new.test:7004", "both.test"}}},
		{"wk-plain.test", []tg{{"plain.test:8448", "plain.test"}}},
		{"wk-redirect.test", []tg{{"redirected.test:1", "redirected.test:1"}}},
		// Invalid well-known: on to steps 4 to 6 with the server name.
		{"wk-loop.test", []tg{{"wk-loop.test:8448", "wk-loop.test"}}},
		{"wk-http.test", []tg{{"wk-http.test:8448", "wk-http.test"}}},
		{"wk-badjson.test", []tg{{"fallback.test:8002", "wk-badjson.test"}}},
		{"wk-badname.test", []tg{{"wk-badname.test:8448", "wk-badname.test"}}},
		{"wk-notstr.test", []tg{{"wk-notstr.test:8448", "wk-notstr.test"}}},
		{"wk-noserver.test", []tg{{"wk-noserver.test:8448", "wk-noserver.test"}}},
		{"wk-array.test", []tg{{"wk-array.test:8448", "wk-array.test"}}},
		{"wk-big.test", []tg{{"wk-big.test:8448", "wk-big.test"}}},
		{"wk-500.test", []tg{{"wk-500.test:8448", "wk-500.test"}}},
		{"wk-204.test", []tg{{"wk-204.test:8448", "wk-204.test"}}},
		// Steps 4 to 6: no well-known.
		{"nowk.test", []tg{{"fed.test:8000", "nowk.test"}}},
		{"nowk-old.test", []tg{{"fedold.test:8001", "nowk-old.test"}}},
		{"nowk-dot.test", []tg{{"nowk-dot.test:8448", "nowk-dot.test"}}},
		{"nowk-plain.test", []tg{{"nowk-plain.test:8448", "nowk-plain.test"}}},
		{"over.test", []tg{{"127.0.0.1:1", "over.test"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Resolve(context.Background(), tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	for _, name := range []string{"1.2.3.4", "explicit.test", "over.test"} {
		if n := wk.hitCount(name); n != 0 {
			t.Errorf("well-known of %s fetched %d times", name, n)
		}
	}
	if n := wk.hitCount("wk-loop.test"); n != 6 {
		t.Errorf("redirect loop: %d requests, want 6 (5 redirects)", n)
	}
	if n := wk.hitCount("elsewhere.test"); n != 1 {
		t.Errorf("http redirect followed, or https one not: elsewhere.test hit %d times", n)
	}

	for _, name := range []string{"", "bad name", "a..b", "[::1", "host:99999", "srvfail.test"} {
		if got, err := r.Resolve(context.Background(), name); err == nil {
			t.Errorf("Resolve(%q) = %v, want an error", name, got)
		}
	}
}

func TestTargetTLSName(t *testing.T) {
	for host, want := range map[string]string{
		"example.test":       "example.test",
		"example.test:8448":  "example.test",
		"1.2.3.4":            "1.2.3.4",
		"1.2.3.4:99":         "1.2.3.4",
		"[2001:db8::1]":      "2001:db8::1",
		"[2001:db8::1]:8448": "2001:db8::1",
	} {
		if got := (transport.Target{Host: host}).TLSName(); got != want {
			t.Errorf("TLSName(%q) = %q, want %q", host, got, want)
		}
	}
}

// The well-known answer is cached as long as its headers say, within the
// spec's bounds; targets no longer than that.
func TestWellKnownCache(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		cached  time.Duration // still cached at this age
		expired time.Duration // fetched again at this age
	}{
		{"max-age", wkJSON(`{"m.server":"d.test:1"}`, "Cache-Control", "public, max-age=600"), 9 * time.Minute, 11 * time.Minute},
		{"default 24h", wkJSON(`{"m.server":"d.test:1"}`), 23 * time.Hour, 24*time.Hour + time.Second},
		{"capped at 48h", wkJSON(`{"m.server":"d.test:1"}`, "Cache-Control", "max-age=10000000"), 47 * time.Hour, 48*time.Hour + time.Second},
		{"expires", wkJSON(`{"m.server":"d.test:1"}`, "Expires", "Wed, 01 Jan 2025 02:00:00 GMT"), 119 * time.Minute, 121 * time.Minute},
		{"max-age over expires", wkJSON(`{"m.server":"d.test:1"}`, "Cache-Control", "max-age=60", "Expires", "Wed, 01 Jan 2025 02:00:00 GMT"), 59 * time.Second, 61 * time.Second},
		{"error 1h", wkStatus(http.StatusNotFound), 59 * time.Minute, 61 * time.Minute},
		{"invalid 1h", wkJSON(`{"m.server":"no way"}`), 59 * time.Minute, 61 * time.Minute},
		{"no-store", wkJSON(`{"m.server":"d.test:1"}`, "Cache-Control", "no-store"), -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := newCA(t)
			host := "cache.test"
			wk := newWKServer(t, ca, map[string]http.HandlerFunc{host: tt.handler})
			clk := newClock()
			dns := &fakeDNS{}
			r := transport.NewResolver(transport.ResolverOptions{HTTP: wk.client(), DNS: dns, Now: clk.Now})
			start := clk.Now()
			resolve := func(at time.Duration) {
				t.Helper()
				clk.Add(start.Add(at).Sub(clk.Now()))
				if _, err := r.Resolve(context.Background(), host); err != nil {
					t.Fatal(err)
				}
			}
			resolve(0)
			if n := wk.hitCount(host); n != 1 {
				t.Fatalf("%d fetches, want 1", n)
			}
			if tt.cached >= 0 {
				resolve(tt.cached)
				if n := wk.hitCount(host); n != 1 {
					t.Fatalf("at %v: %d fetches, want 1 (cached)", tt.cached, n)
				}
			}
			resolve(tt.expired)
			if n := wk.hitCount(host); n != 2 {
				t.Fatalf("at %v: %d fetches, want 2 (expired)", tt.expired, n)
			}
		})
	}
}

// SRV answers are reused for an hour.
func TestTargetCache(t *testing.T) {
	dns := &fakeDNS{srv: map[string][]*net.SRV{"_matrix-fed._tcp.s.test": {srv("h.test.", 1)}}}
	clk := newClock()
	r := transport.NewResolver(transport.ResolverOptions{HTTP: failingHTTP(), DNS: dns, Now: clk.Now})
	for i := range 3 {
		if _, err := r.Resolve(context.Background(), "s.test"); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			clk.Add(59 * time.Minute)
		}
	}
	if n := dns.srvCount(); n != 1 {
		t.Errorf("%d SRV lookups within the hour, want 1", n)
	}
	clk.Add(2 * time.Minute)
	if _, err := r.Resolve(context.Background(), "s.test"); err != nil {
		t.Fatal(err)
	}
	if n := dns.srvCount(); n != 2 {
		t.Errorf("%d SRV lookups after the hour, want 2", n)
	}
	// Failures are not cached.
	dns.mu.Lock()
	dns.srvErr = map[string]error{"_matrix-fed._tcp.f.test": errors.New("timeout")}
	dns.mu.Unlock()
	for range 2 {
		if _, err := r.Resolve(context.Background(), "f.test"); err == nil {
			t.Error("SRV failure not reported")
		}
	}
	if n := dns.srvCount(); n != 4 {
		t.Errorf("%d SRV lookups, want 4", n)
	}
}

// A well-known server that never answers delays resolution by the timeout
// only, and counts as having no well-known.
func TestWellKnownTimeout(t *testing.T) {
	ca := newCA(t)
	release := make(chan struct{})
	defer close(release)
	wk := newWKServer(t, ca, map[string]http.HandlerFunc{
		"slow.test": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		},
	})
	r := transport.NewResolver(transport.ResolverOptions{HTTP: wk.client(), DNS: &fakeDNS{}, WellKnownTimeout: 100 * time.Millisecond})
	start := time.Now()
	got, err := r.Resolve(context.Background(), "slow.test")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("resolution took %v", d)
	}
	if want := []transport.Target{{Addr: "slow.test:8448", Host: "slow.test"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// The failure is cached: no second wait.
	start = time.Now()
	if _, err := r.Resolve(context.Background(), "slow.test"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 50*time.Millisecond || wk.hitCount("slow.test") != 1 {
		t.Errorf("second resolution took %v, %d fetches", d, wk.hitCount("slow.test"))
	}
}

// Concurrent resolutions of one name share one well-known request, and a
// caller's cancellation ends its own wait only.
func TestResolveShared(t *testing.T) {
	ca := newCA(t)
	release := make(chan struct{})
	wk := newWKServer(t, ca, map[string]http.HandlerFunc{
		"shared.test": func(w http.ResponseWriter, r *http.Request) {
			<-release
			fmt.Fprint(w, `{"m.server":"d.test:1"}`)
		},
	})
	r := transport.NewResolver(transport.ResolverOptions{HTTP: wk.client(), DNS: &fakeDNS{}})
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() {
		_, err := r.Resolve(ctx, "shared.test")
		cancelled <- err
	}()
	results := make(chan error, 4)
	for range 4 {
		go func() {
			got, err := r.Resolve(context.Background(), "shared.test")
			if err == nil && (len(got) != 1 || got[0].Addr != "d.test:1") {
				err = fmt.Errorf("got %v", got)
			}
			results <- err
		}()
	}
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v", err)
	}
	close(release)
	for range 4 {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
	if n := wk.hitCount("shared.test"); n != 1 {
		t.Errorf("%d well-known requests, want 1", n)
	}
}
