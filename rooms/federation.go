package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"homeserver/mxhttp"
	"homeserver/pdu"
)

// Remote is what the rooms service asks of other servers: package
// federation implements it. Every method is bounded in time by its caller's
// context and the federation client's timeouts.
type Remote interface {
	// QueryAlias resolves another server's alias.
	QueryAlias(ctx context.Context, alias string) (AliasTarget, error)
	// Join joins user to a room that this server is not in, through one of
	// servers (tried in turn), and records the room through ImportJoin.
	Join(ctx context.Context, user, roomID string, servers []string, content map[string]any) error
	// Invite sends an invite of another server's user to that server and
	// returns the event as signed by both servers.
	Invite(ctx context.Context, ev *pdu.Event, strippedState []json.RawMessage) (*pdu.Event, error)
	// Leave rejects an invite to (or rescinds a knock on) a room this
	// server is not in, through one of servers.
	Leave(ctx context.Context, user, roomID string, servers []string) error
	// Knock knocks user on a room this server is not in, through one of
	// servers (tried in turn), and records the knock through StoreOwnKnock.
	Knock(ctx context.Context, user, roomID string, servers []string, content map[string]any) error
	// PublicRooms asks server for a page of its published room directory.
	PublicRooms(ctx context.Context, server string, q PublicRoomsQuery) (*PublicRooms, error)
	// Backfill asks the room's other servers, in turn, for up to limit
	// events before from (/backfill) and returns them with their
	// signatures and hashes checked and their auth chains stored here.
	Backfill(ctx context.Context, roomID string, from []string, limit int) ([]*pdu.Event, error)
}

// SetRemote connects the rooms service to other servers. Until it is
// called, rooms of other servers cannot be joined and their users cannot
// be invited.
func (s *Service) SetRemote(r Remote) { s.remote = r }

// RoomState is the store's part of federation: rooms joined through other
// servers, events outside the timeline, invites from other servers.
type RoomState interface {
	// PersistOutliers stores events outside the timeline.
	PersistOutliers(ctx context.Context, events []*pdu.Event) error
	// ImportRoom records a room joined through another server: its row,
	// the auth chain and state as outliers, the state as current state and
	// the forward extremities the join replaces.
	ImportRoom(ctx context.Context, room Room, outliers, state []*pdu.Event, extremities []string) error
	// EnsureRoom creates the row of a room known from an invite only.
	EnsureRoom(ctx context.Context, room Room) error
	// JoinedServers returns the servers with a joined member in the room.
	JoinedServers(ctx context.Context, roomID string) ([]string, error)
	ServerInRoom(ctx context.Context, roomID, server string) (bool, error)
	// RejectEvent records an event the auth rules rejected, and
	// RejectedEvents returns the reasons of those of ids that were.
	RejectEvent(ctx context.Context, ev *pdu.Event, reason string) error
	RejectedEvents(ctx context.Context, ids []string) (map[string]string, error)
	SaveInviteState(ctx context.Context, roomID, userID string, state []byte) error
	InviteState(ctx context.Context, roomID, userID string) ([]byte, error)
}

// RejectedError says why a received event was not accepted.
type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string { return "rooms: event rejected: " + e.Reason }

// ErrSoftFailed reports an event that passed the checks against its own
// auth events but not against the room's current state: it is stored
// outside the timeline, served to nobody and not built upon.
var ErrSoftFailed = errors.New("rooms: event soft-failed against the current state")

// ErrMissingAuthEvents reports an event whose auth events are not all
// known here: undecided, not rejected (they may be fetched).
var ErrMissingAuthEvents = errors.New("rooms: some auth events of the event are unknown here")

// ErrUnknownRoom reports an event for a room this server is not in.
var ErrUnknownRoom = errors.New("rooms: unknown room")

// JoinedServers returns the servers with joined members in the room.
func (s *Service) JoinedServers(ctx context.Context, roomID string) ([]string, error) {
	return s.store.JoinedServers(ctx, roomID)
}

// InRoom reports whether this server has a joined member in the room.
func (s *Service) InRoom(ctx context.Context, roomID string) (bool, error) {
	return s.store.ServerInRoom(ctx, roomID, s.server)
}

// ReceiveEvent takes an event another server sent, whose signatures and
// hashes the caller has checked: it checks the event against its own auth
// events and then against the room's state before it and its current
// state, and writes it through the one writer path, so that sync,
// application services and push see it exactly as a local event. An event
// already stored is accepted again without effect.
func (s *Service) ReceiveEvent(ctx context.Context, ev *pdu.Event) error {
	return s.receive(ctx, ev, nil)
}

// ReceiveEventAfterState is ReceiveEvent for an event whose prev_events
// are not known here (a gap that could not be filled): stateBefore is the
// state before it as another server reported it (/state_ids), every event
// of which is stored here. The event joins the room's history as a new
// branch, resolved against the others.
func (s *Service) ReceiveEventAfterState(ctx context.Context, ev *pdu.Event, stateBefore []string) error {
	stored, err := s.store.GetEvents(ctx, stateBefore)
	if err != nil {
		return err
	}
	given := make(stateMap, len(stored))
	for _, e := range stored {
		if e.RoomID != ev.RoomID() || e.StateKey == nil {
			return &RejectedError{Reason: fmt.Sprintf("state event %s is not state of the room", e.EventID)}
		}
		given[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] = e.EventID
	}
	if len(given) != len(stateBefore) {
		return ErrMissingAuthEvents
	}
	return s.receive(ctx, ev, given)
}

func (s *Service) receive(ctx context.Context, ev *pdu.Event, given stateMap) error {
	s.write.Lock()
	unlock, err := s.store.LockRoom(ctx, ev.RoomID())
	if err != nil {
		s.write.Unlock()
		return err
	}
	pos, err := s.receiveLocked(ctx, ev, given)
	unlock()
	s.write.Unlock()
	if err != nil {
		return err
	}
	if pos > 0 {
		s.announce(Persisted{Pos: pos, RoomID: ev.RoomID(), EventID: ev.ID(), Type: ev.Type(), StateKey: ev.StateKey()})
	}
	return nil
}

func (s *Service) receiveLocked(ctx context.Context, ev *pdu.Event, given stateMap) (int64, error) {
	if _, err := s.store.GetEvent(ctx, ev.ID()); err == nil {
		return 0, nil
	} else if !errors.Is(err, ErrNotFound) {
		return 0, err
	}
	// A rejected event is decided once: the same answer, no new work.
	if rejected, err := s.store.RejectedEvents(ctx, []string{ev.ID()}); err != nil {
		return 0, err
	} else if reason, ok := rejected[ev.ID()]; ok {
		return 0, &RejectedError{Reason: reason}
	}
	pos, err := s.checkAndPersist(ctx, ev, given)
	var rej *RejectedError
	if errors.As(err, &rej) {
		if err := s.store.RejectEvent(ctx, ev, rej.Reason); err != nil {
			return 0, err
		}
	}
	return pos, err
}

func (s *Service) checkAndPersist(ctx context.Context, ev *pdu.Event, given stateMap) (int64, error) {
	room, err := s.store.GetRoom(ctx, ev.RoomID())
	if errors.Is(err, ErrNotFound) {
		return 0, ErrUnknownRoom
	}
	if err != nil {
		return 0, err
	}
	if ev.Version() != room.Version {
		return 0, &RejectedError{Reason: fmt.Sprintf("room version %s, not %s", ev.Version(), room.Version)}
	}
	if err := s.checkAgainstAuthEvents(ctx, ev); err != nil {
		return 0, err
	}
	keys, err := pdu.NeededForEvent(ev)
	if err != nil {
		return 0, &RejectedError{Reason: err.Error()}
	}
	before, err := s.checkAgainstStateBefore(ctx, ev, room.Version, keys, given)
	if err != nil {
		return 0, err
	}
	current, err := s.loadAuthState(ctx, ev.RoomID(), room.Version, keys)
	if err != nil {
		return 0, err
	}
	if err := pdu.Allowed(ev, current); err != nil {
		var na *pdu.NotAllowedError
		if !errors.As(err, &na) {
			return 0, &RejectedError{Reason: err.Error()}
		}
		if err := s.store.PersistOutliers(ctx, []*pdu.Event{ev}); err != nil {
			return 0, err
		}
		s.log.Info("soft-failed received event", "event_id", ev.ID(), "room_id", ev.RoomID(), "reason", na.Message)
		return 0, ErrSoftFailed
	}
	ne := NewEvent{Event: ev, Relation: relationOf(ev.Content()), Received: true}
	if ne.StateAfter, ne.CurrentState, err = s.forkState(ctx, room.Version, ev, before, given != nil); err != nil {
		// Without the branches' states, the event extends the current
		// state, as before forks were resolved.
		s.log.Warn("resolving a fork; extending the current state instead", "event_id", ev.ID(), "room_id", ev.RoomID(), "err", err)
		ne.StateAfter, ne.CurrentState = nil, nil
	}
	if target := ev.Redacts(); target != "" {
		if ok, err := s.redactionApplies(ctx, ev, target); err != nil {
			return 0, err
		} else if ok {
			ne.RedactTarget = target
		}
	}
	pos, err := s.store.PersistEvent(ctx, ne)
	if err != nil {
		return 0, fmt.Errorf("rooms: persisting received %s: %w", ev.ID(), err)
	}
	return pos, nil
}

// checkAgainstAuthEvents applies the auth rules with the state the event
// itself names (its auth_events), all of which must be known here.
func (s *Service) checkAgainstAuthEvents(ctx context.Context, ev *pdu.Event) error {
	ids := ev.AuthEventIDs()
	stored, err := s.store.GetEvents(ctx, ids)
	if err != nil {
		return err
	}
	if len(stored) != len(ids) {
		return ErrMissingAuthEvents
	}
	st := authState{}
	for _, e := range stored {
		if e.RoomID != ev.RoomID() || e.StateKey == nil {
			return &RejectedError{Reason: fmt.Sprintf("auth event %s is not state of the room", e.EventID)}
		}
		data, err := authJSON(ev.Version(), e)
		if err != nil {
			return err
		}
		a, err := pdu.Parse(ev.Version(), data)
		if err != nil {
			return err
		}
		st[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] = a
	}
	if st.Get("m.room.create", "") == nil {
		// From room version 12 the create event is implied by the room ID.
		create, err := s.store.CurrentState(ctx, ev.RoomID(), []pdu.StateKey{{Type: "m.room.create"}})
		if err != nil {
			return err
		}
		for _, e := range create {
			if a, err := pdu.Parse(ev.Version(), e.JSON); err == nil {
				st[pdu.StateKey{Type: "m.room.create"}] = a
			}
		}
	}
	if err := pdu.Allowed(ev, st); err != nil {
		return &RejectedError{Reason: err.Error()}
	}
	return nil
}

// checkAgainstStateBefore applies the auth rules with the room's state
// before the event: the state another server gave (given), or the state
// after its one prev event (only the keys the rules need: the usual case,
// kept cheap), or the resolution of its prev events' states at a merge.
// It returns the state before in full when it computed it (given or
// resolved), for the fork handling to reuse; nil when no prev event's
// state is known here (outliers, unknown events): then only the auth
// events and the current state judge the event.
func (s *Service) checkAgainstStateBefore(ctx context.Context, ev *pdu.Event, version string, keys []pdu.StateKey, given stateMap) (stateMap, error) {
	prevs := ev.PrevEventIDs()
	var before stateMap
	var ids []string
	switch {
	case given != nil:
		before = given
	case len(prevs) == 1:
		prev, err := s.store.GetEvent(ctx, prevs[0])
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if prev.RoomID != ev.RoomID() || prev.StateGroup <= 0 {
			return nil, nil // an outlier: its state is not known here
		}
		entries, err := s.store.StateAt(ctx, prev.StateGroup, keys)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			ids = append(ids, e.EventID)
		}
	default:
		var prevStates []stateMap
		for _, p := range prevs {
			st, ok, err := s.stateAfter(ctx, p)
			if err != nil {
				return nil, err
			}
			if ok {
				prevStates = append(prevStates, st)
			}
		}
		if len(prevStates) == 0 {
			return nil, nil
		}
		var err error
		if before, err = s.resolve(ctx, version, prevStates, nil); err != nil {
			return nil, err
		}
	}
	if before != nil {
		for _, k := range keys {
			if id, ok := before[k]; ok {
				ids = append(ids, id)
			}
		}
	}
	stored, err := s.store.GetEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	st := authState{}
	for _, e := range stored {
		if e.StateKey == nil {
			continue
		}
		data, err := authJSON(version, e)
		if err != nil {
			return nil, err
		}
		a, err := pdu.Parse(version, data)
		if err != nil {
			return nil, err
		}
		st[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] = a
	}
	if err := pdu.Allowed(ev, st); err != nil {
		return nil, &RejectedError{Reason: "not allowed by the state before it: " + err.Error()}
	}
	return before, nil
}

// redactionApplies decides whether a received redaction hides its target:
// the target's sender is on the redaction sender's server, or the sender
// has the power to redact others' events.
func (s *Service) redactionApplies(ctx context.Context, ev *pdu.Event, target string) (bool, error) {
	orig, err := s.store.GetEvent(ctx, target)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if orig.RoomID != ev.RoomID() {
		return false, nil
	}
	if serverOf(orig.Sender) == serverOf(ev.Sender()) {
		return true, nil
	}
	level, err := s.powerLevel(ctx, ev.RoomID(), ev.Sender(), "redact")
	return level.ok, err
}

func serverOf(id string) string {
	_, server, _ := strings.Cut(id, ":")
	return server
}

// ImportJoin records a room joined through another server: the state and
// auth chain the resident server returned (checked by the caller: hashes,
// signatures, auth of each event), then the join event itself through the
// writer path, checked against that state.
func (s *Service) ImportJoin(ctx context.Context, join *pdu.Event, state, authChain []*pdu.Event) error {
	var create *pdu.Event
	st := authState{}
	for _, e := range state {
		if e.RoomID() != join.RoomID() || e.StateKey() == nil {
			return &RejectedError{Reason: fmt.Sprintf("state event %s is not state of the room", e.ID())}
		}
		st[pdu.StateKey{Type: e.Type(), StateKey: *e.StateKey()}] = e
		if e.Type() == "m.room.create" && *e.StateKey() == "" {
			create = e
		}
	}
	if create == nil {
		return &RejectedError{Reason: "the room's state has no m.room.create event"}
	}
	if err := pdu.Allowed(join, st); err != nil {
		return &RejectedError{Reason: "the join is not allowed by the room's state: " + err.Error()}
	}
	room := Room{RoomID: join.RoomID(), Version: join.Version(), Creator: create.Sender(), CreatedTS: create.OriginServerTS()}
	s.write.Lock()
	unlock, err := s.store.LockRoom(ctx, join.RoomID())
	if err != nil {
		s.write.Unlock()
		return err
	}
	var pos int64
	err = s.store.ImportRoom(ctx, room, authChain, state, join.PrevEventIDs())
	if err == nil {
		pos, err = s.store.PersistEvent(ctx, NewEvent{Event: join, Received: true})
	}
	unlock()
	s.write.Unlock()
	if err != nil {
		return fmt.Errorf("rooms: importing joined room %s: %w", join.RoomID(), err)
	}
	s.announce(Persisted{Pos: pos, RoomID: join.RoomID(), EventID: join.ID(), Type: join.Type(), StateKey: join.StateKey()})
	return nil
}

// ReceiveInvite stores another server's invite of a local user (signed by
// both servers, checked by the caller) with the stripped state that came
// with it, so that the invitee's /sync shows it.
func (s *Service) ReceiveInvite(ctx context.Context, ev *pdu.Event, stripped []json.RawMessage) error {
	target := ev.StateKey()
	if ev.Type() != "m.room.member" || target == nil || ev.Membership() != "invite" || !s.isLocal(*target) {
		return &RejectedError{Reason: "not an invite of a user of this server"}
	}
	if err := s.checkNotBlocked(ctx, ev.RoomID()); err != nil {
		return err
	}
	if in, err := s.InRoom(ctx, ev.RoomID()); err != nil {
		return err
	} else if in {
		// A room this server is in: the invite is an ordinary event.
		return s.ReceiveEvent(ctx, ev)
	}
	return s.storeOutOfRoom(ctx, ev, ev.Sender(), stripped)
}

// StoreOwnKnock records the knock of a local user on a room this server is
// not in, once a resident server took it, with the stripped state that
// server returned, so that the knocker's /sync shows it.
func (s *Service) StoreOwnKnock(ctx context.Context, ev *pdu.Event, stripped []json.RawMessage) error {
	sk := ev.StateKey()
	if ev.Type() != "m.room.member" || sk == nil || *sk != ev.Sender() || ev.Membership() != "knock" || !s.isLocal(ev.Sender()) {
		return &RejectedError{Reason: "not a knock of a user of this server"}
	}
	creator := ev.Sender()
	for _, raw := range stripped {
		var e struct {
			Type   string `json:"type"`
			Sender string `json:"sender"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Type == "m.room.create" && e.Sender != "" {
			creator = e.Sender
		}
	}
	return s.storeOutOfRoom(ctx, ev, creator, stripped)
}

// storeOutOfRoom records a membership of a local user in a room this
// server is not in (a remote invite or an own knock): the stripped state
// the user is shown, the room's row, and the event.
func (s *Service) storeOutOfRoom(ctx context.Context, ev *pdu.Event, creator string, stripped []json.RawMessage) error {
	if stripped == nil {
		stripped = []json.RawMessage{}
	}
	data, err := json.Marshal(stripped)
	if err != nil {
		return err
	}
	if err := s.store.SaveInviteState(ctx, ev.RoomID(), *ev.StateKey(), data); err != nil {
		return err
	}
	if err := s.store.EnsureRoom(ctx, Room{RoomID: ev.RoomID(), Version: ev.Version(), Creator: creator, CreatedTS: ev.OriginServerTS()}); err != nil {
		return err
	}
	return s.persistOutOfRoom(ctx, ev)
}

// persistOutOfRoom writes a membership event of a local user in a room
// this server is not in (an invite, a knock, a leave) through the writer
// path, without checks against the room's state, which this server does
// not have: the caller checked the event, and the resident server took
// it. An event already stored changes nothing.
func (s *Service) persistOutOfRoom(ctx context.Context, ev *pdu.Event) error {
	s.write.Lock()
	unlock, err := s.store.LockRoom(ctx, ev.RoomID())
	if err != nil {
		s.write.Unlock()
		return err
	}
	var pos int64
	if _, err = s.store.GetEvent(ctx, ev.ID()); errors.Is(err, ErrNotFound) {
		pos, err = s.store.PersistEvent(ctx, NewEvent{Event: ev})
	}
	unlock()
	s.write.Unlock()
	if err != nil {
		return fmt.Errorf("rooms: storing %s %s: %w", ev.Membership(), ev.ID(), err)
	}
	if pos > 0 {
		s.announce(Persisted{Pos: pos, RoomID: ev.RoomID(), EventID: ev.ID(), Type: ev.Type(), StateKey: ev.StateKey()})
	}
	return nil
}

// MakeMembership builds, without storing, the event template another
// server asked for with make_join, make_leave or make_knock: prev_events,
// auth_events and depth as this server sees the room, checked against the
// current state so that a join the rules refuse is refused here already.
func (s *Service) MakeMembership(ctx context.Context, roomID, userID, membership string, supported []string) (version string, template json.RawMessage, err error) {
	room, err := s.store.GetRoom(ctx, roomID)
	if errors.Is(err, ErrNotFound) {
		return "", nil, mxhttp.NotFound("Unknown room")
	}
	if err != nil {
		return "", nil, err
	}
	if in, err := s.InRoom(ctx, roomID); err != nil {
		return "", nil, err
	} else if !in {
		return "", nil, mxhttp.NotFound("This server is not in the room")
	}
	if supported != nil && !slices.Contains(supported, room.Version) {
		return "", nil, &mxhttp.Error{Status: 400, Code: "M_INCOMPATIBLE_ROOM_VERSION", Message: "Your server does not support the room's version"}
	}
	content := map[string]any{"membership": membership}
	if membership == "join" {
		extra, err := s.restrictedJoin(ctx, roomID, userID, "")
		if err != nil {
			return "", nil, err
		}
		for k, v := range extra {
			content[k] = v
		}
	}
	prevs, depth, err := s.store.Extremities(ctx, roomID)
	if err != nil {
		return "", nil, err
	}
	p := pdu.Proto{Sender: userID, RoomID: roomID, Type: "m.room.member", StateKey: &userID, Content: mustJSON(content)}
	keys, err := pdu.NeededForAuth(p, room.Version)
	if err != nil {
		return "", nil, mxhttp.BadJSON("%v", err)
	}
	state, err := s.loadAuthState(ctx, roomID, room.Version, keys)
	if err != nil {
		return "", nil, err
	}
	// Built with this server's key only to lay the event out; the joining
	// server replaces origin, hashes and signatures with its own.
	built, err := pdu.BuildForOther(p, room.Version, prevs, depth+1, state, s.key)
	if err != nil {
		return "", nil, mxhttp.BadJSON("Cannot build event: %v", err)
	}
	if err := pdu.Allowed(built, state); err != nil {
		return "", nil, mxhttp.Forbidden("%v", err)
	}
	return room.Version, built.Template(), nil
}

// StatePDUs returns the room's current state as PDUs, in the form other
// servers are sent them (redacted events redacted).
func (s *Service) StatePDUs(ctx context.Context, roomID string) ([]json.RawMessage, []string, error) {
	room, err := s.store.GetRoom(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	st, err := s.store.CurrentState(ctx, roomID, nil)
	if err != nil {
		return nil, nil, err
	}
	out := make([]json.RawMessage, 0, len(st))
	ids := make([]string, 0, len(st))
	for _, e := range st {
		data, err := authJSON(room.Version, e)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, data)
		ids = append(ids, e.EventID)
	}
	return out, ids, nil
}

// AuthChainPDUs returns the auth chain of the events (their auth events,
// recursively, without the events themselves unless one is another's auth
// event) as PDUs.
func (s *Service) AuthChainPDUs(ctx context.Context, roomID string, eventIDs []string) ([]json.RawMessage, error) {
	room, err := s.store.GetRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []json.RawMessage
	frontier := slices.Clone(eventIDs)
	first := true
	for len(frontier) > 0 {
		stored, err := s.store.GetEvents(ctx, frontier)
		if err != nil {
			return nil, err
		}
		frontier = frontier[:0]
		for _, e := range stored {
			if e.RoomID != roomID {
				continue
			}
			if !first {
				data, err := authJSON(room.Version, e)
				if err != nil {
					return nil, err
				}
				out = append(out, data)
			}
			ev, err := pdu.Parse(room.Version, e.JSON)
			if err != nil {
				return nil, err
			}
			for _, a := range ev.AuthEventIDs() {
				if !seen[a] {
					seen[a] = true
					frontier = append(frontier, a)
				}
			}
		}
		first = false
	}
	return out, nil
}

// RoomVersion returns the version of a room this server knows.
func (s *Service) RoomVersion(ctx context.Context, roomID string) (string, error) {
	room, err := s.store.GetRoom(ctx, roomID)
	if err != nil {
		return "", err
	}
	return room.Version, nil
}

// EventPDU returns a stored event as a PDU (redacted if redacted).
func (s *Service) EventPDU(ctx context.Context, eventID string) (json.RawMessage, string, error) {
	e, err := s.store.GetEvent(ctx, eventID)
	if err != nil {
		return nil, "", err
	}
	room, err := s.store.GetRoom(ctx, e.RoomID)
	if err != nil {
		return nil, "", err
	}
	data, err := authJSON(room.Version, e)
	return data, e.RoomID, err
}

// StoreOwnLeave records the leave of a local user from a room this server
// is not in (a rejected remote invite, a rescinded knock), once the
// resident server took it.
func (s *Service) StoreOwnLeave(ctx context.Context, ev *pdu.Event) error {
	return s.persistOutOfRoom(ctx, ev)
}

// StrippedStatePDUs returns the room's state that identifies it to a user
// knocking from another server (knock_room_state): the events of the
// stripped state types, formatted as PDUs of the room's version, as the
// spec asks since v1.16.
func (s *Service) StrippedStatePDUs(ctx context.Context, roomID string) ([]json.RawMessage, error) {
	room, err := s.store.GetRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	keys := make([]pdu.StateKey, 0, len(strippedTypes))
	for _, t := range strippedTypes {
		keys = append(keys, pdu.StateKey{Type: t})
	}
	st, err := s.store.CurrentState(ctx, roomID, keys)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(st))
	for _, e := range st {
		data, err := authJSON(room.Version, e)
		if err != nil {
			return nil, err
		}
		out = append(out, data)
	}
	return out, nil
}

// ServerKey is the key this server signs events with.
func (s *Service) ServerKey() pdu.Key { return s.key }

// CheckRestrictedJoin checks, before this server signs another server's
// join as its authorising server, that the joiner may join the restricted
// room through one of the allowed rooms (or an invite).
func (s *Service) CheckRestrictedJoin(ctx context.Context, roomID, userID string) error {
	current, err := s.store.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	_, err = s.restrictedJoin(ctx, roomID, userID, current)
	return err
}

// UnknownEvents returns those of ids this server neither holds nor has
// rejected.
func (s *Service) UnknownEvents(ctx context.Context, ids []string) ([]string, error) {
	stored, err := s.store.GetEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	have := make(map[string]bool, len(stored))
	for _, e := range stored {
		have[e.EventID] = true
	}
	var missing []string
	for _, id := range ids {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return nil, nil
	}
	// A rejected event is known too: it is never asked for again.
	rejected, err := s.store.RejectedEvents(ctx, missing)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, id := range missing {
		if _, ok := rejected[id]; !ok {
			out = append(out, id)
		}
	}
	return out, nil
}

// ForwardExtremities returns the room's forward extremities: the events
// with no successor here yet.
func (s *Service) ForwardExtremities(ctx context.Context, roomID string) ([]string, error) {
	ids, _, err := s.store.Extremities(ctx, roomID)
	return ids, err
}

// ErrStateUnknown: the event is known only outside the timeline, so the
// state at it is not known here.
var ErrStateUnknown = errors.New("rooms: the state at this event is not known here")

// StateBefore returns the IDs of the room's state before an event (the
// state after it, without its own change), as /state and /state_ids
// serve it.
func (s *Service) StateBefore(ctx context.Context, roomID, eventID string) ([]string, error) {
	ev, err := s.store.GetEvent(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if ev.RoomID != roomID {
		return nil, ErrNotFound
	}
	if ev.Pos <= 0 || ev.StateGroup <= 0 {
		return nil, ErrStateUnknown
	}
	entries, err := s.store.StateAt(ctx, ev.StateGroup, nil)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		if ev.StateKey != nil && e.Type == ev.Type && e.StateKey == *ev.StateKey {
			if ev.ReplacesState != "" {
				ids = append(ids, ev.ReplacesState)
			}
			continue
		}
		ids = append(ids, e.EventID)
	}
	return ids, nil
}

// EventPDUs returns stored events of the room as PDUs, in the order of
// ids (unknown ones and other rooms' left out).
func (s *Service) EventPDUs(ctx context.Context, roomID string, ids []string) ([]json.RawMessage, error) {
	room, err := s.store.GetRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	stored, err := s.store.GetEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]Stored, len(stored))
	for _, e := range stored {
		byID[e.EventID] = e
	}
	out := make([]json.RawMessage, 0, len(ids))
	for _, id := range ids {
		e, ok := byID[id]
		if !ok || e.RoomID != roomID {
			continue
		}
		data, err := authJSON(room.Version, e)
		if err != nil {
			return nil, err
		}
		out = append(out, data)
	}
	return out, nil
}

// ReceiveOutliers stores events another server sent as part of an auth
// chain (checked by the caller: hashes, signatures), oldest first: each
// must be allowed by its own auth events, known here or earlier in the
// list; those that are not are recorded as rejected. It returns the
// rejected events' IDs with their reasons.
func (s *Service) ReceiveOutliers(ctx context.Context, roomID string, evs []*pdu.Event) (map[string]string, error) {
	sorted := slices.Clone(evs)
	slices.SortStableFunc(sorted, func(a, b *pdu.Event) int { return int(a.Depth() - b.Depth()) })
	rejected := map[string]string{}
	var accepted []*pdu.Event
	known := map[string]*pdu.Event{}
	for _, ev := range sorted {
		if ev.RoomID() != roomID {
			continue
		}
		if unknown, err := s.UnknownEvents(ctx, []string{ev.ID()}); err != nil {
			return nil, err
		} else if len(unknown) == 0 {
			if r, err := s.store.RejectedEvents(ctx, []string{ev.ID()}); err != nil {
				return nil, err
			} else if reason, ok := r[ev.ID()]; ok {
				rejected[ev.ID()] = reason
			}
			continue
		}
		st := authState{}
		ok := true
		for _, id := range ev.AuthEventIDs() {
			a := known[id]
			if a == nil {
				stored, err := s.store.GetEvents(ctx, []string{id})
				if err != nil {
					return nil, err
				}
				if len(stored) == 0 {
					ok = false
					break
				}
				data, err := authJSON(ev.Version(), stored[0])
				if err != nil {
					return nil, err
				}
				if a, err = pdu.Parse(ev.Version(), data); err != nil {
					return nil, err
				}
			}
			if a.StateKey() == nil {
				ok = false
				break
			}
			st[pdu.StateKey{Type: a.Type(), StateKey: *a.StateKey()}] = a
		}
		reason := ""
		if !ok {
			reason = "its auth events are missing or rejected"
		} else {
			if st.Get("m.room.create", "") == nil {
				if c, err := s.store.CurrentState(ctx, roomID, []pdu.StateKey{{Type: "m.room.create"}}); err == nil && len(c) > 0 {
					if a, err := pdu.Parse(ev.Version(), c[0].JSON); err == nil {
						st[pdu.StateKey{Type: "m.room.create"}] = a
					}
				}
			}
			if err := pdu.Allowed(ev, st); err != nil {
				reason = err.Error()
			}
		}
		if reason != "" {
			rejected[ev.ID()] = reason
			if err := s.store.RejectEvent(ctx, ev, reason); err != nil {
				return nil, err
			}
			continue
		}
		known[ev.ID()] = ev
		accepted = append(accepted, ev)
	}
	if len(accepted) > 0 {
		if err := s.store.PersistOutliers(ctx, accepted); err != nil {
			return nil, err
		}
	}
	return rejected, nil
}
