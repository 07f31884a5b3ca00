// Package accounts owns local users: registration, passwords, access and
// refresh tokens, devices, profiles, user-interactive authentication and
// Synapse's shared-secret registration.
package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"homeserver/mxhttp"
	"homeserver/ratelimit"
)

// Limits from the spec's identifier grammar and common practice.
const (
	MaxUserIDLength   = 255
	MaxPasswordLength = 512
	MaxDeviceIDLength = 255
	MaxDisplayName    = 256
	// TouchInterval bounds how often a device's last-seen is written.
	TouchInterval = 5 * time.Minute
	// uiaLifetime is Synapse's SESSION_EXPIRE_MS.
	uiaLifetime = 48 * time.Hour
	// Anyone may open registration sessions, a user only their own: the
	// oldest beyond these counts are dropped so that the table stays bounded.
	maxRegistrationUIASessions = 10000
	maxUserUIASessions         = 20
)

// Config of the accounts service.
type Config struct {
	ServerName      string
	BcryptCost      int
	RefreshLifetime time.Duration // lifetime of access tokens that come with a refresh token
	// RefreshTokenLifetime is how long a refresh token stays usable unless
	// exchanged first (Synapse's refresh_token_lifetime); 0 is for ever.
	RefreshTokenLifetime time.Duration
	Logger               *slog.Logger
	Now                  func() time.Time
}

// Service implements the account logic over a Store.
type Service struct {
	store       Store
	server      string
	cost        int
	life        time.Duration
	refreshLife time.Duration
	log         *slog.Logger
	now         func() time.Time

	// failedPasswords counts wrong passwords per user, on every path that
	// checks one (rc_login.failed_attempts).
	failedPasswords *ratelimit.Limiter
	// dummyHash is compared against when a user has no password hash, so
	// that answering costs the same whether or not the account exists.
	dummyHash func() (string, error)
	// verify compares a password with a bcrypt hash.
	verify func(hash, password string) bool

	// userGuard vetoes new user IDs reserved by application services.
	userGuard func(userID, appServiceID string) error

	// queryUser asks application services about an unknown local user.
	queryUser func(ctx context.Context, userID string) bool

	// onDevicesChanged is told of each user whose devices were deleted or
	// renamed, after the change committed.
	onDevicesChanged []func(userID string)
}

// OnDevicesChanged registers fn to run after a user's devices were deleted
// or renamed: others who track the user's devices must learn of it. Call it
// before serving.
func (s *Service) OnDevicesChanged(fn func(userID string)) {
	s.onDevicesChanged = append(s.onDevicesChanged, fn)
}

func (s *Service) devicesChanged(userID string) {
	for _, fn := range s.onDevicesChanged {
		fn(userID)
	}
}

// New returns the accounts service.
func New(store Store, c Config) *Service {
	if c.BcryptCost == 0 {
		c.BcryptCost = bcrypt.DefaultCost
	}
	if c.RefreshLifetime == 0 {
		c.RefreshLifetime = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	s := &Service{
		store: store, server: c.ServerName, cost: c.BcryptCost, life: c.RefreshLifetime,
		refreshLife: c.RefreshTokenLifetime, log: c.Logger, now: c.Now, verify: verifyPassword,
	}
	s.dummyHash = sync.OnceValues(func() (string, error) {
		return s.hashPassword(RandomString(32, "abcdefghijklmnopqrstuvwxyz0123456789"))
	})
	return s
}

// LimitFailedPasswords makes every password check (login, and the
// m.login.password stage of user-interactive auth on any endpoint) count
// its failures per user against l, and refuse with 429 while l refuses.
// Call it before serving.
func (s *Service) LimitFailedPasswords(l *ratelimit.Limiter) { s.failedPasswords = l }

// SetUserGuard installs the check that keeps user IDs reserved by
// application services: it gets the new user's ID and the registering
// service's ID ("" for anyone else) and returns the error to answer.
// Call it before serving.
func (s *Service) SetUserGuard(guard func(userID, appServiceID string) error) { s.userGuard = guard }

func (s *Service) checkUserGuard(userID, appServiceID string) error {
	if s.userGuard == nil {
		return nil
	}
	return s.userGuard(userID, appServiceID)
}

// ServerName is the domain of local users.
func (s *Service) ServerName() string { return s.server }

func (s *Service) nowMS() int64 { return s.now().UnixMilli() }

// Credentials are what login and registration hand to a client.
type Credentials struct {
	UserID       string
	AccessToken  string
	DeviceID     string
	RefreshToken string
	ExpiresIn    time.Duration // 0: the access token does not expire
}

// Requester is the authenticated user behind a request.
type Requester struct {
	UserID    string
	DeviceID  string
	IsGuest   bool
	IsAdmin   bool
	TokenHash string
	// Suspended users may read but not act; Locked ones may only log out.
	Suspended bool
	Locked    bool
	// ShadowBanned users' sends and invites are answered but dropped.
	ShadowBanned bool
	// MessageRate, when set, replaces rc_message for this user.
	MessageRate *RateOverride
	// AppServiceID is set when an application service makes the request.
	AppServiceID string
}

var localpartRe = regexp.MustCompile(`^[a-z0-9._=\-/+]+$`)

// UserID returns the full ID of a local user.
func (s *Service) UserID(localpart string) string { return "@" + localpart + ":" + s.server }

// IsLocal reports whether userID belongs to this server.
func (s *Service) IsLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+s.server) && strings.HasPrefix(userID, "@")
}

// Localpart returns the localpart of a local user ID, or "" if it is not one.
func (s *Service) Localpart(userID string) string {
	if !s.IsLocal(userID) {
		return ""
	}
	return strings.TrimSuffix(strings.TrimPrefix(userID, "@"), ":"+s.server)
}

// ValidateLocalpart checks a localpart for a new user against the spec's
// grammar. Localparts starting with '_' are left to application services and
// numeric ones to guests, as Synapse does.
func (s *Service) ValidateLocalpart(localpart string, allowReserved bool) error {
	switch {
	case localpart == "":
		return mxhttp.InvalidUsername("User ID cannot be empty")
	case !localpartRe.MatchString(localpart):
		return mxhttp.InvalidUsername("User ID can only contain characters a-z, 0-9, or '=_-./+'")
	case len(s.UserID(localpart)) > MaxUserIDLength:
		return mxhttp.InvalidUsername("User ID may not be longer than %d characters", MaxUserIDLength)
	case !allowReserved && localpart[0] == '_':
		return mxhttp.InvalidUsername("User ID may not begin with _")
	case !allowReserved && isNumeric(localpart):
		return mxhttp.InvalidUsername("Numeric user IDs are reserved for guest users")
	}
	return nil
}

func isNumeric(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// CheckAvailable answers /register/available: nil when the localpart is
// valid and free.
func (s *Service) CheckAvailable(ctx context.Context, localpart string) error {
	if err := s.ValidateLocalpart(localpart, false); err != nil {
		return err
	}
	if err := s.checkUserGuard(s.UserID(localpart), ""); err != nil {
		return err
	}
	_, err := s.store.GetAccount(ctx, s.UserID(localpart))
	if err == nil {
		return mxhttp.UserInUse()
	}
	if !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

// RegisterRequest describes a new account.
type RegisterRequest struct {
	Localpart         string // "" generates one
	Password          string // "" leaves the account without a password
	DisplayName       string // "" uses the localpart, as Synapse does
	DeviceID          string
	DeviceDisplayName string
	InhibitLogin      bool
	Admin             bool
	Guest             bool
	AppServiceID      string
	RefreshToken      bool
	IP                string
}

// Register creates an account and, unless InhibitLogin, a device and tokens.
func (s *Service) Register(ctx context.Context, req RegisterRequest) (Credentials, error) {
	if req.Localpart == "" {
		req.Localpart = generateLocalpart(req.Guest)
	} else if err := s.ValidateLocalpart(req.Localpart, req.AppServiceID != ""); err != nil {
		return Credentials{}, err
	} else if err := s.checkUserGuard(s.UserID(req.Localpart), req.AppServiceID); err != nil {
		return Credentials{}, err
	}
	if len(req.Password) > MaxPasswordLength {
		return Credentials{}, mxhttp.InvalidParam("Password too long")
	}
	hash := ""
	if req.Password != "" {
		var err error
		if hash, err = s.hashPassword(req.Password); err != nil {
			return Credentials{}, err
		}
	}
	now := s.nowMS()
	acc := Account{
		UserID: s.UserID(req.Localpart), Localpart: req.Localpart, PasswordHash: hash,
		IsAdmin: req.Admin, IsGuest: req.Guest, AppServiceID: req.AppServiceID, CreatedTS: now,
	}
	if req.DisplayName == "" {
		req.DisplayName = req.Localpart
	}
	creds := Credentials{UserID: acc.UserID}
	var dev *Device
	var tok *IssuedTokens
	if !req.InhibitLogin {
		d, t, c, err := s.newSession(acc.UserID, req.DeviceID, req.DeviceDisplayName, req.IP, req.RefreshToken, now)
		if err != nil {
			return Credentials{}, err
		}
		dev, tok, creds = &d, &t, c
	}
	if err := s.store.CreateAccount(ctx, acc, req.DisplayName, dev, tok); err != nil {
		if errors.Is(err, ErrUserExists) {
			return Credentials{}, mxhttp.UserInUse()
		}
		return Credentials{}, err
	}
	s.log.Info("registered user", "user_id", acc.UserID, "admin", req.Admin, "guest", req.Guest)
	return creds, nil
}

// newSession prepares a device and fresh tokens for it.
func (s *Service) newSession(userID, deviceID, displayName, ip string, refresh bool, now int64) (Device, IssuedTokens, Credentials, error) {
	if deviceID == "" {
		deviceID = generateDeviceID()
	}
	if len(deviceID) > MaxDeviceIDLength {
		return Device{}, IssuedTokens{}, Credentials{}, mxhttp.InvalidParam("device_id too long")
	}
	access, accessHash := NewToken()
	c := Credentials{UserID: userID, AccessToken: access, DeviceID: deviceID}
	t := IssuedTokens{AccessHash: accessHash}
	if refresh {
		r, rHash := NewToken()
		c.RefreshToken = r
		t.RefreshHash = rHash
		s.setExpiry(&c, &t, now)
	}
	d := Device{UserID: userID, DeviceID: deviceID, DisplayName: displayName, CreatedTS: now, LastSeenTS: now, LastSeenIP: ip}
	return d, t, c, nil
}

// LoginRequest is a password login.
type LoginRequest struct {
	User              string // localpart or user ID
	Password          string
	DeviceID          string
	DeviceDisplayName string
	RefreshToken      bool
	IP                string
}

// ResolveUser turns what a user typed (localpart or full ID) into a local
// user ID.
func (s *Service) ResolveUser(user string) (string, error) {
	if strings.HasPrefix(user, "@") {
		if !s.IsLocal(user) {
			return "", mxhttp.Forbidden("User %s is not local to this server", user)
		}
		return "@" + strings.ToLower(s.Localpart(user)) + ":" + s.server, nil
	}
	if user == "" {
		return "", mxhttp.MissingParam("Missing user identifier")
	}
	return s.UserID(strings.ToLower(user)), nil
}

// CheckPassword verifies a user's password. Wrong user and wrong password
// answer alike, in what they say and in the time they take, so that logins
// do not reveal which accounts exist. Refused attempts count against the
// failed-password limit, and while it refuses the answer is 429.
func (s *Service) CheckPassword(ctx context.Context, userID, password string) (Account, error) {
	if ok, retry := s.failedPasswords.Peek(userID); !ok {
		return Account{}, mxhttp.LimitExceeded(retry)
	}
	acc, err := s.checkPassword(ctx, userID, password)
	var me *mxhttp.Error
	switch {
	case err == nil:
		s.failedPasswords.Reset(userID)
	case errors.As(err, &me) && me.Status == http.StatusForbidden:
		s.failedPasswords.Allow(userID)
	}
	return acc, err
}

func (s *Service) checkPassword(ctx context.Context, userID, password string) (Account, error) {
	acc, err := s.store.GetAccount(ctx, userID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return acc, err
	}
	hash := acc.PasswordHash
	if hash == "" {
		if hash, err = s.dummyHash(); err != nil {
			return acc, err
		}
	}
	match := len(password) <= MaxPasswordLength && s.verify(hash, password) && acc.PasswordHash != ""
	if acc.Deactivated {
		return acc, mxhttp.UserDeactivated()
	}
	if !match {
		return acc, mxhttp.Forbidden("Invalid username or password")
	}
	// A locked account gets no new access token until it is unlocked.
	if acc.Locked {
		return acc, UserLocked()
	}
	return acc, nil
}

// Login checks a password and starts a session on a (new or given) device.
func (s *Service) Login(ctx context.Context, req LoginRequest) (Credentials, error) {
	userID, err := s.ResolveUser(req.User)
	if err != nil {
		return Credentials{}, err
	}
	if _, err := s.CheckPassword(ctx, userID, req.Password); err != nil {
		return Credentials{}, err
	}
	return s.StartSession(ctx, userID, req.DeviceID, req.DeviceDisplayName, req.IP, req.RefreshToken)
}

// StartSession issues tokens for an already authenticated user.
func (s *Service) StartSession(ctx context.Context, userID, deviceID, displayName, ip string, refresh bool) (Credentials, error) {
	now := s.nowMS()
	d, t, c, err := s.newSession(userID, deviceID, displayName, ip, refresh, now)
	if err != nil {
		return Credentials{}, err
	}
	if err := s.store.IssueDevice(ctx, d, t); err != nil {
		return Credentials{}, err
	}
	return c, nil
}

// Authenticate resolves an access token.
func (s *Service) Authenticate(ctx context.Context, token, ip string) (*Requester, error) {
	hash := HashToken(token)
	o, err := s.store.LookupAccessToken(ctx, hash)
	if errors.Is(err, ErrNotFound) {
		return nil, mxhttp.UnknownToken(false)
	}
	if err != nil {
		return nil, err
	}
	if o.Deactivated {
		return nil, mxhttp.UnknownToken(false)
	}
	now := s.nowMS()
	if o.ExpiresTS != 0 && now >= o.ExpiresTS {
		return nil, mxhttp.UnknownToken(true)
	}
	if o.StaleRefresh != "" {
		if err := s.store.DropStaleRefresh(ctx, o.StaleRefresh); err != nil {
			return nil, err
		}
	}
	if now-o.LastSeenTS > TouchInterval.Milliseconds() {
		if err := s.store.TouchDevice(ctx, o.UserID, o.DeviceID, ip, now); err != nil {
			s.log.Warn("recording device last seen", "err", err)
		}
	}
	return &Requester{UserID: o.UserID, DeviceID: o.DeviceID, IsGuest: o.IsGuest, IsAdmin: o.IsAdmin, TokenHash: hash,
		Suspended: o.Suspended, Locked: o.Locked, ShadowBanned: o.ShadowBanned, MessageRate: o.MessageRate}, nil
}

// setExpiry dates freshly issued refreshable tokens: the refresh token
// lives refreshLife from now (each refresh renews it, so an idle session
// ends), and the access token no longer than its refresh token, as in
// Synapse.
func (s *Service) setExpiry(c *Credentials, t *IssuedTokens, now int64) {
	c.ExpiresIn = s.life
	if s.refreshLife > 0 {
		t.RefreshExpiresTS = now + s.refreshLife.Milliseconds()
		c.ExpiresIn = min(s.life, s.refreshLife)
	}
	t.ExpiresTS = now + c.ExpiresIn.Milliseconds()
}

// Refresh exchanges a refresh token for a new access and refresh token.
func (s *Service) Refresh(ctx context.Context, refreshToken string) (Credentials, error) {
	access, accessHash := NewToken()
	r, rHash := NewToken()
	now := s.nowMS()
	c := Credentials{AccessToken: access, RefreshToken: r}
	t := IssuedTokens{AccessHash: accessHash, RefreshHash: rHash}
	s.setExpiry(&c, &t, now)
	var err error
	c.UserID, c.DeviceID, err = s.store.RotateRefresh(ctx, HashToken(refreshToken), t, now)
	if errors.Is(err, ErrNotFound) {
		return Credentials{}, mxhttp.UnknownTokenMsg(false, "Unknown or expired refresh token")
	}
	if err != nil {
		return Credentials{}, err
	}
	return c, nil
}

// Logout ends the requester's session and deletes its device, as the spec
// says for /logout.
func (s *Service) Logout(ctx context.Context, r *Requester) error {
	if err := s.store.DeleteDevices(ctx, r.UserID, []string{r.DeviceID}); err != nil {
		return err
	}
	s.devicesChanged(r.UserID)
	return nil
}

// LogoutAll ends every session of the user.
func (s *Service) LogoutAll(ctx context.Context, userID string) error {
	if err := s.store.DeleteOtherDevices(ctx, userID, ""); err != nil {
		return err
	}
	s.devicesChanged(userID)
	return nil
}

// ChangePassword sets a new password and, when logoutDevices, ends every
// session but keepDevice.
func (s *Service) ChangePassword(ctx context.Context, userID, password, keepDevice string, logoutDevices bool) error {
	if password == "" {
		return mxhttp.MissingParam("Missing new_password")
	}
	if len(password) > MaxPasswordLength {
		return mxhttp.InvalidParam("Password too long")
	}
	hash, err := s.hashPassword(password)
	if err != nil {
		return err
	}
	if err := s.store.SetPassword(ctx, userID, hash); err != nil {
		return err
	}
	if logoutDevices {
		if err := s.store.DeleteOtherDevices(ctx, userID, keepDevice); err != nil {
			return err
		}
		s.devicesChanged(userID)
	}
	return nil
}

// Deactivate disables the account for good: password, devices and profile
// are removed, the user ID stays taken.
func (s *Service) Deactivate(ctx context.Context, userID string) error {
	s.log.Info("deactivating user", "user_id", userID)
	if err := s.store.Deactivate(ctx, userID); err != nil {
		return err
	}
	s.devicesChanged(userID)
	return nil
}

// GetAccount returns a local account.
func (s *Service) GetAccount(ctx context.Context, userID string) (Account, error) {
	return s.store.GetAccount(ctx, userID)
}

// SetAdmin grants or revokes server admin.
func (s *Service) SetAdmin(ctx context.Context, userID string, admin bool) error {
	return s.store.SetAdmin(ctx, userID, admin)
}

// Devices.

func (s *Service) ListDevices(ctx context.Context, userID string) ([]Device, error) {
	return s.store.ListDevices(ctx, userID)
}

func (s *Service) GetDevice(ctx context.Context, userID, deviceID string) (Device, error) {
	d, err := s.store.GetDevice(ctx, userID, deviceID)
	if errors.Is(err, ErrNotFound) {
		return d, mxhttp.NotFound("Unknown device")
	}
	return d, err
}

// CreateDevice creates a device of a user with no session of its own, for
// an application service that drives it with its own token (Matrix 1.17);
// an existing device is renamed instead. It reports whether it created one.
func (s *Service) CreateDevice(ctx context.Context, userID, deviceID string, name *string) (bool, error) {
	if deviceID == "" || len(deviceID) > MaxDeviceIDLength {
		return false, mxhttp.InvalidParam("Invalid device ID")
	}
	dev := Device{UserID: userID, DeviceID: deviceID, CreatedTS: s.nowMS()}
	if name != nil {
		if len(*name) > 100*1024 {
			return false, mxhttp.InvalidParam("display_name too long")
		}
		dev.DisplayName = *name
	}
	created, err := s.store.CreateDevice(ctx, dev)
	if err != nil || created {
		return created, err
	}
	if name != nil {
		return false, s.RenameDevice(ctx, userID, deviceID, *name)
	}
	return false, nil
}

func (s *Service) RenameDevice(ctx context.Context, userID, deviceID, name string) error {
	if len(name) > 100*1024 {
		return mxhttp.InvalidParam("display_name too long")
	}
	err := s.store.RenameDevice(ctx, userID, deviceID, name)
	if errors.Is(err, ErrNotFound) {
		return mxhttp.NotFound("Unknown device")
	}
	if err != nil {
		return err
	}
	s.devicesChanged(userID)
	return nil
}

// DeleteDevices deletes devices, their tokens, keys and pending messages.
func (s *Service) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	if err := s.store.DeleteDevices(ctx, userID, deviceIDs); err != nil {
		return err
	}
	s.devicesChanged(userID)
	return nil
}

// Tokens and passwords.

// NewToken returns a 256-bit random token and the hash under which it is stored.
func NewToken() (token, hash string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails since Go 1.24
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token)
}

// HashToken is the stored form of a token.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// RandomString returns n random characters from alphabet.
func RandomString(n int, alphabet string) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func generateDeviceID() string { return RandomString(10, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") }

func generateLocalpart(guest bool) string {
	if guest {
		return RandomString(12, "0123456789")
	}
	return "u" + RandomString(11, "abcdefghijklmnopqrstuvwxyz0123456789")
}

// bcrypt reads at most 72 bytes; longer passwords are first reduced to a
// digest so that every byte counts.
func passwordInput(password string) []byte {
	if len(password) <= 72 {
		return []byte(password)
	}
	sum := sha256.Sum256([]byte(password))
	return []byte("sha256:" + base64.RawStdEncoding.EncodeToString(sum[:]))
}

func (s *Service) hashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword(passwordInput(password), s.cost)
	if err != nil {
		return "", fmt.Errorf("accounts: hashing password: %w", err)
	}
	return string(h), nil
}

func verifyPassword(hash, password string) bool {
	return bcrypt.CompareHashAndPassword([]byte(hash), passwordInput(password)) == nil
}

func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
