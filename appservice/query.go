package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"homeserver/internal/redact"
)

// DefaultQueryTimeout bounds each synchronous call to a service: long enough
// for a service to create a room or user, short enough that a client
// request waiting on it still gets an answer when the service is down.
const DefaultQueryTimeout = 5 * time.Second

// maxAnswer bounds what is read of a service's answer.
const maxAnswer = 1 << 20

// Querier makes the synchronous calls of the homeserver to its application
// services: the user and room alias queries that let a service create
// entities lazily, pings, and third-party network lookups.
type Querier struct {
	set     *Set
	client  *http.Client
	timeout time.Duration
	log     *slog.Logger
}

// NewQuerier returns a querier over the services in set; timeout <= 0 means
// DefaultQueryTimeout. set may be nil (no services).
func NewQuerier(set *Set, timeout time.Duration, log *slog.Logger) *Querier {
	if timeout <= 0 {
		timeout = DefaultQueryTimeout
	}
	if log == nil {
		log = slog.Default()
	}
	return &Querier{set: set, client: &http.Client{CheckRedirect: noRedirects}, timeout: timeout, log: log}
}

// Registration returns the service with this ID, or nil.
func (q *Querier) Registration(id string) *Registration {
	if q == nil {
		return nil
	}
	return q.set.ByID(id)
}

func (q *Querier) regs() []*Registration {
	if q == nil || q.set == nil {
		return nil
	}
	return q.set.Regs
}

// QueryAlias asks each service whose alias namespace holds alias whether it
// exists, giving it the chance to create the room. It reports whether one
// answered that it does; the caller then resolves the alias again.
func (q *Querier) QueryAlias(ctx context.Context, alias string) bool {
	for _, r := range q.regs() {
		if r.URL == "" || !r.MatchesAlias(alias) {
			continue
		}
		if q.exists(ctx, r, "/_matrix/app/v1/rooms/", "/rooms/", alias) {
			return true
		}
	}
	return false
}

// QueryUser asks each service whose user namespace holds userID whether the
// user exists, giving it the chance to register it.
func (q *Querier) QueryUser(ctx context.Context, userID string) bool {
	for _, r := range q.regs() {
		if r.URL == "" || !r.MatchesUser(userID) {
			continue
		}
		if q.exists(ctx, r, "/_matrix/app/v1/users/", "/users/", userID) {
			return true
		}
	}
	return false
}

// exists runs one query, first on the specified path and, when that is not
// implemented, on the legacy unprefixed one.
func (q *Querier) exists(ctx context.Context, r *Registration, path, legacy, id string) bool {
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	status, body, err := q.do(ctx, r, http.MethodGet, path+url.PathEscape(id), nil, nil, false)
	if err == nil && notImplemented(status, body) {
		status, body, err = q.do(ctx, r, http.MethodGet, legacy+url.PathEscape(id), nil, nil, true)
	}
	if err != nil {
		q.log.Warn("application service query failed", "appservice", r.ID, "id", id, "err", err)
		return false
	}
	if status != http.StatusOK {
		q.log.Debug("application service query answered", "appservice", r.ID, "id", id, "status", status, "body", truncate(body))
	}
	return status == http.StatusOK
}

// notImplemented reports whether an answer means the service does not serve
// the path at all, rather than that it answered the query: a 404 or 405
// without a Matrix error (the default page of a web framework), or with
// M_UNRECOGNIZED.
func notImplemented(status int, body []byte) bool {
	if status != http.StatusNotFound && status != http.StatusMethodNotAllowed && status != http.StatusNotImplemented {
		return false
	}
	var e struct {
		Errcode string `json:"errcode"`
	}
	if json.Unmarshal(body, &e) != nil || e.Errcode == "" {
		return true
	}
	return e.Errcode == "M_UNRECOGNIZED"
}

// do sends one request to a service with its hs_token, in the Authorization
// header and, on legacy paths, the access_token query parameter too.
func (q *Querier) do(ctx context.Context, r *Registration, method, path string, query url.Values, body any, legacy bool) (int, []byte, error) {
	if r.URL == "" {
		return 0, nil, ErrNoURL
	}
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(data)
	}
	qs := url.Values{}
	for k, v := range query {
		qs[k] = v
	}
	if legacy {
		qs.Set("access_token", r.HSToken)
	}
	target := r.URL + path
	if len(qs) > 0 {
		target += "?" + qs.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return 0, nil, redact.Error(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.HSToken)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := q.client.Do(req)
	if err != nil {
		// The error quotes the URL, which may hold the hs_token.
		return 0, nil, redact.Error(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, data, nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// Ping errors. A *StatusError carries a service's non-2xx answer.
var (
	ErrConnectionFailed  = errors.New("appservice: connection failed")
	ErrConnectionTimeout = errors.New("appservice: connection timed out")
)

// StatusError is a service's answer with a status other than 2xx.
type StatusError struct {
	Status int
	Body   string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("appservice: answered status %d", e.Status)
}

// Ping calls the service's /_matrix/app/v1/ping and returns how long it took
// to answer. The errors are ErrNoURL, ErrConnectionFailed,
// ErrConnectionTimeout and *StatusError.
func (q *Querier) Ping(ctx context.Context, r *Registration, txnID string) (time.Duration, error) {
	if r.URL == "" {
		return 0, ErrNoURL
	}
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	body := map[string]string{}
	if txnID != "" {
		body["transaction_id"] = txnID
	}
	start := time.Now()
	status, answer, err := q.do(ctx, r, http.MethodPost, "/_matrix/app/v1/ping", nil, body, false)
	took := time.Since(start)
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return took, fmt.Errorf("%w: %v", ErrConnectionTimeout, err)
		}
		return took, fmt.Errorf("%w: %v", ErrConnectionFailed, err)
	}
	if status < 200 || status > 299 {
		return took, &StatusError{Status: status, Body: string(answer)}
	}
	return took, nil
}

// declaring lists the services that declare protocol, or that declare any
// protocol when protocol is "".
func (q *Querier) declaring(protocol string) []*Registration {
	var out []*Registration
	for _, r := range q.regs() {
		if r.URL == "" {
			continue
		}
		for _, p := range r.Protocols {
			if protocol == "" || p == protocol {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// Declared reports whether a service declares protocol.
func (q *Querier) Declared(protocol string) bool { return len(q.declaring(protocol)) > 0 }

// get fetches a third-party path from a service, falling back to the
// unstable prefix when the stable one is not implemented, and decodes the
// JSON answer into v. It reports whether it succeeded.
func (q *Querier) get(ctx context.Context, r *Registration, path string, query url.Values, v any) bool {
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	status, body, err := q.do(ctx, r, http.MethodGet, "/_matrix/app/v1"+path, query, nil, false)
	if err == nil && notImplemented(status, body) {
		status, body, err = q.do(ctx, r, http.MethodGet, "/_matrix/app/unstable"+path, query, nil, false)
	}
	if err != nil || status != http.StatusOK {
		q.log.Debug("application service third-party lookup failed", "appservice", r.ID, "path", path, "status", status, "err", err)
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		q.log.Warn("application service answered invalid JSON", "appservice", r.ID, "path", path, "err", err)
		return false
	}
	return true
}

// Protocol returns the metadata of a protocol, merged over the services
// that declare it (their instances concatenated), or false when none
// declares it or none answers.
func (q *Querier) Protocol(ctx context.Context, protocol string) (map[string]any, bool) {
	var merged map[string]any
	for _, r := range q.declaring(protocol) {
		var meta map[string]any
		if !q.get(ctx, r, "/thirdparty/protocol/"+url.PathEscape(protocol), nil, &meta) || meta == nil {
			continue
		}
		if merged == nil {
			merged = meta
			continue
		}
		a, _ := merged["instances"].([]any)
		b, _ := meta["instances"].([]any)
		merged["instances"] = append(a, b...)
	}
	return merged, merged != nil
}

// Protocols returns the metadata of every declared protocol that a service
// answers for.
func (q *Querier) Protocols(ctx context.Context) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, r := range q.declaring("") {
		for _, p := range r.Protocols {
			if _, done := out[p]; done {
				continue
			}
			if meta, ok := q.Protocol(ctx, p); ok {
				out[p] = meta
			}
		}
	}
	return out
}

// ThirdParty forwards a third-party lookup to the services concerned and
// concatenates their answers. kind is "location" or "user"; with a
// protocol, the services declaring it are asked at
// /thirdparty/{kind}/{protocol}, and without one (a reverse lookup by alias
// or user ID) every service declaring a protocol is asked at
// /thirdparty/{kind}.
func (q *Querier) ThirdParty(ctx context.Context, kind, protocol string, query url.Values) []json.RawMessage {
	path := "/thirdparty/" + kind
	if protocol != "" {
		path += "/" + url.PathEscape(protocol)
	}
	out := []json.RawMessage{}
	for _, r := range q.declaring(protocol) {
		var items []json.RawMessage
		if !q.get(ctx, r, path, query, &items) {
			continue
		}
		for _, it := range items {
			if t := bytes.TrimSpace(it); len(t) > 0 && t[0] == '{' {
				out = append(out, it)
			}
		}
	}
	return out
}

// Forwardable drops what must not be passed on to a service from a client's
// query string: its access token.
func Forwardable(query url.Values) url.Values {
	out := url.Values{}
	for k, v := range query {
		if !strings.EqualFold(k, "access_token") {
			out[k] = v
		}
	}
	return out
}
