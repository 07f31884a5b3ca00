package keys

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"homeserver/pdu"
)

// flight is one fetch of a server's keys, shared by every lookup of that
// server that arrives while it runs.
type flight struct {
	done chan struct{}
	err  error // set before done is closed
	// want is key ID to minimum valid-until time, from every lookup that
	// joined; guarded by Keys.mu. It is read when the flight reaches the
	// notaries, so lookups that join during the direct fetch are asked for
	// too.
	want    map[string]int64
	waiters int // guarded by Keys.mu; for tests
}

// flightKey names a flight. Notary answers fetch directly only, as
// Synapse's do, so that two notaries trusting each other never wait on
// each other's fetch of the same server.
type flightKey struct {
	server     string
	directOnly bool
}

// fetch fetches serverName's keys, joining a fetch already running for it.
// want maps key IDs to the time (ms) they must be valid at; it may be
// empty, meaning any key. The fetched keys land in the store.
func (k *Keys) fetch(ctx context.Context, serverName string, want map[string]int64, directOnly bool) error {
	if k.fetcher == nil {
		return errors.New("keys: no fetcher to reach other servers")
	}
	fk := flightKey{serverName, directOnly}
	k.mu.Lock()
	f, ok := k.flights[fk]
	if !ok {
		f = &flight{done: make(chan struct{}), want: map[string]int64{}}
		k.flights[fk] = f
	}
	for id, ts := range want {
		if cur, seen := f.want[id]; !seen || ts > cur {
			f.want[id] = ts
		}
	}
	f.waiters++
	k.mu.Unlock()
	if !ok {
		// The fetch outlives a caller that gives up: others may be waiting
		// on it, and its result is stored for the next one.
		go k.runFlight(context.WithoutCancel(ctx), fk, f)
	}
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (k *Keys) runFlight(ctx context.Context, fk flightKey, f *flight) {
	ctx, cancel := context.WithTimeout(ctx, flightTimeout)
	defer cancel()
	var err error
	if fk.directOnly {
		err = k.fetchDirect(ctx, fk.server)
	} else {
		err = k.fetchAll(ctx, fk.server, f)
	}
	serverName, now := fk.server, k.now()
	k.mu.Lock()
	delete(k.flights, fk)
	if len(k.lastFetch) >= maxRemembered {
		for s, at := range k.lastFetch {
			if now.Sub(at) >= minRefetch {
				delete(k.lastFetch, s)
			}
		}
		if len(k.lastFetch) >= maxRemembered {
			clear(k.lastFetch)
		}
	}
	k.lastFetch[serverName] = now
	k.mu.Unlock()
	f.err = err
	close(f.done)
}

// fetchAll asks the server itself, then each trusted key server in turn
// until the wanted keys are known.
func (k *Keys) fetchAll(ctx context.Context, serverName string, f *flight) error {
	directErr := k.fetchDirect(ctx, serverName)
	if directErr != nil {
		k.log.Debug("fetching server keys directly failed", "server", serverName, "err", directErr)
	}
	k.mu.Lock()
	want := maps.Clone(f.want)
	k.mu.Unlock()
	if directErr == nil {
		missing, err := k.missing(ctx, serverName, want)
		if err != nil || len(missing) == 0 {
			return err
		}
		want = missing
	}
	if len(k.notaries) == 0 {
		return directErr
	}
	errs := []error{directErr}
	for _, n := range k.notaries {
		if n.ServerName == serverName || n.ServerName == k.serverName {
			continue // it answered (or not) for itself above; we are not our own notary
		}
		if err := k.fetchFromNotary(ctx, n, serverName, want); err != nil {
			k.log.Debug("fetching server keys through notary failed", "server", serverName, "notary", n.ServerName, "err", err)
			errs = append(errs, err)
			continue
		}
		missing, err := k.missing(ctx, serverName, want)
		if err != nil {
			return err
		}
		if len(missing) == 0 {
			return nil
		}
		want = missing
	}
	return errors.Join(errs...)
}

// missing returns the wanted keys not stored valid at their time.
func (k *Keys) missing(ctx context.Context, serverName string, want map[string]int64) (map[string]int64, error) {
	if len(want) == 0 {
		return nil, nil
	}
	rows, err := k.store.ServerKeys(ctx, serverName, sortedKeys(want))
	if err != nil {
		return nil, fmt.Errorf("keys: reading keys of %s: %w", serverName, err)
	}
	out := map[string]int64{}
	for id, ts := range want {
		i := slices.IndexFunc(rows, func(r StoredKey) bool { return r.KeyID == id })
		if i < 0 || !rows[i].validAt(ts) {
			out[id] = ts
		}
	}
	return out, nil
}

// fetchDirect fetches GET /_matrix/key/v2/server from the server itself.
func (k *Keys) fetchDirect(ctx context.Context, serverName string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var raw json.RawMessage
	if err := k.fetcher.Do(ctx, http.MethodGet, serverName, "/_matrix/key/v2/server", nil, &raw); err != nil {
		return fmt.Errorf("keys: fetching keys of %s: %w", serverName, err)
	}
	keys, _, err := k.parseKeyResponse(raw, serverName)
	if err != nil {
		return fmt.Errorf("keys: keys of %s: %w", serverName, err)
	}
	if err := k.store.StoreServerKeys(ctx, keys); err != nil {
		return fmt.Errorf("keys: storing keys of %s: %w", serverName, err)
	}
	return nil
}

// queryRequest is the body of POST /_matrix/key/v2/query.
type queryRequest struct {
	ServerKeys map[string]map[string]queryCriteria `json:"server_keys"`
}

type queryCriteria struct {
	MinimumValidUntilTS int64 `json:"minimum_valid_until_ts"`
}

// fetchFromNotary asks n for serverName's keys, and stores those that are
// signed by both serverName and n.
func (k *Keys) fetchFromNotary(ctx context.Context, n TrustedKeyServer, serverName string, want map[string]int64) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	criteria := map[string]queryCriteria{}
	for id, ts := range want {
		criteria[id] = queryCriteria{MinimumValidUntilTS: ts}
	}
	body := queryRequest{ServerKeys: map[string]map[string]queryCriteria{serverName: criteria}}
	var resp struct {
		ServerKeys []json.RawMessage `json:"server_keys"`
	}
	if err := k.fetcher.Do(ctx, http.MethodPost, n.ServerName, "/_matrix/key/v2/query", body, &resp); err != nil {
		return fmt.Errorf("keys: querying %s for keys of %s: %w", n.ServerName, serverName, err)
	}
	var keys []StoredKey
	var errs []error
	for _, raw := range resp.ServerKeys {
		got, canon, err := k.parseKeyResponse(raw, serverName)
		if err == nil {
			err = verifySignedBy(canon, n.ServerName, n.VerifyKeys)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		keys = append(keys, got...)
	}
	if len(keys) == 0 {
		if len(errs) == 0 {
			return fmt.Errorf("keys: %s has no keys of %s", n.ServerName, serverName)
		}
		return fmt.Errorf("keys: %s's answer about %s: %w", n.ServerName, serverName, errors.Join(errs...))
	}
	if err := k.store.StoreServerKeys(ctx, keys); err != nil {
		return fmt.Errorf("keys: storing keys of %s: %w", serverName, err)
	}
	return nil
}

// keyResponse is the body of GET /_matrix/key/v2/server.
type keyResponse struct {
	ServerName *string `json:"server_name"`
	VerifyKeys map[string]struct {
		Key string `json:"key"`
	} `json:"verify_keys"`
	OldVerifyKeys map[string]struct {
		Key       string `json:"key"`
		ExpiredTS int64  `json:"expired_ts"`
	} `json:"old_verify_keys"`
	ValidUntilTS *int64                                `json:"valid_until_ts"`
	Signatures   map[string]map[string]json.RawMessage `json:"signatures"`
}

// parseKeyResponse checks a key response of serverName: well formed, for
// that server, and signed by the keys it lists as current. It returns
// every ed25519 key it lists (at least one), each carrying the response in
// canonical form, and that form.
func (k *Keys) parseKeyResponse(raw []byte, serverName string) ([]StoredKey, []byte, error) {
	canon, err := pdu.CanonicalJSON(raw)
	if err != nil || len(canon) == 0 || canon[0] != '{' {
		return nil, nil, errors.New("key response is not a canonical JSON object")
	}
	var r keyResponse
	if err := json.Unmarshal(canon, &r); err != nil {
		return nil, nil, fmt.Errorf("malformed key response: %w", err)
	}
	if r.ServerName == nil || *r.ServerName != serverName {
		return nil, nil, fmt.Errorf("key response is for server %q", deref(r.ServerName))
	}
	if r.ValidUntilTS == nil {
		return nil, nil, errors.New("key response has no valid_until_ts")
	}
	current := map[string]ed25519.PublicKey{}
	for id, v := range r.VerifyKeys {
		if !strings.HasPrefix(id, "ed25519:") {
			continue // an algorithm we cannot use
		}
		pub, err := decodeKey(v.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("verify key %s: %w", id, err)
		}
		current[id] = pub
	}
	if err := verifySignedBy(canon, serverName, current); err != nil {
		return nil, nil, err
	}

	fetched := k.now()
	validUntil := min(*r.ValidUntilTS, fetched.Add(maxKeyValidity).UnixMilli())
	var out []StoredKey
	for id, pub := range current {
		if _, old := r.OldVerifyKeys[id]; old {
			continue // listed as expired too: the cautious reading wins
		}
		out = append(out, StoredKey{ServerName: serverName, KeyID: id, Key: pub,
			ValidUntilTS: validUntil, FetchedTS: fetched.UnixMilli(), KeyJSON: canon})
	}
	for id, v := range r.OldVerifyKeys {
		if !strings.HasPrefix(id, "ed25519:") {
			continue
		}
		pub, err := decodeKey(v.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("old verify key %s: %w", id, err)
		}
		if v.ExpiredTS <= 0 {
			return nil, nil, fmt.Errorf("old verify key %s has no expired_ts", id)
		}
		out = append(out, StoredKey{ServerName: serverName, KeyID: id, Key: pub,
			ValidUntilTS: validUntil, ExpiredTS: v.ExpiredTS, FetchedTS: fetched.UnixMilli(), KeyJSON: canon})
	}
	slices.SortFunc(out, func(a, b StoredKey) int { return strings.Compare(a.KeyID, b.KeyID) })
	return out, canon, nil
}

// verifySignedBy checks that data carries serverName's signature by at
// least one of keys, and that every signature it has by one of keys is
// valid.
func verifySignedBy(data []byte, serverName string, keys map[string]ed25519.PublicKey) error {
	var r struct {
		Signatures map[string]map[string]json.RawMessage `json:"signatures"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("malformed signatures: %w", err)
	}
	verified := false
	for _, id := range sortedKeys(r.Signatures[serverName]) {
		pub, ok := keys[id]
		if !ok {
			continue
		}
		if err := pdu.VerifyJSON(data, serverName, id, pub); err != nil {
			return err
		}
		verified = true
	}
	if !verified {
		return fmt.Errorf("not signed by %s with a key known for it", serverName)
	}
	return nil
}

func decodeKey(s string) (ed25519.PublicKey, error) {
	// Unpadded is what the spec mandates; padded keys decode the same.
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("not an unpadded base64 ed25519 public key")
	}
	return ed25519.PublicKey(b), nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// recentlyFetched reports whether a fetch of serverName ended less than
// minRefetch ago.
func (k *Keys) recentlyFetched(serverName string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	at, ok := k.lastFetch[serverName]
	d := k.now().Sub(at)
	return ok && d >= 0 && d < minRefetch
}
