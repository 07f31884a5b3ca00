package presence_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"homeserver/mxhttp"
	"homeserver/presence"
)

// memStore is an in-memory Store that counts writes.
type memStore struct {
	mu     sync.Mutex
	rows   map[string]presence.Status
	pos    int64
	writes int
}

func newMemStore() *memStore { return &memStore{rows: map[string]presence.Status{}} }

func (m *memStore) GetPresence(_ context.Context, userID string) (presence.Status, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, found := m.rows[userID]
	return st, found, nil
}

func (m *memStore) UpdatePresence(_ context.Context, userID string, decide func(presence.Status, bool) (presence.Status, bool)) (presence.Status, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, found := m.rows[userID]
	next, write := decide(cur, found)
	if !write {
		return cur, false, nil
	}
	m.pos++
	m.writes++
	next.UserID, next.Pos = userID, m.pos
	m.rows[userID] = next
	return next, true, nil
}

func (m *memStore) PresenceSince(_ context.Context, userIDs []string, from, to int64) ([]presence.Status, error) {
	return nil, errors.New("not used")
}

func (m *memStore) PresenceChanged(context.Context, int64, int64) ([]presence.Status, error) {
	return nil, errors.New("not used")
}

func (m *memStore) MaxPresencePos(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pos, nil
}

// clock is a settable now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const alice = "@alice:test.local"

func TestTouchWritesOnlyOnChangeOrStaleActivity(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	clk := &clock{t: time.UnixMilli(1_700_000_000_000)}
	var notified []string
	svc := presence.New(store, func(u string) { notified = append(notified, u) }, clk.now)

	step := func(name, setPresence string, wantWrites int) {
		t.Helper()
		if err := svc.Touch(ctx, alice, setPresence); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if store.writes != wantWrites || len(notified) != wantWrites {
			t.Fatalf("%s: %d writes, %d notifications; want %d", name, store.writes, len(notified), wantWrites)
		}
	}

	step("first sync", "", 1)
	st, _ := svc.Get(ctx, alice)
	if st.Presence != presence.Online || !st.CurrentlyActive || st.LastActiveTS != clk.now().UnixMilli() || st.Pos != 1 {
		t.Fatalf("after first sync: %+v", st)
	}

	// A client long-polling in a loop: no writes while activity is fresh.
	for range 5 {
		clk.advance(10 * time.Second)
		step("idle long-poll", "", 1)
	}
	step("set_presence=offline changes nothing", presence.Offline, 1)
	step("set_presence=online is the default", presence.Online, 1)

	// Once last_active is a minute old it is refreshed, once.
	clk.advance(20 * time.Second)
	step("stale activity", "", 2)
	step("refreshed activity", "", 2)
	if st, _ := svc.Get(ctx, alice); st.LastActiveTS != clk.now().UnixMilli() || st.Pos != 2 {
		t.Fatalf("after refresh: %+v", st)
	}

	// An idle client marks the user unavailable once, without activity.
	before := clk.now().UnixMilli()
	clk.advance(5 * time.Second)
	step("unavailable", presence.Unavailable, 3)
	step("still unavailable", presence.Unavailable, 3)
	if st, _ := svc.Get(ctx, alice); st.Presence != presence.Unavailable || st.CurrentlyActive || st.LastActiveTS != before {
		t.Fatalf("after unavailable: %+v", st)
	}
	step("back online", "", 4)
	if notified[3] != alice {
		t.Fatalf("notified %v", notified)
	}

	if err := svc.Touch(ctx, alice, "busy"); err == nil {
		t.Fatal("unknown set_presence accepted")
	}
}

func TestSetValidatesAndKeepsStatusMessage(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	clk := &clock{t: time.UnixMilli(1_700_000_000_000)}
	svc := presence.New(store, nil, clk.now)

	err := svc.Set(ctx, alice, "busy", "", false)
	var me *mxhttp.Error
	if !errors.As(err, &me) || me.Status != 400 || me.Code != "M_INVALID_PARAM" {
		t.Fatalf("invalid presence: %v", err)
	}
	if store.writes != 0 {
		t.Fatal("invalid presence was written")
	}

	if err := svc.Set(ctx, alice, presence.Unavailable, "lunch", true); err != nil {
		t.Fatal(err)
	}
	clk.advance(time.Minute)
	// Touching while the status message is set keeps it.
	if err := svc.Touch(ctx, alice, ""); err != nil {
		t.Fatal(err)
	}
	if err := svc.Set(ctx, alice, presence.Offline, "", false); err != nil {
		t.Fatal(err)
	}
	st, _ := svc.Get(ctx, alice)
	if st.Presence != presence.Offline || st.StatusMsg != "lunch" || st.CurrentlyActive || st.Pos != 3 {
		t.Fatalf("status message not kept: %+v", st)
	}
	if err := svc.Set(ctx, alice, presence.Online, "", true); err != nil {
		t.Fatal(err)
	}
	if st, _ := svc.Get(ctx, alice); st.StatusMsg != "" || !st.CurrentlyActive {
		t.Fatalf("status message not cleared: %+v", st)
	}
}

func TestGetUnknownAndEvent(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.UnixMilli(1_700_000_000_000)}
	svc := presence.New(newMemStore(), nil, clk.now)

	st, err := svc.Get(ctx, "@nobody:test.local")
	if err != nil || st.Presence != presence.Offline || st.LastActiveTS != 0 || st.UserID != "@nobody:test.local" {
		t.Fatalf("unknown user: %+v, %v", st, err)
	}
	var ev map[string]any
	if err := json.Unmarshal(svc.Event(st), &ev); err != nil {
		t.Fatal(err)
	}
	content := ev["content"].(map[string]any)
	if ev["type"] != "m.presence" || ev["sender"] != "@nobody:test.local" || len(content) != 1 || content["presence"] != "offline" {
		t.Fatalf("offline event: %v", ev)
	}

	if err := svc.Set(ctx, alice, presence.Online, "cupcakes", true); err != nil {
		t.Fatal(err)
	}
	clk.advance(1500 * time.Millisecond)
	st, _ = svc.Get(ctx, alice)
	if err := json.Unmarshal(svc.Event(st), &ev); err != nil {
		t.Fatal(err)
	}
	content = ev["content"].(map[string]any)
	if content["presence"] != "online" || content["last_active_ago"] != 1500.0 || content["status_msg"] != "cupcakes" || content["currently_active"] != true {
		t.Fatalf("online event: %v", ev)
	}
}
