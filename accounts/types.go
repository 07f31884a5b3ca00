package accounts

import (
	"context"
	"encoding/json"
	"errors"
)

// Errors the store returns for the service to translate.
var (
	ErrNotFound   = errors.New("accounts: not found")
	ErrUserExists = errors.New("accounts: user exists")
)

// Account is a local user.
type Account struct {
	UserID       string
	Localpart    string
	PasswordHash string
	IsAdmin      bool
	IsGuest      bool
	Deactivated  bool
	// Suspended and Locked are the reversible moderation states of the
	// spec's account moderation.
	Suspended    bool
	Locked       bool
	AppServiceID string
	CreatedTS    int64
}

// Device is a logged-in client of a user.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName string
	CreatedTS   int64
	LastSeenTS  int64
	LastSeenIP  string
}

// Profile is a user's public profile: the two classic fields and any
// custom ones (Matrix 1.16 profile fields).
type Profile struct {
	DisplayName *string
	AvatarURL   *string
	Fields      map[string]json.RawMessage
}

// IssuedTokens are the hashes of the tokens handed to one device.
type IssuedTokens struct {
	AccessHash  string
	ExpiresTS   int64 // 0: never
	RefreshHash string
	// RefreshExpiresTS is when the refresh token dies unless exchanged
	// before; 0: never.
	RefreshExpiresTS int64
}

// TokenOwner is what an access token resolves to.
type TokenOwner struct {
	UserID      string
	DeviceID    string
	IsAdmin     bool
	IsGuest     bool
	Deactivated bool
	Suspended   bool
	Locked      bool
	// ShadowBanned and MessageRate are set by the admin API (admin.go).
	ShadowBanned bool
	MessageRate  *RateOverride
	ExpiresTS    int64
	LastSeenTS   int64
	// StaleRefresh is a replaced refresh token that dies when this token is
	// first used.
	StaleRefresh string
}

// UIASession is a user-interactive authentication session, bound to one
// request (method and path) and, for authenticated endpoints, one user.
type UIASession struct {
	ID        string
	Method    string
	Path      string
	UserID    string
	Completed []string
	CreatedTS int64
}

// Store is the persistence the accounts service needs.
type Store interface {
	RegistrationTokenStore

	CreateAccount(ctx context.Context, acc Account, displayName string, dev *Device, tok *IssuedTokens) error
	GetAccount(ctx context.Context, userID string) (Account, error)
	SetPassword(ctx context.Context, userID, hash string) error
	SetAdmin(ctx context.Context, userID string, admin bool) error
	Deactivate(ctx context.Context, userID string) error
	SetSuspended(ctx context.Context, userID string, suspended bool) error
	SetLocked(ctx context.Context, userID string, locked bool) error

	// IssueDevice creates the device (or reuses it, keeping its name when
	// none is given) and replaces all its tokens with tok.
	IssueDevice(ctx context.Context, dev Device, tok IssuedTokens) error
	// CreateDevice creates a device without tokens (for an application
	// service) and reports whether it was new.
	CreateDevice(ctx context.Context, dev Device) (bool, error)
	LookupAccessToken(ctx context.Context, hash string) (TokenOwner, error)
	DropStaleRefresh(ctx context.Context, refreshHash string) error
	// RotateRefresh replaces the tokens issued from refresh token old with
	// tok; ErrNotFound for a refresh token that is unknown or expired at now.
	RotateRefresh(ctx context.Context, oldRefreshHash string, tok IssuedTokens, now int64) (userID, deviceID string, err error)
	TouchDevice(ctx context.Context, userID, deviceID, ip string, ts int64) error
	DeleteAccessToken(ctx context.Context, hash string) error
	ListDevices(ctx context.Context, userID string) ([]Device, error)
	GetDevice(ctx context.Context, userID, deviceID string) (Device, error)
	RenameDevice(ctx context.Context, userID, deviceID, name string) error
	DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error
	// DeleteOtherDevices deletes every device of the user but keep ("" for all).
	DeleteOtherDevices(ctx context.Context, userID, keep string) error

	GetProfile(ctx context.Context, userID string) (Profile, error)
	PutProfile(ctx context.Context, userID string, p Profile) error

	// CreateUIASession stores s after deleting every session created
	// before notBefore, and then the oldest sessions of s.UserID ("" for
	// registration) beyond the newest keep.
	CreateUIASession(ctx context.Context, s UIASession, notBefore int64, keep int) error
	GetUIASession(ctx context.Context, id string) (UIASession, error)
	SetUIACompleted(ctx context.Context, id string, completed []string) error
	DeleteUIASession(ctx context.Context, id string) error

	// CreateOpenIDToken stores an OpenID token (its hash) valid until
	// expiresTS.
	CreateOpenIDToken(ctx context.Context, hash, userID string, expiresTS int64) error
	// OpenIDTokenUser returns the user of a token valid at now;
	// ErrNotFound for an unknown or expired one.
	OpenIDTokenUser(ctx context.Context, hash string, now int64) (string, error)
	DeleteOpenIDTokensBefore(ctx context.Context, ts int64) error

	// CreateLoginToken stores a login token (its hash) valid until
	// expiresTS, dropping those expired by now.
	CreateLoginToken(ctx context.Context, hash, userID string, expiresTS, now int64) error
	// ConsumeLoginToken deletes a token and returns its user; ErrNotFound
	// for an unknown or expired one.
	ConsumeLoginToken(ctx context.Context, hash string, now int64) (string, error)

	// CreateNonce stores a nonce created at ts after deleting those created
	// before notBefore, and then the oldest beyond the newest keep.
	CreateNonce(ctx context.Context, nonce string, ts, notBefore int64, keep int) error
	// ConsumeNonce deletes the nonce and reports whether it existed and was
	// created at or after notBefore.
	ConsumeNonce(ctx context.Context, nonce string, notBefore int64) (bool, error)

	// The admin API's changes to accounts (admin.go).
	SetUserType(ctx context.Context, userID string, userType *string) error
	SetShadowBanned(ctx context.Context, userID string, banned bool) error
	SetErased(ctx context.Context, userID string, erased bool) error
	// Reactivate undoes a deactivation, and the erasure that came with it.
	Reactivate(ctx context.Context, userID string) error
	// RateOverride returns the user's override of rc_message;
	// ErrNotFound when there is none.
	RateOverride(ctx context.Context, userID string) (RateOverride, error)
	SetRateOverride(ctx context.Context, userID string, o RateOverride) error
	DeleteRateOverride(ctx context.Context, userID string) error
}
