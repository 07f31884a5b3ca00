package config

import (
	"fmt"
	"net/url"
	"strings"
)

// validateSupportAndTurn checks the keys of /.well-known/matrix/support and
// of the TURN servers, so that neither serves a document the spec forbids.
func (c *Config) validateSupportAndTurn(d *decoder) error {
	for i, sc := range c.SupportContacts {
		key := fmt.Sprintf("support_contacts[%d]", i)
		if sc.Role == "" {
			return d.errorf(key+".role", "required (m.role.admin, m.role.security or a namespaced role)")
		}
		if sc.MatrixID == "" && sc.EmailAddress == "" {
			return d.errorf(key, "needs matrix_id or email_address")
		}
		if sc.MatrixID != "" && (!strings.HasPrefix(sc.MatrixID, "@") || !strings.Contains(sc.MatrixID, ":")) {
			return d.errorf(key+".matrix_id", "invalid user ID %q", sc.MatrixID)
		}
	}
	if c.SupportPage != "" {
		if u, err := url.Parse(c.SupportPage); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return d.errorf("support_page", "invalid URL %q (want http:// or https:// and a host)", c.SupportPage)
		}
	}
	if c.TurnUserLifetime <= 0 {
		return d.errorf("turn_user_lifetime", "must be more than 0")
	}
	return nil
}
