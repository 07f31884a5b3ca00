package keys

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// Bounds of one notary query.
const (
	maxQueryServers = 100
	maxQueryKeyIDs  = 100 // per server
	maxQueryBody    = 256 << 10
	// queryParallel servers of one query are fetched at a time.
	queryParallel = 8
)

// ownReuse is how long one signing of our key response is served: its
// validity is a day by default, so a minute's staleness is immaterial, and
// a flood of requests does not cost a signature each.
const ownReuse = time.Minute

// Mount registers the key endpoints on r, the root router of a listener
// with the federation (or keys) resource.
func (k *Keys) Mount(r chi.Router) {
	r.Get("/_matrix/key/v2/server", k.serveKeys)
	// Deprecated: the key ID was never honoured; every key is returned.
	r.Get("/_matrix/key/v2/server/{keyID}", k.serveKeys)
	r.Get("/_matrix/key/v2/query/{serverName}", k.queryGet)
	r.Get("/_matrix/key/v2/query/{serverName}/{keyID}", k.queryGet)
	r.Post("/_matrix/key/v2/query", k.queryPost)
}

// Handler returns a router serving only the key endpoints.
func (k *Keys) Handler() http.Handler {
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		mxhttp.WriteError(w, mxhttp.Unrecognized("Unrecognized request"))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		mxhttp.WriteError(w, mxhttp.MethodNotAllowed())
	})
	k.Mount(r)
	return r
}

// OwnResponse returns our signed key response (canonical JSON), as served
// under /_matrix/key/v2/server.
func (k *Keys) OwnResponse() ([]byte, error) {
	now := k.now()
	k.ownMu.Lock()
	defer k.ownMu.Unlock()
	if k.own != nil && !now.Before(k.ownAt) && now.Sub(k.ownAt) < ownReuse {
		return k.own, nil
	}
	type verifyKey struct {
		Key string `json:"key"`
	}
	type oldVerifyKey struct {
		Key       string `json:"key"`
		ExpiredTS int64  `json:"expired_ts"`
	}
	old := make(map[string]oldVerifyKey, len(k.oldKeys))
	for id, o := range k.oldKeys {
		old[id] = oldVerifyKey{Key: base64.RawStdEncoding.EncodeToString(o.Key), ExpiredTS: o.ExpiredTS}
	}
	body, err := json.Marshal(struct {
		ServerName    string                  `json:"server_name"`
		VerifyKeys    map[string]verifyKey    `json:"verify_keys"`
		OldVerifyKeys map[string]oldVerifyKey `json:"old_verify_keys"`
		ValidUntilTS  int64                   `json:"valid_until_ts"`
	}{
		ServerName:    k.serverName,
		VerifyKeys:    map[string]verifyKey{k.key.KeyID: {Key: k.keyB64}},
		OldVerifyKeys: old,
		ValidUntilTS:  now.Add(k.refresh).UnixMilli(),
	})
	if err != nil {
		return nil, fmt.Errorf("keys: encoding our key response: %w", err)
	}
	signed, err := pdu.SignJSON(k.key, body)
	if err != nil {
		return nil, fmt.Errorf("keys: signing our key response: %w", err)
	}
	k.own, k.ownAt = signed, now
	return signed, nil
}

func (k *Keys) serveKeys(w http.ResponseWriter, r *http.Request) {
	body, err := k.OwnResponse()
	if err != nil {
		mxhttp.Fail(w, r, k.log, err)
		return
	}
	writeRaw(w, body)
}

// writeRaw writes canonical JSON as it is: encoding/json would escape
// '<', '>' and '&', which is harmless to signatures but needless.
func writeRaw(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func (k *Keys) queryGet(w http.ResponseWriter, r *http.Request) {
	serverName := mxhttp.PathParam(r, "serverName")
	minTS := k.now().UnixMilli()
	if s := r.URL.Query().Get("minimum_valid_until_ts"); s != "" {
		ts, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			mxhttp.WriteError(w, mxhttp.InvalidParam("minimum_valid_until_ts must be an integer"))
			return
		}
		minTS = ts
	}
	var want map[string]int64
	if keyID := mxhttp.PathParam(r, "keyID"); keyID != "" {
		want = map[string]int64{keyID: minTS}
	}
	responses, err := k.notaryAnswer(r.Context(), serverName, want, minTS)
	if err != nil {
		mxhttp.Fail(w, r, k.log, err)
		return
	}
	writeRaw(w, serverKeysBody(responses))
}

func (k *Keys) queryPost(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ServerKeys map[string]map[string]*struct {
			MinimumValidUntilTS *int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := mxhttp.DecodeJSON(r, maxQueryBody, &req); err != nil {
		mxhttp.WriteError(w, err)
		return
	}
	if req.ServerKeys == nil {
		mxhttp.WriteError(w, mxhttp.BadJSON("server_keys must be an object"))
		return
	}
	if len(req.ServerKeys) > maxQueryServers {
		mxhttp.WriteError(w, mxhttp.TooLarge("At most %d servers may be queried at once", maxQueryServers))
		return
	}
	now := k.now().UnixMilli()
	servers := sortedKeys(req.ServerKeys)
	wants := make([]map[string]int64, len(servers))
	for i, s := range servers {
		criteria := req.ServerKeys[s]
		if len(criteria) > maxQueryKeyIDs {
			mxhttp.WriteError(w, mxhttp.TooLarge("At most %d key IDs may be queried per server", maxQueryKeyIDs))
			return
		}
		wants[i] = make(map[string]int64, len(criteria))
		for id, c := range criteria {
			wants[i][id] = now
			if c != nil && c.MinimumValidUntilTS != nil {
				wants[i][id] = *c.MinimumValidUntilTS
			}
		}
	}

	results := make([][][]byte, len(servers))
	errs := make([]error, len(servers))
	sem := make(chan struct{}, queryParallel)
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i], errs[i] = k.notaryAnswer(r.Context(), s, wants[i], now)
		})
	}
	wg.Wait()
	var all [][]byte
	for i := range servers {
		if errs[i] != nil {
			mxhttp.Fail(w, r, k.log, errs[i])
			return
		}
		all = append(all, results[i]...)
	}
	writeRaw(w, serverKeysBody(all))
}

// serverKeysBody is {"server_keys": [...]} around canonical responses.
func serverKeysBody(responses [][]byte) []byte {
	var b bytes.Buffer
	b.WriteString(`{"server_keys":[`)
	b.Write(bytes.Join(responses, []byte(",")))
	b.WriteString(`]}`)
	return b.Bytes()
}

// notaryAnswer returns serverName's key responses, countersigned by us:
// those listing the keys of want (key ID to minimum valid_until_ts), or
// every key when want is empty (then fresh means valid until minTS).
// Stored responses are refetched from the server itself (not through other
// notaries) when missing or not fresh enough, at most once a minute per
// server; when the server cannot be reached, the stored ones are returned
// anyway, so that old events stay verifiable. An unreachable server with
// nothing stored has no responses.
func (k *Keys) notaryAnswer(ctx context.Context, serverName string, want map[string]int64, minTS int64) ([][]byte, error) {
	if serverName == k.serverName {
		own, err := k.OwnResponse()
		if err != nil {
			return nil, err
		}
		return [][]byte{own}, nil
	}
	if !validServerName(serverName) {
		return nil, nil
	}
	ids := sortedKeys(want)
	rows, err := k.store.ServerKeys(ctx, serverName, ids)
	if err != nil {
		return nil, fmt.Errorf("keys: reading keys of %s: %w", serverName, err)
	}
	if k.fetcher != nil && stale(rows, want, minTS) && fetchable(want) && !k.recentlyFetched(serverName) {
		if err := k.fetch(ctx, serverName, nil, true); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			k.log.Debug("notary: fetching keys failed; answering from the store", "server", serverName, "err", err)
		}
		if rows, err = k.store.ServerKeys(ctx, serverName, ids); err != nil {
			return nil, fmt.Errorf("keys: reading keys of %s: %w", serverName, err)
		}
	}
	var out [][]byte
	for _, row := range rows {
		if containsJSON(out, row.KeyJSON) {
			continue // keys of one response share it
		}
		out = append(out, row.KeyJSON)
	}
	for i, raw := range out {
		signed, err := pdu.SignJSON(k.key, raw)
		if err != nil {
			return nil, fmt.Errorf("keys: countersigning keys of %s: %w", serverName, err)
		}
		out[i] = signed
	}
	return out, nil
}

// stale reports whether rows lack a wanted key or one valid until its
// minimum; with no key IDs wanted, whether no key is valid until minTS.
func stale(rows []StoredKey, want map[string]int64, minTS int64) bool {
	if len(want) == 0 {
		for _, r := range rows {
			if r.ValidUntilTS >= minTS {
				return false
			}
		}
		return true
	}
	for id, ts := range want {
		found := false
		for _, r := range rows {
			if r.KeyID == id && r.ValidUntilTS >= ts {
				found = true
				break
			}
		}
		if !found {
			return true
		}
	}
	return false
}

// fetchable reports whether fetching could find what want asks for: any
// key, or at least one key ID that can exist.
func fetchable(want map[string]int64) bool {
	if len(want) == 0 {
		return true
	}
	for id := range want {
		if validKeyID(id) {
			return true
		}
	}
	return false
}

func containsJSON(list [][]byte, b []byte) bool {
	for _, x := range list {
		if bytes.Equal(x, b) {
			return true
		}
	}
	return false
}
