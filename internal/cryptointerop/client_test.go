//go:build goolm

package cryptointerop_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"homeserver/internal/testserver"
)

// waitFor bounds how long a client keeps syncing for something to arrive.
// It is generous on purpose: it only matters when the thing never comes.
const waitFor = 30 * time.Second

// pollTimeout is the /sync long-poll timeout of the waiting loops; the server
// answers as soon as something arrives.
const pollTimeout = time.Second

// client is one logged-in device with its own OlmMachine, driven the way a
// real mautrix client drives it: every /sync response goes to the machine
// (to-device events, device list changes, one-time key counts) and its room
// state to the state store the machine consults.
type client struct {
	t     *testing.T
	user  testserver.User
	cli   *mautrix.Client
	mach  *crypto.OlmMachine
	state *roomState

	since string
	// events are the room timeline events seen in /sync, by ID.
	events map[id.EventID]*event.Event
	// changed and left accumulate device_lists from every /sync.
	changed, left map[id.UserID]bool
	// otkCount is the signed_curve25519 count of the last /sync.
	otkCount int
}

// newClient sets up an OlmMachine with an empty in-memory store for an
// already logged-in device, uploads its device keys and one-time keys, and
// does the initial /sync.
func newClient(t *testing.T, s *testserver.Server, u testserver.User) *client {
	t.Helper()
	logs := &testLogWriter{t: t}
	t.Cleanup(logs.close)
	log := zerolog.New(logs).Level(zerolog.WarnLevel).With().
		Str("device", u.DeviceID).Timestamp().Logger()
	cli, err := mautrix.NewClient(s.URL, id.UserID(u.ID), u.Token)
	if err != nil {
		t.Fatal(err)
	}
	cli.DeviceID = id.DeviceID(u.DeviceID)
	cli.Log = log
	c := &client{
		t: t, user: u, cli: cli, state: newRoomState(),
		events:  map[id.EventID]*event.Event{},
		changed: map[id.UserID]bool{}, left: map[id.UserID]bool{},
	}
	c.mach = crypto.NewOlmMachine(cli, &log, crypto.NewMemoryStore(nil), c.state)
	t.Cleanup(c.mach.Destroy)
	if err := c.mach.Load(c.ctx()); err != nil {
		t.Fatalf("%s: loading the Olm account: %v", u.DeviceID, err)
	}
	// A brand-new device has no one-time keys on the server.
	if err := c.mach.ShareKeys(c.ctx(), 0); err != nil {
		t.Fatalf("%s: uploading device and one-time keys: %v", u.DeviceID, err)
	}
	c.sync(0)
	return c
}

func (c *client) ctx() context.Context { return c.t.Context() }

func (c *client) userID() id.UserID     { return id.UserID(c.user.ID) }
func (c *client) deviceID() id.DeviceID { return id.DeviceID(c.user.DeviceID) }

// sync does one /sync from the last since token and hands the response to
// the machine and the state store, in the order mautrix's own syncer does.
func (c *client) sync(timeout time.Duration) *mautrix.RespSync {
	c.t.Helper()
	resp, err := c.cli.SyncRequest(c.ctx(), int(timeout.Milliseconds()), c.since, "", false, "")
	if err != nil {
		c.t.Fatalf("%s: /sync since %q: %v", c.user.DeviceID, c.since, err)
	}
	c.mach.ProcessSyncResponse(c.ctx(), resp, c.since)
	for roomID, room := range resp.Rooms.Join {
		c.roomEvents(roomID, room.State.Events)
		c.roomEvents(roomID, room.Timeline.Events)
	}
	for roomID, room := range resp.Rooms.Leave {
		c.roomEvents(roomID, room.State.Events)
		c.roomEvents(roomID, room.Timeline.Events)
	}
	for _, u := range resp.DeviceLists.Changed {
		c.changed[u] = true
	}
	for _, u := range resp.DeviceLists.Left {
		c.left[u] = true
	}
	c.otkCount = resp.DeviceOTKCount.SignedCurve25519
	c.since = resp.NextBatch
	return resp
}

func (c *client) roomEvents(roomID id.RoomID, evts []*event.Event) {
	for _, evt := range evts {
		evt.RoomID = roomID
		if evt.StateKey != nil {
			evt.Type.Class = event.StateEventType
		} else {
			evt.Type.Class = event.MessageEventType
		}
		// Types mautrix does not know stay unparsed; nothing here needs them.
		_ = evt.Content.ParseRaw(evt.Type)
		if evt.StateKey != nil {
			c.state.update(evt)
			if evt.Type == event.StateMember {
				// A membership change invalidates the room's outbound
				// Megolm session, as in mautrix's crypto helper.
				c.mach.HandleMemberEvent(c.ctx(), evt)
			}
		}
		if evt.ID != "" {
			c.events[evt.ID] = evt
		}
	}
}

// syncUntil syncs until done holds after a response, which it returns.
func (c *client) syncUntil(what string, done func(*mautrix.RespSync) bool) *mautrix.RespSync {
	c.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		resp := c.sync(pollTimeout)
		if done(resp) {
			return resp
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: still waiting for %s after %v of /sync", c.user.DeviceID, what, waitFor)
		}
	}
}

// createEncryptedRoom creates a private room with m.room.encryption
// (m.megolm.v1.aes-sha2) in its initial state, inviting others, and syncs
// until the client's state store knows the room is encrypted.
func (c *client) createEncryptedRoom(invite ...id.UserID) id.RoomID {
	c.t.Helper()
	resp, err := c.cli.CreateRoom(c.ctx(), &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Invite: invite,
		InitialState: []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if err != nil {
		c.t.Fatalf("createRoom: %v", err)
	}
	c.waitMember(resp.RoomID, c.userID(), event.MembershipJoin)
	if enc, _ := c.state.IsEncrypted(c.ctx(), resp.RoomID); !enc {
		c.t.Fatalf("room %s: no m.room.encryption with %s in /sync state", resp.RoomID, id.AlgorithmMegolmV1)
	}
	return resp.RoomID
}

// join joins roomID and syncs until the client's own join is in its state.
func (c *client) join(roomID id.RoomID) {
	c.t.Helper()
	if _, err := c.cli.JoinRoomByID(c.ctx(), roomID); err != nil {
		c.t.Fatalf("%s: join %s: %v", c.user.DeviceID, roomID, err)
	}
	c.waitMember(roomID, c.userID(), event.MembershipJoin)
}

// waitMember syncs until the state store has user's membership in roomID.
func (c *client) waitMember(roomID id.RoomID, user id.UserID, m event.Membership) {
	c.t.Helper()
	if c.state.membership(roomID, user) == m {
		return
	}
	c.syncUntil(string(user)+" "+string(m)+" in "+string(roomID), func(*mautrix.RespSync) bool {
		return c.state.membership(roomID, user) == m
	})
}

// sendEncrypted does what a client does to send into an encrypted room:
// share the room's outbound Megolm session with the devices of the joined
// and invited members (a no-op while the shared session is still valid),
// encrypt, and send the result as m.room.encrypted.
func (c *client) sendEncrypted(roomID id.RoomID, body string) id.EventID {
	c.t.Helper()
	if err := c.mach.ShareGroupSession(c.ctx(), roomID, c.state.members(roomID)); err != nil {
		c.t.Fatalf("%s: sharing the Megolm session of %s: %v", c.user.DeviceID, roomID, err)
	}
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: body}
	enc, err := c.mach.EncryptMegolmEvent(c.ctx(), roomID, event.EventMessage, content)
	if err != nil {
		c.t.Fatalf("%s: encrypting: %v", c.user.DeviceID, err)
	}
	resp, err := c.cli.SendMessageEvent(c.ctx(), roomID, event.EventEncrypted, enc)
	if err != nil {
		c.t.Fatalf("%s: sending m.room.encrypted: %v", c.user.DeviceID, err)
	}
	return resp.EventID
}

// decrypt syncs until eventID has reached the client's timeline and its
// Megolm session has reached the machine, and returns the decrypted event.
func (c *client) decrypt(eventID id.EventID) *event.Event {
	c.t.Helper()
	var dec *event.Event
	var err error
	try := func() bool {
		evt := c.events[eventID]
		if evt == nil {
			return false
		}
		dec, err = c.mach.DecryptMegolmEvent(c.ctx(), evt)
		return err == nil
	}
	if try() {
		return dec
	}
	deadline := time.Now().Add(waitFor)
	for !try() {
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: %s not decryptable after %v of /sync (in timeline: %v): last error %v",
				c.user.DeviceID, eventID, waitFor, c.events[eventID] != nil, err)
		}
		c.sync(pollTimeout)
	}
	return dec
}

// messageBody returns the body of a decrypted m.room.message.
func messageBody(t *testing.T, evt *event.Event) string {
	t.Helper()
	if evt.Type != event.EventMessage {
		t.Fatalf("decrypted type %s, want %s", evt.Type.Type, event.EventMessage.Type)
	}
	msg := evt.Content.AsMessage()
	if msg == nil {
		t.Fatalf("decrypted content is no message: %s", evt.Content.VeryRaw)
	}
	return msg.Body
}

// roomState is the crypto.StateStore of one client: which rooms are
// encrypted, with which settings, and who is in them, as learnt from the
// state and timeline events of its own /sync.
type roomState struct {
	mu          sync.Mutex
	encryption  map[id.RoomID]*event.EncryptionEventContent
	visibility  map[id.RoomID]*event.HistoryVisibilityEventContent
	memberships map[id.RoomID]map[id.UserID]event.Membership
}

var _ crypto.StateStore = (*roomState)(nil)

func newRoomState() *roomState {
	return &roomState{
		encryption:  map[id.RoomID]*event.EncryptionEventContent{},
		visibility:  map[id.RoomID]*event.HistoryVisibilityEventContent{},
		memberships: map[id.RoomID]map[id.UserID]event.Membership{},
	}
}

func (s *roomState) update(evt *event.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch content := evt.Content.Parsed.(type) {
	case *event.EncryptionEventContent:
		s.encryption[evt.RoomID] = content
	case *event.HistoryVisibilityEventContent:
		s.visibility[evt.RoomID] = content
	case *event.MemberEventContent:
		if s.memberships[evt.RoomID] == nil {
			s.memberships[evt.RoomID] = map[id.UserID]event.Membership{}
		}
		s.memberships[evt.RoomID][id.UserID(evt.GetStateKey())] = content.Membership
	}
}

func (s *roomState) membership(roomID id.RoomID, user id.UserID) event.Membership {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.memberships[roomID][user]
}

// members returns the joined and invited members of roomID: the users whose
// devices get the room's Megolm keys.
func (s *roomState) members(roomID id.RoomID) []id.UserID {
	s.mu.Lock()
	defer s.mu.Unlock()
	var users []id.UserID
	for u, m := range s.memberships[roomID] {
		if m == event.MembershipJoin || m == event.MembershipInvite {
			users = append(users, u)
		}
	}
	slices.Sort(users)
	return users
}

func (s *roomState) IsEncrypted(_ context.Context, roomID id.RoomID) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	enc := s.encryption[roomID]
	return enc != nil && enc.Algorithm == id.AlgorithmMegolmV1, nil
}

func (s *roomState) GetEncryptionEvent(_ context.Context, roomID id.RoomID) (*event.EncryptionEventContent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.encryption[roomID], nil
}

func (s *roomState) GetHistoryVisibility(_ context.Context, roomID id.RoomID) (*event.HistoryVisibilityEventContent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.visibility[roomID], nil
}

// FindSharedRooms returns the encrypted rooms user is joined to or invited
// to: where a change of user's devices must rotate our outbound session.
func (s *roomState) FindSharedRooms(_ context.Context, user id.UserID) ([]id.RoomID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rooms []id.RoomID
	for roomID, members := range s.memberships {
		m := members[user]
		if s.encryption[roomID] != nil && (m == event.MembershipJoin || m == event.MembershipInvite) {
			rooms = append(rooms, roomID)
		}
	}
	return rooms, nil
}

// testLogWriter sends mautrix's log lines to t.Log, which shows them for a
// failing test (or with -v), until the test has finished.
type testLogWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// close stops the logging: mautrix may still log from a goroutine after the
// test, and t.Log would then panic.
func (w *testLogWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
