package server

import (
	"context"
	"errors"
	"fmt"

	"homeserver/accounts"
	"homeserver/appservice"
	"homeserver/rooms"
)

// setUpAppServices checks the loaded registrations against the database and
// installs the namespace guards: an as_token may not be a user's access
// token, and a sender_localpart may not name a user that is not the
// service's own. A missing sender user is created, without a device, so
// that it exists without registering.
func setUpAppServices(ctx context.Context, set *appservice.Set, acc *accounts.Service, rms *rooms.Service) error {
	if len(set.Regs) == 0 {
		return nil
	}
	acc.SetUserGuard(set.CheckUser)
	rms.SetAliasGuard(set.CheckAlias)
	for _, r := range set.Regs {
		if _, err := acc.Authenticate(ctx, r.ASToken, ""); err == nil {
			return fmt.Errorf("%s: as_token: is the access token of an existing user", r.File)
		}
		sender := acc.UserID(r.SenderLocalpart)
		a, err := acc.GetAccount(ctx, sender)
		switch {
		case err == nil && a.AppServiceID != r.ID:
			return fmt.Errorf("%s: sender_localpart: %s is an existing user not registered by this application service", r.File, sender)
		case err == nil:
		case errors.Is(err, accounts.ErrNotFound):
			if _, err := acc.Register(ctx, accounts.RegisterRequest{
				Localpart: r.SenderLocalpart, AppServiceID: r.ID, InhibitLogin: true,
			}); err != nil {
				return fmt.Errorf("%s: sender_localpart: cannot create %s: %v", r.File, sender, err)
			}
		default:
			return fmt.Errorf("%s: sender_localpart: looking up %s: %w", r.File, sender, err)
		}
	}
	return nil
}

// AppServices exposes the registered application services (for tools and
// tests).
func (s *Server) AppServices() *appservice.Set { return s.appservices }
