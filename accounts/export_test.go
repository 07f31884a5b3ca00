package accounts

// SetPasswordVerifier replaces the bcrypt comparison, so that tests see
// which hash each password is checked against.
func (s *Service) SetPasswordVerifier(verify func(hash, password string) bool) { s.verify = verify }

// Limits of the tables anyone may grow.
const (
	MaxUserUIASessions = maxUserUIASessions
	MaxNonces          = maxNonces
)
