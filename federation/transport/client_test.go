package transport_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"homeserver/federation/transport"
	"homeserver/internal/fedtest"
	"homeserver/mxhttp"
	"homeserver/netguard"
	"homeserver/pdu"
)

// seen is what a test server saw of one request.
type seen struct {
	Method, RequestURI, Host, Origin, Body, SNI string
	HTTP2                                       bool
}

// fedServer is a homeserver stub named name that authenticates requests
// with Middleware and echoes what it saw.
type fedServer struct {
	*httptest.Server
	mu    sync.Mutex
	seen  []seen
	hits  atomic.Int32
	conns atomic.Int32
}

// newFedServer starts a server named name ("" for its own address, an IP
// literal server name) with a certificate for certNames (default: name).
func newFedServer(t *testing.T, ca *fedtest.CA, name string, keys transport.KeyLookup, h2 bool, certNames ...string) *fedServer {
	t.Helper()
	fs := &fedServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("/_matrix/federation/v1/fail", func(w http.ResponseWriter, r *http.Request) {
		mxhttp.WriteError(w, mxhttp.NotFound("No such thing"))
	})
	mux.HandleFunc("/_matrix/federation/v1/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://elsewhere.test/", http.StatusFound)
	})
	mux.HandleFunc("/_matrix/federation/v1/big", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"x":%q}`, strings.Repeat("x", 4096))
	})
	mux.HandleFunc("/_matrix/federation/v1/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			// Never a 200: a client whose deadline passed must not be
			// able to read an answer that raced its cancellation.
			panic(http.ErrAbortHandler)
		case <-time.After(5 * time.Second):
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s := seen{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Origin: transport.Origin(r.Context()),
			Body: string(transport.Body(r.Context())), SNI: r.TLS.ServerName, HTTP2: r.ProtoMajor == 2}
		fs.mu.Lock()
		fs.seen = append(fs.seen, s)
		fs.mu.Unlock()
		mxhttp.WriteJSON(w, http.StatusOK, s)
	})
	var auth http.Handler
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fs.hits.Add(1)
		auth.ServeHTTP(w, r)
	}))
	if name == "" {
		name = s.Listener.Addr().String()
	}
	auth = transport.Middleware(name, keys, 1<<20)(mux)
	if len(certNames) == 0 {
		certNames = []string{name}
	}
	cert, err := ca.TLSCertificate(certNames...)
	if err != nil {
		t.Fatal(err)
	}
	s.EnableHTTP2 = h2
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			fs.conns.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	fs.Server = s
	return fs
}

type fixture struct {
	ca     *fedtest.CA
	origin pdu.Key
	dest   *fedServer
}

// newFixture starts dest.test, which knows origin.test's key.
func newFixture(t *testing.T, h2 bool) *fixture {
	t.Helper()
	f := &fixture{ca: newCA(t), origin: testKey("origin.test", 1)}
	f.dest = newFedServer(t, f.ca, "dest.test", keyring(f.origin), h2)
	return f
}

// client returns origin.test's client, with dest.test overridden to the
// test server; change adjusts the options first.
func (f *fixture) client(t *testing.T, change func(*transport.ClientOptions)) *transport.Client {
	t.Helper()
	o := transport.ClientOptions{
		ServerName: "origin.test",
		Key:        f.origin,
		Resolver: transport.NewResolver(transport.ResolverOptions{
			HTTP: failingHTTP(), DNS: &fakeDNS{},
			Overrides: map[string]string{"dest.test": f.dest.Listener.Addr().String()},
		}),
		RootCAs: f.ca.Pool(),
	}
	if change != nil {
		change(&o)
	}
	c, err := transport.NewClient(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestClientRoundTrip(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			f := newFixture(t, h2)
			c := f.client(t, nil)
			tests := []struct {
				method, uri string
				body        any
				wantBody    string
			}{
				{"GET", "/_matrix/federation/v1/query/profile?user_id=%40a%3Aorigin.test&field=displayname", nil, ""},
				{"GET", "/_matrix/federation/v1/state/%21room%3Adest.test?event_id=%24ev%2Fx", nil, ""},
				{"GET", "/_matrix/federation/v1/version?", nil, ""},
				{"GET", "/_matrix/federation/v1/event/%24abc%2fdef%2B+x", nil, ""}, // kept byte for byte
				{"PUT", "/_matrix/federation/v1/send/txn1", map[string]any{"pdus": []any{}, "origin": "origin.test"}, `{"origin":"origin.test","pdus":[]}`},
				{"POST", "/_matrix/federation/v1/user/keys/query", nil, `{}`},
				{"PUT", "/_matrix/federation/v2/invite/%21r%3Ad/%24e", json.RawMessage(`{"event": {"a": 1}}`), `{"event": {"a": 1}}`},
				{"POST", "/_matrix/federation/v1/publicRooms", []byte(`{"limit":5}`), `{"limit":5}`},
			}
			for _, tt := range tests {
				var got seen
				if err := c.Do(context.Background(), tt.method, "dest.test", tt.uri, tt.body, &got); err != nil {
					t.Fatalf("%s %s: %v", tt.method, tt.uri, err)
				}
				want := seen{Method: tt.method, RequestURI: tt.uri, Host: "dest.test", Origin: "origin.test", Body: tt.wantBody, SNI: "dest.test", HTTP2: h2}
				if got != want {
					t.Errorf("%s %s: server saw %+v, want %+v", tt.method, tt.uri, got, want)
				}
			}
			var got seen
			if err := c.Get(context.Background(), "dest.test", "/_matrix/key/v2/server", &got); err != nil || got.Method != "GET" {
				t.Errorf("Get: %+v, %v", got, err)
			}
			if err := c.Get(context.Background(), "dest.test", "/_matrix/federation/v1/version", nil); err != nil {
				t.Errorf("nil out: %v", err)
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	f := newFixture(t, false)
	c := f.client(t, nil)
	ctx := context.Background()

	var he *transport.HTTPError
	err := c.Get(ctx, "dest.test", "/_matrix/federation/v1/fail", nil)
	if !errors.As(err, &he) || he.Status != 404 || he.Code != "M_NOT_FOUND" || he.Message != "No such thing" || len(he.Body) == 0 {
		t.Errorf("404: %v", err)
	}
	// Redirects are answers, not followed.
	if err := c.Get(ctx, "dest.test", "/_matrix/federation/v1/redirect", nil); !errors.As(err, &he) || he.Status != http.StatusFound || he.Code != "" {
		t.Errorf("redirect: %v", err)
	}
	var out struct{ X int }
	if err := c.Get(ctx, "dest.test", "/_matrix/federation/v1/big", &out); err == nil {
		t.Error("undecodable answer accepted")
	}
	small := f.client(t, func(o *transport.ClientOptions) { o.MaxResponseBytes = 1024 })
	if err := small.Get(ctx, "dest.test", "/_matrix/federation/v1/big", nil); !errorContains(err, "1024 bytes") {
		t.Errorf("oversized answer: %v", err)
	}
	for _, uri := range []string{"", "_matrix/x", "//evil/x", "/x#frag", "/x y", "/x\x00", "/\u00e9", "https://dest.test/x"} {
		if err := c.Get(ctx, "dest.test", uri, nil); err == nil || errors.As(err, &he) {
			t.Errorf("request URI %q: %v", uri, err)
		}
	}
	if err := c.Do(ctx, "PUT", "dest.test", "/x", json.RawMessage(`{bad`), nil); err == nil {
		t.Error("invalid raw body sent")
	}
	if err := c.Do(ctx, "PUT", "dest.test", "/x", map[string]any{"f": 1.5}, nil); err == nil {
		t.Error("body without canonical form signed")
	}
	if n := f.dest.hits.Load(); n != 4 {
		t.Errorf("server hit %d times, want 4", n)
	}
}

// The receiving side refuses what the sending side did not sign for it.
func TestClientUnauthorized(t *testing.T) {
	f := newFixture(t, false)
	forger := testKey("origin.test", 9)
	forger.KeyID = f.origin.KeyID
	other := testKey("other.test", 3) // unknown to dest.test
	tests := []struct {
		name   string
		change func(*transport.ClientOptions)
		dest   string
	}{
		{"forged signature", func(o *transport.ClientOptions) { o.Key = forger }, "dest.test"},
		{"unknown origin", func(o *transport.ClientOptions) { o.ServerName, o.Key = "other.test", other }, "dest.test"},
		// alias.test reaches dest.test's server, which is not alias.test.
		{"wrong destination", func(o *transport.ClientOptions) {
			o.Resolver = transport.NewResolver(transport.ResolverOptions{
				HTTP: failingHTTP(), DNS: &fakeDNS{},
				Overrides: map[string]string{"alias.test": f.dest.Listener.Addr().String()},
			})
			o.InsecureSkipVerify = true // the certificate is for dest.test
		}, "alias.test"},
	}
	for _, tt := range tests {
		c := f.client(t, tt.change)
		var he *transport.HTTPError
		err := c.Get(context.Background(), tt.dest, "/_matrix/federation/v1/version", nil)
		if !errors.As(err, &he) || he.Status != 401 || he.Code != "M_UNAUTHORIZED" {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	// No Authorization header at all.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool(), ServerName: "dest.test"}}}
	req, _ := http.NewRequest("GET", f.dest.URL+"/_matrix/federation/v1/version", nil)
	req.Host = "dest.test"
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(b), "M_UNAUTHORIZED") {
		t.Errorf("unsigned: %d %s", resp.StatusCode, b)
	}
}

// Refusals happen before any network access.
func TestClientRefusals(t *testing.T) {
	f := newFixture(t, false)
	ctx := context.Background()
	tests := []struct {
		name   string
		change func(*transport.ClientOptions)
		dest   string
		is     error
	}{
		{"not whitelisted", func(o *transport.ClientOptions) { o.DomainWhitelist = []string{"allowed.test"} }, "dest.test", transport.ErrNotWhitelisted},
		{"empty whitelist", func(o *transport.ClientOptions) { o.DomainWhitelist = []string{} }, "dest.test", transport.ErrNotWhitelisted},
		{"self", nil, "origin.test", transport.ErrSelf},
		{"invalid destination", nil, "dest test", nil},
		{"blocked address", func(o *transport.ClientOptions) {
			o.Guard = netguard.New(netguard.Options{Block: netguard.DefaultBlocklist()})
		}, "dest.test", netguard.ErrBlocked},
	}
	for _, tt := range tests {
		c := f.client(t, tt.change)
		err := c.Get(ctx, tt.dest, "/_matrix/federation/v1/version", nil)
		if err == nil || (tt.is != nil && !errors.Is(err, tt.is)) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.is)
		}
	}
	if n := f.dest.hits.Load(); n != 0 {
		t.Errorf("server hit %d times", n)
	}
	if n := f.dest.conns.Load(); n != 0 {
		t.Errorf("server connected to %d times", n)
	}
	// The whitelist lets its members through.
	c := f.client(t, func(o *transport.ClientOptions) { o.DomainWhitelist = []string{"dest.test"} })
	if err := c.Get(ctx, "dest.test", "/_matrix/federation/v1/version", nil); err != nil {
		t.Errorf("whitelisted: %v", err)
	}
}

func TestNewClientValidates(t *testing.T) {
	good := testKey("origin.test", 1)
	for name, o := range map[string]transport.ClientOptions{
		"bad server name": {ServerName: "bad name", Key: good},
		"key of another":  {ServerName: "x.test", Key: good},
		"no private key":  {ServerName: "origin.test", Key: pdu.Key{KeyID: "ed25519:a"}},
		"bad key ID":      {ServerName: "origin.test", Key: pdu.Key{KeyID: "a", Private: good.Private}},
	} {
		if _, err := transport.NewClient(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c, err := transport.NewClient(transport.ClientOptions{ServerName: "origin.test", Key: pdu.Key{KeyID: good.KeyID, Private: good.Private}})
	if err != nil {
		t.Fatalf("key without server name: %v", err)
	}
	c.Close()
}

func TestClientTLS(t *testing.T) {
	f := newFixture(t, false)
	ctx := context.Background()
	// A server whose certificate is for another name, and one whose CA is
	// not trusted.
	wrongName := newFedServer(t, f.ca, "wrong.test", keyring(f.origin), false, "someone-else.test")
	untrusted := newFedServer(t, newCA(t), "untrusted.test", keyring(f.origin), false)
	// An IP literal server name: the certificate must be for the address,
	// and no SNI is sent.
	ipSrv := newFedServer(t, f.ca, "", keyring(f.origin), false, "127.0.0.1")
	ipName := ipSrv.Listener.Addr().String()

	c := f.client(t, func(o *transport.ClientOptions) {
		o.Resolver = transport.NewResolver(transport.ResolverOptions{
			HTTP: failingHTTP(), DNS: &fakeDNS{},
			Overrides: map[string]string{
				"wrong.test":     wrongName.Listener.Addr().String(),
				"untrusted.test": untrusted.Listener.Addr().String(),
			},
		})
	})
	for _, dest := range []string{"wrong.test", "untrusted.test"} {
		var he *transport.HTTPError
		if err := c.Get(ctx, dest, "/_matrix/federation/v1/version", nil); err == nil || errors.As(err, &he) {
			t.Errorf("%s: %v, want a TLS failure", dest, err)
		}
	}
	if wrongName.hits.Load()+untrusted.hits.Load() != 0 {
		t.Error("request sent to an unauthenticated server")
	}
	insecure := f.client(t, func(o *transport.ClientOptions) {
		o.InsecureSkipVerify = true
		o.Resolver = transport.NewResolver(transport.ResolverOptions{
			HTTP: failingHTTP(), DNS: &fakeDNS{}, Overrides: map[string]string{"untrusted.test": untrusted.Listener.Addr().String()},
		})
	})
	if err := insecure.Get(ctx, "untrusted.test", "/_matrix/federation/v1/version", nil); err != nil {
		t.Errorf("InsecureSkipVerify: %v", err)
	}

	var got seen
	if err := c.Get(ctx, ipName, "/_matrix/federation/v1/version", &got); err != nil {
		t.Fatalf("IP literal: %v", err)
	}
	if got.Host != ipName || got.SNI != "" || got.Origin != "origin.test" {
		t.Errorf("IP literal: server saw %+v", got)
	}
}

// Discovery end to end: hs2.test delegates to delegated.test:<port> by
// well-known, delegated.test resolves to loopback, and the certificate is
// delegated.test's; the request is still signed for hs2.test.
func TestClientWellKnownDelegation(t *testing.T) {
	f := newFixture(t, false)
	hs2 := newFedServer(t, f.ca, "hs2.test", keyring(f.origin), false, "delegated.test")
	_, port := hostPortOf(t, hs2.Server)
	wk := newWKServer(t, f.ca, map[string]http.HandlerFunc{
		"hs2.test": wkJSON(`{"m.server":"delegated.test:` + port + `"}`),
	})
	dns := &fakeDNS{ips: map[string][]netip.Addr{"delegated.test": {netip.MustParseAddr("127.0.0.1")}}}
	c := f.client(t, func(o *transport.ClientOptions) {
		o.Resolver = transport.NewResolver(transport.ResolverOptions{HTTP: wk.client(), DNS: dns})
	})
	var got seen
	if err := c.Get(context.Background(), "hs2.test", "/_matrix/federation/v1/version", &got); err != nil {
		t.Fatal(err)
	}
	if want := "delegated.test:" + port; got.Host != want || got.SNI != "delegated.test" || got.Origin != "origin.test" {
		t.Errorf("server saw %+v", got)
	}
	// With the loopback range blocked, the delegated address is refused.
	blocked := f.client(t, func(o *transport.ClientOptions) {
		o.Resolver = transport.NewResolver(transport.ResolverOptions{HTTP: wk.client(), DNS: dns})
		o.Guard = netguard.New(netguard.Options{Block: netguard.DefaultBlocklist(), Resolver: dns})
	})
	if err := blocked.Get(context.Background(), "hs2.test", "/_matrix/federation/v1/version", nil); !errors.Is(err, netguard.ErrBlocked) {
		t.Errorf("blocked: %v", err)
	}
	if n := hs2.hits.Load(); n != 1 {
		t.Errorf("hs2 hit %d times, want 1", n)
	}
}

// Targets are tried in turn while they cannot be connected to.
func TestClientFailover(t *testing.T) {
	f := newFixture(t, false)
	multi := newFedServer(t, f.ca, "multi.test", keyring(f.origin), false)
	_, livePort := hostPortOf(t, multi.Server)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, deadPort, _ := net.SplitHostPort(dead.Addr().String())
	dead.Close() // connections to it are refused
	port := func(s string) uint16 { var p uint16; fmt.Sscan(s, &p); return p }
	dns := &fakeDNS{
		srv: map[string][]*net.SRV{"_matrix-fed._tcp.multi.test": {
			srv("dead.test.", port(deadPort)),
			srv("blocked.test.", port(livePort)),
			srv("live.test.", port(livePort)),
		}},
		ips: map[string][]netip.Addr{
			"dead.test":    {netip.MustParseAddr("127.0.0.1")},
			"blocked.test": {netip.MustParseAddr("127.0.0.2")},
			"live.test":    {netip.MustParseAddr("127.0.0.1")},
		},
	}
	c := f.client(t, func(o *transport.ClientOptions) {
		o.Resolver = transport.NewResolver(transport.ResolverOptions{HTTP: failingHTTP(), DNS: dns})
		o.Guard = netguard.New(netguard.Options{Block: netguard.DefaultBlocklist(), Allow: prefixes("127.0.0.1/32"), Resolver: dns})
	})
	var got seen
	if err := c.Get(context.Background(), "multi.test", "/_matrix/federation/v1/version", &got); err != nil {
		t.Fatal(err)
	}
	if got.Host != "multi.test" || got.SNI != "multi.test" {
		t.Errorf("server saw %+v", got)
	}
	// All targets failing: every failure is reported.
	dns.mu.Lock()
	dns.srv["_matrix-fed._tcp.multi.test"] = dns.srv["_matrix-fed._tcp.multi.test"][:2]
	dns.mu.Unlock()
	c2 := f.client(t, func(o *transport.ClientOptions) {
		o.Resolver = transport.NewResolver(transport.ResolverOptions{HTTP: failingHTTP(), DNS: dns})
		o.Guard = netguard.New(netguard.Options{Block: netguard.DefaultBlocklist(), Allow: prefixes("127.0.0.1/32"), Resolver: dns})
	})
	err = c2.Get(context.Background(), "multi.test", "/_matrix/federation/v1/version", nil)
	if !errors.Is(err, netguard.ErrBlocked) || !errorContains(err, "dead.test") {
		t.Errorf("all targets failing: %v", err)
	}
}

func TestClientTimeout(t *testing.T) {
	f := newFixture(t, false)
	c := f.client(t, func(o *transport.ClientOptions) { o.Timeout = 200 * time.Millisecond })
	start := time.Now()
	err := c.Get(context.Background(), "dest.test", "/_matrix/federation/v1/slow", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want a deadline", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
	// The caller's context ends a request too.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := f.client(t, nil).Get(ctx, "dest.test", "/_matrix/federation/v1/slow", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("caller's deadline: %v", err)
	}
	// A server that accepts connections but never completes the TLS
	// handshake.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	mute := f.client(t, func(o *transport.ClientOptions) {
		o.Timeout = 200 * time.Millisecond
		o.Resolver = transport.NewResolver(transport.ResolverOptions{HTTP: failingHTTP(), DNS: &fakeDNS{}, Overrides: map[string]string{"mute.test": l.Addr().String()}})
	})
	start = time.Now()
	if err := mute.Get(context.Background(), "mute.test", "/x", nil); err == nil {
		t.Error("mute server answered")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("mute server: took %v", d)
	}
}

func TestClientReusesConnections(t *testing.T) {
	f := newFixture(t, false)
	c := f.client(t, nil)
	for range 5 {
		if err := c.Get(context.Background(), "dest.test", "/_matrix/federation/v1/version", nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.dest.conns.Load(); n != 1 {
		t.Errorf("%d connections for 5 sequential requests, want 1", n)
	}
}

// Many concurrent requests, for the race detector.
func TestClientConcurrent(t *testing.T) {
	f := newFixture(t, true)
	c := f.client(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.Do(context.Background(), "PUT", "dest.test", fmt.Sprintf("/_matrix/federation/v1/send/t%d", i), map[string]int{"i": i}, nil)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
