// Package keybackup keeps each user's server-side backups of room keys (the
// /room_keys API): versioned backups whose auth_data and key data are opaque
// to the server, except for the metadata that decides which of two keys for
// the same megolm session is worth keeping.
package keybackup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"

	"homeserver/mxhttp"
)

// Limits on what one request may store.
const (
	// MaxKeysPerRequest bounds the sessions of one upload. Clients upload in
	// batches of a few hundred; this leaves them ample room while keeping one
	// transaction's work bounded.
	MaxKeysPerRequest = 10000
	// maxIDLen bounds room IDs (the spec's 255 bytes), session IDs and
	// algorithm names.
	maxIDLen = 255
	// maxInt is the largest integer canonical JSON allows.
	maxInt = 1<<53 - 1
)

// ErrNotFound is what the store returns for a version that does not exist
// (or was deleted) and for a missing key.
var ErrNotFound = errors.New("keybackup: not found")

// WrongVersionError is what the store returns for an upload into a version
// that exists but is not the user's current one.
type WrongVersionError struct {
	Current int64
}

func (e *WrongVersionError) Error() string {
	return fmt.Sprintf("keybackup: version %d is the current one", e.Current)
}

// Version is one backup version of a user.
type Version struct {
	Version   int64
	Algorithm string
	AuthData  json.RawMessage
	// ETag changes (increases) with every change to the version's keys.
	ETag  int64
	Count int64
}

// Key is the backed-up key of one megolm session.
type Key struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       json.RawMessage
}

// Counts is the state of a version's keys after a change.
type Counts struct {
	ETag  int64
	Count int64
}

// Store persists backups. Versions are numbered per user from 1 and never
// reused; a deleted version loses its keys but keeps its number, so that
// deleting it again succeeds. Every write runs in one transaction that is
// serialised with the user's other backup writes, even across processes.
type Store interface {
	// CreateKeyBackupVersion adds a version numbered above every version the
	// user ever had, which makes it the current one, and returns its number.
	CreateKeyBackupVersion(ctx context.Context, userID, algorithm string, authData json.RawMessage) (int64, error)
	// KeyBackupVersion returns a version that is not deleted; version 0
	// asks for the current one (the highest). ErrNotFound if there is none.
	KeyBackupVersion(ctx context.Context, userID string, version int64) (Version, error)
	// UpdateKeyBackupVersion replaces a live version's auth_data with what
	// fn returns for the version as stored; ErrNotFound if there is none.
	UpdateKeyBackupVersion(ctx context.Context, userID string, version int64, fn func(Version) (json.RawMessage, error)) error
	// DeleteKeyBackupVersion deletes a version and its keys. Deleting a
	// deleted version succeeds; ErrNotFound if it never existed.
	DeleteKeyBackupVersion(ctx context.Context, userID string, version int64) error
	// PutKeyBackupKeys stores keys, which name distinct sessions, into the
	// current version: ErrNotFound if the version is not live, a
	// *WrongVersionError if it is live but not current. A key for a session
	// that already has one is written only if replace(old, new) says so;
	// old.SessionData is not loaded. The etag moves on if anything was
	// written.
	PutKeyBackupKeys(ctx context.Context, userID string, version int64, keys []Key, replace func(old, new Key) bool) (Counts, error)
	// KeyBackupKeys lists the keys of a live version, of one room when
	// roomID is set, of one session when sessionID is set too. ErrNotFound
	// if the version is not live.
	KeyBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) ([]Key, error)
	// DeleteKeyBackupKeys deletes keys as KeyBackupKeys selects them. The
	// etag moves on if anything was deleted.
	DeleteKeyBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) (Counts, error)
}

// Level says how much of a backup a /room_keys/keys request addresses.
type Level int

const (
	// AllRooms is /room_keys/keys.
	AllRooms Level = iota
	// OneRoom is /room_keys/keys/{roomId}.
	OneRoom
	// OneSession is /room_keys/keys/{roomId}/{sessionId}.
	OneSession
)

// Scope is the part of a backup a keys request addresses.
type Scope struct {
	Level     Level
	RoomID    string // for OneRoom and OneSession
	SessionID string // for OneSession
}

// VersionInfo is the answer to GET /room_keys/version[/{version}].
type VersionInfo struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// KeyData is one session's key as clients send and receive it.
type KeyData struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// RoomKeys is the keys of one room.
type RoomKeys struct {
	Sessions map[string]KeyData `json:"sessions"`
}

// AllKeys is the keys of a whole version.
type AllKeys struct {
	Rooms map[string]RoomKeys `json:"rooms"`
}

// UpdateResult is the answer to a PUT or DELETE of keys.
type UpdateResult struct {
	ETag  string `json:"etag"`
	Count int64  `json:"count"`
}

// roomIDRe is the shape of a room ID; the server part is absent in rooms of
// version 12 and later.
var roomIDRe = regexp.MustCompile(`^![^:]+(:.+)?$`)

// Service is the key backup API of every user.
type Service struct {
	store Store
}

// New returns the service.
func New(store Store) *Service {
	return &Service{store: store}
}

// CreateVersion creates a backup version from the body of POST
// /room_keys/version and returns its (opaque) version string.
func (s *Service) CreateVersion(ctx context.Context, userID string, body []byte) (string, error) {
	var req struct {
		Algorithm *string         `json:"algorithm"`
		AuthData  json.RawMessage `json:"auth_data"`
	}
	if err := mxhttp.Unmarshal(body, &req); err != nil {
		return "", err
	}
	if err := checkAlgorithm(req.Algorithm); err != nil {
		return "", err
	}
	authData, err := requireObject("auth_data", req.AuthData)
	if err != nil {
		return "", err
	}
	v, err := s.store.CreateKeyBackupVersion(ctx, userID, *req.Algorithm, authData)
	if err != nil {
		return "", err
	}
	return formatVersion(v), nil
}

// CurrentVersion describes the user's current backup; 404 when there is
// none.
func (s *Service) CurrentVersion(ctx context.Context, userID string) (VersionInfo, error) {
	v, err := s.store.KeyBackupVersion(ctx, userID, 0)
	if errors.Is(err, ErrNotFound) {
		return VersionInfo{}, mxhttp.NotFound("No current backup version")
	}
	if err != nil {
		return VersionInfo{}, err
	}
	return info(v), nil
}

// GetVersion describes one backup version; 404 when it does not exist or
// was deleted.
func (s *Service) GetVersion(ctx context.Context, userID, version string) (VersionInfo, error) {
	n, err := parseVersion(version)
	if err != nil {
		return VersionInfo{}, err
	}
	v, err := s.store.KeyBackupVersion(ctx, userID, n)
	if errors.Is(err, ErrNotFound) {
		return VersionInfo{}, unknownVersion()
	}
	if err != nil {
		return VersionInfo{}, err
	}
	return info(v), nil
}

// UpdateVersion replaces a version's auth_data from the body of PUT
// /room_keys/version/{version}. The algorithm must be given and unchanged,
// and a version in the body must be the one in the path.
func (s *Service) UpdateVersion(ctx context.Context, userID, version string, body []byte) error {
	var req struct {
		Algorithm *string         `json:"algorithm"`
		AuthData  json.RawMessage `json:"auth_data"`
		Version   *string         `json:"version"`
	}
	if err := mxhttp.Unmarshal(body, &req); err != nil {
		return err
	}
	if err := checkAlgorithm(req.Algorithm); err != nil {
		return err
	}
	authData, err := requireObject("auth_data", req.AuthData)
	if err != nil {
		return err
	}
	if req.Version != nil && *req.Version != version {
		return mxhttp.InvalidParam("Version in body does not match the version in the path")
	}
	n, err := parseVersion(version)
	if err != nil {
		return err
	}
	err = s.store.UpdateKeyBackupVersion(ctx, userID, n, func(cur Version) (json.RawMessage, error) {
		if cur.Algorithm != *req.Algorithm {
			return nil, mxhttp.InvalidParam("Algorithm does not match")
		}
		return authData, nil
	})
	if errors.Is(err, ErrNotFound) {
		return unknownVersion()
	}
	return err
}

// DeleteVersion deletes a backup version and its keys. A version deleted
// before is deleted again without error, as the spec asks; one that never
// existed is 404.
func (s *Service) DeleteVersion(ctx context.Context, userID, version string) error {
	n, err := parseVersion(version)
	if err != nil {
		return err
	}
	err = s.store.DeleteKeyBackupVersion(ctx, userID, n)
	if errors.Is(err, ErrNotFound) {
		return unknownVersion()
	}
	return err
}

// PutKeys stores the keys of a PUT /room_keys/keys[/{roomId}[/{sessionId}]]
// body into version, which must be the current one. Where the backup
// already holds a key for a session, the better of the two is kept.
func (s *Service) PutKeys(ctx context.Context, userID, version string, scope Scope, body []byte) (UpdateResult, error) {
	if err := checkScope(scope); err != nil {
		return UpdateResult{}, err
	}
	keys, err := parseUpload(scope, body)
	if err != nil {
		return UpdateResult{}, err
	}
	n, err := parseVersion(version)
	if err != nil {
		return UpdateResult{}, err
	}
	c, err := s.store.PutKeyBackupKeys(ctx, userID, n, keys, Better)
	var wrong *WrongVersionError
	switch {
	case errors.Is(err, ErrNotFound):
		return UpdateResult{}, unknownVersion()
	case errors.As(err, &wrong):
		return UpdateResult{}, wrongVersion(wrong.Current)
	case err != nil:
		return UpdateResult{}, err
	}
	return result(c), nil
}

// GetKeys returns the keys a scope addresses, in the shape of its level: an
// AllKeys, a RoomKeys (with no sessions for a room without keys) or the
// KeyData of one session (404 when the backup has no key for it).
func (s *Service) GetKeys(ctx context.Context, userID, version string, scope Scope) (any, error) {
	if err := checkScope(scope); err != nil {
		return nil, err
	}
	n, err := parseVersion(version)
	if err != nil {
		return nil, err
	}
	keys, err := s.store.KeyBackupKeys(ctx, userID, n, scope.RoomID, scope.SessionID)
	if errors.Is(err, ErrNotFound) {
		return nil, unknownVersion()
	}
	if err != nil {
		return nil, err
	}
	switch scope.Level {
	case OneSession:
		if len(keys) == 0 {
			return nil, mxhttp.NotFound("Key not found")
		}
		return keyData(keys[0]), nil
	case OneRoom:
		room := RoomKeys{Sessions: make(map[string]KeyData, len(keys))}
		for _, k := range keys {
			room.Sessions[k.SessionID] = keyData(k)
		}
		return room, nil
	default:
		all := AllKeys{Rooms: map[string]RoomKeys{}}
		for _, k := range keys {
			room, ok := all.Rooms[k.RoomID]
			if !ok {
				room = RoomKeys{Sessions: map[string]KeyData{}}
				all.Rooms[k.RoomID] = room
			}
			room.Sessions[k.SessionID] = keyData(k)
		}
		return all, nil
	}
}

// DeleteKeys deletes the keys a scope addresses from a version (current or
// not). Deleting keys that are not there succeeds without changing the etag.
func (s *Service) DeleteKeys(ctx context.Context, userID, version string, scope Scope) (UpdateResult, error) {
	if err := checkScope(scope); err != nil {
		return UpdateResult{}, err
	}
	n, err := parseVersion(version)
	if err != nil {
		return UpdateResult{}, err
	}
	c, err := s.store.DeleteKeyBackupKeys(ctx, userID, n, scope.RoomID, scope.SessionID)
	if errors.Is(err, ErrNotFound) {
		return UpdateResult{}, unknownVersion()
	}
	if err != nil {
		return UpdateResult{}, err
	}
	return result(c), nil
}

// Better reports whether candidate should replace existing, the spec's rule
// for two keys of one session: a verified key beats an unverified one; then
// the lower first_message_index wins; then the lower forwarded_count. On a
// tie the existing key stays.
func Better(existing, candidate Key) bool {
	if existing.IsVerified != candidate.IsVerified {
		return candidate.IsVerified
	}
	if existing.FirstMessageIndex != candidate.FirstMessageIndex {
		return candidate.FirstMessageIndex < existing.FirstMessageIndex
	}
	return candidate.ForwardedCount < existing.ForwardedCount
}

// parseUpload validates a keys upload body of the scope's level and returns
// its keys. Nothing is stored unless the whole body is valid.
func parseUpload(scope Scope, body []byte) ([]Key, error) {
	var top map[string]json.RawMessage
	if err := mxhttp.Unmarshal(body, &top); err != nil {
		return nil, err
	}
	switch scope.Level {
	case OneSession:
		k, err := parseKeyData(scope.RoomID, scope.SessionID, top)
		if err != nil {
			return nil, err
		}
		return []Key{k}, nil
	case OneRoom:
		var keys []Key
		err := parseRoom(scope.RoomID, top, &keys)
		return keys, err
	}
	raw, ok := top["rooms"]
	if !ok {
		return nil, mxhttp.MissingParam("Missing rooms")
	}
	rooms, err := objectOf(raw, "rooms")
	if err != nil {
		return nil, err
	}
	var keys []Key
	for roomID, raw := range rooms {
		if err := checkRoomID(roomID); err != nil {
			return nil, err
		}
		room, err := objectOf(raw, "rooms."+roomID)
		if err != nil {
			return nil, err
		}
		if err := parseRoom(roomID, room, &keys); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// parseRoom appends the keys of one room's {"sessions": {...}} object.
func parseRoom(roomID string, room map[string]json.RawMessage, keys *[]Key) error {
	raw, ok := room["sessions"]
	if !ok {
		return mxhttp.MissingParam("Missing sessions for room %s", roomID)
	}
	sessions, err := objectOf(raw, "sessions of room "+roomID)
	if err != nil {
		return err
	}
	if len(*keys)+len(sessions) > MaxKeysPerRequest {
		return mxhttp.TooLarge("At most %d keys may be uploaded in one request", MaxKeysPerRequest)
	}
	for sessionID, raw := range sessions {
		if err := checkSessionID(sessionID); err != nil {
			return err
		}
		fields, err := objectOf(raw, "key of session "+sessionID)
		if err != nil {
			return err
		}
		k, err := parseKeyData(roomID, sessionID, fields)
		if err != nil {
			return err
		}
		*keys = append(*keys, k)
	}
	return nil
}

// parseKeyData validates one KeyBackupData object: every field is required
// and of its type; the integers are not negative.
func parseKeyData(roomID, sessionID string, f map[string]json.RawMessage) (Key, error) {
	k := Key{RoomID: roomID, SessionID: sessionID}
	var err error
	if k.FirstMessageIndex, err = nonNegativeInt(f, "first_message_index", sessionID); err != nil {
		return Key{}, err
	}
	if k.ForwardedCount, err = nonNegativeInt(f, "forwarded_count", sessionID); err != nil {
		return Key{}, err
	}
	raw, ok := f["is_verified"]
	if !ok {
		return Key{}, mxhttp.MissingParam("Missing is_verified in key of session %s", sessionID)
	}
	switch string(bytes.TrimSpace(raw)) {
	case "true":
		k.IsVerified = true
	case "false":
	default:
		return Key{}, mxhttp.BadJSON("is_verified must be a boolean in key of session %s", sessionID)
	}
	raw, ok = f["session_data"]
	if !ok {
		return Key{}, mxhttp.MissingParam("Missing session_data in key of session %s", sessionID)
	}
	if k.SessionData, err = compactObject(raw, "session_data of session "+sessionID); err != nil {
		return Key{}, err
	}
	return k, nil
}

// nonNegativeInt reads an integer field. Numbers with a fraction or an
// exponent are the wrong type; negative or oversized ones a wrong value.
func nonNegativeInt(f map[string]json.RawMessage, name, sessionID string) (int64, error) {
	raw, ok := f[name]
	if !ok {
		return 0, mxhttp.MissingParam("Missing %s in key of session %s", name, sessionID)
	}
	s := string(bytes.TrimSpace(raw))
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return 0, mxhttp.BadJSON("%s must be an integer in key of session %s", name, sessionID)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	var ne *strconv.NumError
	switch {
	case errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange):
		return 0, mxhttp.InvalidParam("%s is out of range in key of session %s", name, sessionID)
	case err != nil:
		return 0, mxhttp.BadJSON("%s must be an integer in key of session %s", name, sessionID)
	case n < 0 || n > maxInt:
		return 0, mxhttp.InvalidParam("%s must be between 0 and %d in key of session %s", name, int64(maxInt), sessionID)
	}
	return n, nil
}

// objectOf decodes a JSON object whose members are kept raw.
func objectOf(raw json.RawMessage, what string) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, mxhttp.BadJSON("%s must be an object", what)
	}
	return m, nil
}

// requireObject checks a required object field and returns it compacted.
func requireObject(name string, raw json.RawMessage) (json.RawMessage, error) {
	if raw == nil {
		return nil, mxhttp.MissingParam("Missing %s", name)
	}
	return compactObject(raw, name)
}

func compactObject(raw json.RawMessage, what string) (json.RawMessage, error) {
	if _, err := objectOf(raw, what); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, mxhttp.BadJSON("%s must be an object", what)
	}
	return b.Bytes(), nil
}

func checkAlgorithm(alg *string) error {
	switch {
	case alg == nil:
		return mxhttp.MissingParam("Missing algorithm")
	case *alg == "" || len(*alg) > maxIDLen:
		return mxhttp.InvalidParam("algorithm must be 1 to %d bytes", maxIDLen)
	}
	return nil
}

func checkScope(s Scope) error {
	if s.Level >= OneRoom {
		if err := checkRoomID(s.RoomID); err != nil {
			return err
		}
	}
	if s.Level == OneSession {
		return checkSessionID(s.SessionID)
	}
	return nil
}

func checkRoomID(roomID string) error {
	if len(roomID) > maxIDLen || !roomIDRe.MatchString(roomID) {
		return mxhttp.InvalidParam("%q is not a valid room ID", roomID)
	}
	return nil
}

func checkSessionID(sessionID string) error {
	if sessionID == "" || len(sessionID) > maxIDLen {
		return mxhttp.InvalidParam("Session IDs must be 1 to %d bytes", maxIDLen)
	}
	return nil
}

// parseVersion reads a version string. Versions this server hands out are
// positive decimal integers, so anything else names no version: 404.
func parseVersion(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || strconv.FormatInt(n, 10) != s {
		return 0, unknownVersion()
	}
	return n, nil
}

func formatVersion(v int64) string { return strconv.FormatInt(v, 10) }

func info(v Version) VersionInfo {
	return VersionInfo{
		Algorithm: v.Algorithm, AuthData: v.AuthData, Count: v.Count,
		ETag: strconv.FormatInt(v.ETag, 10), Version: formatVersion(v.Version),
	}
}

func result(c Counts) UpdateResult {
	return UpdateResult{ETag: strconv.FormatInt(c.ETag, 10), Count: c.Count}
}

func keyData(k Key) KeyData {
	return KeyData{
		FirstMessageIndex: k.FirstMessageIndex, ForwardedCount: k.ForwardedCount,
		IsVerified: k.IsVerified, SessionData: k.SessionData,
	}
}

func unknownVersion() error { return mxhttp.NotFound("Unknown backup version") }

// wrongVersion is the 403 of an upload into a version that is not the
// current one; current_version tells the client where to upload instead.
func wrongVersion(current int64) error {
	e := &mxhttp.Error{Status: http.StatusForbidden, Code: "M_WRONG_ROOM_KEYS_VERSION", Message: "Wrong backup version"}
	return e.With("current_version", formatVersion(current))
}
