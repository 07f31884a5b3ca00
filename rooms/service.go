// Package rooms is the only writer of room events. It builds events from
// what local users ask for, signs them, authorises them against the room's
// state with the auth rules, and persists each in one transaction with its
// state and stream position; then it tells its listeners. Its read side
// applies history visibility to every event it hands out.
package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// Limits from the spec's event size rules.
const (
	MaxTypeLength     = 255
	MaxStateKeyLength = 255
	MaxIDLength       = 255
)

// Profiles gives the display name and avatar of local users for their
// membership events.
type Profiles interface {
	Profile(ctx context.Context, userID string) (displayName, avatarURL string, err error)
	Exists(ctx context.Context, userID string) (bool, error)
	// IsGuest reports whether a local user is a guest.
	IsGuest(ctx context.Context, userID string) (bool, error)
}

// Config of the rooms service.
type Config struct {
	ServerName     string
	Key            pdu.Key
	DefaultVersion string
	Logger         *slog.Logger
	Now            func() time.Time
	// ServerNoticesUser is the user of the server notices rooms ("" when
	// server notices are off): invites to its rooms cannot be rejected.
	ServerNoticesUser string
	// WriterReads, when set, is the store read from under the write lock
	// (the event's room, extremities and auth state): the store with its
	// reads made on the writer's connection (storage.DB.WriterReads).
	WriterReads Store
}

// Persisted announces one event written at a stream position.
type Persisted struct {
	Pos      int64
	RoomID   string
	EventID  string
	Type     string
	StateKey *string
}

// Service is the rooms writer and reader.
type Service struct {
	store Store
	// wstore is read under the write lock; see Config.WriterReads.
	wstore   Store
	profiles Profiles
	server   string
	key      pdu.Key
	version  string
	log      *slog.Logger
	now      func() time.Time
	notices  string

	// write serialises event creation so that stream positions are
	// allocated in commit order and each room has one writer.
	write sync.Mutex
	// queue holds the batchable events waiting for the write lock; the
	// one that takes it writes them all (writeBatch).
	queueMu sync.Mutex
	queue   []*queuedEvent

	mu        sync.Mutex
	listeners []func(Persisted)

	// queryAlias asks application services about an unknown local alias.
	queryAlias func(ctx context.Context, alias string) bool

	// aliasGuard vetoes aliases reserved by application services.
	aliasGuard func(alias, appServiceID string) error

	// remote reaches other servers; nil until SetRemote.
	remote Remote

	// backfillFailed remembers holes that no server could fill lately, so
	// that pagination does not wait on them again at every page.
	backfillMu     sync.Mutex
	backfillFailed map[string]time.Time

	// parsed keeps the auth state events as parsed: every send in a room
	// checks against the same few (create, power levels, the sender's
	// membership), and parsing them again was a tenth of a send's CPU.
	// Stored events never change but for redaction, which is in the key.
	parsedMu sync.Mutex
	parsed   map[parsedKey]*pdu.Event

	// roomTypes keeps each room's type (from its create event, which
	// never changes) for the room lists of sliding sync.
	roomTypes sync.Map
}

type parsedKey struct{ version, eventID, redactedBy string }

// maxParsed bounds the parsed-event cache; it is emptied when full.
const maxParsed = 4096

// New returns the rooms service.
func New(store Store, profiles Profiles, c Config) *Service {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.DefaultVersion == "" {
		c.DefaultVersion = "10"
	}
	if c.WriterReads == nil {
		c.WriterReads = store
	}
	return &Service{store: store, wstore: c.WriterReads, profiles: profiles, server: c.ServerName, key: c.Key, version: c.DefaultVersion, log: c.Logger, now: c.Now, notices: c.ServerNoticesUser}
}

// OnPersist registers fn to be called, in order, after each event commits.
// It must not block: readers wake up and read from their own cursors.
func (s *Service) OnPersist(fn func(Persisted)) {
	s.mu.Lock()
	s.listeners = append(s.listeners, fn)
	s.mu.Unlock()
}

func (s *Service) announce(p Persisted) {
	s.mu.Lock()
	ls := s.listeners
	s.mu.Unlock()
	for _, fn := range ls {
		fn(p)
	}
	if p.Type == "m.room.guest_access" && p.StateKey != nil && *p.StateKey == "" {
		go s.evictGuests(p.RoomID)
	}
}

// ServerName is the domain of this server.
func (s *Service) ServerName() string { return s.server }

// submit is the one path by which events enter a room: build, authorise,
// persist, announce. It returns the event ID (the original one for a
// retried transaction). Events that change no state share their commit
// with the others waiting for the write lock meanwhile (writeBatch).
func (s *Service) submit(ctx context.Context, p pdu.Proto, ne NewEvent) (*pdu.Event, error) {
	if err := checkProto(p); err != nil {
		return nil, err
	}
	if batchable(ne) {
		return s.submitBatched(ctx, p, ne)
	}
	s.write.Lock()
	// The room's extremities, state and the event's persistence must not
	// interleave with another process writing to the same room.
	unlock, err := s.store.LockRoom(ctx, p.RoomID)
	if err != nil {
		s.write.Unlock()
		return nil, err
	}
	ev, pos, err := s.submitLocked(ctx, p, ne)
	unlock()
	s.write.Unlock()
	if err != nil {
		return nil, err
	}
	if pos > 0 {
		s.announce(Persisted{Pos: pos, RoomID: ev.RoomID(), EventID: ev.ID(), Type: ev.Type(), StateKey: ev.StateKey()})
	}
	return ev, nil
}

func (s *Service) submitLocked(ctx context.Context, p pdu.Proto, ne NewEvent) (*pdu.Event, int64, error) {
	if ne.Txn != nil {
		if ev, ok, err := s.txnEvent(ctx, *ne.Txn); ok || err != nil {
			return ev, 0, err
		}
	}
	version := s.version
	var prevs []string
	var depth int64
	var state authState
	if ne.Room != nil {
		version = ne.Room.Version
	} else {
		var err error
		if version, prevs, depth, err = s.roomHead(ctx, p.RoomID); err != nil {
			return nil, 0, err
		}
		if state, err = s.authStateFor(ctx, p, version); err != nil {
			return nil, 0, err
		}
	}
	ev, err := s.buildAllowed(p, version, prevs, depth+1, state)
	if err != nil {
		return nil, 0, err
	}
	if ne.Room != nil {
		ne.Room.RoomID = ev.RoomID()
	}
	ne.Event = ev
	pos, err := s.store.PersistEvent(ctx, ne)
	if errors.Is(err, ErrDuplicateTxn) {
		// Cannot happen under the write lock; answer like a retry anyway.
		ev, _, err := s.txnEvent(ctx, *ne.Txn)
		return ev, 0, err
	}
	if err != nil {
		return nil, 0, fmt.Errorf("rooms: persisting %s: %w", ev.ID(), err)
	}
	return ev, pos, nil
}

// txnEvent returns the event a client's transaction already sent, if any.
func (s *Service) txnEvent(ctx context.Context, txn TxnRef) (*pdu.Event, bool, error) {
	id, err := s.wstore.TxnEvent(ctx, txn)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	st, err := s.wstore.GetEvent(ctx, id)
	if err != nil {
		return nil, false, err
	}
	ev, err := s.parse(ctx, st)
	return ev, true, err
}

// roomHead reads what a new event of the room builds on: the room's
// version, its forward extremities and their depth.
func (s *Service) roomHead(ctx context.Context, roomID string) (version string, prevs []string, depth int64, err error) {
	room, err := s.wstore.GetRoom(ctx, roomID)
	if errors.Is(err, ErrNotFound) {
		// As reads answer: whether a room exists is not told to those
		// outside it (Synapse too answers 403 here).
		return "", nil, 0, mxhttp.Forbidden("Unknown room %s", roomID)
	}
	if err != nil {
		return "", nil, 0, err
	}
	if prevs, depth, err = s.wstore.Extremities(ctx, roomID); err != nil {
		return "", nil, 0, err
	}
	return room.Version, prevs, depth, nil
}

// authStateFor reads the room's current state that authorises p.
func (s *Service) authStateFor(ctx context.Context, p pdu.Proto, version string) (authState, error) {
	keys, err := pdu.NeededForAuth(p, version)
	if err != nil {
		return nil, mxhttp.BadJSON("%v", err)
	}
	return s.loadAuthStateFrom(ctx, s.wstore, p.RoomID, version, keys)
}

// buildAllowed builds and signs the event and checks it against the auth
// rules, with the errors a client is told.
func (s *Service) buildAllowed(p pdu.Proto, version string, prevs []string, depth int64, state authState) (*pdu.Event, error) {
	if p.OriginTS == 0 {
		p.OriginTS = s.now().UnixMilli()
	}
	ev, err := pdu.Build(p, version, prevs, depth, state, s.key)
	if err != nil {
		if tooLarge(p, version, prevs, depth, state, s.key) {
			return nil, mxhttp.TooLarge("Event is larger than %d bytes", pdu.MaxPDUSize)
		}
		return nil, mxhttp.BadJSON("Cannot build event: %v", err)
	}
	if len(ev.JSON()) > pdu.MaxPDUSize {
		return nil, mxhttp.TooLarge("Event is larger than %d bytes", pdu.MaxPDUSize)
	}
	if err := pdu.Allowed(ev, state); err != nil {
		var na *pdu.NotAllowedError
		if errors.As(err, &na) {
			return nil, mxhttp.Forbidden("%s", na.Message)
		}
		return nil, mxhttp.BadJSON("Event rejected: %v", err)
	}
	return ev, nil
}

// tooLarge tells whether Build failed because the event would exceed the
// spec's 64 KiB, which clients must be told with M_TOO_LARGE rather than
// M_BAD_JSON: the event built with empty content, plus the canonical
// content, is the size of the event that was asked for.
func tooLarge(p pdu.Proto, version string, prevs []string, depth int64, state pdu.AuthState, key pdu.Key) bool {
	content, err := pdu.CanonicalJSON(p.Content)
	if err != nil {
		return false
	}
	if len(content) > pdu.MaxPDUSize {
		return true
	}
	bare := p
	bare.Content = json.RawMessage("{}")
	ev, err := pdu.Build(bare, version, prevs, depth, state, key)
	if err != nil {
		return false
	}
	return len(ev.JSON())-len("{}")+len(content) > pdu.MaxPDUSize
}

// authState is the slice of room state the auth rules look at.
type authState map[pdu.StateKey]*pdu.Event

func (a authState) Get(eventType, stateKey string) *pdu.Event {
	return a[pdu.StateKey{Type: eventType, StateKey: stateKey}]
}

func (s *Service) loadAuthState(ctx context.Context, roomID, version string, keys []pdu.StateKey) (authState, error) {
	return s.loadAuthStateFrom(ctx, s.store, roomID, version, keys)
}

func (s *Service) loadAuthStateFrom(ctx context.Context, store Store, roomID, version string, keys []pdu.StateKey) (authState, error) {
	stored, err := store.CurrentState(ctx, roomID, keys)
	if err != nil {
		return nil, err
	}
	st := make(authState, len(stored))
	for _, e := range stored {
		ev, err := s.parseAuthEvent(version, e)
		if err != nil {
			return nil, err
		}
		st[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] = ev
	}
	return st, nil
}

// parseAuthEvent parses a stored state event as the auth rules see it,
// through the cache.
func (s *Service) parseAuthEvent(version string, e Stored) (*pdu.Event, error) {
	k := parsedKey{version, e.EventID, e.RedactedBy}
	s.parsedMu.Lock()
	ev, ok := s.parsed[k]
	s.parsedMu.Unlock()
	if ok {
		return ev, nil
	}
	data, err := authJSON(version, e)
	if err != nil {
		return nil, err
	}
	if ev, err = pdu.Parse(version, data); err != nil {
		return nil, fmt.Errorf("rooms: stored event %s: %w", e.EventID, err)
	}
	s.parsedMu.Lock()
	if s.parsed == nil || len(s.parsed) >= maxParsed {
		s.parsed = make(map[parsedKey]*pdu.Event)
	}
	s.parsed[k] = ev
	s.parsedMu.Unlock()
	return ev, nil
}

// authJSON is a state event as the auth rules see it: redacted when it has
// been redacted, as the spec has servers keep only the redacted form.
func authJSON(version string, e Stored) ([]byte, error) {
	if e.RedactedBy == "" {
		return e.JSON, nil
	}
	data, err := pdu.Redact(version, e.JSON)
	if err != nil {
		return nil, fmt.Errorf("rooms: redacting stored event %s: %w", e.EventID, err)
	}
	return data, nil
}

func (s *Service) parse(ctx context.Context, st Stored) (*pdu.Event, error) {
	room, err := s.store.GetRoom(ctx, st.RoomID)
	if err != nil {
		return nil, err
	}
	return pdu.Parse(room.Version, st.JSON)
}

// checkProto applies the spec's limits on what clients send.
func checkProto(p pdu.Proto) error {
	if p.Type == "" {
		return mxhttp.BadJSON("Missing event type")
	}
	if len(p.Type) > MaxTypeLength {
		return mxhttp.TooLarge("Event type longer than %d bytes", MaxTypeLength)
	}
	if p.StateKey != nil && len(*p.StateKey) > MaxStateKeyLength {
		return mxhttp.TooLarge("State key longer than %d bytes", MaxStateKeyLength)
	}
	if len(p.Content) == 0 {
		return mxhttp.BadJSON("Missing content")
	}
	if err := pdu.ValidateJSON(p.Content); err != nil {
		return mxhttp.BadJSON("Content is not valid Matrix JSON: %v", err)
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(p.Content, &obj) != nil {
		return mxhttp.BadJSON("Content must be a JSON object")
	}
	return nil
}
