package transport_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
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
	"testing"
	"time"

	"homeserver/federation/transport"
	"homeserver/internal/fedtest"
	"homeserver/pdu"
)

// fakeDNS answers from maps and counts SRV lookups.
type fakeDNS struct {
	mu       sync.Mutex
	srv      map[string][]*net.SRV // by "_service._proto.name"
	srvErr   map[string]error
	ips      map[string][]netip.Addr
	srvCalls int
}

func (d *fakeDNS) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	key := "_" + service + "._" + proto + "." + name
	d.mu.Lock()
	defer d.mu.Unlock()
	d.srvCalls++
	if err, ok := d.srvErr[key]; ok {
		return "", nil, err
	}
	if recs, ok := d.srv[key]; ok {
		return key, recs, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: key, IsNotFound: true}
}

func (d *fakeDNS) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.ips[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (d *fakeDNS) srvCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.srvCalls
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newCA(t testing.TB) *fedtest.CA {
	t.Helper()
	ca, err := fedtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// tlsServer starts an HTTPS server with a certificate for names.
func tlsServer(t testing.TB, ca *fedtest.CA, h http.Handler, names ...string) *httptest.Server {
	t.Helper()
	cert, err := ca.TLSCertificate(names...)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(h)
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// wkServer serves /.well-known/matrix/server for several host names,
// counting requests per host.
type wkServer struct {
	*httptest.Server
	ca       *fedtest.CA
	mu       sync.Mutex
	hits     map[string]int
	handlers map[string]http.HandlerFunc
}

func newWKServer(t testing.TB, ca *fedtest.CA, handlers map[string]http.HandlerFunc, extraNames ...string) *wkServer {
	t.Helper()
	s := &wkServer{ca: ca, hits: map[string]int{}, handlers: handlers}
	names := append([]string{"unused.test"}, extraNames...)
	for h := range handlers {
		names = append(names, h)
	}
	s.Server = tlsServer(t, ca, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		s.mu.Lock()
		s.hits[host]++
		h := s.handlers[host]
		s.mu.Unlock()
		if r.URL.Path != "/.well-known/matrix/server" || h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}), names...)
	return s
}

func (s *wkServer) hitCount(host string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[host]
}

// client returns an HTTP client that reaches this server whatever the
// host name, trusting the test CA.
func (s *wkServer) client() *http.Client {
	addr := s.Listener.Addr().String()
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.ca.Pool()},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

func wkJSON(body string, headers ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}
}

func wkStatus(code int) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// failingHTTP fails every request at once: for resolvers whose tests need
// no well-known.
func failingHTTP() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("no network in this test")
		},
	}}
}

// testKey returns a deterministic signing key of server.
func testKey(server string, seed byte) pdu.Key {
	return pdu.Key{
		ServerName: server,
		KeyID:      fmt.Sprintf("ed25519:k%d", seed),
		Private:    ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)),
	}
}

// keyring is a KeyLookup over known keys.
func keyring(keys ...pdu.Key) transport.KeyLookup {
	return func(_ context.Context, server, keyID string) (ed25519.PublicKey, error) {
		for _, k := range keys {
			if k.ServerName == server && k.KeyID == keyID {
				return k.Private.Public().(ed25519.PublicKey), nil
			}
		}
		return nil, fmt.Errorf("no key %s of %s", keyID, server)
	}
}

func hostPortOf(t testing.TB, s *httptest.Server) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

func errorContains(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, v := range s {
		out = append(out, netip.MustParsePrefix(v))
	}
	return out
}
