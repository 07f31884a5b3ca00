// Package mxhttp holds the Matrix conventions for HTTP: the standard error
// body ({"errcode","error"}), JSON responses, and bounded JSON request decoding.
// Every API package (client, federation, media, appservice) answers through it,
// so that no failure ever leaves the server in a shape other than a Matrix error.
package mxhttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"time"
)

// Error is a Matrix standard error response.
type Error struct {
	Status  int
	Code    string
	Message string
	// Extra holds additional top-level fields (soft_logout, retry_after_ms, ...).
	Extra map[string]any
	// RetryAfter, when set, also produces a Retry-After header.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message) }

// MarshalJSON flattens Extra into the error object.
func (e *Error) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(e.Extra)+2)
	maps.Copy(m, e.Extra)
	m["errcode"] = e.Code
	m["error"] = e.Message
	return json.Marshal(m)
}

// With returns a copy of e with an extra top-level field.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = maps.Clone(e.Extra)
	if c.Extra == nil {
		c.Extra = map[string]any{}
	}
	c.Extra[key] = value
	return &c
}

func newErr(status int, code, format string, args ...any) *Error {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	return &Error{Status: status, Code: code, Message: msg}
}

// Constructors for the error codes of the Client-Server API, each with the
// status code the spec gives it.

func Forbidden(format string, a ...any) *Error {
	return newErr(http.StatusForbidden, "M_FORBIDDEN", format, a...)
}
func NotFound(format string, a ...any) *Error {
	return newErr(http.StatusNotFound, "M_NOT_FOUND", format, a...)
}

// UnknownPos is sliding sync's answer to a position the server no longer
// has (MSC4186).
func UnknownPos(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "M_UNKNOWN_POS", format, a...)
}
func Unrecognized(format string, a ...any) *Error {
	return newErr(http.StatusNotFound, "M_UNRECOGNIZED", format, a...)
}
func MethodNotAllowed() *Error {
	return newErr(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Unrecognized request method")
}
func BadJSON(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "M_BAD_JSON", format, a...)
}
func NotJSON(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "M_NOT_JSON", format, a...)
}
func MissingParam(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "M_MISSING_PARAM", format, a...)
}
func InvalidParam(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "M_INVALID_PARAM", format, a...)
}
func TooLarge(format string, a ...any) *Error {
	return newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", format, a...)
}
func MissingToken() *Error {
	return newErr(http.StatusUnauthorized, "M_MISSING_TOKEN", "Missing access token")
}

// Unauthorized is the 401 of a request whose authentication (a federation
// request's X-Matrix signature, for instance) is missing or invalid.
func Unauthorized(format string, a ...any) *Error {
	return newErr(http.StatusUnauthorized, "M_UNAUTHORIZED", format, a...)
}

// UnknownToken is the answer to an access token that is not (or no longer)
// valid; softLogout tells the client it may keep its local state.
func UnknownToken(softLogout bool) *Error {
	return UnknownTokenMsg(softLogout, "Unknown access token")
}

// UnknownTokenMsg is UnknownToken with a more precise message.
func UnknownTokenMsg(softLogout bool, msg string) *Error {
	e := newErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "%s", msg)
	return e.With("soft_logout", softLogout)
}
func UserDeactivated() *Error {
	return newErr(http.StatusForbidden, "M_USER_DEACTIVATED", "This account has been deactivated")
}
func InvalidUsername(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "M_INVALID_USERNAME", format, a...)
}
func UserInUse() *Error {
	return newErr(http.StatusBadRequest, "M_USER_IN_USE", "User ID already taken")
}
func Exclusive(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "M_EXCLUSIVE", format, a...)
}
func GuestAccessForbidden(format string, a ...any) *Error {
	return newErr(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", format, a...)
}
func ThreePIDMediumNotSupported() *Error {
	return newErr(http.StatusBadRequest, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "Third-party identifiers are not supported by this server")
}
func InvalidSignature(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "M_INVALID_SIGNATURE", format, a...)
}
func UnknownDevice(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "M_UNKNOWN_DEVICE", format, a...)
}
func Unknown(format string, a ...any) *Error {
	return newErr(http.StatusBadRequest, "M_UNKNOWN", format, a...)
}

// Internal is the only 500: an unexpected failure of the server itself.
func Internal() *Error {
	return newErr(http.StatusInternalServerError, "M_UNKNOWN", "Internal server error")
}

// LimitExceeded is a 429 with both the deprecated retry_after_ms and the
// Retry-After header the spec recommends since v1.10.
func LimitExceeded(retry time.Duration) *Error {
	e := newErr(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "Too many requests")
	ms := retry.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	e = e.With("retry_after_ms", ms)
	e.RetryAfter = retry
	return e
}

// Response is an error that carries its own JSON body and status, such as
// the 401 of user-interactive authentication.
type Response interface {
	error
	StatusCode() int
}

// Overloaded is implemented by the errors of a resource exhausted for
// now (storage.ErrBusy: every database connection busy): they are answered
// 503 with a Retry-After header, so that clients back off instead of
// piling more requests up.
type Overloaded interface {
	error
	RetryAfter() time.Duration
}

// Unavailable is the 503 of an overloaded server.
func Unavailable(retry time.Duration) *Error {
	e := newErr(http.StatusServiceUnavailable, "M_UNKNOWN", "Server is busy, try again later")
	e.RetryAfter = retry
	return e
}

// WriteError writes err as a Matrix error. Errors that are not *Error are
// internal failures: the caller must have logged them.
func WriteError(w http.ResponseWriter, err error) {
	var r Response
	if errors.As(err, &r) {
		WriteJSON(w, r.StatusCode(), r)
		return
	}
	var e *Error
	var o Overloaded
	switch {
	case errors.As(err, &e):
	case errors.As(err, &o):
		e = Unavailable(o.RetryAfter())
	default:
		e = Internal()
	}
	if e.RetryAfter > 0 {
		secs := int64((e.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	WriteJSON(w, e.Status, e)
}

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Fail writes err as the answer, logging it first when it is not a Matrix
// error meant for the client (an unexpected failure, answered 500), nor an
// overload (a line per refused request would flood the log just when the
// server has least time for it), nor a request the client gave up on.
func Fail(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	var me *Error
	var resp Response
	var o Overloaded
	if !errors.As(err, &me) && !errors.As(err, &resp) && !errors.As(err, &o) && !errors.Is(err, context.Canceled) {
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	WriteError(w, err)
}

// ForStatus is the Matrix error for a bare HTTP status that net/http (or a
// handler built on it, like http.ServeContent) would have answered in plain
// text, with the spec's closest error code.
func ForStatus(status int) *Error {
	code := "M_UNKNOWN"
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		// The request could not be understood as HTTP at all.
		code = "M_UNRECOGNIZED"
	case http.StatusNotFound:
		code = "M_NOT_FOUND"
	case http.StatusForbidden:
		code = "M_FORBIDDEN"
	case http.StatusRequestEntityTooLarge, http.StatusRequestHeaderFieldsTooLarge:
		code = "M_TOO_LARGE"
	case http.StatusTooManyRequests:
		code = "M_LIMIT_EXCEEDED"
	}
	msg := http.StatusText(status)
	if msg == "" {
		msg = "Request failed"
	}
	return newErr(status, code, "%s", msg)
}
