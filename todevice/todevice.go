// Package todevice routes send-to-device messages: each is stored for its
// recipient device under a position of the to-device stream, handed to that
// device by /sync, and deleted only once the device acknowledges it by
// syncing on from the token that delivered it. Messages for other servers'
// users are handed to federation (Remote); theirs for this server's users
// arrive through Receive.
package todevice

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
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

// Remote sends to-device messages to other servers' users: federation
// implements it with m.direct_to_device EDUs, queued durably.
type Remote interface {
	// QueueToDevice queues messages (user ID to device ID or "*" to
	// content) for destination's users. messageID is the same when the
	// same request is sent again, so that the destination can tell.
	QueueToDevice(ctx context.Context, destination, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error
}

// Service routes to-device messages.
type Service struct {
	store  Store
	server string
	log    *slog.Logger
	wake   []func(userID string)
	remote Remote
	// empty spares long-polling devices with nothing waiting a read per
	// /sync: for each device, the position up to which a read found it no
	// messages. Positions are the stream's, so it is right for every
	// process: a message to the device takes the stream past it.
	empty emptyDevices
}

// emptyDevices maps user and device to a position up to which the device
// had no messages.
type emptyDevices struct {
	mu sync.Mutex
	m  map[[2]string]int64
}

// maxEmptyDevices bounds the map; it is emptied when full.
const maxEmptyDevices = 100_000

func (e *emptyDevices) upTo(userID, deviceID string) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m[[2]string{userID, deviceID}]
}

func (e *emptyDevices) set(userID, deviceID string, pos int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil || len(e.m) >= maxEmptyDevices {
		e.m = map[[2]string]int64{}
	}
	e.m[[2]string{userID, deviceID}] = pos
}

// New returns the service.
func New(store Store, serverName string, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{store: store, server: serverName, log: log}
}

// SetRemote connects the service to other servers. Until it is called,
// messages for their users are dropped. Call before serving.
func (s *Service) SetRemote(r Remote) { s.remote = r }

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
	remote := map[string]map[string]map[string]json.RawMessage{}
	n := 0
	for _, user := range sortedKeys(messages) {
		if !strings.HasPrefix(user, "@") || !strings.Contains(user, ":") || len(user) > 255 {
			return mxhttp.InvalidParam("Invalid user ID %q", user)
		}
		devices := messages[user]
		for _, device := range sortedKeys(devices) {
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
			if !s.isLocal(user) {
				if s.remote == nil {
					s.log.Debug("dropping to-device message for a remote user: no federation", "user_id", user)
					continue
				}
				server := serverOf(user)
				if remote[server] == nil {
					remote[server] = map[string]map[string]json.RawMessage{}
				}
				if remote[server][user] == nil {
					remote[server][user] = map[string]json.RawMessage{}
				}
				remote[server][user][device] = json.RawMessage(content)
				continue
			}
			send.Recipients = append(send.Recipients, Recipient{UserID: user, DeviceID: device, Content: json.RawMessage(content)})
		}
	}
	got, err := s.store.SendToDevice(ctx, send)
	if err != nil {
		return err
	}
	s.wakeUsers(got)
	// A retried request queues its remote messages again, under the same
	// message IDs: the destinations keep the first.
	for _, server := range sortedKeys(remote) {
		id := messageID(sender, scope, txnID, server)
		if err := s.remote.QueueToDevice(ctx, server, sender, eventType, id, remote[server]); err != nil {
			return fmt.Errorf("todevice: queueing messages for %s: %w", server, err)
		}
	}
	return nil
}

// federationScope is the transaction scope of messages from other
// servers: their message IDs are what makes them unique, per sender.
const federationScope = "federation"

// Receive stores the messages another server sent for this server's users
// (an m.direct_to_device EDU): "*" means all of a user's devices; messages
// for other servers' users, unknown devices or that are not objects are
// dropped. A message ID the sender used before does nothing.
func (s *Service) Receive(ctx context.Context, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error {
	if eventType == "" || len(eventType) > 255 {
		return mxhttp.BadJSON("Invalid event type")
	}
	if messageID == "" || len(messageID) > 255 {
		return mxhttp.BadJSON("Invalid message ID")
	}
	send := Send{Sender: sender, Scope: federationScope, TxnID: messageID, Type: eventType, Now: time.Now().UnixMilli()}
	for _, user := range sortedKeys(messages) {
		if !s.isLocal(user) {
			continue
		}
		devices := messages[user]
		for _, device := range sortedKeys(devices) {
			content := bytes.TrimSpace(devices[device])
			if device == "" || len(device) > 255 || len(content) == 0 || content[0] != '{' || len(content) > MaxMessageSize {
				continue
			}
			if len(send.Recipients) == MaxRecipients {
				return mxhttp.TooLarge("At most %d devices may be addressed at once", MaxRecipients)
			}
			send.Recipients = append(send.Recipients, Recipient{UserID: user, DeviceID: device, Content: json.RawMessage(content)})
		}
	}
	if len(send.Recipients) == 0 {
		return nil
	}
	got, err := s.store.SendToDevice(ctx, send)
	if err != nil {
		return err
	}
	s.wakeUsers(got)
	return nil
}

func (s *Service) wakeUsers(users []string) {
	for _, u := range users {
		for _, fn := range s.wake {
			fn(u)
		}
	}
}

func (s *Service) isLocal(userID string) bool {
	return strings.HasPrefix(userID, "@") && strings.HasSuffix(userID, ":"+s.server)
}

func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// messageID names the messages of one request for one destination: the
// same request sent again gets the same ID (22 characters, within the
// spec's 32).
func messageID(sender, scope, txnID, destination string) string {
	h := sha256.New()
	for _, part := range []string{sender, scope, txnID, destination} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:16])
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
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
	upTo := max(now, since)
	if upTo <= s.empty.upTo(userID, deviceID) {
		return nil, upTo, nil
	}
	msgs, err := s.store.ToDeviceMessages(ctx, userID, deviceID, 0, upTo, SyncLimit)
	if err != nil {
		return nil, since, err
	}
	if len(msgs) == 0 {
		s.empty.set(userID, deviceID, upTo)
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
