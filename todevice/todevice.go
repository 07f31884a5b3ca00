// Package todevice routes send-to-device messages: each is stored for its
// recipient device under a position of the to-device stream, handed to that
// device by /sync, and deleted only once the device acknowledges it by
// syncing on from the token that delivered it.
package todevice

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"strings"
	"time"

	"homeserver/mxhttp"
)

// Limits.
const (
	// MaxBodySize bounds one /sendToDevice request: a room key shared with
	// a few thousand devices fits.
	MaxBodySize = 8 << 20
	// MaxMessageSize bounds the content of one message, like an event's.
	MaxMessageSize = 64 << 10
	// MaxRecipients bounds the devices one request may address.
	MaxRecipients = 10000
	// SyncLimit is the most messages one /sync hands a device (the spec's
	// recommendation).
	SyncLimit = 100
)

// Message is a to-device message as a device receives it.
type Message struct {
	Pos     int64
	Sender  string
	Type    string
	Content json.RawMessage
	// For application services: the device it is for.
	UserID, DeviceID string
}

// Recipient is one addressed device; DeviceID "*" means all of the user's.
type Recipient struct {
	UserID, DeviceID string
	Content          json.RawMessage
}

// Send is one /sendToDevice request.
type Send struct {
	Sender, Scope, TxnID, Type string
	Recipients                 []Recipient
	Now                        int64
}

// Store keeps messages; storage implements it.
type Store interface {
	// SendToDevice stores the messages at one new position, expanding
	// "*" to the user's devices and dropping messages for unknown devices,
	// unless (sender, scope, txn ID) was seen before. It returns the users
	// who got messages.
	SendToDevice(ctx context.Context, s Send) (users []string, err error)
	// ToDeviceMessages returns a device's messages in (after, upTo], oldest
	// first, at most limit.
	ToDeviceMessages(ctx context.Context, userID, deviceID string, after, upTo int64, limit int) ([]Message, error)
	// DeleteToDevice deletes a device's messages up to pos.
	DeleteToDevice(ctx context.Context, userID, deviceID string, pos int64) error
	ToDeviceMaxPos(ctx context.Context) (int64, error)
}

// Service routes to-device messages.
type Service struct {
	store  Store
	server string
	log    *slog.Logger
	wake   []func(userID string)
}

// New returns the service.
func New(store Store, serverName string, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: store, server: serverName, log: log}
}

// OnMessage registers fn to run, after commit, for each user who got
// messages (to wake their syncs). Call before serving.
func (s *Service) OnMessage(fn func(userID string)) { s.wake = append(s.wake, fn) }

// MaxPos is the current position of the to-device stream.
func (s *Service) MaxPos(ctx context.Context) (int64, error) { return s.store.ToDeviceMaxPos(ctx) }

// Send stores the messages of one /sendToDevice request. A request whose
// transaction ID the sender used before is accepted and does nothing.
func (s *Service) Send(ctx context.Context, sender, scope, txnID, eventType string, messages map[string]map[string]json.RawMessage) error {
	if eventType == "" || len(eventType) > 255 {
		return mxhttp.InvalidParam("Invalid event type")
	}
	if txnID == "" || len(txnID) > 255 {
		return mxhttp.InvalidParam("Invalid transaction ID")
	}
	send := Send{Sender: sender, Scope: scope, TxnID: txnID, Type: eventType, Now: time.Now().UnixMilli()}
	users := make([]string, 0, len(messages))
	for u := range messages {
		users = append(users, u)
	}
	sort.Strings(users)
	n := 0
	for _, user := range users {
		if !strings.HasPrefix(user, "@") || !strings.Contains(user, ":") || len(user) > 255 {
			return mxhttp.InvalidParam("Invalid user ID %q", user)
		}
		devices := messages[user]
		ids := make([]string, 0, len(devices))
		for d := range devices {
			ids = append(ids, d)
		}
		sort.Strings(ids)
		for _, device := range ids {
			content := bytes.TrimSpace(devices[device])
			if len(content) == 0 || content[0] != '{' {
				return mxhttp.BadJSON("The message for %s %s must be a JSON object", user, device)
			}
			if len(content) > MaxMessageSize {
				return mxhttp.TooLarge("The message for %s %s is larger than %d bytes", user, device, MaxMessageSize)
			}
			if device == "" || len(device) > 255 {
				return mxhttp.InvalidParam("Invalid device ID %q", device)
			}
			if n++; n > MaxRecipients {
				return mxhttp.TooLarge("At most %d devices may be addressed at once", MaxRecipients)
			}
			if !strings.HasSuffix(user, ":"+s.server) {
				// Remote devices are reached over federation, which this
				// server does not speak yet; their users share no room
				// with ours either.
				s.log.Debug("dropping to-device message for a remote user", "user_id", user)
				continue
			}
			send.Recipients = append(send.Recipients, Recipient{UserID: user, DeviceID: device, Content: json.RawMessage(content)})
		}
	}
	got, err := s.store.SendToDevice(ctx, send)
	if err != nil {
		return err
	}
	for _, u := range got {
		for _, fn := range s.wake {
			fn(u)
		}
	}
	return nil
}

// Deliver returns what /sync hands a device whose token stood at since
// (0 for an initial sync) when the stream stands at now: the messages in
// (since, now], at most SyncLimit, and the position the next token carries.
// Messages up to since were delivered by the sync that handed out that
// token, and are deleted now that the client is past it.
func (s *Service) Deliver(ctx context.Context, userID, deviceID string, since, now int64) ([]Message, int64, error) {
	if deviceID == "" {
		return nil, now, nil
	}
	// One read serves the common cases: nothing waiting, or only new
	// messages. Only when delivered ones are still there is there a write
	// (every /sync comes through here, and SQLite has one writer).
	msgs, err := s.store.ToDeviceMessages(ctx, userID, deviceID, 0, max(now, since), SyncLimit)
	if err != nil {
		return nil, since, err
	}
	if len(msgs) > 0 && msgs[0].Pos <= since {
		if err := s.store.DeleteToDevice(ctx, userID, deviceID, since); err != nil {
			return nil, since, err
		}
		if msgs[len(msgs)-1].Pos <= since || len(msgs) == SyncLimit {
			if msgs, err = s.store.ToDeviceMessages(ctx, userID, deviceID, since, now, SyncLimit); err != nil {
				return nil, since, err
			}
		} else {
			i := 0
			for i < len(msgs) && msgs[i].Pos <= since {
				i++
			}
			msgs = msgs[i:]
		}
	}
	if now <= since {
		return nil, since, nil
	}
	next := now
	if len(msgs) == SyncLimit {
		next = msgs[len(msgs)-1].Pos
	}
	return msgs, next, nil
}

// Event renders a message as /sync lists it.
func Event(m Message) json.RawMessage {
	b, _ := json.Marshal(struct {
		Sender  string          `json:"sender"`
		Type    string          `json:"type"`
		Content json.RawMessage `json:"content"`
	}{m.Sender, m.Type, m.Content})
	return b
}
