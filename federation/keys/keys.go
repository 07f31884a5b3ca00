// Package keys holds server signing keys for federation: it serves ours
// under /_matrix/key/v2/server, fetches, verifies and stores other servers'
// keys (directly, or through trusted notary servers), and answers as a
// notary under /_matrix/key/v2/query, as the spec's "Retrieving server
// keys" describes.
package keys

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"homeserver/pdu"
)

// DefaultRefreshInterval is how long our published key response stays
// valid (Synapse's key_refresh_interval).
const DefaultRefreshInterval = 24 * time.Hour

// maxKeyValidity caps how far into the future a fetched key is trusted:
// the spec has servers use the lesser of valid_until_ts and 7 days from
// now, so that a leaked key cannot be published as valid for years.
const maxKeyValidity = 7 * 24 * time.Hour

// negativeTTL is how long a lookup that found no valid key is answered
// from memory, so that a flood of requests signed with an unknown key
// costs one fetch rather than one each.
const negativeTTL = time.Minute

// minRefetch is how often, at most, the notary endpoints refetch one
// server's keys because the stored ones are not fresh enough: the
// requester chooses minimum_valid_until_ts, and could otherwise make every
// request a fetch.
const minRefetch = time.Minute

// flightTimeout bounds one shared fetch (direct, then each notary), and
// requestTimeout each request in it.
const (
	flightTimeout  = time.Minute
	requestTimeout = 20 * time.Second
)

// maxRemembered bounds the negative cache and the refetch bookkeeping.
const maxRemembered = 10000

// ErrKeyNotFound is returned when no key with the requested ID is known,
// or none is valid at the requested time, even after asking.
var ErrKeyNotFound = errors.New("keys: no valid server key")

// OldKey is one of our former signing keys, published in old_verify_keys:
// events it signed stay verifiable.
type OldKey struct {
	Key ed25519.PublicKey
	// ExpiredTS is when we stopped using it (ms since the epoch).
	ExpiredTS int64
}

// TrustedKeyServer is a notary whose answers about other servers' keys we
// accept when they carry its signature by one of VerifyKeys (key ID to
// public key), as Synapse's trusted_key_servers.
type TrustedKeyServer struct {
	ServerName string
	VerifyKeys map[string]ed25519.PublicKey
}

// Fetcher makes federation requests; federation/transport.Client is one.
// out receives the decoded JSON response body.
type Fetcher interface {
	Do(ctx context.Context, method, destination, requestURI string, body any, out any) error
}

// StoredKey is one key of another server as stored: the key, how long it
// may be used, and the signed key response that listed it.
type StoredKey struct {
	ServerName string
	KeyID      string
	Key        ed25519.PublicKey
	// ValidUntilTS is the response's valid_until_ts, capped at FetchedTS
	// plus 7 days. It says how fresh the response is for every key in it;
	// for current keys it is also how long they may be used.
	ValidUntilTS int64
	// ExpiredTS is set (non-zero) for keys listed in old_verify_keys:
	// they verify signatures made before it.
	ExpiredTS int64
	// FetchedTS is when we received the response.
	FetchedTS int64
	// KeyJSON is the whole signed key response (canonical JSON), served
	// again, countersigned, to servers that ask us as a notary.
	KeyJSON []byte
}

// validAt reports whether the key verifies signatures made at ts.
func (s StoredKey) validAt(ts int64) bool {
	if s.ExpiredTS != 0 {
		return ts < s.ExpiredTS
	}
	return ts <= s.ValidUntilTS
}

// Store keeps other servers' keys.
type Store interface {
	// StoreServerKeys saves keys (usually all those of one response). A
	// stored key is replaced only by one whose ValidUntilTS is at least as
	// late (a newer response), or that reports it expired when the stored
	// one did not: an old response relayed by a notary never undoes a
	// newer one.
	StoreServerKeys(ctx context.Context, keys []StoredKey) error
	// ServerKeys returns serverName's stored keys with the given IDs, or
	// all of them when keyIDs is empty.
	ServerKeys(ctx context.Context, serverName string, keyIDs []string) ([]StoredKey, error)
}

// Options configures New.
type Options struct {
	// ServerName is ours; Key is our current signing key.
	ServerName string
	Key        pdu.Key
	// OldKeys are our former keys by key ID.
	OldKeys map[string]OldKey
	// RefreshInterval is how long our key response stays valid
	// (DefaultRefreshInterval when zero).
	RefreshInterval time.Duration
	Store           Store
	// Fetcher reaches other servers; without one, only our own and stored
	// keys are known.
	Fetcher           Fetcher
	TrustedKeyServers []TrustedKeyServer
	// Now is the clock (time.Now when nil).
	Now    func() time.Time
	Logger *slog.Logger
}

// Keys serves our keys and looks up other servers'.
type Keys struct {
	serverName string
	key        pdu.Key
	keyB64     string
	oldKeys    map[string]OldKey
	refresh    time.Duration
	store      Store
	fetcher    Fetcher
	notaries   []TrustedKeyServer
	now        func() time.Time
	log        *slog.Logger

	mu        sync.Mutex
	flights   map[flightKey]*flight
	negative  map[serverKey]time.Time // lookups failed, until
	lastFetch map[string]time.Time    // when a flight for the server ended

	ownMu sync.Mutex
	own   []byte // our signed key response
	ownAt time.Time
}

type serverKey struct{ server, keyID string }

// New checks the options and returns the service.
func New(o Options) (*Keys, error) {
	if o.ServerName == "" {
		return nil, errors.New("keys: no server name")
	}
	if o.Key.ServerName != o.ServerName {
		return nil, fmt.Errorf("keys: signing key is for %q, not %q", o.Key.ServerName, o.ServerName)
	}
	if !validKeyID(o.Key.KeyID) {
		return nil, fmt.Errorf("keys: signing key ID %q: want \"ed25519:<version>\"", o.Key.KeyID)
	}
	if len(o.Key.Private) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("keys: signing key %s is %d bytes, want %d", o.Key.KeyID, len(o.Key.Private), ed25519.PrivateKeySize)
	}
	for id, old := range o.OldKeys {
		if !validKeyID(id) || len(old.Key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("keys: old key %q: want an ed25519 key ID and a %d-byte public key", id, ed25519.PublicKeySize)
		}
		if id == o.Key.KeyID {
			return nil, fmt.Errorf("keys: old key %s is also the current key", id)
		}
	}
	if o.Store == nil {
		return nil, errors.New("keys: no store")
	}
	for _, n := range o.TrustedKeyServers {
		if n.ServerName == "" {
			return nil, errors.New("keys: trusted key server without a name")
		}
		if len(n.VerifyKeys) == 0 {
			// Unsigned notary answers would let whoever answers in its
			// name vouch for any key.
			return nil, fmt.Errorf("keys: trusted key server %s has no verify keys", n.ServerName)
		}
		for id, pub := range n.VerifyKeys {
			if !validKeyID(id) || len(pub) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("keys: trusted key server %s: key %q: want an ed25519 key ID and a %d-byte public key", n.ServerName, id, ed25519.PublicKeySize)
			}
		}
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	notaries := make([]TrustedKeyServer, len(o.TrustedKeyServers))
	for i, n := range o.TrustedKeyServers {
		notaries[i] = TrustedKeyServer{ServerName: n.ServerName, VerifyKeys: maps.Clone(n.VerifyKeys)}
	}
	return &Keys{
		serverName: o.ServerName,
		key:        o.Key,
		keyB64:     base64.RawStdEncoding.EncodeToString(o.Key.Private.Public().(ed25519.PublicKey)),
		oldKeys:    maps.Clone(o.OldKeys),
		refresh:    o.RefreshInterval,
		store:      o.Store,
		fetcher:    o.Fetcher,
		notaries:   notaries,
		now:        o.Now,
		log:        o.Logger,
		flights:    map[flightKey]*flight{},
		negative:   map[serverKey]time.Time{},
		lastFetch:  map[string]time.Time{},
	}, nil
}

// Lookup returns the public key serverName signs with under keyID, valid
// now: what checking a federation request's signature needs.
func (k *Keys) Lookup(ctx context.Context, serverName, keyID string) (ed25519.PublicKey, error) {
	return k.VerifyKey(ctx, serverName, keyID, k.now().UnixMilli())
}

// VerifyKey returns the public key serverName signed with under keyID, if
// it was valid at atTS (ms): a current key until the valid_until_ts of the
// latest response listing it, an old one before its expired_ts. Our own
// keys are answered locally; others come from the store, else are fetched
// from the server itself, else from the trusted key servers. Lookups of
// one server share one fetch, and a failed lookup is remembered for a
// minute.
func (k *Keys) VerifyKey(ctx context.Context, serverName, keyID string, atTS int64) (ed25519.PublicKey, error) {
	if serverName == k.serverName {
		return k.ownKey(keyID, atTS)
	}
	if !validKeyID(keyID) || !validServerName(serverName) {
		return nil, fmt.Errorf("%w: %s of %s: unsupported key ID or server name", ErrKeyNotFound, keyID, serverName)
	}
	if pub, err := k.storedKey(ctx, serverName, keyID, atTS); pub != nil || err != nil {
		return pub, err
	}
	if k.recentlyFailed(serverName, keyID) {
		return nil, fmt.Errorf("%w: %s of %s (lookup failed recently)", ErrKeyNotFound, keyID, serverName)
	}
	fetchErr := k.fetch(ctx, serverName, map[string]int64{keyID: atTS}, false)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pub, err := k.storedKey(ctx, serverName, keyID, atTS)
	if pub != nil || err != nil {
		return pub, err
	}
	k.rememberFailure(serverName, keyID)
	if fetchErr != nil {
		return nil, fmt.Errorf("%w: %s of %s valid at %d: %w", ErrKeyNotFound, keyID, serverName, atTS, fetchErr)
	}
	return nil, fmt.Errorf("%w: %s of %s valid at %d", ErrKeyNotFound, keyID, serverName, atTS)
}

func (k *Keys) ownKey(keyID string, atTS int64) (ed25519.PublicKey, error) {
	if keyID == k.key.KeyID {
		return k.key.Private.Public().(ed25519.PublicKey), nil
	}
	if old, ok := k.oldKeys[keyID]; ok && atTS < old.ExpiredTS {
		return old.Key, nil
	}
	return nil, fmt.Errorf("%w: %s of %s (our own) valid at %d", ErrKeyNotFound, keyID, k.serverName, atTS)
}

// storedKey returns the stored key if it is valid at atTS, else nil.
func (k *Keys) storedKey(ctx context.Context, serverName, keyID string, atTS int64) (ed25519.PublicKey, error) {
	rows, err := k.store.ServerKeys(ctx, serverName, []string{keyID})
	if err != nil {
		return nil, fmt.Errorf("keys: reading keys of %s: %w", serverName, err)
	}
	for _, r := range rows {
		if r.KeyID == keyID && r.validAt(atTS) {
			return r.Key, nil
		}
	}
	return nil, nil
}

func (k *Keys) recentlyFailed(serverName, keyID string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	until, ok := k.negative[serverKey{serverName, keyID}]
	return ok && k.now().Before(until)
}

func (k *Keys) rememberFailure(serverName, keyID string) {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.negative) >= maxRemembered {
		for sk, until := range k.negative {
			if !now.Before(until) {
				delete(k.negative, sk)
			}
		}
		if len(k.negative) >= maxRemembered {
			clear(k.negative)
		}
	}
	k.negative[serverKey{serverName, keyID}] = now.Add(negativeTTL)
}

// validKeyID accepts the only algorithm Matrix defines for server keys:
// "ed25519:" and a version of [a-zA-Z0-9_], and "-" too, which the spec
// leaves out but servers built on mautrix-go put in their random
// (unpadded base64url) versions.
func validKeyID(id string) bool {
	v, ok := strings.CutPrefix(id, "ed25519:")
	if !ok || v == "" || len(v) > 255 {
		return false
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validServerName follows the spec's grammar for server names (hostname,
// IPv4, or bracketed IPv6, with an optional port): a name outside it is
// never fetched from.
func validServerName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 2 {
			return false
		}
		host = s[1:end]
		rest := s[end+1:]
		if rest != "" {
			var ok bool
			if port, ok = strings.CutPrefix(rest, ":"); !ok || port == "" {
				return false
			}
		}
		for _, c := range host {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
				return false
			}
		}
	} else {
		var hasPort bool
		host, port, hasPort = strings.Cut(s, ":")
		if host == "" || hasPort && port == "" {
			return false
		}
		for _, c := range host {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				return false
			}
		}
	}
	if len(port) > 5 {
		return false
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
