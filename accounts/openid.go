package accounts

import (
	"context"
	"errors"
	"time"

	"homeserver/mxhttp"
)

// OpenIDTokenLifetime is how long an OpenID token stays valid, as in
// Synapse.
const OpenIDTokenLifetime = time.Hour

// OpenIDToken is a token a user hands to another service, which exchanges
// it for the user's ID through the federation API's userinfo.
type OpenIDToken struct {
	AccessToken string
	ExpiresIn   time.Duration
}

// RequestOpenIDToken issues an OpenID token for the requester, who may ask
// for their own only.
func (s *Service) RequestOpenIDToken(ctx context.Context, r *Requester, userID string) (OpenIDToken, error) {
	if userID != r.UserID {
		return OpenIDToken{}, mxhttp.Forbidden("Cannot request tokens for other users")
	}
	if r.IsGuest {
		return OpenIDToken{}, mxhttp.GuestAccessForbidden("Guests cannot request OpenID tokens")
	}
	now := s.nowMS()
	// Expired tokens go as new ones come, so that the table stays small.
	if err := s.store.DeleteOpenIDTokensBefore(ctx, now); err != nil {
		return OpenIDToken{}, err
	}
	token, hash := NewToken()
	if err := s.store.CreateOpenIDToken(ctx, hash, userID, now+OpenIDTokenLifetime.Milliseconds()); err != nil {
		return OpenIDToken{}, err
	}
	return OpenIDToken{AccessToken: token, ExpiresIn: OpenIDTokenLifetime}, nil
}

// OpenIDUser returns the user who requested an OpenID token that is still
// valid, "" when the token is unknown, expired, or its user deactivated.
func (s *Service) OpenIDUser(ctx context.Context, token string) (string, error) {
	if token == "" {
		return "", nil
	}
	userID, err := s.store.OpenIDTokenUser(ctx, HashToken(token), s.nowMS())
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	acc, err := s.store.GetAccount(ctx, userID)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if acc.Deactivated {
		return "", nil
	}
	return userID, nil
}
