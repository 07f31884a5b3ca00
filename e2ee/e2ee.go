// Package e2ee stores and serves the public keys of end-to-end encryption:
// device identity keys, one-time and fallback keys, cross-signing keys and
// the signatures users make with them. It keeps the device-list stream, one
// position per change of a user's devices or keys that other users' clients
// must learn of, and the one-time-key stream read by application services.
// The server never sees a private key or a plaintext; it checks the
// signatures it can check and hands out each one-time key exactly once.
package e2ee

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
)

// Limits on what one upload may carry.
const (
	// MaxKeysPerUpload bounds the one-time keys of one /keys/upload.
	MaxKeysPerUpload = 1000
	// MaxQueryUsers bounds the users of one /keys/query or /keys/claim.
	MaxQueryUsers = 10000
	// maxKeyObject bounds one key object.
	maxKeyObject = 16 << 10
)

// Cross-signing key types, as the usage field and the database name them.
const (
	Master      = "master"
	SelfSigning = "self_signing"
	UserSigning = "user_signing"
)

// Errors of the store.
var (
	ErrNotFound = errors.New("e2ee: not found")
)

// DeviceKeys is the signed identity-keys object of one device.
type DeviceKeys struct {
	UserID, DeviceID string
	// JSON is the object as uploaded, in canonical form, without unsigned.
	JSON        json.RawMessage
	DisplayName string
}

// Key is a one-time or fallback key: "<algorithm>:<key_id>" and its value
// (a string for unsigned algorithms, a signed object otherwise).
type Key struct {
	Algorithm, KeyID string
	JSON             json.RawMessage
}

// CrossSigningKey is one of a user's cross-signing keys.
type CrossSigningKey struct {
	UserID    string
	Type      string // Master, SelfSigning or UserSigning
	PublicKey string
	JSON      json.RawMessage
}

// Signature is one signature stored apart from the object it signs.
type Signature struct {
	TargetUser, TargetKey   string
	SignerUser, SignerKeyID string
	Signature               string
}

// Upload is what one /keys/upload writes.
type Upload struct {
	UserID, DeviceID string
	// DeviceKeys, when set, is stored; DeviceKeysChanged records a change
	// in the device-list stream.
	DeviceKeys        json.RawMessage
	DeviceKeysChanged bool
	OneTimeKeys       []Key
	FallbackKeys      []Key
	Now               int64
}

// Claimed is one key handed out by a claim.
type Claimed struct {
	UserID, DeviceID string
	Key              Key
}

// Counts are a device's unclaimed one-time keys per algorithm and the
// algorithms of its unused fallback keys.
type Counts struct {
	OneTimeKeys  map[string]int
	FallbackKeys []string
}

// DeviceRef names a device.
type DeviceRef struct{ UserID, DeviceID string }

// Store is the persistence of keys; storage implements it.
type Store interface {
	// UploadKeys stores an upload in one transaction (one-time keys whose
	// IDs exist already are left as they are) and returns the device's
	// one-time key counts after it.
	UploadKeys(ctx context.Context, u Upload) (map[string]int, error)
	// OneTimeKeysByID returns the stored one-time keys of the device among
	// the given "<algorithm>:<key_id>" names.
	OneTimeKeysByID(ctx context.Context, userID, deviceID string, names []string) (map[string]json.RawMessage, error)
	// DeviceKeys returns the keys of the user's devices (all with keys when
	// deviceIDs is empty).
	DeviceKeys(ctx context.Context, userID string, deviceIDs []string) ([]DeviceKeys, error)
	// ClaimKeys takes, atomically, for each wanted device one one-time key
	// of the algorithm (the oldest upload first) or else its fallback key,
	// marking the fallback key used. Devices with neither are left out.
	ClaimKeys(ctx context.Context, want []ClaimRequest) ([]Claimed, error)
	KeyCounts(ctx context.Context, userID, deviceID string) (Counts, error)

	CrossSigningKeys(ctx context.Context, userID string) (map[string]CrossSigningKey, error)
	// PutCrossSigningKeys stores the keys and records the change in the
	// device-list stream, in one transaction.
	PutCrossSigningKeys(ctx context.Context, userID string, keys []CrossSigningKey) error
	// Signatures returns the stored signatures of the given targets of a user.
	Signatures(ctx context.Context, targetUser string, targetKeys []string) ([]Signature, error)
	// PutSignatures stores signatures and records a change in the
	// device-list stream for each of changed, in one transaction.
	PutSignatures(ctx context.Context, sigs []Signature, changed []string) error

	// DeviceListMaxPos is the newest position of the device-list stream.
	DeviceListMaxPos(ctx context.Context) (int64, error)
	// DeviceListChanges returns the users with changes in (from, to].
	DeviceListChanges(ctx context.Context, from, to int64) ([]string, error)
	// OTKMaxPos is the newest position of the one-time-key stream.
	OTKMaxPos(ctx context.Context) (int64, error)
	// OTKChanges returns the devices whose one-time or fallback keys
	// changed in (from, to].
	OTKChanges(ctx context.Context, from, to int64) ([]DeviceRef, error)
	// DeviceIDs lists a user's devices (with or without keys).
	DeviceIDs(ctx context.Context, userID string) ([]string, error)
	// RecordDeviceListChange records a change of a user's devices or keys
	// in the device-list stream (another server's user: their server
	// said so).
	RecordDeviceListChange(ctx context.Context, userID string) error
}

// ClaimRequest asks for one key of a device.
type ClaimRequest struct {
	UserID, DeviceID, Algorithm string
}

// Config of the service.
type Config struct {
	ServerName string
	Logger     *slog.Logger
}

// Service owns the key logic.
type Service struct {
	store  Store
	server string
	log    *slog.Logger
	// remote reaches other servers' users' keys; nil without federation.
	remote Remote
	// onDeviceList is told of each user whose device list changed, after
	// the change committed; onKeys of each device whose one-time keys did.
	onDeviceList []func(userID string)
	onKeys       []func(ref DeviceRef)
}

// New returns the service.
func New(store Store, c Config) *Service {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return &Service{store: store, server: c.ServerName, log: c.Logger}
}

// OnDeviceListChange registers fn to run after a user's devices or keys
// changed (to wake the syncs of those who share a room). Call before serving.
func (s *Service) OnDeviceListChange(fn func(userID string)) {
	s.onDeviceList = append(s.onDeviceList, fn)
}

// OnKeysChange registers fn to run after a device's one-time or fallback
// keys changed. Call before serving.
func (s *Service) OnKeysChange(fn func(DeviceRef)) { s.onKeys = append(s.onKeys, fn) }

// DeviceListChanged announces a change committed elsewhere (a device was
// deleted or renamed by the accounts service).
func (s *Service) DeviceListChanged(userID string) {
	for _, fn := range s.onDeviceList {
		fn(userID)
	}
}

func (s *Service) keysChanged(ref DeviceRef) {
	for _, fn := range s.onKeys {
		fn(ref)
	}
}

// IsLocal reports whether the user belongs to this server.
func (s *Service) IsLocal(userID string) bool { return strings.HasSuffix(userID, ":"+s.server) }

// DeviceListMaxPos is the current position of the device-list stream.
func (s *Service) DeviceListMaxPos(ctx context.Context) (int64, error) {
	return s.store.DeviceListMaxPos(ctx)
}

// DeviceListChanges returns the users whose devices or keys changed in
// (from, to] of the device-list stream.
func (s *Service) DeviceListChanges(ctx context.Context, from, to int64) ([]string, error) {
	if to <= from {
		return nil, nil
	}
	return s.store.DeviceListChanges(ctx, from, to)
}

// OTKMaxPos is the current position of the one-time-key stream.
func (s *Service) OTKMaxPos(ctx context.Context) (int64, error) { return s.store.OTKMaxPos(ctx) }

// OTKChanges returns the devices whose key counts changed in (from, to].
func (s *Service) OTKChanges(ctx context.Context, from, to int64) ([]DeviceRef, error) {
	if to <= from {
		return nil, nil
	}
	return s.store.OTKChanges(ctx, from, to)
}

// Counts returns a device's one-time key counts and unused fallback key
// algorithms, as /sync reports them.
func (s *Service) Counts(ctx context.Context, userID, deviceID string) (Counts, error) {
	c, err := s.store.KeyCounts(ctx, userID, deviceID)
	if err != nil {
		return Counts{}, err
	}
	if c.OneTimeKeys == nil {
		c.OneTimeKeys = map[string]int{}
	}
	// Clients written before counts could be omitted read a missing
	// signed_curve25519 as "unchanged"; zero says "upload more".
	if _, ok := c.OneTimeKeys["signed_curve25519"]; !ok {
		c.OneTimeKeys["signed_curve25519"] = 0
	}
	if c.FallbackKeys == nil {
		c.FallbackKeys = []string{}
	}
	return c, nil
}
