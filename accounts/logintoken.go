package accounts

import (
	"context"
	"errors"
	"time"

	"homeserver/mxhttp"
)

// IssueLoginToken issues a single-use m.login.token token with which a new
// client logs in as userID until lifetime has passed (/login/get_token).
func (s *Service) IssueLoginToken(ctx context.Context, userID string, lifetime time.Duration) (string, error) {
	token, hash := NewToken()
	now := s.nowMS()
	if err := s.store.CreateLoginToken(ctx, hash, userID, now+lifetime.Milliseconds(), now); err != nil {
		return "", err
	}
	return token, nil
}

// LoginWithToken spends a login token and starts a session for its user.
// Unknown, spent and expired tokens are refused alike, as in Synapse.
func (s *Service) LoginWithToken(ctx context.Context, token, deviceID, displayName, ip string, refresh bool) (Credentials, error) {
	userID, err := s.store.ConsumeLoginToken(ctx, HashToken(token), s.nowMS())
	if errors.Is(err, ErrNotFound) {
		return Credentials{}, mxhttp.Forbidden("Invalid login token")
	}
	if err != nil {
		return Credentials{}, err
	}
	acc, err := s.store.GetAccount(ctx, userID)
	if err != nil {
		return Credentials{}, err
	}
	if acc.Deactivated {
		return Credentials{}, mxhttp.UserDeactivated()
	}
	return s.StartSession(ctx, userID, deviceID, displayName, ip, refresh)
}
