package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"homeserver/federation/transport"
	"homeserver/presence"
	"homeserver/receipts"
	"homeserver/rooms"
	"homeserver/stream"
)

// Names of the sender's readers and lease.
const (
	senderLease    = "federation_sender"
	fanoutReader   = "federation:fanout"
	receiptsReader = "federation:receipts"
	presenceReader = "federation:presence"
	// outboxBatch is how many outbox items one step reads: enough for a
	// full transaction of 50 PDUs and 100 EDUs.
	outboxBatch = maxTxnPDUs + maxTxnEDUs
	fanoutBatch = 200
	// fanoutSpacing spaces the fan-out's steps under load, so that a
	// burst of events is read, and put in the outboxes, in one step.
	fanoutSpacing = 20 * time.Millisecond
)

// LogSource is the event log and receipts as the sender reads them.
type LogSource interface {
	EventsAfter(ctx context.Context, from int64, limit int) ([]rooms.Stored, error)
	MaxPos(ctx context.Context) (int64, error)
}

// ReceiptSource is the receipts stream as the sender reads it.
type ReceiptSource interface {
	MaxReceiptPos(ctx context.Context) (int64, error)
	ReceiptRoomsBetween(ctx context.Context, from, to int64) ([]string, error)
	ReceiptsSince(ctx context.Context, roomIDs []string, from, to int64) ([]receipts.Receipt, error)
}

// sender fans this server's events and EDUs out to the servers in their
// rooms and runs one queue per destination. It runs in the one process of
// a deployment that holds its lease.
type sender struct {
	s *Service

	mu    sync.Mutex
	ctx   context.Context // while running; nil otherwise
	dests map[string]*destination
	wg    sync.WaitGroup

	// fanout is the fan-out reader's cursor (its goroutine alone uses
	// it): events that go to no other server move it in memory only.
	fanout stream.LazyCursor
}

type destination struct {
	name       string
	wake, kick chan struct{}
	// limit, when not 0, bounds the items of the next transaction: a
	// destination that answered 413 gets smaller ones. Owned by the
	// destination's reader.
	limit int
}

func newSender(s *Service) *sender {
	return &sender{s: s, dests: map[string]*destination{}}
}

// kick ends a destination's backoff wait: it has shown signs of life.
func (q *sender) kick(server string) {
	q.mu.Lock()
	d := q.dests[server]
	q.mu.Unlock()
	if d != nil {
		stream.Signal(d.kick)
	}
}

// wake tells destinations that their outbox grew, starting their queue if
// needed.
func (q *sender) wake(servers ...string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ctx == nil {
		return // another process sends; it learns from the database
	}
	for _, server := range servers {
		d := q.dests[server]
		if d == nil {
			d = q.startLocked(server)
		}
		stream.Signal(d.wake)
	}
}

func (q *sender) startLocked(server string) *destination {
	d := &destination{name: server, wake: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
	q.dests[server] = d
	r := &stream.Reader{
		Name:    "federation:" + server,
		Step:    func(ctx context.Context) (stream.Progress, error) { return q.sendStep(ctx, d) },
		Wake:    d.wake,
		Kick:    d.kick,
		Backoff: func() (time.Duration, time.Duration) { return q.s.cfg.MinRetry, q.s.cfg.MaxRetry },
		Log:     q.s.log,
		Metrics: q.s.metrics,
	}
	ctx := q.ctx
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		r.Run(ctx)
	}()
	return d
}

// Start runs the sender whenever this process holds its lease, until
// Stop. Starting twice does nothing.
func (s *Service) Start() {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if s.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.stop = func() {
		cancel()
		<-done
	}
	go func() {
		defer close(done)
		s.sender.run(ctx)
	}()
}

// Stop stops the sender and waits for it.
func (s *Service) Stop() {
	s.startMu.Lock()
	stop := s.stop
	s.stop = nil
	s.startMu.Unlock()
	if stop != nil {
		stop()
	}
}

func (q *sender) run(ctx context.Context) {
	for ctx.Err() == nil {
		lease, err := q.s.leaser.Acquire(ctx, senderLease)
		if err != nil {
			continue // ctx ended
		}
		runCtx, cancel := context.WithCancel(ctx)
		q.mu.Lock()
		q.ctx = runCtx
		q.mu.Unlock()
		q.runLeased(runCtx, lease)
		cancel()
		q.mu.Lock()
		q.ctx = nil
		q.dests = map[string]*destination{}
		q.mu.Unlock()
		q.wg.Wait()
		lease.Release()
	}
}

func (q *sender) runLeased(ctx context.Context, lease stream.Lease) {
	var wg sync.WaitGroup
	for _, r := range []*stream.Reader{
		{Name: fanoutReader, Step: q.fanoutStep, Wake: q.s.hub.Wake(stream.Events), Log: q.s.log, Metrics: q.s.metrics, Poll: time.Minute,
			Start: func(context.Context) error { q.fanout.Reset(); return nil }, Spacing: fanoutSpacing},
		{Name: receiptsReader, Step: q.receiptsStep, Wake: q.s.hub.Wake(stream.Receipts), Log: q.s.log, Metrics: q.s.metrics, Poll: time.Minute},
		{Name: presenceReader, Step: q.presenceStep, Wake: q.s.hub.Wake(stream.Presence), Log: q.s.log, Metrics: q.s.metrics, Poll: time.Minute},
		q.deviceListsReaderFor(),
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Run(ctx)
		}()
	}
	// Destinations owed something from before (a restart, another
	// process) start at once.
	if dests, err := q.s.store.OutboxDestinations(ctx); err == nil {
		q.wake(dests...)
	} else {
		q.s.log.Warn("listing federation destinations", "err", err)
	}
	select {
	case <-ctx.Done():
	case <-lease.Lost():
		q.s.log.Warn("federation sender's lease lost; stopping it here")
	}
	q.mu.Lock()
	q.ctx = nil
	q.mu.Unlock()
	wg.Wait()
}

// cursor reads a reader's cursor; a reader seen for the first time starts
// at the current end (no history is sent to anyone).
func (q *sender) cursor(ctx context.Context, reader string, s stream.Name, end func(context.Context) (int64, error)) (int64, error) {
	pos, ok, err := q.s.store.ReaderCursor(ctx, reader, s)
	if err != nil || ok {
		return pos, err
	}
	if pos, err = end(ctx); err != nil {
		return 0, err
	}
	return pos, q.s.store.SetReaderCursor(ctx, reader, s, pos)
}

// fanoutStep reads this server's new events from the log and puts each in
// the outbox of every other server in its room.
func (q *sender) fanoutStep(ctx context.Context) (stream.Progress, error) {
	from, err := q.fanout.Get(ctx, func(ctx context.Context) (int64, error) {
		return q.cursor(ctx, fanoutReader, stream.Events, q.s.eventLog.MaxPos)
	})
	if err != nil {
		return stream.Progress{}, err
	}
	events, err := q.s.eventLog.EventsAfter(ctx, from, fanoutBatch)
	if err != nil || len(events) == 0 {
		return stream.Progress{Pos: from}, err
	}
	var entries []OutboxEntry
	woken := map[string]bool{}
	members := map[string]*membersSince{}
	for _, e := range events {
		if !q.s.isLocal(e.Sender) {
			continue // its own server sends it
		}
		m, ok := members[e.RoomID]
		if !ok {
			if m, err = q.membersSince(ctx, e.RoomID, e.Pos); err != nil {
				return stream.Progress{}, err
			}
			members[e.RoomID] = m
		}
		dests := m.serversAt(e.Pos)
		if e.Type == "m.room.member" && e.StateKey != nil {
			// A member who just left or was kicked still hears of it; an
			// invitee's server got its invite through /invite.
			if target := serverOf(*e.StateKey); e.Membership != "invite" && !slices.Contains(dests, target) {
				dests = append(dests, target)
			}
		}
		for _, d := range dests {
			if d == q.s.cfg.ServerName || d == "" {
				continue
			}
			entries = append(entries, OutboxEntry{Destination: d, EventID: e.EventID})
			woken[d] = true
		}
	}
	last := events[len(events)-1].Pos
	if len(entries) == 0 && !q.fanout.StoreDue(last) {
		q.fanout.Moved(last)
		return stream.Progress{More: len(events) == fanoutBatch, Pos: last}, nil
	}
	if err := q.s.store.Enqueue(ctx, entries, fanoutReader, stream.Events, last); err != nil {
		return stream.Progress{}, err
	}
	q.fanout.Stored(last)
	q.wake(keys(woken)...)
	return stream.Progress{More: len(events) == fanoutBatch, Pos: last}, nil
}

// receiptsStep sends local users' public read receipts to the servers in
// their rooms.
func (q *sender) receiptsStep(ctx context.Context) (stream.Progress, error) {
	if q.s.receipts == nil {
		return stream.Progress{}, nil
	}
	from, err := q.cursor(ctx, receiptsReader, stream.Receipts, q.s.receipts.MaxReceiptPos)
	if err != nil {
		return stream.Progress{}, err
	}
	to, err := q.s.receipts.MaxReceiptPos(ctx)
	if err != nil || to <= from {
		return stream.Progress{Pos: from}, err
	}
	roomIDs, err := q.s.receipts.ReceiptRoomsBetween(ctx, from, to)
	if err != nil {
		return stream.Progress{}, err
	}
	rs, err := q.s.receipts.ReceiptsSince(ctx, roomIDs, from, to)
	if err != nil {
		return stream.Progress{}, err
	}
	var entries []OutboxEntry
	woken := map[string]bool{}
	for _, r := range rs {
		if r.Type != receipts.TypeRead || !q.s.isLocal(r.UserID) {
			continue
		}
		data := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			data["thread_id"] = r.ThreadID
		}
		content := map[string]any{r.RoomID: map[string]any{"m.read": map[string]any{r.UserID: map[string]any{"event_ids": []string{r.EventID}, "data": data}}}}
		raw, err := json.Marshal(map[string]any{"edu_type": "m.receipt", "content": content})
		if err != nil {
			return stream.Progress{}, err
		}
		servers, err := q.s.rooms.JoinedServers(ctx, r.RoomID)
		if err != nil {
			return stream.Progress{}, err
		}
		for _, d := range servers {
			if d != q.s.cfg.ServerName {
				entries = append(entries, OutboxEntry{Destination: d, EDU: raw})
				woken[d] = true
			}
		}
	}
	if err := q.s.store.Enqueue(ctx, entries, receiptsReader, stream.Receipts, to); err != nil {
		return stream.Progress{}, err
	}
	q.wake(keys(woken)...)
	return stream.Progress{Pos: to}, nil
}

// PresenceSource is the presence stream as the sender reads it.
type PresenceSource interface {
	MaxPresencePos(ctx context.Context) (int64, error)
	PresenceChanged(ctx context.Context, from, to int64) ([]presence.Status, error)
}

// presenceStep tells the servers sharing a room with local users of their
// presence changes, one m.presence EDU per destination and step.
func (q *sender) presenceStep(ctx context.Context) (stream.Progress, error) {
	if q.s.presence == nil {
		return stream.Progress{}, nil
	}
	from, err := q.cursor(ctx, presenceReader, stream.Presence, q.s.presence.MaxPresencePos)
	if err != nil {
		return stream.Progress{}, err
	}
	to, err := q.s.presence.MaxPresencePos(ctx)
	if err != nil || to <= from {
		return stream.Progress{Pos: from}, err
	}
	changed, err := q.s.presence.PresenceChanged(ctx, from, to)
	if err != nil {
		return stream.Progress{}, err
	}
	now := q.s.now().UnixMilli()
	pushes := map[string][]map[string]any{}
	for _, st := range changed {
		if !q.s.isLocal(st.UserID) {
			continue // its own server tells
		}
		p := map[string]any{"user_id": st.UserID, "presence": st.Presence, "currently_active": st.CurrentlyActive,
			"last_active_ago": max(now-st.LastActiveTS, 0)}
		if st.StatusMsg != "" {
			p["status_msg"] = st.StatusMsg
		}
		joined, err := q.s.rooms.RoomsWithMembership(ctx, st.UserID, "join")
		if err != nil {
			return stream.Progress{}, err
		}
		told := map[string]bool{}
		for _, roomID := range joined {
			servers, err := q.s.rooms.JoinedServers(ctx, roomID)
			if err != nil {
				return stream.Progress{}, err
			}
			for _, d := range servers {
				if d != q.s.cfg.ServerName && !told[d] {
					told[d] = true
					pushes[d] = append(pushes[d], p)
				}
			}
		}
	}
	var entries []OutboxEntry
	for d, push := range pushes {
		raw, err := json.Marshal(map[string]any{"edu_type": "m.presence", "content": map[string]any{"push": push}})
		if err != nil {
			return stream.Progress{}, err
		}
		entries = append(entries, OutboxEntry{Destination: d, EDU: raw})
	}
	if err := q.s.store.Enqueue(ctx, entries, presenceReader, stream.Presence, to); err != nil {
		return stream.Progress{}, err
	}
	q.wake(keys(pushes)...)
	return stream.Progress{Pos: to}, nil
}

// QueueTyping sends a local user's typing notice to the other servers in
// the room. Typing is ephemeral: it is queued like everything else, but a
// notice that waits behind an outage is of little use, and nothing breaks
// if it is lost.
func (s *Service) QueueTyping(ctx context.Context, roomID, userID string, typing bool) {
	if !s.isLocal(userID) {
		return
	}
	servers, err := s.rooms.JoinedServers(ctx, roomID)
	if err != nil {
		s.log.Warn("typing: listing the room's servers", "room_id", roomID, "err", err)
		return
	}
	raw, _ := json.Marshal(map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": roomID, "user_id": userID, "typing": typing}})
	var entries []OutboxEntry
	var dests []string
	for _, d := range servers {
		if d != s.cfg.ServerName {
			entries = append(entries, OutboxEntry{Destination: d, EDU: raw})
			dests = append(dests, d)
		}
	}
	if len(entries) == 0 {
		return
	}
	if err := s.store.Enqueue(ctx, entries, "", "", 0); err != nil {
		s.log.Warn("typing: queueing", "room_id", roomID, "err", err)
		return
	}
	s.sender.wake(dests...)
}

// forward queues an event this server took as the resident server (a
// send_join or send_leave) for the other servers in the room: its sender's
// server cannot know them all.
func (s *Service) forward(ctx context.Context, roomID, eventID, origin string) {
	servers, err := s.rooms.JoinedServers(ctx, roomID)
	if err != nil {
		s.log.Warn("forwarding an event", "event_id", eventID, "err", err)
		return
	}
	var entries []OutboxEntry
	var dests []string
	for _, d := range servers {
		if d != s.cfg.ServerName && d != origin {
			entries = append(entries, OutboxEntry{Destination: d, EventID: eventID})
			dests = append(dests, d)
		}
	}
	if len(entries) == 0 {
		return
	}
	if err := s.store.Enqueue(ctx, entries, "", "", 0); err != nil {
		s.log.Warn("forwarding an event", "event_id", eventID, "err", err)
		return
	}
	s.sender.wake(dests...)
}

// sendStep sends the destination the oldest transaction it is owed. The
// transaction ID names its first and last items, so that a retry of the
// same items, after a failure, a crash or a takeover by another process,
// sends the same ID, and a transaction holding more items never does: the
// destination would answer it from its record of the first one without
// reading it.
func (q *sender) sendStep(ctx context.Context, d *destination) (stream.Progress, error) {
	dest := d.name
	limit := outboxBatch
	if d.limit > 0 {
		limit = d.limit
	}
	items, err := q.s.store.Outbox(ctx, dest, limit)
	if err != nil || len(items) == 0 {
		return stream.Progress{}, err
	}
	var pdus, edus []json.RawMessage
	taken := 0
	for _, it := range items {
		if it.EventID != "" {
			if len(pdus) == maxTxnPDUs {
				break
			}
			data, _, err := q.s.rooms.EventPDU(ctx, it.EventID)
			if errors.Is(err, rooms.ErrNotFound) {
				taken++
				continue
			}
			if err != nil {
				return stream.Progress{}, err
			}
			pdus = append(pdus, data)
		} else {
			if len(edus) == maxTxnEDUs {
				break
			}
			edus = append(edus, it.EDU)
		}
		taken++
	}
	last := items[taken-1].Pos
	txnID := fmt.Sprintf("%d.%d.%d", items[0].Pos, items[0].CreatedTS, last)
	body := transaction{Origin: q.s.cfg.ServerName, OriginServerTS: q.s.now().UnixMilli(), PDUs: pdus, EDUs: edus}
	if body.PDUs == nil {
		body.PDUs = []json.RawMessage{}
	}
	var resp struct {
		PDUs map[string]pduResult `json:"pdus"`
	}
	err = q.s.client.Do(ctx, "PUT", dest, "/_matrix/federation/v1/send/"+url.PathEscape(txnID), body, &resp)
	var he *transport.HTTPError
	var bad *transport.ResponseError
	switch {
	case errors.As(err, &he) && he.Status == http.StatusRequestEntityTooLarge && taken > 1:
		// Smaller transactions may pass: halve until one does, or until
		// a single item is refused, which is dropped below. Each halving
		// shrinks the next attempt, so this ends within a few steps.
		d.limit = taken / 2
		q.s.log.Info("destination refused a transaction as too large; sending smaller ones", "destination", dest, "txn_id", txnID, "items", d.limit)
		return stream.Progress{More: true}, nil
	case errors.As(err, &bad):
		// A 2xx: the destination has the transaction, whatever its body
		// says. Retrying would not change the body, only block the queue.
		q.s.log.Info("destination answered a transaction with an unreadable body", "destination", dest, "txn_id", txnID, "err", err)
		err = nil
	case errors.As(err, &he) && he.Status >= 400 && he.Status < 500 && he.Status != 408 && he.Status != 429:
		// The destination will never take this transaction as it is:
		// retrying it forever would stop everything behind it.
		q.s.log.Warn("destination refused a transaction; dropping it", "destination", dest, "txn_id", txnID, "status", he.Status, "errcode", he.Code)
		err = nil
	}
	if err != nil {
		if ctx.Err() == nil {
			q.s.recordFailure(ctx, dest)
		}
		return stream.Progress{}, fmt.Errorf("sending transaction %s to %s: %w", txnID, dest, err)
	}
	for id, r := range resp.PDUs {
		if r.Error != "" {
			q.s.log.Info("destination rejected an event", "destination", dest, "event_id", id, "error", r.Error)
		}
	}
	if err := q.s.store.Delivered(ctx, dest, last); err != nil {
		return stream.Progress{}, err
	}
	q.s.recordDelivery(ctx, dest, items[:taken])
	// After a delivery, transactions grow back towards the whole batch.
	if d.limit > 0 {
		if d.limit *= 2; d.limit >= outboxBatch {
			d.limit = 0
		}
	}
	// The lag gauge of the destination's reader is its queue's depth.
	depth, err := q.s.store.OutboxDepth(ctx, dest)
	if err != nil {
		return stream.Progress{}, err
	}
	return stream.Progress{More: depth > 0, Pos: last, Head: last + depth}, nil
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// membersSince knows a room's servers as of any position from one on: the
// servers with a joined member now, and, when memberships changed since
// that position, the joined members now and those changes, to wind back.
// An event goes to the servers in the room at it, not to one that joined
// after it (which was not to see it, by the history visibility) as the
// room's current servers would have it when the fanout runs behind.
type membersSince struct {
	servers []string // now, when nothing changed since
	// wind is set when something did: the joined members now and the
	// changes.
	wind    bool
	joined  []string
	changes []rooms.MemberChange
}

func (q *sender) membersSince(ctx context.Context, roomID string, pos int64) (*membersSince, error) {
	servers, err := q.s.rooms.JoinedServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	changes, err := q.s.rooms.MemberChangesBetween(ctx, []string{roomID}, pos, math.MaxInt64)
	if err != nil || len(changes) == 0 {
		return &membersSince{servers: servers}, err
	}
	// The members are read before the changes are read again: a member
	// not among those changes held the same membership from pos until
	// the members were read.
	joined, err := q.s.rooms.JoinedUserIDs(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if changes, err = q.s.rooms.MemberChangesBetween(ctx, []string{roomID}, pos, math.MaxInt64); err != nil {
		return nil, err
	}
	return &membersSince{wind: true, joined: joined, changes: changes}, nil
}

// serversAt returns the servers with a joined member just after the
// event at pos (its own change included).
func (m *membersSince) serversAt(pos int64) []string {
	if !m.wind {
		return slices.Clone(m.servers)
	}
	// A member's membership at pos is what their first change after it
	// replaced; the others' is what they hold now.
	then := map[string]string{}
	for _, c := range m.changes {
		if _, seen := then[c.UserID]; !seen && c.Pos > pos {
			then[c.UserID] = c.Previous
		}
	}
	set := map[string]bool{}
	for _, u := range m.joined {
		if _, changed := then[u]; !changed {
			set[serverOf(u)] = true
		}
	}
	for u, was := range then {
		if was == "join" {
			set[serverOf(u)] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}
