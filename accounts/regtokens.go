package accounts

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"homeserver/mxhttp"
)

// Registration tokens (m.login.registration_token) come from two places:
// the static list of the configuration, good for ever, and the database,
// managed through the admin API with a number of uses and an expiry, as
// in Synapse.

// RegistrationToken is a token of the database, as the admin API shows it.
type RegistrationToken struct {
	Token string `json:"token"`
	// UsesAllowed nil is unlimited.
	UsesAllowed *int64 `json:"uses_allowed"`
	// Pending counts the live UIA sessions that passed the stage with the
	// token and have not registered yet.
	Pending   int64 `json:"pending"`
	Completed int64 `json:"completed"`
	// ExpiryTime (ms since the epoch) nil is never.
	ExpiryTime *int64 `json:"expiry_time"`
}

// Valid reports whether the token may still be used at now.
func (t RegistrationToken) Valid(now int64) bool {
	if t.ExpiryTime != nil && *t.ExpiryTime <= now {
		return false
	}
	return t.UsesAllowed == nil || t.Pending+t.Completed < *t.UsesAllowed
}

// RegistrationTokenUpdate changes the fields whose Set flag is true (to
// nil: unlimited, or never).
type RegistrationTokenUpdate struct {
	SetUsesAllowed bool
	UsesAllowed    *int64
	SetExpiryTime  bool
	ExpiryTime     *int64
}

// NewRegistrationToken is the admin's request for a token: Token, or one
// of Length random characters.
type NewRegistrationToken struct {
	Token       string
	Length      int
	UsesAllowed *int64
	ExpiryTime  *int64
}

// ErrTokenExists is returned by CreateRegistrationToken for a token
// already stored.
var ErrTokenExists = errors.New("accounts: registration token exists")

// RegistrationTokenStore holds the database's registration tokens. Pending
// uses are the UIA sessions holding a token created at or after
// pendingSince (older ones have expired).
type RegistrationTokenStore interface {
	// CreateRegistrationToken fails with ErrTokenExists for a stored token.
	CreateRegistrationToken(ctx context.Context, t RegistrationToken) error
	GetRegistrationToken(ctx context.Context, token string, pendingSince int64) (RegistrationToken, error)
	ListRegistrationTokens(ctx context.Context, pendingSince int64) ([]RegistrationToken, error)
	UpdateRegistrationToken(ctx context.Context, token string, u RegistrationTokenUpdate) error
	DeleteRegistrationToken(ctx context.Context, token string) error
	// HoldRegistrationToken records in the UIA session that it passed the
	// stage with token, if the token is valid at now counting the
	// session's own use; it reports whether it did. Checking and holding
	// are one transaction, so that concurrent sessions cannot together
	// exceed uses_allowed.
	HoldRegistrationToken(ctx context.Context, sessionID, token string, now, pendingSince int64) (bool, error)
	// FinishRegistrationSession deletes a UIA session and counts the use
	// of the token it held, if any, as completed.
	FinishRegistrationSession(ctx context.Context, sessionID string) error
}

// Limits of registration tokens (the spec's for the stage, Synapse's for
// generated ones).
const (
	MaxRegistrationTokenLength     = 64
	DefaultRegistrationTokenLength = 16
	registrationTokenAlphabet      = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"
)

// ValidRegistrationTokenSyntax reports whether t is 1 to 64 characters of
// [A-Za-z0-9._~-].
func ValidRegistrationTokenSyntax(t string) bool {
	if t == "" || len(t) > MaxRegistrationTokenLength {
		return false
	}
	for _, r := range t {
		if !strings.ContainsRune(registrationTokenAlphabet, r) {
			return false
		}
	}
	return true
}

func (s *Service) pendingSince() int64 { return s.nowMS() - uiaLifetime.Milliseconds() }

// RegistrationTokens lists the database's tokens: all of them (valid nil),
// or only the valid or the invalid ones.
func (s *Service) RegistrationTokens(ctx context.Context, valid *bool) ([]RegistrationToken, error) {
	all, err := s.store.ListRegistrationTokens(ctx, s.pendingSince())
	if err != nil {
		return nil, err
	}
	if valid == nil {
		return all, nil
	}
	now := s.nowMS()
	out := make([]RegistrationToken, 0, len(all))
	for _, t := range all {
		if t.Valid(now) == *valid {
			out = append(out, t)
		}
	}
	return out, nil
}

// RegistrationToken returns one token, or 404.
func (s *Service) RegistrationToken(ctx context.Context, token string) (RegistrationToken, error) {
	if !ValidRegistrationTokenSyntax(token) {
		return RegistrationToken{}, mxhttp.NotFound("No such registration token: %s", token)
	}
	t, err := s.store.GetRegistrationToken(ctx, token, s.pendingSince())
	if errors.Is(err, ErrNotFound) {
		return t, mxhttp.NotFound("No such registration token: %s", token)
	}
	return t, err
}

// CreateRegistrationToken stores a new token, generating it when none is
// given, and returns it.
func (s *Service) CreateRegistrationToken(ctx context.Context, req NewRegistrationToken) (RegistrationToken, error) {
	if err := s.checkTokenLimits(req.UsesAllowed, req.ExpiryTime); err != nil {
		return RegistrationToken{}, err
	}
	t := RegistrationToken{Token: req.Token, UsesAllowed: req.UsesAllowed, ExpiryTime: req.ExpiryTime}
	if t.Token != "" {
		if !ValidRegistrationTokenSyntax(t.Token) {
			return t, mxhttp.InvalidParam("token must be 1 to %d characters from [A-Za-z0-9._~-]", MaxRegistrationTokenLength)
		}
		if err := s.store.CreateRegistrationToken(ctx, t); errors.Is(err, ErrTokenExists) {
			return t, mxhttp.InvalidParam("Token already in use: %s", t.Token)
		} else if err != nil {
			return t, err
		}
		return t, nil
	}
	if req.Length == 0 {
		req.Length = DefaultRegistrationTokenLength
	}
	if req.Length < 0 || req.Length > MaxRegistrationTokenLength {
		return t, mxhttp.InvalidParam("length must be an integer > 0 and <= %d", MaxRegistrationTokenLength)
	}
	// A short generated token may collide with a stored one: draw again.
	for range 10 {
		t.Token = RandomString(req.Length, registrationTokenAlphabet)
		err := s.store.CreateRegistrationToken(ctx, t)
		if err == nil {
			return t, nil
		}
		if !errors.Is(err, ErrTokenExists) {
			return t, err
		}
	}
	return t, mxhttp.Unknown("Could not generate an unused token of length %d", req.Length)
}

// UpdateRegistrationToken changes a token's uses or expiry and returns it.
func (s *Service) UpdateRegistrationToken(ctx context.Context, token string, u RegistrationTokenUpdate) (RegistrationToken, error) {
	if err := s.checkTokenLimits(u.UsesAllowed, u.ExpiryTime); err != nil {
		return RegistrationToken{}, err
	}
	if (u.SetUsesAllowed || u.SetExpiryTime) && ValidRegistrationTokenSyntax(token) {
		err := s.store.UpdateRegistrationToken(ctx, token, u)
		if errors.Is(err, ErrNotFound) {
			return RegistrationToken{}, mxhttp.NotFound("No such registration token: %s", token)
		}
		if err != nil {
			return RegistrationToken{}, err
		}
	}
	return s.RegistrationToken(ctx, token)
}

// DeleteRegistrationToken deletes a token; sessions that hold it may still
// finish their registration.
func (s *Service) DeleteRegistrationToken(ctx context.Context, token string) error {
	if !ValidRegistrationTokenSyntax(token) {
		return mxhttp.NotFound("No such registration token: %s", token)
	}
	err := s.store.DeleteRegistrationToken(ctx, token)
	if errors.Is(err, ErrNotFound) {
		return mxhttp.NotFound("No such registration token: %s", token)
	}
	return err
}

func (s *Service) checkTokenLimits(usesAllowed, expiryTime *int64) error {
	if usesAllowed != nil && *usesAllowed < 0 {
		return mxhttp.InvalidParam("uses_allowed must be a non-negative integer or null")
	}
	if expiryTime != nil && *expiryTime < s.nowMS() {
		return mxhttp.InvalidParam("expiry_time must not be in the past")
	}
	return nil
}

// RegistrationTokenValid answers the /validity endpoint: whether token is
// one of the static tokens, or a stored one still valid.
func (s *Service) RegistrationTokenValid(ctx context.Context, static []string, token string) (bool, error) {
	if ValidRegistrationToken(static, token) {
		return true, nil
	}
	// No stored token is spelt otherwise, and the database is not asked
	// about bytes it may not even take.
	if !ValidRegistrationTokenSyntax(token) {
		return false, nil
	}
	t, err := s.store.GetRegistrationToken(ctx, token, s.pendingSince())
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("accounts: registration token: %w", err)
	}
	return t.Valid(s.nowMS()), nil
}

// FinishRegistration ends the UIA session of a registration that
// succeeded (see CheckRegistrationUIA), counting its token's use.
func (s *Service) FinishRegistration(ctx context.Context, sessionID string) error {
	if sessionID == "" {
		return nil
	}
	return s.store.FinishRegistrationSession(ctx, sessionID)
}
