package pdu

import (
	"errors"
	"fmt"

	gmsl "github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// StateKey identifies a piece of room state.
type StateKey struct{ Type, StateKey string }

// AuthState gives the room state (before the event in question) that the
// auth rules need. Get returns nil when the room has no such state.
type AuthState interface {
	Get(eventType, stateKey string) *Event
}

// NotAllowedError is returned when the auth rules forbid an event.
type NotAllowedError struct {
	// Message says which rule failed, in words fit for a client error.
	Message string
}

func (e *NotAllowedError) Error() string {
	return "pdu: event not allowed: " + e.Message
}

// Allowed checks e against the room version's authorisation rules, given the
// room state before e. It returns a *NotAllowedError when the rules forbid
// the event and another error when the input itself is unusable.
//
// Only the state is consulted, not e's auth_events: to check an event
// received over federation against its own auth events too, call Allowed a
// second time with an AuthState made from those.
func Allowed(e *Event, state AuthState) error {
	if e == nil {
		return errNilEvent
	}
	return safelyErr("checking auth rules", func() error {
		r, err := lookupVersion(e.version)
		if err != nil {
			return err
		}
		needed := gmsl.StateNeededForAuth([]gmsl.PDU{e.pdu})
		provider, err := authEventsFrom(r, needed.Tuples(), state)
		if err != nil {
			return err
		}
		err = gmsl.Allowed(e.pdu, provider, userIDForSender)
		if err == nil {
			return nil
		}
		// GMSL reports most rule failures as NotAllowed, but the v12 rule
		// that creators must not appear in power levels comes back as an
		// EventValidationError; to callers both mean "the rules say no".
		var notAllowed *gmsl.NotAllowed
		if errors.As(err, &notAllowed) {
			return &NotAllowedError{Message: notAllowed.Message}
		}
		var invalid *gmsl.EventValidationError
		if errors.As(err, &invalid) {
			return &NotAllowedError{Message: invalid.Message}
		}
		return fmt.Errorf("pdu: checking auth rules for %s: %w", e.id, err)
	})
}

// authEventsFrom collects the state events named by tuples into the form
// GMSL's auth code reads. A nil state is an empty room.
func authEventsFrom(r *versionRules, tuples []gmsl.StateKeyTuple, state AuthState) (*gmsl.AuthEvents, error) {
	provider, err := gmsl.NewAuthEvents(nil)
	if err != nil {
		return nil, err
	}
	if state == nil {
		return provider, nil
	}
	for _, t := range tuples {
		ev := state.Get(t.EventType, t.StateKey)
		if ev == nil {
			continue
		}
		// A wrong event here would silently change the auth decision, so
		// treat it as the caller's bug rather than trusting it.
		if ev.typ != t.EventType || ev.stateKey == nil || *ev.stateKey != t.StateKey {
			return nil, fmt.Errorf("pdu: auth state returned event %s (%s, %v) for (%s, %q)",
				ev.id, ev.typ, ev.StateKey(), t.EventType, t.StateKey)
		}
		if ev.version != r.id {
			return nil, fmt.Errorf("pdu: auth state event %s is room version %s, want %s", ev.id, ev.version, r.id)
		}
		if err := provider.AddEvent(ev.pdu); err != nil {
			return nil, fmt.Errorf("pdu: auth state event %s: %w", ev.id, err)
		}
	}
	return provider, nil
}

// userIDForSender maps GMSL sender IDs to user IDs. Room versions 1-12 have
// no pseudonymous IDs, so the sender is the user ID itself.
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

func toStateKeys(tuples []gmsl.StateKeyTuple) []StateKey {
	out := make([]StateKey, len(tuples))
	for i, t := range tuples {
		out[i] = StateKey{Type: t.EventType, StateKey: t.StateKey}
	}
	return out
}
