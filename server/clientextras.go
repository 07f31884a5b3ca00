package server

import (
	"strings"
	"time"

	"homeserver/clientapi"
	"homeserver/config"
)

// turnConfig is what GET /voip/turnServer hands out.
func turnConfig(cfg *config.Config) clientapi.TurnConfig {
	return clientapi.TurnConfig{
		URIs:         cfg.TurnURIs,
		SharedSecret: cfg.TurnSharedSecret,
		Username:     cfg.TurnUsername,
		Password:     cfg.TurnPassword,
		UserLifetime: time.Duration(cfg.TurnUserLifetime),
		AllowGuests:  cfg.TurnAllowGuests,
	}
}

// supportInfo is /.well-known/matrix/support, nil when nothing is
// configured: Synapse's admin_contact becomes an m.role.admin contact.
func supportInfo(cfg *config.Config) *clientapi.Support {
	var s clientapi.Support
	if cfg.AdminContact != "" {
		s.Contacts = append(s.Contacts, clientapi.SupportContact{
			EmailAddress: strings.TrimPrefix(cfg.AdminContact, "mailto:"),
			Role:         "m.role.admin",
		})
	}
	for _, c := range cfg.SupportContacts {
		s.Contacts = append(s.Contacts, clientapi.SupportContact{MatrixID: c.MatrixID, EmailAddress: c.EmailAddress, Role: c.Role})
	}
	s.Page = cfg.SupportPage
	if len(s.Contacts) == 0 && s.Page == "" {
		return nil
	}
	return &s
}
