package accounts

import (
	"context"
	"errors"
	"net/http"

	"homeserver/mxhttp"
)

// UserLocked is the answer to every request of a locked account but
// logging out: soft_logout, because the session stays valid and resumes
// once the account is unlocked.
func UserLocked() *mxhttp.Error {
	e := &mxhttp.Error{Status: http.StatusUnauthorized, Code: "M_USER_LOCKED", Message: "This account has been locked"}
	return e.With("soft_logout", true)
}

// UserSuspended is the answer to what a suspended account may not do.
func UserSuspended() *mxhttp.Error {
	return &mxhttp.Error{Status: http.StatusForbidden, Code: "M_USER_SUSPENDED", Message: "You cannot perform this action while suspended"}
}

// moderationTarget checks that by may see or (when change) set the
// moderation state of userID, and returns the account. Authorisation comes
// first, so that no one but an admin learns which accounts exist.
func (s *Service) moderationTarget(ctx context.Context, by *Requester, userID string, change bool) (Account, error) {
	if !by.IsAdmin {
		return Account{}, mxhttp.Forbidden("Requesting user is not a server administrator")
	}
	if !s.IsLocal(userID) {
		return Account{}, mxhttp.InvalidParam("User does not belong to the local server")
	}
	if change && userID == by.UserID {
		return Account{}, mxhttp.Forbidden("You cannot change the moderation state of your own account")
	}
	acc, err := s.store.GetAccount(ctx, userID)
	if errors.Is(err, ErrNotFound) || (err == nil && acc.Deactivated) {
		return Account{}, mxhttp.NotFound("User not found")
	}
	if err != nil {
		return Account{}, err
	}
	if acc.IsAdmin && userID != by.UserID {
		return Account{}, mxhttp.Forbidden("The target user is a server administrator")
	}
	return acc, nil
}

// Suspended reports whether the local account userID is suspended, for the
// server admin by.
func (s *Service) Suspended(ctx context.Context, by *Requester, userID string) (bool, error) {
	acc, err := s.moderationTarget(ctx, by, userID, false)
	return acc.Suspended, err
}

// SetSuspended suspends or unsuspends the local account userID on behalf of
// the server admin by.
func (s *Service) SetSuspended(ctx context.Context, by *Requester, userID string, suspended bool) error {
	if _, err := s.moderationTarget(ctx, by, userID, true); err != nil {
		return err
	}
	s.log.Info("setting account suspension", "user_id", userID, "suspended", suspended, "by", by.UserID)
	return s.store.SetSuspended(ctx, userID, suspended)
}

// Locked reports whether the local account userID is locked, for the
// server admin by.
func (s *Service) Locked(ctx context.Context, by *Requester, userID string) (bool, error) {
	acc, err := s.moderationTarget(ctx, by, userID, false)
	return acc.Locked, err
}

// SetLocked locks or unlocks the local account userID on behalf of the
// server admin by. Its sessions are kept, as the spec asks, so that they
// resume when it is unlocked.
func (s *Service) SetLocked(ctx context.Context, by *Requester, userID string, locked bool) error {
	if _, err := s.moderationTarget(ctx, by, userID, true); err != nil {
		return err
	}
	s.log.Info("setting account lock", "user_id", userID, "locked", locked, "by", by.UserID)
	return s.store.SetLocked(ctx, userID, locked)
}
