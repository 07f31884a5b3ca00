package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"homeserver/internal/redact"
	"homeserver/netguard"
	"homeserver/pdu"
)

// ClientOptions configures a Client.
type ClientOptions struct {
	// ServerName is our server name: the origin of every request.
	ServerName string
	// Key signs requests. An empty Key.ServerName is taken to be
	// ServerName; another one is an error.
	Key pdu.Key
	// Resolver finds destinations; nil for one built from Guard, RootCAs
	// and InsecureSkipVerify with the system's DNS.
	Resolver *Resolver
	// Guard dials; nil for one that checks no address (but resolves
	// through the Resolver's DNS).
	Guard *netguard.Guard
	// RootCAs are the trusted authorities; nil for the system's.
	RootCAs *x509.CertPool
	// InsecureSkipVerify accepts any certificate: for tests and networks
	// where the transport is authenticated otherwise.
	InsecureSkipVerify bool
	// DomainWhitelist lists the only destinations requests may go to: nil
	// for everyone, empty (non-nil) for nobody.
	DomainWhitelist []string
	// Timeout bounds one request, response body included; default 60s.
	Timeout time.Duration
	// MaxResponseBytes bounds response bodies; default 32 MiB.
	MaxResponseBytes int64
	// Logger; nil for none.
	Logger *slog.Logger
}

// Client sends signed requests to other homeservers. It is safe for
// concurrent use, and keeps connections open for reuse.
type Client struct {
	origin    string
	key       pdu.Key
	resolver  *Resolver
	guard     *netguard.Guard
	tls       *tls.Config // without ServerName, set per target
	whitelist map[string]bool
	timeout   time.Duration
	maxBody   int64
	log       *slog.Logger
	http      *http.Client
}

// HTTPError is a non-2xx answer from a remote server.
type HTTPError struct {
	Status int
	// Code and Message are the Matrix errcode and error, when the body is
	// a Matrix error.
	Code, Message string
	Body          []byte
}

func (e *HTTPError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("remote server answered %d %s: %s", e.Status, e.Code, e.Message)
	}
	return fmt.Sprintf("remote server answered %d", e.Status)
}

// ResponseError is a 2xx answer whose body could not be decoded: the
// remote server took the request, whatever its answer says.
type ResponseError struct {
	Status int
	Err    error
}

func (e *ResponseError) Error() string {
	return fmt.Sprintf("remote server answered %d with an unreadable body: %v", e.Status, e.Err)
}

func (e *ResponseError) Unwrap() error { return e.Err }

// Errors of requests refused before any network access.
var (
	ErrNotWhitelisted = errors.New("transport: destination not in the federation domain whitelist")
	ErrSelf           = errors.New("transport: destination is this server")
)

// NewClient returns a Client.
func NewClient(o ClientOptions) (*Client, error) {
	if !ValidServerName(o.ServerName) {
		return nil, fmt.Errorf("transport: invalid server name %q", o.ServerName)
	}
	if o.Key.ServerName == "" {
		o.Key.ServerName = o.ServerName
	}
	if o.Key.ServerName != o.ServerName {
		return nil, fmt.Errorf("transport: signing key of %q, not of %q", o.Key.ServerName, o.ServerName)
	}
	// Signing something checks the key before the first request does.
	if _, err := pdu.SignJSON(o.Key, []byte("{}")); err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	c := &Client{
		origin:   o.ServerName,
		key:      o.Key,
		resolver: o.Resolver,
		guard:    o.Guard,
		tls: &tls.Config{
			RootCAs:            o.RootCAs,
			InsecureSkipVerify: o.InsecureSkipVerify,
			MinVersion:         tls.VersionTLS12,
			NextProtos:         []string{"h2", "http/1.1"},
		},
		timeout: o.Timeout,
		maxBody: o.MaxResponseBytes,
		log:     o.Logger,
	}
	if o.DomainWhitelist != nil {
		c.whitelist = make(map[string]bool, len(o.DomainWhitelist))
		for _, d := range o.DomainWhitelist {
			c.whitelist[d] = true
		}
	}
	if c.resolver == nil {
		c.resolver = NewResolver(ResolverOptions{Guard: o.Guard, RootCAs: o.RootCAs, InsecureSkipVerify: o.InsecureSkipVerify, Logger: o.Logger})
	}
	if c.guard == nil {
		c.guard = netguard.New(netguard.Options{Resolver: c.resolver.dns})
	}
	if c.timeout <= 0 {
		c.timeout = 60 * time.Second
	}
	if c.maxBody <= 0 {
		c.maxBody = 32 << 20
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	// Requests are addressed to a synthetic host naming the target (see
	// targetHost), so that the transport pools connections per target and
	// dialTLS knows where to connect and which certificate to expect.
	c.http = &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil, // a proxy would connect where the guard cannot check
			DialTLSContext:        c.dialTLS,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		// Federation endpoints do not redirect; following one would send
		// the signed request somewhere its signature does not name.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// Close closes idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// targetHost encodes t as a URL host: hex is valid in a host, and is not
// confusable with a real name since no real request uses it.
func targetHost(t Target) string {
	return hex.EncodeToString([]byte(t.Addr+"\x00"+t.Host)) + ".target.invalid"
}

func parseTargetHost(addr string) (Target, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return Target{}, err
	}
	b, err := hex.DecodeString(strings.TrimSuffix(host, ".target.invalid"))
	if err != nil {
		return Target{}, fmt.Errorf("transport: unexpected dial address %q", addr)
	}
	a, h, ok := strings.Cut(string(b), "\x00")
	if !ok {
		return Target{}, fmt.Errorf("transport: unexpected dial address %q", addr)
	}
	return Target{Addr: a, Host: h}, nil
}

// dialError marks a failure to connect to (or authenticate) a target,
// after which the next target may be tried: nothing was sent.
type dialError struct {
	target Target
	err    error
}

func (e *dialError) Error() string { return fmt.Sprintf("connecting to %s: %v", e.target.Addr, e.err) }
func (e *dialError) Unwrap() error { return e.err }

// dialTLS connects to the target named by addr through the guard and
// checks its certificate against the target's name before anything is
// sent (the spec's "Response Authentication").
func (c *Client) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	t, err := parseTargetHost(addr)
	if err != nil {
		return nil, err
	}
	// The transport detaches dials from requests' cancellation, so they
	// need their own bound.
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	raw, err := c.guard.DialContext(ctx, network, t.Addr)
	if err != nil {
		return nil, &dialError{t, err}
	}
	cfg := c.tls.Clone()
	cfg.ServerName = t.TLSName()
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, &dialError{t, err}
	}
	return conn, nil
}

// Get is Do with GET and no body.
func (c *Client) Get(ctx context.Context, destination, requestURI string, out any) error {
	return c.Do(ctx, http.MethodGet, destination, requestURI, nil, out)
}

// Do sends a signed request to destination and decodes the JSON answer
// into out (unless out is nil). requestURI is the path and raw query, as
// sent and signed ("/_matrix/federation/v1/query/profile?user_id=%40a%3Ab").
// body is JSON-encoded, unless it is a json.RawMessage or []byte holding
// JSON already; a nil body is sent as {} for POST and PUT, which the spec
// says always carry a JSON object. Targets are tried in turn while they
// cannot be connected to. A non-2xx answer is an *HTTPError.
func (c *Client) Do(ctx context.Context, method, destination, requestURI string, body, out any) error {
	return c.do(ctx, method, destination, requestURI, body, "application/json", func(status int, h http.Header, r io.Reader) error {
		respBody, err := readLimited(r, h, c.maxBody)
		if err != nil {
			return fmt.Errorf("transport: %s %s%s: %w", method, destination, redact.URL(requestURI), err)
		}
		if status < 200 || status > 299 {
			return newHTTPError(status, respBody)
		}
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(respBody, out); err != nil {
			return fmt.Errorf("transport: %s %s%s: %w", method, destination, redact.URL(requestURI), &ResponseError{Status: status, Err: err})
		}
		return nil
	})
}

// ErrResponseTooLarge is returned by DoRaw when the answer is larger than
// allowed.
var ErrResponseTooLarge = errors.New("transport: response too large")

// DoStream sends a signed request to destination like Do, and hands the
// answer, whatever its status, to read: status, headers and the body as it
// arrives. The body is only valid during read; the client's timeout
// covers it. read's error is returned as is. Targets are tried in turn
// while they cannot be connected to; once one answers, read is called
// exactly once.
func (c *Client) DoStream(ctx context.Context, method, destination, requestURI string, body any,
	read func(status int, header http.Header, body io.Reader) error) error {
	return c.do(ctx, method, destination, requestURI, body, "*/*", read)
}

// do signs and sends a request, trying the destination's targets in turn
// while they cannot be connected to, and hands the first answer to read.
func (c *Client) do(ctx context.Context, method, destination, requestURI string, body any, accept string,
	read func(status int, header http.Header, body io.Reader) error) error {
	if err := c.checkDestination(destination); err != nil {
		return err
	}
	u, err := requestURL(requestURI)
	if err != nil {
		return err
	}
	content, err := encodeBody(method, body)
	if err != nil {
		return fmt.Errorf("transport: %s %s: request body: %w", method, redact.URL(requestURI), err)
	}
	auth, err := SignRequest(c.key, method, requestURI, destination, content)
	if err != nil {
		return fmt.Errorf("transport: signing %s %s: %w", method, redact.URL(requestURI), err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	targets, err := c.resolver.Resolve(ctx, destination)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range targets {
		resp, err := c.send(ctx, t, method, u, auth, content, accept)
		var de *dialError
		if errors.As(err, &de) && ctx.Err() == nil {
			c.log.Debug("federation target unreachable", "destination", destination, "addr", t.Addr, "err", err)
			errs = append(errs, err)
			continue
		}
		if err != nil {
			return fmt.Errorf("transport: %s %s%s: %w", method, destination, redact.URL(requestURI), err)
		}
		err = read(resp.StatusCode, resp.Header, resp.Body)
		resp.Body.Close()
		return err
	}
	return fmt.Errorf("transport: %s %s%s: %w", method, destination, redact.URL(requestURI), errors.Join(errs...))
}

// DoRaw is DoStream reading the whole body, of at most maxBytes (else
// ErrResponseTooLarge), for answers that are not JSON. Any status is
// returned; err is only for failures to get an answer.
func (c *Client) DoRaw(ctx context.Context, method, destination, requestURI string, body any, maxBytes int64) (int, http.Header, []byte, error) {
	var (
		status int
		header http.Header
		data   []byte
	)
	err := c.DoStream(ctx, method, destination, requestURI, body, func(st int, h http.Header, r io.Reader) error {
		b, err := readLimited(r, h, maxBytes)
		if err != nil {
			return fmt.Errorf("transport: %s %s%s: %w", method, destination, redact.URL(requestURI), err)
		}
		status, header, data = st, h, b
		return nil
	})
	if err != nil {
		return 0, nil, nil, err
	}
	return status, header, data, nil
}

// readLimited reads a response body of at most limit bytes.
func readLimited(r io.Reader, h http.Header, limit int64) ([]byte, error) {
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n > limit {
			return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrResponseTooLarge, n, limit)
		}
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading response: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrResponseTooLarge, limit)
	}
	return b, nil
}

// send sends the request to one target and returns the response, whose
// body the caller closes.
func (c *Client) send(ctx context.Context, t Target, method string, u url.URL, auth string, content []byte, accept string) (*http.Response, error) {
	u.Host = targetHost(t)
	var rd io.Reader
	if content != nil {
		rd = bytes.NewReader(content)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+u.Host+"/", rd)
	if err != nil {
		return nil, err
	}
	req.URL = &u // as built: a round trip through Parse could re-escape it
	req.Host = t.Host
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", accept)
	if content != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The url.Error would show the synthetic host.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	return resp, nil
}

func newHTTPError(status int, body []byte) *HTTPError {
	e := &HTTPError{Status: status, Body: body}
	var m struct {
		Code    string `json:"errcode"`
		Message string `json:"error"`
	}
	if json.Unmarshal(body, &m) == nil {
		e.Code, e.Message = m.Code, m.Message
	}
	return e
}

func (c *Client) checkDestination(destination string) error {
	if !ValidServerName(destination) {
		return fmt.Errorf("transport: invalid destination %q", destination)
	}
	if destination == c.origin {
		return fmt.Errorf("%w: %s", ErrSelf, destination)
	}
	if c.whitelist != nil && !c.whitelist[destination] {
		return fmt.Errorf("%w: %s", ErrNotWhitelisted, destination)
	}
	return nil
}

// requestURL checks requestURI and returns a URL whose request target is
// exactly requestURI, since that is what the signature covers.
func requestURL(requestURI string) (url.URL, error) {
	if !strings.HasPrefix(requestURI, "/") || strings.HasPrefix(requestURI, "//") || strings.ContainsRune(requestURI, '#') ||
		strings.IndexFunc(requestURI, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		return url.URL{}, fmt.Errorf("transport: invalid request URI %q", redact.URL(requestURI))
	}
	path, query, _ := strings.Cut(requestURI, "?")
	// Opaque keeps the path byte for byte; Parse might re-escape it.
	return url.URL{Scheme: "https", Opaque: path, RawQuery: query, ForceQuery: strings.HasSuffix(requestURI, "?")}, nil
}

// encodeBody returns the JSON body of a request, nil for none.
func encodeBody(method string, body any) ([]byte, error) {
	switch b := body.(type) {
	case nil:
		if method == http.MethodPost || method == http.MethodPut {
			return []byte("{}"), nil
		}
		return nil, nil
	case json.RawMessage:
		if !json.Valid(b) {
			return nil, errors.New("invalid JSON")
		}
		return slices.Clone(b), nil
	case []byte:
		if !json.Valid(b) {
			return nil, errors.New("invalid JSON")
		}
		return slices.Clone(b), nil
	}
	return json.Marshal(body)
}
