package push

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"homeserver/pdu"
	"homeserver/rooms"
	"homeserver/stream"
)

// evaluatorReader names the evaluator among the durable readers; it
// follows the events stream.
const evaluatorReader = "push:evaluator"

const evalBatch = 100

// maxCachedRooms bounds the evaluator's room cache.
const maxCachedRooms = 4096

// minBatchInterval spaces the evaluator's transactions under load, so that
// events arriving meanwhile share one: consecutive events of a room append
// to the same index pages of each member's notifications, so a commit of k
// events writes far fewer pages than k commits. The first event after a
// quiet spell is evaluated at once.
const minBatchInterval = 50 * time.Millisecond

// Start places the evaluator's cursor at the end of the log if it has none
// (history is not evaluated), then runs the evaluator and the pushers
// until Stop.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return nil
	}
	s.started = true
	s.mu.Unlock()
	if _, ok, err := s.store.ReaderCursor(ctx, evaluatorReader, stream.Events); err != nil {
		return err
	} else if !ok {
		pos, err := s.store.MaxPos(ctx)
		if err != nil {
			return err
		}
		if err := s.store.SetReaderCursor(ctx, evaluatorReader, stream.Events, pos); err != nil {
			return err
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.done, s.pushersDone = cancel, make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.pushersDone)
		s.runPushers(runCtx)
	}()
	r := &stream.Reader{
		Name: evaluatorReader, Step: s.evaluateBatch, Wake: s.wake, Poll: 5 * time.Second, Spacing: minBatchInterval,
		// Events another process evaluated may have changed the rooms
		// this one remembers.
		Start:   func(context.Context) error { clear(s.roomCache); s.cursor.Reset(); return nil },
		Backoff: func() (time.Duration, time.Duration) { return 100 * time.Millisecond, 30 * time.Second },
		Log:     s.log, Metrics: s.metrics,
	}
	go func() {
		defer close(s.done)
		r.RunLeased(runCtx, s.leaser)
	}()
	return nil
}

// Stop stops the evaluator and the pushers and waits for them.
func (s *Service) Stop() {
	s.mu.Lock()
	started := s.started
	s.started = false
	s.mu.Unlock()
	if !started {
		return
	}
	s.cancel()
	<-s.done
	<-s.pushersDone
}

// runPushers runs every pusher while this process holds the pushers'
// lease: one lease for them all, so that a deployment with many pushers
// does not keep as many leases.
func (s *Service) runPushers(ctx context.Context) {
	for ctx.Err() == nil {
		lease, err := s.leaser.Acquire(ctx, pushersLease)
		if err != nil {
			continue // ctx ended
		}
		if err := s.pushers.start(ctx); err != nil {
			s.log.Warn("starting pushers", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-lease.Lost():
			s.log.Warn("pushers' lease lost; stopping them here")
		}
		s.pushers.stopAll()
		lease.Release()
	}
}

// pushersLease names the lease under which a process runs the pushers.
const pushersLease = "pushers"

// roomInfo is what evaluation needs of a room, loaded once per batch.
type roomInfo struct {
	joined map[string]string // local joined member -> display name
	count  int
	power  rooms.PowerLevels
}

func (s *Service) isLocal(userID string) bool { return strings.HasSuffix(userID, ":"+s.server) }

func (s *Service) loadRoom(ctx context.Context, roomID string) (*roomInfo, error) {
	members, err := s.store.CurrentStateOfType(ctx, roomID, "m.room.member")
	if err != nil {
		return nil, err
	}
	ri := &roomInfo{joined: map[string]string{}}
	for _, m := range members {
		if m.Membership != "join" || m.StateKey == nil {
			continue
		}
		ri.count++
		if !s.isLocal(*m.StateKey) {
			continue
		}
		var ev struct {
			Content struct {
				DisplayName string `json:"displayname"`
			} `json:"content"`
		}
		_ = json.Unmarshal(m.JSON, &ev)
		ri.joined[*m.StateKey] = ev.Content.DisplayName
	}
	st, err := s.store.CurrentState(ctx, roomID, []pdu.StateKey{{Type: "m.room.power_levels"}, {Type: "m.room.create"}})
	if err != nil {
		return nil, err
	}
	var create, levels *rooms.Stored
	for i := range st {
		switch st[i].Type {
		case "m.room.create":
			create = &st[i]
		case "m.room.power_levels":
			levels = &st[i]
		}
	}
	// The rooms package's power model: defaults, a creator without power
	// levels, room version 12 creators' infinite power.
	if ri.power, err = rooms.PowerLevelsOf(create, levels); err != nil {
		return nil, err
	}
	return ri, nil
}

func threadOf(e *Event) string {
	v, ok := e.Lookup([]string{"content", "m.relates_to", "rel_type"})
	if ok && v == "m.thread" {
		if id, ok := e.Lookup([]string{"content", "m.relates_to", "event_id"}); ok {
			if s, ok := id.(string); ok && s != "" {
				return s
			}
		}
	}
	return "main"
}

// evaluateBatch evaluates the events after the cursor, stores the
// notifications and moves the cursor in one transaction.
func (s *Service) evaluateBatch(ctx context.Context) (stream.Progress, error) {
	cursor, err := s.cursor.Get(ctx, func(ctx context.Context) (int64, error) {
		c, _, err := s.store.ReaderCursor(ctx, evaluatorReader, stream.Events)
		return c, err
	})
	if err != nil {
		return stream.Progress{}, err
	}
	evs, err := s.store.EventsAfter(ctx, cursor, evalBatch)
	if err != nil || len(evs) == 0 {
		return stream.Progress{Pos: cursor, Head: cursor}, err
	}
	var ns []Notification
	// The ignore lists are read once per batch, for the users it needs.
	s.batchIgnores = map[string]map[string]bool{}
	// loadRoom reads the room's current state, which already holds every
	// event of this batch: one load per room and batch is as fresh as one
	// per event, and a burst of joins into a big room does not reload its
	// whole member list for each.
	loaded := map[string]bool{}
	for _, st := range evs {
		if st.StateKey != nil && (st.Type == "m.room.member" || st.Type == "m.room.power_levels" || st.Type == "m.room.create") && !loaded[st.RoomID] {
			delete(s.roomCache, st.RoomID)
		}
		ri, ok := s.roomCache[st.RoomID]
		if !ok {
			if ri, err = s.loadRoom(ctx, st.RoomID); err != nil {
				return stream.Progress{}, err
			}
			if len(s.roomCache) >= maxCachedRooms {
				clear(s.roomCache)
			}
			s.roomCache[st.RoomID] = ri
			loaded[st.RoomID] = true
		}
		got, err := s.evaluate(ctx, st, ri)
		if err != nil {
			return stream.Progress{}, err
		}
		ns = append(ns, got...)
	}
	last := evs[len(evs)-1].Pos
	more := len(evs) == evalBatch
	// A batch that notifies no one (a room of one, a bridge's own
	// events) writes nothing: the main database's one writer is the
	// senders'.
	if len(ns) == 0 && !s.cursor.StoreDue(last) {
		s.cursor.Moved(last)
		return stream.Progress{More: more, Pos: last, Head: last}, nil
	}
	if err := s.store.AddNotifications(ctx, evaluatorReader, ns, last); err != nil {
		return stream.Progress{}, err
	}
	s.cursor.Stored(last)
	if len(ns) > 0 {
		users := map[string]bool{}
		var list []string
		for _, n := range ns {
			if !users[n.UserID] {
				users[n.UserID] = true
				list = append(list, n.UserID)
			}
		}
		// Pushers and the users' syncs learn of it through the hub.
		s.hub.Announce(stream.Change{Stream: stream.Notifications, Users: list})
	}
	return stream.Progress{More: more, Pos: last, Head: last}, nil
}

// evaluate runs the rules of the room's local members (and of a local
// invitee) over one event.
func (s *Service) evaluate(ctx context.Context, st rooms.Stored, ri *roomInfo) ([]Notification, error) {
	if st.RedactedBy != "" {
		return nil, nil
	}
	e, err := ParseEvent(st.JSON)
	if err != nil {
		return nil, nil // not evaluable; nothing to notify
	}
	e.RoomID, e.Sender = st.RoomID, st.Sender
	users := make([]string, 0, len(ri.joined)+1)
	for u := range ri.joined {
		if u != st.Sender {
			users = append(users, u)
		}
	}
	if st.Type == "m.room.member" && st.StateKey != nil && st.Membership == "invite" &&
		s.isLocal(*st.StateKey) && *st.StateKey != st.Sender {
		if _, joined := ri.joined[*st.StateKey]; !joined {
			users = append(users, *st.StateKey)
		}
	}
	if st.StateKey == nil {
		// Users who ignore the sender are not notified of their messages
		// (state is still shown to them, and so still evaluated).
		if users, err = s.withoutIgnorers(ctx, users, st.Sender); err != nil {
			return nil, err
		}
	}
	if len(users) == 0 {
		return nil, nil
	}
	compiled, err := s.compiledFor(ctx, users)
	if err != nil {
		return nil, err
	}
	senderLevel := ri.power.UserLevel(st.Sender)
	thread := threadOf(e)
	now := s.now().UnixMilli()
	var out []Notification
	c := Context{MemberCount: ri.count, SenderLevel: senderLevel, NotificationLevel: ri.power.NotificationLevel}
	for _, u := range users {
		c.UserID, c.DisplayName = u, ri.joined[u]
		res, ok := compiled[u].Evaluate(e, &c)
		if !ok || !res.Notify {
			continue
		}
		actions, _ := json.Marshal(res.Actions)
		out = append(out, Notification{
			UserID: u, RoomID: st.RoomID, EventID: st.EventID, Pos: st.Pos, TS: now,
			Actions: actions, Highlight: res.Highlight, ThreadID: thread,
		})
	}
	return out, nil
}

// withoutIgnorers drops from users those who ignore sender, reading the
// ignore lists not yet read in this batch.
func (s *Service) withoutIgnorers(ctx context.Context, users []string, sender string) ([]string, error) {
	if s.batchIgnores == nil {
		s.batchIgnores = map[string]map[string]bool{}
	}
	var missing []string
	for _, u := range users {
		if _, ok := s.batchIgnores[u]; !ok {
			missing = append(missing, u)
		}
	}
	if len(missing) > 0 {
		lists, err := s.store.IgnoredUserLists(ctx, missing)
		if err != nil {
			return nil, err
		}
		for _, u := range missing {
			var c struct {
				IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
			}
			set := map[string]bool{}
			if raw, ok := lists[u]; ok && json.Unmarshal(raw, &c) == nil {
				for v := range c.IgnoredUsers {
					set[v] = true
				}
			}
			s.batchIgnores[u] = set
		}
	}
	kept := users[:0]
	for _, u := range users {
		if !s.batchIgnores[u][sender] {
			kept = append(kept, u)
		}
	}
	return kept, nil
}

// Unread returns the user's unread counts in a room: the total, and when
// threads is set, the main timeline's and each thread's apart.
func (s *Service) Unread(ctx context.Context, userID, roomID string, threads bool) (Counts, map[string]Counts, error) {
	byThread, err := s.store.UnreadCounts(ctx, userID, roomID)
	if err != nil {
		return Counts{}, nil, err
	}
	if threads {
		main := byThread["main"]
		delete(byThread, "main")
		return main, byThread, nil
	}
	var total Counts
	for _, c := range byThread {
		total.Notifications += c.Notifications
		total.Highlights += c.Highlights
	}
	return total, nil, nil
}

// NotificationPos is the newest notification's ID: the position of the
// notifications stream.
func (s *Service) NotificationPos(ctx context.Context) (int64, error) {
	return s.store.MaxNotificationID(ctx)
}

// RoomsNotifiedBetween lists the rooms where the user got notifications
// with IDs in (from, to].
func (s *Service) RoomsNotifiedBetween(ctx context.Context, userID string, from, to int64) ([]string, error) {
	return s.store.RoomsNotifiedBetween(ctx, userID, from, to)
}

// Notifications lists the user's notifications, newest first; from is the
// next_token of a previous page.
func (s *Service) Notifications(ctx context.Context, userID string, from int64, limit int, onlyHighlight bool) ([]Notification, error) {
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	return s.store.Notifications(ctx, userID, from, limit, onlyHighlight)
}
