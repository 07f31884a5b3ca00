package accounts

import (
	"context"
	"errors"
	"fmt"

	"homeserver/mxhttp"
)

// UserTypes are the user types an admin may give (Synapse's bot and support
// users).
var UserTypes = []string{"bot", "support"}

// RateOverride replaces rc_message for one user, as Synapse's
// override_ratelimit does; MessagesPerSecond 0 means no limit at all.
type RateOverride struct {
	MessagesPerSecond int64
	BurstCount        int64
}

// errUserNotFound is the admin API's answer for an unknown local user.
func errUserNotFound() error { return mxhttp.NotFound("User not found") }

// existing returns the local account userID, or 404.
func (s *Service) existing(ctx context.Context, userID string) (Account, error) {
	acc, err := s.store.GetAccount(ctx, userID)
	if errors.Is(err, ErrNotFound) {
		return acc, errUserNotFound()
	}
	return acc, err
}

// ValidUserType checks a user type given by an admin.
func ValidUserType(t string) error {
	for _, ok := range UserTypes {
		if t == ok {
			return nil
		}
	}
	return mxhttp.Unknown("Invalid user type")
}

// SetUserType sets (nil: clears) the type of an existing local user.
func (s *Service) SetUserType(ctx context.Context, userID string, userType *string) error {
	if userType != nil {
		if err := ValidUserType(*userType); err != nil {
			return err
		}
	}
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	return s.store.SetUserType(ctx, userID, userType)
}

// SetAdminBy grants or revokes server admin on behalf of the admin by, who
// may not demote themselves (the server could lose its last admin).
func (s *Service) SetAdminBy(ctx context.Context, by *Requester, userID string, admin bool) error {
	acc, err := s.existing(ctx, userID)
	if err != nil {
		return err
	}
	if acc.IsAdmin == admin {
		return nil
	}
	if userID == by.UserID && !admin {
		return mxhttp.Unknown("You may not demote yourself.")
	}
	s.log.Info("setting server admin", "user_id", userID, "admin", admin, "by", by.UserID)
	return s.store.SetAdmin(ctx, userID, admin)
}

// SetShadowBanned shadow-bans an existing local user, or lifts the ban: the
// client API then answers their room sends and invites without acting on
// them.
func (s *Service) SetShadowBanned(ctx context.Context, userID string, banned bool) error {
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	s.log.Info("setting shadow ban", "user_id", userID, "shadow_banned", banned)
	return s.store.SetShadowBanned(ctx, userID, banned)
}

// DeactivateErase deactivates an existing local user and, when erase,
// marks them erased (GDPR): Deactivate already removes the profile.
func (s *Service) DeactivateErase(ctx context.Context, userID string, erase bool) error {
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	if err := s.Deactivate(ctx, userID); err != nil {
		return err
	}
	if erase {
		return s.store.SetErased(ctx, userID, true)
	}
	return nil
}

// Reactivate undoes the deactivation of an existing local user, who is no
// longer erased either; the account has no password until one is set.
func (s *Service) Reactivate(ctx context.Context, userID string) error {
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	s.log.Info("reactivating user", "user_id", userID)
	return s.store.Reactivate(ctx, userID)
}

// RateOverrideOf returns the user's override of rc_message, and whether
// there is one.
func (s *Service) RateOverrideOf(ctx context.Context, userID string) (RateOverride, bool, error) {
	if _, err := s.existing(ctx, userID); err != nil {
		return RateOverride{}, false, err
	}
	o, err := s.store.RateOverride(ctx, userID)
	if errors.Is(err, ErrNotFound) {
		return o, false, nil
	}
	return o, err == nil, err
}

// SetRateOverride replaces rc_message for an existing local user.
func (s *Service) SetRateOverride(ctx context.Context, userID string, o RateOverride) error {
	if o.MessagesPerSecond < 0 || o.BurstCount < 0 {
		return mxhttp.InvalidParam("Rate limits must be positive integers")
	}
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	return s.store.SetRateOverride(ctx, userID, o)
}

// DeleteRateOverride puts an existing local user back under rc_message.
func (s *Service) DeleteRateOverride(ctx context.Context, userID string) error {
	if _, err := s.existing(ctx, userID); err != nil {
		return err
	}
	return s.store.DeleteRateOverride(ctx, userID)
}

// LoginAs starts a session of userID for the admin by, on a new device of
// the user, with an access token that expires at validUntilMS (0: never).
// An admin may not make themselves tokens this way.
func (s *Service) LoginAs(ctx context.Context, by *Requester, userID string, validUntilMS int64) (string, error) {
	if userID == by.UserID {
		return "", mxhttp.Unknown("Cannot use admin API to login as self")
	}
	acc, err := s.existing(ctx, userID)
	if err != nil {
		return "", err
	}
	if acc.Deactivated {
		return "", mxhttp.UserDeactivated()
	}
	d, t, c, err := s.newSession(userID, "", "", "", false, s.nowMS())
	if err != nil {
		return "", err
	}
	t.ExpiresTS = validUntilMS
	if err := s.store.IssueDevice(ctx, d, t); err != nil {
		return "", fmt.Errorf("accounts: login as %s: %w", userID, err)
	}
	s.log.Info("admin logged in as user", "user_id", userID, "by", by.UserID, "device_id", d.DeviceID)
	return c.AccessToken, nil
}

// Whois describes a user's sessions: one per device, each with the one
// connection the server remembers (its last request).
type Whois struct {
	UserID  string                 `json:"user_id"`
	Devices map[string]WhoisDevice `json:"devices"`
}

// WhoisDevice is one device of a Whois.
type WhoisDevice struct {
	Sessions []WhoisSession `json:"sessions"`
}

// WhoisSession is one session of a WhoisDevice.
type WhoisSession struct {
	Connections []WhoisConnection `json:"connections"`
}

// WhoisConnection is where and when a session was last seen.
type WhoisConnection struct {
	IP       string `json:"ip,omitempty"`
	LastSeen int64  `json:"last_seen"`
}

// Whois answers /admin/whois for a local user; as in Synapse, an unknown
// one has no devices.
func (s *Service) Whois(ctx context.Context, userID string) (Whois, error) {
	devs, err := s.store.ListDevices(ctx, userID)
	if err != nil {
		return Whois{}, err
	}
	out := Whois{UserID: userID, Devices: make(map[string]WhoisDevice, len(devs))}
	for _, d := range devs {
		conns := []WhoisConnection{}
		if d.LastSeenTS > 0 {
			conns = append(conns, WhoisConnection{IP: d.LastSeenIP, LastSeen: d.LastSeenTS})
		}
		out.Devices[d.DeviceID] = WhoisDevice{Sessions: []WhoisSession{{Connections: conns}}}
	}
	return out, nil
}
