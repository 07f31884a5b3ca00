// Package typing keeps who is typing in which room. Typing is transient, so
// it lives in memory only: each notice holds for a timeout, after which the
// server drops it by itself. Every change, expiry included, moves the
// service's position forward, so that /sync can ask which rooms changed
// since its token and wait for the next change.
//
// With several processes, each keeps the same state: a process shares the
// notices it receives (Notice, with their deadline), the others apply them
// (Apply), and each expires them by itself at the same deadline. Positions
// follow the clock (a change takes at least the current time in
// microseconds), so that a token from one process means about the same on
// another.
package typing

import (
	"slices"
	"sync"
	"time"
)

// Timeouts of a typing notice.
const (
	DefaultTimeout = 30 * time.Second
	MaxTimeout     = 120 * time.Second
)

// Notice is one change of typing, as processes share it.
type Notice struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
	Typing bool   `json:"typing"`
	// Until is when the notice expires, in unix milliseconds.
	Until int64 `json:"until,omitempty"`
	Pos   int64 `json:"pos"`
}

// Service is the typing state of every room. It is safe for concurrent use.
type Service struct {
	notify func(roomID string, n *Notice)
	now    func() time.Time

	mu sync.Mutex
	// typing holds, per room, each typing user's expiry.
	typing map[string]map[string]time.Time
	// changed holds the position of each room's last change. Rooms stay
	// here once they have had typing, so that a sync from an old position
	// learns that their typing set became empty.
	changed map[string]int64
	pos     int64
	// unannounced are rooms whose expiry a reader noticed first; the timer
	// announces them, so that notify never runs on a reader's goroutine.
	unannounced map[string]bool
	// earliest is the first expiry of a notice (zero when none), so that
	// readers skip the scan until then.
	earliest time.Time
	after    func(time.Duration, func()) timer
	timer    timer
	closed   bool
}

// timer is the part of *time.Timer the service uses.
type timer interface {
	Stop() bool
	Reset(time.Duration) bool
}

// New returns an empty typing service. notify, when not nil, is called
// after each change with its room (so that waiting syncs of the room's
// members look again): from Set's caller, with the notice to share with
// other processes, or from the service's timer, with nil, when notices
// expire (every process expires them by itself). It is not called for
// notices applied from other processes. It must not block.
func New(notify func(roomID string, n *Notice)) *Service {
	return newService(notify, time.Now, func(d time.Duration, f func()) timer { return time.AfterFunc(d, f) })
}

// newService takes the clock and timers, which tests drive by hand.
func newService(notify func(string, *Notice), now func() time.Time, after func(time.Duration, func()) timer) *Service {
	return &Service{
		notify: notify,
		now:    now,
		after:  after,
		typing: map[string]map[string]time.Time{},
		// Positions start from the clock so that those handed out before a
		// restart stay below those handed out after it.
		pos:         now().UnixMicro(),
		changed:     map[string]int64{},
		unannounced: map[string]bool{},
	}
}

// Set records that userID started (typing, for timeout: DefaultTimeout
// when not positive, at most MaxTimeout) or stopped typing in roomID.
// Renewing a notice before it expires is not a change.
func (s *Service) Set(roomID, userID string, typing bool, timeout time.Duration) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	timeout = min(timeout, MaxTimeout)
	s.mu.Lock()
	now := s.now()
	s.expireLocked(now)
	users := s.typing[roomID]
	_, was := users[userID]
	switch {
	case typing:
		if users == nil {
			users = map[string]time.Time{}
			s.typing[roomID] = users
		}
		users[userID] = now.Add(timeout)
	case was:
		delete(users, userID)
		if len(users) == 0 {
			delete(s.typing, roomID)
		}
	}
	changed := was != typing
	var n *Notice
	if changed {
		s.changeLocked(roomID, now.UnixMicro())
		n = &Notice{RoomID: roomID, UserID: userID, Typing: typing, Pos: s.pos}
		if typing {
			n.Until = users[userID].UnixMilli()
		}
	}
	s.scheduleLocked(now)
	s.mu.Unlock()
	if changed && s.notify != nil {
		s.notify(roomID, n)
	}
}

// Apply records a notice another process received. It does not notify:
// the announcement that carried it woke this process's syncs.
func (s *Service) Apply(n Notice) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expireLocked(now)
	users := s.typing[n.RoomID]
	_, was := users[n.UserID]
	until := time.UnixMilli(n.Until)
	typing := n.Typing && until.After(now)
	switch {
	case typing:
		if users == nil {
			users = map[string]time.Time{}
			s.typing[n.RoomID] = users
		}
		users[n.UserID] = until
	case was:
		delete(users, n.UserID)
		if len(users) == 0 {
			delete(s.typing, n.RoomID)
		}
	}
	if was != typing {
		s.changeLocked(n.RoomID, n.Pos)
	}
	s.scheduleLocked(now)
}

// Typing returns the users typing in roomID now, sorted.
func (s *Service) Typing(roomID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireNoticed()
	users := make([]string, 0, len(s.typing[roomID]))
	for u := range s.typing[roomID] {
		users = append(users, u)
	}
	slices.Sort(users)
	return users
}

// Pos returns the current position; it increases on every change.
func (s *Service) Pos() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireNoticed()
	return s.pos
}

// ChangedSince returns the rooms, sorted, whose typing set changed after
// pos.
func (s *Service) ChangedSince(pos int64) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireNoticed()
	var rooms []string
	for room, p := range s.changed {
		if p > pos {
			rooms = append(rooms, room)
		}
	}
	slices.Sort(rooms)
	return rooms
}

// Close stops the expiry timer; notices no longer expire by themselves
// (readers still drop them lazily) and notify is no longer called for
// expiries.
func (s *Service) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}

// expireNoticed drops expired notices on a reader's behalf; the timer,
// woken at once, announces them.
func (s *Service) expireNoticed() {
	now := s.now()
	if s.expireLocked(now) {
		s.scheduleLocked(now)
	}
}

// expireLocked drops the notices expired at now, recording each room
// changed as unannounced; it reports whether it dropped any.
func (s *Service) expireLocked(now time.Time) bool {
	if s.earliest.IsZero() || now.Before(s.earliest) {
		return false
	}
	dropped := false
	for room, users := range s.typing {
		for u, until := range users {
			if !until.After(now) {
				delete(users, u)
				dropped = true
				s.changeLocked(room, 0)
				s.unannounced[room] = true
			}
		}
		if len(users) == 0 {
			delete(s.typing, room)
		}
	}
	return dropped
}

// changeLocked moves the position forward, to at least floor, for a change
// in room.
func (s *Service) changeLocked(room string, floor int64) {
	s.pos = max(s.pos+1, floor)
	s.changed[room] = s.pos
}

// scheduleLocked sets the timer for the next thing it has to do: announce
// expiries at once, or wake at the earliest expiry; it stops the timer when
// nothing is pending.
func (s *Service) scheduleLocked(now time.Time) {
	s.earliest = time.Time{}
	for _, users := range s.typing {
		for _, until := range users {
			if s.earliest.IsZero() || until.Before(s.earliest) {
				s.earliest = until
			}
		}
	}
	if s.closed {
		return
	}
	next := s.earliest
	if len(s.unannounced) > 0 {
		next = now
	}
	if next.IsZero() {
		if s.timer != nil {
			s.timer.Stop()
		}
		return
	}
	d := max(next.Sub(now), 0)
	if s.timer == nil {
		s.timer = s.after(d, s.tick)
	} else {
		s.timer.Reset(d)
	}
}

// tick runs on the timer: it expires what is due, announces the rooms
// changed and sets the timer again.
func (s *Service) tick() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	now := s.now()
	s.expireLocked(now)
	rooms := make([]string, 0, len(s.unannounced))
	for room := range s.unannounced {
		rooms = append(rooms, room)
	}
	clear(s.unannounced)
	s.scheduleLocked(now)
	s.mu.Unlock()
	slices.Sort(rooms)
	if s.notify != nil {
		for _, room := range rooms {
			s.notify(room, nil)
		}
	}
}
