// Package transport talks to other Matrix homeservers over HTTPS, as the
// Server-Server API's "Server discovery", "Request Authentication" and
// "TLS" sections describe: it resolves server names (well-known
// delegation, SRV records), signs outgoing requests with the X-Matrix
// scheme, and verifies the signatures of incoming ones.
package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"homeserver/netguard"
)

// DefaultPort is the federation port used when discovery yields none.
const DefaultPort = 8448

const (
	wellKnownPath         = "/.well-known/matrix/server"
	wellKnownMaxBody      = 64 << 10
	wellKnownMaxRedirects = 5
	// The spec recommends 24 hours when the response says nothing, at
	// most 48 hours whatever it says, and up to an hour for errors.
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownMaxTTL     = 48 * time.Hour
	wellKnownErrorTTL   = time.Hour
	// targetTTL bounds how long SRV answers are reused: Go's resolver does
	// not tell their TTL.
	targetTTL = time.Hour
	// maxCacheEntries bounds each cache: server names come from remote
	// input.
	maxCacheEntries = 10000
	// resolveTimeout bounds one shared resolution, whichever caller waits.
	resolveTimeout = 60 * time.Second
)

// DNS is what the resolver needs from DNS; *net.Resolver is one.
type DNS interface {
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Target is one place a server can be reached.
type Target struct {
	// Addr is the "host:port" to connect to; host is a DNS name (resolved
	// when dialing) or an IP literal.
	Addr string
	// Host is the Host header of requests. Its hostname (without port or
	// brackets, see TLSName) is what the server's certificate must be
	// valid for.
	Host string
}

// TLSName is the name the target's certificate must be valid for, and the
// SNI sent (crypto/tls sends none for an IP address, as the spec asks).
func (t Target) TLSName() string {
	if h, _, err := net.SplitHostPort(t.Host); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(t.Host, "["), "]")
}

// ResolverOptions configures a Resolver.
type ResolverOptions struct {
	// HTTP fetches /.well-known/matrix/server. Nil for a client that dials
	// through Guard and trusts RootCAs. Its CheckRedirect is replaced: the
	// resolver follows at most 5 redirects, to https URLs only.
	HTTP *http.Client
	// Guard, RootCAs and InsecureSkipVerify configure the default HTTP
	// client; they are unused when HTTP is set. A nil Guard checks no
	// address (but still resolves through DNS).
	Guard              *netguard.Guard
	RootCAs            *x509.CertPool
	InsecureSkipVerify bool
	// DNS looks SRV records (and, without a Guard, addresses) up; nil for
	// net.DefaultResolver.
	DNS DNS
	// Now is the clock of the caches; nil for time.Now.
	Now func() time.Time
	// Overrides maps server names to the "host:port" that serves them,
	// skipping discovery: for tests running several servers locally. The
	// Host header and certificate name stay the server name's.
	Overrides map[string]string
	// WellKnownTimeout bounds one well-known request; default 10s.
	WellKnownTimeout time.Duration
	// Logger; nil for none.
	Logger *slog.Logger
}

// Resolver turns server names into targets, caching what it learns. It is
// safe for concurrent use.
type Resolver struct {
	http      *http.Client
	dns       DNS
	now       func() time.Time
	overrides map[string]string
	wkTimeout time.Duration
	log       *slog.Logger

	flight singleflight.Group
	mu     sync.Mutex
	wk     map[string]wellKnownEntry // by hostname
	target map[string]targetEntry    // by server name
}

type wellKnownEntry struct {
	server  string // m.server; "" when there is no valid well-known
	expires time.Time
}

type targetEntry struct {
	targets []Target
	expires time.Time
}

// NewResolver returns a Resolver.
func NewResolver(o ResolverOptions) *Resolver {
	r := &Resolver{
		dns:       o.DNS,
		now:       o.Now,
		overrides: make(map[string]string, len(o.Overrides)),
		wkTimeout: o.WellKnownTimeout,
		log:       o.Logger,
		wk:        map[string]wellKnownEntry{},
		target:    map[string]targetEntry{},
	}
	if r.dns == nil {
		r.dns = net.DefaultResolver
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.wkTimeout <= 0 {
		r.wkTimeout = 10 * time.Second
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	for k, v := range o.Overrides {
		r.overrides[k] = v
	}
	if o.HTTP != nil {
		c := *o.HTTP
		r.http = &c
	} else {
		guard := o.Guard
		if guard == nil {
			guard = netguard.New(netguard.Options{Resolver: r.dns})
		}
		r.http = &http.Client{Transport: &http.Transport{
			Proxy:       nil, // a proxy would connect where the guard cannot check
			DialContext: guard.DialContext,
			TLSClientConfig: &tls.Config{
				RootCAs:            o.RootCAs,
				InsecureSkipVerify: o.InsecureSkipVerify,
				MinVersion:         tls.VersionTLS12,
			},
			ForceAttemptHTTP2:   true,
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     30 * time.Second,
		}}
	}
	r.http.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) > wellKnownMaxRedirects {
			return errors.New("too many redirects")
		}
		if req.URL.Scheme != "https" {
			return fmt.Errorf("redirect to %s URL", req.URL.Scheme)
		}
		return nil
	}
	return r
}

// Resolve returns the targets of serverName, to be tried in order, as the
// spec's "Resolving server names" describes. It fails on an invalid server
// name and on DNS failures other than the absence of records.
func (r *Resolver) Resolve(ctx context.Context, serverName string) ([]Target, error) {
	sn, err := parseServerName(serverName)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	if addr, ok := r.overrides[serverName]; ok {
		return []Target{{Addr: addr, Host: serverName}}, nil
	}
	// Steps 1 and 2: IP literals and explicit ports need no lookup.
	if sn.ip.IsValid() {
		return []Target{{Addr: hostPort(sn.host, portOr(sn.port)), Host: serverName}}, nil
	}
	if sn.port != 0 {
		return []Target{{Addr: hostPort(sn.host, sn.port), Host: serverName}}, nil
	}

	r.mu.Lock()
	e, ok := r.target[serverName]
	r.mu.Unlock()
	if ok && r.now().Before(e.expires) {
		return cloneTargets(e.targets), nil
	}
	// Concurrent callers share one resolution, which is therefore not tied
	// to the context of any one of them.
	ch := r.flight.DoChan(serverName, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolveTimeout)
		defer cancel()
		targets, expires, err := r.discover(fctx, sn.host)
		if err != nil {
			return nil, err
		}
		if r.now().Before(expires) {
			r.mu.Lock()
			prune(r.target, r.now())
			r.target[serverName] = targetEntry{targets: targets, expires: expires}
			r.mu.Unlock()
		}
		return targets, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, fmt.Errorf("transport: resolving %s: %w", serverName, res.Err)
		}
		return cloneTargets(res.Val.([]Target)), nil
	}
}

func portOr(p int) int {
	if p == 0 {
		return DefaultPort
	}
	return p
}

func cloneTargets(t []Target) []Target { return append([]Target(nil), t...) }

// discover runs steps 3 to 6 for a hostname without port, and says until
// when its answer may be reused.
func (r *Resolver) discover(ctx context.Context, host string) ([]Target, time.Time, error) {
	expires := r.now().Add(targetTTL)
	delegated, wkExpires := r.wellKnown(ctx, host)
	if wkExpires.Before(expires) {
		expires = wkExpires
	}
	if delegated == "" {
		// Steps 4 to 6: SRV records of the server name itself; the
		// certificate must still be valid for it.
		targets, err := r.srv(ctx, host, host)
		return targets, expires, err
	}
	// Step 3: the delegated name, already validated.
	d, _ := parseServerName(delegated)
	switch {
	case d.ip.IsValid():
		return []Target{{Addr: hostPort(d.host, portOr(d.port)), Host: delegated}}, expires, nil
	case d.port != 0:
		return []Target{{Addr: hostPort(d.host, d.port), Host: delegated}}, expires, nil
	}
	targets, err := r.srv(ctx, d.host, d.host)
	return targets, expires, err
}

// srv looks up _matrix-fed._tcp.<name>, then the deprecated
// _matrix._tcp.<name>, and falls back to <name>:8448. Every target's Host
// is host.
func (r *Resolver) srv(ctx context.Context, name, host string) ([]Target, error) {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, recs, err := r.dns.LookupSRV(ctx, service, "tcp", name)
		var targets []Target
		for _, rec := range recs {
			t := strings.TrimSuffix(rec.Target, ".")
			// A target of "." means the service is decidedly not there.
			if t == "" || rec.Port == 0 {
				continue
			}
			targets = append(targets, Target{Addr: hostPort(t, int(rec.Port)), Host: host})
		}
		if len(targets) > 0 {
			// LookupSRV may return the valid records along with an error
			// about invalid ones.
			return targets, nil
		}
		if err != nil && !isNotFound(err) {
			return nil, fmt.Errorf("SRV _%s._tcp.%s: %w", service, name, err)
		}
	}
	return []Target{{Addr: hostPort(name, DefaultPort), Host: host}}, nil
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// wellKnown returns the m.server of host's well-known ("" when it has none
// that is valid) and until when that answer holds.
func (r *Resolver) wellKnown(ctx context.Context, host string) (string, time.Time) {
	now := r.now()
	r.mu.Lock()
	e, ok := r.wk[host]
	r.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.server, e.expires
	}
	server, ttl, err := r.fetchWellKnown(ctx, host)
	if err != nil {
		r.log.Debug("no valid well-known", "host", host, "err", err)
		server, ttl = "", wellKnownErrorTTL
	}
	e = wellKnownEntry{server: server, expires: r.now().Add(ttl)}
	if ttl > 0 {
		r.mu.Lock()
		prune(r.wk, now)
		r.wk[host] = e
		r.mu.Unlock()
	}
	return e.server, e.expires
}

// fetchWellKnown fetches https://<host>/.well-known/matrix/server and
// returns its valid m.server and how long to cache it.
func (r *Resolver) fetchWellKnown(ctx context.Context, host string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, r.wkTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+wellKnownPath, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxBody+1))
	if err != nil {
		return "", 0, err
	}
	if len(body) > wellKnownMaxBody {
		return "", 0, fmt.Errorf("body larger than %d bytes", wellKnownMaxBody)
	}
	// The Content-Type is not checked: the spec says to assume JSON.
	var wk struct {
		Server *string `json:"m.server"`
	}
	if err := json.Unmarshal(body, &wk); err != nil {
		return "", 0, fmt.Errorf("invalid JSON: %w", err)
	}
	if wk.Server == nil {
		return "", 0, errors.New("no m.server")
	}
	if _, err := parseServerName(*wk.Server); err != nil {
		return "", 0, fmt.Errorf("m.server: %w", err)
	}
	return *wk.Server, cacheTTL(resp.Header, r.now()), nil
}

// cacheTTL reads a response's Cache-Control (or Expires) header.
func cacheTTL(h http.Header, now time.Time) time.Duration {
	ttl, found := time.Duration(0), false
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			switch {
			case d == "no-store" || d == "no-cache":
				return 0
			case strings.HasPrefix(d, "max-age="):
				if n, err := strconv.ParseInt(strings.Trim(d[len("max-age="):], `"`), 10, 64); err == nil && n >= 0 && !found {
					ttl, found = time.Duration(min(n, int64(wellKnownMaxTTL/time.Second)))*time.Second, true
				}
			}
		}
	}
	if !found {
		if exp := h.Get("Expires"); exp != "" {
			// An invalid date means "already expired" (RFC 9111).
			t, err := http.ParseTime(exp)
			ttl, found = max(t.Sub(now), 0), true
			if err != nil {
				ttl = 0
			}
		}
	}
	if !found {
		ttl = wellKnownDefaultTTL
	}
	return min(ttl, wellKnownMaxTTL)
}

// prune makes room in a cache: expired entries go first, then arbitrary
// ones.
func prune[E interface{ expiry() time.Time }](m map[string]E, now time.Time) {
	if len(m) < maxCacheEntries {
		return
	}
	for k, e := range m {
		if !now.Before(e.expiry()) {
			delete(m, k)
		}
	}
	for k := range m {
		if len(m) < maxCacheEntries {
			break
		}
		delete(m, k)
	}
}

func (e wellKnownEntry) expiry() time.Time { return e.expires }
func (e targetEntry) expiry() time.Time    { return e.expires }
