package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"homeserver/mxhttp"
)

// Authentication types of user-interactive auth.
const (
	StageDummy             = "m.login.dummy"
	StagePassword          = "m.login.password"
	StageRegistrationToken = "m.login.registration_token"
)

// Flow is one way to complete user-interactive auth.
type Flow struct {
	Stages []string `json:"stages"`
}

// UIAChallenge is the 401 body of user-interactive auth, optionally with the
// error of a failed stage.
type UIAChallenge struct {
	Flows     []Flow         `json:"flows"`
	Params    map[string]any `json:"params"`
	Session   string         `json:"session"`
	Completed []string       `json:"completed,omitempty"`
	ErrCode   string         `json:"errcode,omitempty"`
	Message   string         `json:"error,omitempty"`
}

func (c *UIAChallenge) Error() string {
	if c.ErrCode != "" {
		return "user-interactive auth: " + c.ErrCode + ": " + c.Message
	}
	return "user-interactive auth required"
}

// StatusCode makes the challenge an mxhttp.Response.
func (c *UIAChallenge) StatusCode() int { return http.StatusUnauthorized }

// Identifier is a user identifier of the login and UIA APIs.
type Identifier struct {
	Type    string `json:"type"`
	User    string `json:"user,omitempty"`
	Medium  string `json:"medium,omitempty"`
	Address string `json:"address,omitempty"`
	Country string `json:"country,omitempty"`
	Phone   string `json:"phone,omitempty"`
}

type authDict struct {
	Type       string      `json:"type"`
	Session    string      `json:"session"`
	Password   string      `json:"password"`
	Identifier *Identifier `json:"identifier"`
	User       string      `json:"user"` // deprecated form of identifier
	Token      string      `json:"token"`
}

// UIARequest is one attempt at an endpoint protected by user-interactive auth.
type UIARequest struct {
	Method, Path string
	// UserID is the authenticated requester; "" for registration.
	UserID string
	// Auth is the request's "auth" object, nil when absent.
	Auth  json.RawMessage
	Flows []Flow
	// RegistrationTokens are the tokens m.login.registration_token accepts.
	RegistrationTokens []string
	// AllowNewSession, when set, is asked before a session is created and
	// its error answered instead: it rate-limits those who may open
	// sessions without authenticating.
	AllowNewSession func() error
}

// HasAuth reports whether a request carries an auth object, failing with
// M_BAD_JSON when it is malformed. Handlers use it to validate the rest of
// the body before a stage completes the session.
func HasAuth(raw json.RawMessage) (bool, error) {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return false, nil
	}
	var auth authDict
	if err := json.Unmarshal(raw, &auth); err != nil {
		return false, mxhttp.BadJSON("auth must be an object with string fields")
	}
	return true, nil
}

// CheckUIA returns nil once a flow is complete, and otherwise the challenge
// (a 401) or another Matrix error.
func (s *Service) CheckUIA(ctx context.Context, req UIARequest) error {
	_, err := s.checkUIA(ctx, req, false)
	return err
}

// CheckRegistrationUIA is CheckUIA for /register. Once a flow is complete
// it returns the session, which it keeps: the registration token it may
// hold stays pending until FinishRegistration counts its use, and a
// registration that fails after the auth can be retried in the session.
func (s *Service) CheckRegistrationUIA(ctx context.Context, req UIARequest) (sessionID string, err error) {
	return s.checkUIA(ctx, req, true)
}

func (s *Service) checkUIA(ctx context.Context, req UIARequest, keep bool) (string, error) {
	if len(req.Auth) == 0 || bytes.Equal(bytes.TrimSpace(req.Auth), []byte("null")) {
		sess, err := s.newUIASession(ctx, req)
		if err != nil {
			return "", err
		}
		return "", s.challenge(req, sess, "", "")
	}
	var auth authDict
	if err := json.Unmarshal(req.Auth, &auth); err != nil {
		return "", mxhttp.BadJSON("auth must be an object with string fields")
	}
	var sess UIASession
	if auth.Session == "" {
		var err error
		if sess, err = s.newUIASession(ctx, req); err != nil {
			return "", err
		}
	} else {
		var err error
		sess, err = s.store.GetUIASession(ctx, auth.Session)
		if err == nil && sess.CreatedTS < s.nowMS()-uiaLifetime.Milliseconds() {
			// Expired sessions are only swept when new ones are made.
			err = ErrNotFound
		}
		if errors.Is(err, ErrNotFound) {
			return "", mxhttp.Unknown("Unknown session ID: %s", auth.Session)
		}
		if err != nil {
			return "", err
		}
		if sess.Method != req.Method || sess.Path != req.Path || sess.UserID != req.UserID {
			return "", mxhttp.Forbidden("Requested operation has changed during the UI authentication session")
		}
	}
	if auth.Type != "" && !slices.Contains(sess.Completed, auth.Type) {
		if !offered(req.Flows, auth.Type) {
			return "", s.challenge(req, sess, "M_UNRECOGNIZED", "Unsupported authentication type "+auth.Type)
		}
		if code, msg, err := s.checkStage(ctx, req, sess, auth); err != nil {
			return "", err
		} else if code != "" {
			return "", s.challenge(req, sess, code, msg)
		}
		sess.Completed = append(sess.Completed, auth.Type)
		if err := s.store.SetUIACompleted(ctx, sess.ID, sess.Completed); err != nil {
			return "", err
		}
	}
	for _, f := range req.Flows {
		if containsAll(sess.Completed, f.Stages) {
			if keep {
				return sess.ID, nil
			}
			return "", s.store.DeleteUIASession(ctx, sess.ID)
		}
	}
	return "", s.challenge(req, sess, "", "")
}

// checkStage verifies one stage; a non-empty code is a failed attempt the
// client may repeat.
func (s *Service) checkStage(ctx context.Context, req UIARequest, sess UIASession, auth authDict) (code, msg string, err error) {
	switch auth.Type {
	case StageDummy:
		return "", "", nil
	case StagePassword:
		// Guessing passwords here must cost what it costs at /login.
		if ok, retry := s.failedPasswords.Peek(req.UserID); !ok {
			return "", "", mxhttp.LimitExceeded(retry)
		}
		user := auth.User
		if auth.Identifier != nil {
			if auth.Identifier.Type != "m.id.user" {
				return "M_UNKNOWN", "Unsupported identifier type", nil
			}
			user = auth.Identifier.User
		}
		userID, err := s.ResolveUser(user)
		if err != nil || userID != req.UserID {
			// Naming another user is a failed attempt on the requester's
			// account too, so it cannot be used to dodge that limit.
			s.failedPasswords.Allow(req.UserID)
		}
		if err != nil {
			return "M_FORBIDDEN", "Invalid password", nil
		}
		if _, err := s.CheckPassword(ctx, userID, auth.Password); err != nil {
			var me *mxhttp.Error
			if errors.As(err, &me) && me.Status != http.StatusTooManyRequests {
				return "M_FORBIDDEN", "Invalid password", nil
			}
			return "", "", err
		}
		if userID != req.UserID {
			// Another user proved who they are: no retry can make that
			// the requester, so the request is refused outright (403,
			// as Synapse does) rather than challenged again.
			return "", "", mxhttp.Forbidden("Invalid auth: the credentials are not the requester's")
		}
		return "", "", nil
	case StageRegistrationToken:
		if ValidRegistrationToken(req.RegistrationTokens, auth.Token) {
			return "", "", nil
		}
		// A token of the database is held by the session, pending, until
		// the registration completes or the session expires.
		if ValidRegistrationTokenSyntax(auth.Token) {
			held, err := s.store.HoldRegistrationToken(ctx, sess.ID, auth.Token, s.nowMS(), s.pendingSince())
			if err != nil {
				return "", "", err
			}
			if held {
				return "", "", nil
			}
		}
		return "M_UNAUTHORIZED", "Invalid registration token", nil
	}
	return "M_UNRECOGNIZED", "Unsupported authentication type " + auth.Type, nil
}

// ValidRegistrationToken reports whether token is one of the static tokens
// (compared in constant time).
func ValidRegistrationToken(tokens []string, token string) bool {
	for _, t := range tokens {
		if token != "" && constantTimeEqual(t, token) {
			return true
		}
	}
	return false
}

func (s *Service) newUIASession(ctx context.Context, req UIARequest) (UIASession, error) {
	if req.AllowNewSession != nil {
		if err := req.AllowNewSession(); err != nil {
			return UIASession{}, err
		}
	}
	now := s.nowMS()
	sess := UIASession{
		ID:     RandomString(24, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
		Method: req.Method, Path: req.Path, UserID: req.UserID, CreatedTS: now,
	}
	keep := maxUserUIASessions
	if req.UserID == "" {
		keep = maxRegistrationUIASessions
	}
	// Abandoned sessions expire as new ones come.
	return sess, s.store.CreateUIASession(ctx, sess, now-uiaLifetime.Milliseconds(), keep)
}

func (s *Service) challenge(req UIARequest, sess UIASession, code, msg string) error {
	return &UIAChallenge{
		Flows: req.Flows, Params: map[string]any{}, Session: sess.ID,
		Completed: sess.Completed, ErrCode: code, Message: msg,
	}
}

func offered(flows []Flow, stage string) bool {
	for _, f := range flows {
		if slices.Contains(f.Stages, stage) {
			return true
		}
	}
	return false
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
