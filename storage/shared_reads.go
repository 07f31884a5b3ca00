package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"homeserver/accountdata"
	"homeserver/pdu"
	"homeserver/rooms"
	"homeserver/stream"
)

// sharedReads keeps the answers of reads that the /syncs woken by one
// commit all make alike (which rooms have new events, the room's new
// events, its membership changes, the sender's member event), and of
// reads each user makes again at every answer (their ignore list, their
// read receipts), so that those are made once.
//
// An answer is kept with the position of the stream whose writes change
// it, as the read snapshot that made it saw that position (StreamHeads
// records the heads it reads in the snapshot): a snapshot that saw the
// same position reads the same rows, since every write to those rows
// takes a position of that stream in the same transaction. The few writes
// that change them without one (purges, rooms imported or history
// backfilled over federation) move the epoch before and after (see
// changing); answers made under another epoch are not used. Only
// snapshots share (SQLite, where one process owns the database): reads
// outside one run as ever.
type sharedReads struct {
	mu    sync.Mutex
	epoch uint64
	m     map[string]sharedEntry
}

type sharedEntry struct {
	heads [2]int64
	epoch uint64
	v     any
}

// maxSharedReads bounds the entries; the map is emptied when full. A
// woken answer adds a handful, and only the latest positions' are used.
const maxSharedReads = 4096

func (s *sharedReads) currentEpoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// changing brackets a write that changes shared rows without taking a
// stream position: it retires every answer kept, and until the returned
// function runs (after the commit) no snapshot shares, since one that
// begins meanwhile may see the rows before or after.
func (s *sharedReads) changing() (done func()) {
	s.bump()
	return s.bump
}

func (s *sharedReads) bump() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch++
	s.m = nil
}

func (s *sharedReads) get(key string, heads [2]int64, epoch uint64) (any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok || e.heads != heads || e.epoch != epoch || epoch != s.epoch || epoch%2 == 1 {
		return nil, false
	}
	return e.v, true
}

func (s *sharedReads) put(key string, heads [2]int64, epoch uint64, v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if epoch != s.epoch || epoch%2 == 1 {
		return
	}
	if s.m == nil || len(s.m) >= maxSharedReads {
		s.m = map[string]sharedEntry{}
	}
	s.m[key] = sharedEntry{heads: heads, epoch: epoch, v: v}
}

// setHeads records the stream positions a read snapshot saw.
func (t *txn) setHeads(h map[stream.Name]int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.heads = maps.Clone(h)
}

// head is the position of stream s the snapshot saw, if it read it.
func (t *txn) head(s stream.Name) (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	pos, ok := t.heads[s]
	return pos, ok
}

// sharedRead runs read under the read snapshot in ctx, or answers from
// the copy a snapshot that saw the same positions of streams (one or two)
// kept. The answer is cloned for each caller, who may change it.
func sharedRead[T any](ctx context.Context, db *DB, key string, streams []stream.Name, clone func(T) T, read func() (T, error)) (T, error) {
	t := db.r.pinned(ctx)
	if t == nil {
		return read()
	}
	var heads [2]int64
	for i, s := range streams {
		pos, ok := t.head(s)
		if !ok {
			return read()
		}
		heads[i] = pos
	}
	if v, ok := db.shared.get(key, heads, t.epoch); ok {
		return clone(v.(T)), nil
	}
	v, err := read()
	if err != nil {
		return v, err
	}
	db.shared.put(key, heads, t.epoch, v)
	return clone(v), nil
}

var eventsStream = []stream.Name{stream.Events}

func cloneSlice[T any](s []T) []T { return slices.Clone(s) }

// The reads shared between snapshots, and the streams whose positions
// key them.

func (db *DB) RoomsWithEventsBetween(ctx context.Context, from, to int64) ([]string, error) {
	return sharedRead(ctx, db, fmt.Sprint("rooms_with_events\x00", from, "\x00", to), eventsStream, cloneSlice,
		func() ([]string, error) { return db.roomsWithEventsBetween(ctx, from, to) })
}

func (db *DB) RoomEvents(ctx context.Context, roomID string, from, to int64, forward bool, limit int) ([]rooms.Stored, error) {
	return sharedRead(ctx, db, fmt.Sprint("room_events\x00", roomID, "\x00", from, "\x00", to, "\x00", forward, "\x00", limit), eventsStream, cloneSlice,
		func() ([]rooms.Stored, error) { return db.roomEvents(ctx, roomID, from, to, forward, limit) })
}

func (db *DB) MemberChangesBetween(ctx context.Context, roomIDs []string, from, to int64) ([]rooms.MemberChange, error) {
	return sharedRead(ctx, db, fmt.Sprint("member_changes\x00", strings.Join(roomIDs, "\x00"), "\x00", from, "\x00", to), eventsStream, cloneSlice,
		func() ([]rooms.MemberChange, error) { return db.memberChangesBetween(ctx, roomIDs, from, to) })
}

type groupAt struct {
	group   int64
	current bool
}

func (db *DB) StateGroupAtCurrent(ctx context.Context, roomID string, pos int64) (int64, bool, error) {
	g, err := sharedRead(ctx, db, fmt.Sprint("state_group_at_current\x00", roomID, "\x00", pos), eventsStream, func(g groupAt) groupAt { return g },
		func() (groupAt, error) {
			g, current, err := db.stateGroupAtCurrent(ctx, roomID, pos)
			return groupAt{g, current}, err
		})
	return g.group, g.current, err
}

func (db *DB) CurrentState(ctx context.Context, roomID string, keys []pdu.StateKey) ([]rooms.Stored, error) {
	var k strings.Builder
	k.WriteString("current_state\x00")
	k.WriteString(roomID)
	if keys == nil {
		k.WriteString("\x00*")
	}
	for _, sk := range keys {
		k.WriteString("\x00")
		k.WriteString(sk.Type)
		k.WriteString("\x01")
		k.WriteString(sk.StateKey)
	}
	return sharedRead(ctx, db, k.String(), eventsStream, cloneSlice,
		func() ([]rooms.Stored, error) { return db.currentState(ctx, roomID, keys) })
}

var accountDataStream = []stream.Name{stream.AccountData}

// GetAccountData shares absence too: most users have no ignore list,
// which every woken answer looks up.
func (db *DB) GetAccountData(ctx context.Context, userID, roomID, eventType string) (json.RawMessage, error) {
	type found struct{ content json.RawMessage }
	f, err := sharedRead(ctx, db, "account_data\x00"+userID+"\x00"+roomID+"\x00"+eventType, accountDataStream,
		func(f *found) *found {
			if f == nil {
				return nil
			}
			return &found{slices.Clone(f.content)}
		},
		func() (*found, error) {
			c, err := db.getAccountData(ctx, userID, roomID, eventType)
			if errors.Is(err, accountdata.ErrNotFound) {
				return nil, nil
			}
			if err != nil {
				return nil, err
			}
			return &found{c}, nil
		})
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, accountdata.ErrNotFound
	}
	return f.content, nil
}
