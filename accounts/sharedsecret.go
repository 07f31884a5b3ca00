package accounts

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"time"

	"homeserver/mxhttp"
)

const (
	// nonceLifetime is how long a shared-secret registration nonce stays
	// valid, as in Synapse.
	nonceLifetime = 60 * time.Second
	// maxNonces bounds the live nonces, which anyone may ask for: beyond
	// it the oldest are forgotten.
	maxNonces = 1000
)

// SharedSecretNonce issues a nonce for POST /_synapse/admin/v1/register,
// refusing as that endpoint does when shared-secret registration is off.
func (s *Service) SharedSecretNonce(ctx context.Context, secret string) (string, error) {
	if secret == "" {
		return "", mxhttp.Unknown("Shared secret registration is not enabled")
	}
	b := make([]byte, 64)
	_, _ = rand.Read(b)
	nonce := hex.EncodeToString(b)
	now := s.nowMS()
	return nonce, s.store.CreateNonce(ctx, nonce, now, now-nonceLifetime.Milliseconds(), maxNonces)
}

// SharedSecretRequest is the body of Synapse's admin registration API.
type SharedSecretRequest struct {
	Nonce        *string `json:"nonce"`
	Username     *string `json:"username"`
	Password     *string `json:"password"`
	Displayname  string  `json:"displayname"`
	Admin        bool    `json:"admin"`
	UserType     *string `json:"user_type"`
	MAC          *string `json:"mac"`
	RefreshToken bool    `json:"refresh_token"`
}

// SharedSecretMAC computes the mac field: HMAC-SHA1 keyed with the shared
// secret over nonce, username, password and the admin flag (and user_type
// when given), NUL-separated, hex-encoded.
func SharedSecretMAC(secret, nonce, username, password string, admin bool, userType string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(username))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Write([]byte{0})
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if userType != "" {
		m.Write([]byte{0})
		m.Write([]byte(userType))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// SharedSecretRegister registers a user the way Synapse's
// register_new_matrix_user does, checking the nonce and the MAC.
func (s *Service) SharedSecretRegister(ctx context.Context, secret string, req SharedSecretRequest, ip string) (Credentials, error) {
	if secret == "" {
		return Credentials{}, mxhttp.Unknown("Shared secret registration is not enabled")
	}
	if req.Nonce == nil {
		return Credentials{}, mxhttp.BadJSON("nonce must be specified")
	}
	ok, err := s.store.ConsumeNonce(ctx, *req.Nonce, s.nowMS()-nonceLifetime.Milliseconds())
	if err != nil {
		return Credentials{}, err
	}
	if !ok {
		return Credentials{}, mxhttp.Unknown("unrecognised nonce")
	}
	if req.Username == nil {
		return Credentials{}, mxhttp.BadJSON("username must be specified")
	}
	if len(*req.Username) > 512 || strings.ContainsRune(*req.Username, 0) {
		return Credentials{}, mxhttp.Unknown("Invalid username")
	}
	if req.Password == nil {
		return Credentials{}, mxhttp.BadJSON("password must be specified")
	}
	if len(*req.Password) > MaxPasswordLength || strings.ContainsRune(*req.Password, 0) {
		return Credentials{}, mxhttp.Unknown("Invalid password")
	}
	userType := ""
	if req.UserType != nil {
		userType = *req.UserType
		if userType != "support" && userType != "bot" {
			return Credentials{}, mxhttp.Unknown("Invalid user type")
		}
	}
	if req.MAC == nil {
		return Credentials{}, mxhttp.BadJSON("mac must be specified")
	}
	want := SharedSecretMAC(secret, *req.Nonce, *req.Username, *req.Password, req.Admin, userType)
	if !hmac.Equal([]byte(want), []byte(*req.MAC)) {
		return Credentials{}, mxhttp.Forbidden("HMAC incorrect")
	}
	localpart := strings.ToLower(*req.Username)
	if localpart == "" {
		// Register would pick a random name; Synapse refuses instead.
		return Credentials{}, mxhttp.InvalidUsername("User ID cannot be empty")
	}
	return s.Register(ctx, RegisterRequest{
		Localpart:    localpart,
		Password:     *req.Password,
		DisplayName:  req.Displayname,
		Admin:        req.Admin,
		RefreshToken: req.RefreshToken,
		IP:           ip,
	})
}
