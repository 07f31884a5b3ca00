package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"homeserver/e2ee"
	"homeserver/internal/redact"
	"homeserver/presence"
	"homeserver/receipts"
	"homeserver/rooms"
	"homeserver/stream"
	"homeserver/todevice"
)

// Limits of the transaction queue.
const (
	// MaxTxnEvents is the most events one transaction carries.
	MaxTxnEvents = 100
	// scanBatch is how many events of the stream one pass reads.
	scanBatch = 500
	// DefaultBackoffBase is the first wait after a failed delivery; it
	// doubles with each further failure up to DefaultBackoffMax.
	DefaultBackoffBase = time.Second
	DefaultBackoffMax  = 5 * time.Minute
	// DefaultRequestTimeout bounds one PUT of a transaction.
	DefaultRequestTimeout = 60 * time.Second
)

// Txn is a transaction persisted before it is sent, so that a retry, even
// after a restart, sends exactly the same thing under the same ID.
type Txn struct {
	ID string
	// Body is the request body: {"events": [...], "ephemeral": [...]}.
	Body []byte
	// Pos is the stream position the cursor moves to once the service
	// has acknowledged the transaction.
	Pos int64
	// Events is the number of events in Body.
	Events int
}

// State is a service's durable queue state.
type State struct {
	// Cursor is the last stream position fully handled.
	Cursor int64
	// LastTxn is the number of the last transaction handed out.
	LastTxn int64
	// Legacy is set when the service answers only on the unprefixed paths.
	Legacy bool
	// Pending is the transaction waiting for a 2xx, if any.
	Pending *Txn
	// Ephemeral are the cursors in the streams other than events.
	Ephemeral EphemeralCursors
}

// Store is what the dispatcher reads and writes; storage implements it.
type Store interface {
	// EventsAfter returns the events of every room after stream position
	// from, in stream order, at most limit.
	EventsAfter(ctx context.Context, from int64, limit int) ([]rooms.Stored, error)
	MaxPos(ctx context.Context) (int64, error)
	JoinedUserIDs(ctx context.Context, roomID string) ([]string, error)
	CurrentStateOfType(ctx context.Context, roomID, eventType string) ([]rooms.Stored, error)
	RoomAliases(ctx context.Context, roomID string) ([]string, error)
	RoomsOf(ctx context.Context, userID, membership string) ([]string, error)
	// ReceiptRoomsBetween returns the rooms whose receipts changed in
	// (from, to] of the receipts stream.
	ReceiptRoomsBetween(ctx context.Context, from, to int64) ([]string, error)

	// AppServiceState returns a service's state, creating it at the
	// current end of the event stream when the service is new.
	AppServiceState(ctx context.Context, asID string) (State, error)
	// QueueAppServiceTxn persists t as the service's pending transaction,
	// number as its last transaction number and cur as its encryption
	// cursors; the to-device messages up to cur of the delivered devices
	// that only the service uses (they have no access token) are deleted,
	// the transaction holding them now.
	QueueAppServiceTxn(ctx context.Context, asID string, number int64, t Txn, cur EphemeralCursors, delivered []e2ee.DeviceRef) error
	// AdvanceAppServiceEphemeral moves the cursors in the streams other
	// than events over what did not interest the service.
	AdvanceAppServiceEphemeral(ctx context.Context, asID string, cur EphemeralCursors) error
	// ToDeviceMaxPos, ToDeviceAfter and ToDeviceAt read the to-device
	// stream: its end, the messages (for any device) in (after, upTo] in
	// position order, at most limit, and all those of one position.
	ToDeviceMaxPos(ctx context.Context) (int64, error)
	ToDeviceAfter(ctx context.Context, after, upTo int64, limit int) ([]todevice.Message, error)
	ToDeviceAt(ctx context.Context, pos int64) ([]todevice.Message, error)
	// AppServiceTxnDone forgets the pending transaction and moves the
	// cursor to pos, atomically.
	AppServiceTxnDone(ctx context.Context, asID, txnID string, pos int64) error
	// AdvanceAppService moves the cursor to pos.
	AdvanceAppService(ctx context.Context, asID string, pos int64) error
	SetAppServiceLegacy(ctx context.Context, asID string, legacy bool) error
}

// Renderer renders events in the client format (the rooms service).
type Renderer interface {
	ClientEvents(ctx context.Context, evs []rooms.Stored, opts rooms.FormatOptions) ([]json.RawMessage, error)
}

// TypingSource is the typing service.
type TypingSource interface {
	Pos() int64
	ChangedSince(pos int64) []string
	Typing(roomID string) []string
}

// ReceiptSource is the receipts service.
type ReceiptSource interface {
	MaxPos(ctx context.Context) (int64, error)
	Since(ctx context.Context, roomIDs []string, from, to int64) ([]receipts.Receipt, error)
}

// PresenceSource is the presence service.
type PresenceSource interface {
	MaxPos(ctx context.Context) (int64, error)
	Changed(ctx context.Context, from, to int64) ([]presence.Status, error)
	Event(st presence.Status) json.RawMessage
}

// EphemeralSources feed the ephemeral part of transactions, for services
// that asked for it. Any of them may be nil.
type EphemeralSources struct {
	Typing   TypingSource
	Receipts ReceiptSource
	Presence PresenceSource
	// Keys feeds device lists and key counts (MSC3202).
	Keys KeySource
}

// Config of the dispatcher.
type Config struct {
	ServerName string
	Logger     *slog.Logger
	// Registerer receives the queue gauges when set.
	Registerer prometheus.Registerer
	// Client sends transactions; its Timeout bounds each request
	// (default: DefaultRequestTimeout). Its redirect policy is replaced:
	// redirects are never followed.
	Client *http.Client
	// BackoffBase and BackoffMax shape the retry delays (defaults:
	// DefaultBackoffBase, DefaultBackoffMax).
	BackoffBase, BackoffMax time.Duration
	// Hub wakes the queues when the streams they follow change.
	Hub *stream.Hub
	// Metrics receives the queues' reader gauges; Leaser decides which
	// process runs each queue (one process: nil).
	Metrics *stream.Metrics
	Leaser  stream.Leaser
}

// Dispatcher pushes events to application services: one worker, with its
// own durable cursor and ordered queue, per service that has a URL.
type Dispatcher struct {
	store   Store
	render  Renderer
	server  string
	log     *slog.Logger
	client  *http.Client
	workers []*worker

	eph         EphemeralSources
	metrics     *stream.Metrics
	leaser      stream.Leaser
	backoffBase atomic.Int64
	backoffMax  atomic.Int64
	// maxPos is the highest stream position known to be written.
	maxPos atomic.Int64

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// NewDispatcher returns a dispatcher for the services of set that have a
// URL. Nothing is sent until Start.
func NewDispatcher(set *Set, store Store, render Renderer, cfg Config) (*Dispatcher, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	client := &http.Client{Timeout: DefaultRequestTimeout}
	if cfg.Client != nil {
		c := *cfg.Client
		client = &c
	}
	client.CheckRedirect = noRedirects
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = DefaultBackoffBase
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.Leaser == nil {
		cfg.Leaser = stream.Local{}
	}
	if cfg.Hub == nil {
		cfg.Hub = stream.NewHub(cfg.Logger)
	}
	d := &Dispatcher{store: store, render: render, server: cfg.ServerName, log: cfg.Logger, client: client,
		metrics: cfg.Metrics, leaser: cfg.Leaser}
	d.backoffBase.Store(int64(cfg.BackoffBase))
	d.backoffMax.Store(int64(cfg.BackoffMax))
	if set != nil {
		for _, r := range set.Regs {
			if r.URL == "" {
				continue
			}
			// What a queue follows: events, and what the service asked for.
			streams := []stream.Name{stream.Events}
			if r.Ephemeral() {
				streams = append(streams, stream.Receipts, stream.Presence, stream.Typing, stream.ToDevice)
			}
			if r.DeviceData() {
				streams = append(streams, stream.DeviceLists, stream.OTK)
			}
			d.workers = append(d.workers, &worker{
				d: d, reg: r, log: cfg.Logger.With("appservice", r.ID),
				wake: cfg.Hub.Wake(streams...), kick: make(chan struct{}, 1),
				rooms: map[string]*roomInterest{}, localSuffix: ":" + cfg.ServerName,
			})
		}
	}
	cfg.Hub.OnChange(func(c stream.Change) {
		if c.Stream == stream.Events {
			d.noteMaxPos(c.Pos)
		}
	})
	if cfg.Registerer != nil && len(d.workers) > 0 {
		if err := cfg.Registerer.Register(newCollector(d)); err != nil {
			return nil, fmt.Errorf("appservice: metrics: %w", err)
		}
	}
	return d, nil
}

// SetEphemeral gives the sources of typing, receipts and presence. Call it
// before Start.
func (d *Dispatcher) SetEphemeral(e EphemeralSources) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.eph = e
}

// SetBackoff changes the retry delays (tests use small ones) and makes a
// waiting worker retry now.
func (d *Dispatcher) SetBackoff(base, maxDelay time.Duration) {
	if d == nil {
		return
	}
	d.backoffBase.Store(int64(base))
	d.backoffMax.Store(int64(maxDelay))
	for _, w := range d.workers {
		stream.Signal(w.kick)
	}
}

// noteMaxPos records the highest event position known to be written.
func (d *Dispatcher) noteMaxPos(pos int64) {
	for {
		cur := d.maxPos.Load()
		if pos <= cur || d.maxPos.CompareAndSwap(cur, pos) {
			return
		}
	}
}

// Start reads (or creates) every service's cursor, then starts the workers,
// which first catch up on whatever was written while the server was down.
// The cursors of new services are placed at the end of the stream before
// Start returns, so that every event written afterwards is considered.
func (d *Dispatcher) Start(ctx context.Context) error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started || len(d.workers) == 0 {
		return nil
	}
	maxPos, err := d.store.MaxPos(ctx)
	if err != nil {
		return fmt.Errorf("appservice: %w", err)
	}
	d.noteMaxPos(maxPos)
	// Create the cursors of new services now, at the end of the streams,
	// whichever process runs their queues later.
	for _, w := range d.workers {
		if _, err := d.store.AppServiceState(ctx, w.reg.ID); err != nil {
			return fmt.Errorf("appservice %s: %w", w.reg.ID, err)
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel = cancel
	d.started = true
	for _, w := range d.workers {
		r := &stream.Reader{
			Name: "appservice:" + w.reg.ID, Start: w.load, Step: w.step, Wake: w.wake, Kick: w.kick,
			Backoff: func() (time.Duration, time.Duration) {
				return time.Duration(d.backoffBase.Load()), time.Duration(d.backoffMax.Load())
			},
			Log: w.log, Metrics: d.metrics,
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			r.RunLeased(runCtx, d.leaser)
		}()
	}
	return nil
}

// Stop stops the workers and waits for them; a transaction in flight is
// abandoned and sent again on the next start.
func (d *Dispatcher) Stop() {
	if d == nil {
		return
	}
	d.mu.Lock()
	cancel := d.cancel
	d.cancel = nil
	d.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	d.wg.Wait()
}

func pendingID(t *Txn) string {
	if t == nil {
		return ""
	}
	return t.ID
}

// worker is the queue of one service. Its fields below the channels are
// owned by its goroutine; the metrics fields are read by scrapes.
type worker struct {
	d           *Dispatcher
	reg         *Registration
	log         *slog.Logger
	wake        <-chan struct{}
	kick        chan struct{}
	localSuffix string

	cursor  int64
	lastTxn int64
	legacy  bool
	pending *Txn
	// ahead are events after the cursor already read but not yet
	// considered (a batch holds more than one transaction's worth).
	ahead []rooms.Stored
	rooms map[string]*roomInterest

	// typingPos is the in-memory typing stream's position; eph the
	// durable cursors of the other streams.
	typingPos int64
	eph       EphemeralCursors

	// m is what the service-specific gauges show; the reader family
	// (stream.Metrics) has position, lag and failures.
	m struct {
		pendingEvents        atomic.Int64
		sentEvents, sentTxns atomic.Int64
	}
}

// roomInterest is why a room interests the service: its ID, an alias
// (canonical or in the directory), or the joined users of its namespace.
type roomInterest struct {
	byID, canonical, directory bool
	members                    map[string]struct{}
}

func (r *roomInterest) interested() bool {
	return r.byID || r.canonical || r.directory || len(r.members) > 0
}

// publish copies the state the gauges show.
func (w *worker) publish() {
	n := int64(0)
	if w.pending != nil {
		n = int64(w.pending.Events)
	}
	w.m.pendingEvents.Store(n)
}

// load reads the queue's state from the database: when this process
// takes the queue, which another may have run until now.
func (w *worker) load(ctx context.Context) error {
	st, err := w.d.store.AppServiceState(ctx, w.reg.ID)
	if err != nil {
		return err
	}
	w.cursor, w.lastTxn, w.legacy, w.pending, w.eph = st.Cursor, st.LastTxn, st.Legacy, st.Pending, st.Ephemeral
	// Typing lives in memory: a queue starts from what it holds now.
	w.typingPos = 0
	if w.d.eph.Typing != nil {
		w.typingPos = w.d.eph.Typing.Pos()
	}
	// What another process handled meanwhile may have changed which rooms
	// interest the service.
	w.ahead, w.rooms = nil, map[string]*roomInterest{}
	w.publish()
	w.log.Info("application service queue starting", "url", redact.URL(w.reg.URL), "cursor", st.Cursor,
		"lag", max(w.d.maxPos.Load()-st.Cursor, 0), "pending_txn", pendingID(st.Pending), "legacy_paths", st.Legacy)
	return nil
}

// step does the next thing the queue needs: send the pending transaction
// (an error leaves it pending, retried after the reader's backoff), or
// read what follows the cursor and queue the next transaction.
func (w *worker) step(ctx context.Context) (stream.Progress, error) {
	if w.pending != nil {
		if err := w.deliver(ctx); err != nil {
			return stream.Progress{}, err
		}
		return w.progress(true), nil
	}
	more, err := w.fill(ctx)
	if err != nil {
		return stream.Progress{}, fmt.Errorf("reading events: %w", err)
	}
	return w.progress(more || w.pending != nil), nil
}

func (w *worker) progress(more bool) stream.Progress {
	return stream.Progress{More: more, Pos: w.cursor, Head: max(w.d.maxPos.Load(), w.cursor)}
}

// fill reads the events after the cursor and either queues a transaction
// of those that interest the service (with the ephemeral data, when asked
// for) or moves the cursor over them. more is true when the stream may
// hold further events already.
func (w *worker) fill(ctx context.Context) (more bool, err error) {
	evs := w.ahead
	w.ahead = nil
	if len(evs) == 0 {
		if evs, err = w.d.store.EventsAfter(ctx, w.cursor, scanBatch); err != nil {
			return false, err
		}
		more = len(evs) == scanBatch
	} else {
		more = true
	}
	covered := w.cursor
	var picked []rooms.Stored
	for i, e := range evs {
		ok, err := w.interesting(ctx, e)
		if err != nil {
			return false, err
		}
		covered = e.Pos
		if ok {
			picked = append(picked, e)
			if len(picked) == MaxTxnEvents {
				// Keep the rest for the next transaction; only this
				// worker writes the cursor, so they stay next in line.
				rest := evs[i+1:]
				if len(rest) > 0 {
					defer func() {
						if err == nil {
							w.ahead = rest
						}
					}()
				}
				break
			}
		}
	}
	// The other streams' cursors move with the transaction that carries
	// what they cover (or, when nothing interests the service, alone).
	var eph []json.RawMessage
	next := ephPositions{typing: w.typingPos, cursors: w.eph}
	if w.reg.Ephemeral() {
		if eph, next, err = w.ephemeral(ctx); err != nil {
			return false, err
		}
	}
	var enc e2eePart
	enc.next = next.cursors
	if w.reg.Ephemeral() || w.reg.DeviceData() {
		if err = w.e2ee(ctx, &enc); err != nil {
			return false, err
		}
	}
	if len(picked) == 0 && len(eph) == 0 && enc.empty() {
		// Nothing of interest changed: skip those positions.
		w.typingPos = next.typing
		if enc.next != w.eph {
			if err := w.d.store.AdvanceAppServiceEphemeral(ctx, w.reg.ID, enc.next); err != nil {
				return false, err
			}
			w.eph = enc.next
		}
		if covered > w.cursor {
			if err := w.d.store.AdvanceAppService(ctx, w.reg.ID, covered); err != nil {
				return false, err
			}
			w.cursor = covered
			w.publish()
		}
		return more, nil
	}
	rendered := []json.RawMessage{}
	if len(picked) > 0 {
		if rendered, err = w.d.render.ClientEvents(ctx, picked, rooms.FormatOptions{}); err != nil {
			return false, err
		}
	}
	tb := txnBody{Events: rendered, Ephemeral: eph, MSC2409: eph}
	enc.fillBody(&tb)
	body, err := json.Marshal(tb)
	if err != nil {
		return false, fmt.Errorf("appservice: encoding transaction: %w", err)
	}
	number := w.lastTxn + 1
	t := &Txn{ID: strconv.FormatInt(number, 10), Body: body, Pos: covered, Events: len(picked)}
	if err := w.d.store.QueueAppServiceTxn(ctx, w.reg.ID, number, *t, enc.next, enc.delivered); err != nil {
		return false, err
	}
	w.lastTxn, w.pending, w.eph, w.typingPos = number, t, enc.next, next.typing
	w.publish()
	return more, nil
}

type txnBody struct {
	Events    []json.RawMessage `json:"events"`
	Ephemeral []json.RawMessage `json:"ephemeral,omitempty"`
	// MSC2409 is the name services written before Matrix 1.13 read.
	MSC2409 []json.RawMessage `json:"de.sorunome.msc2409.ephemeral,omitempty"`

	// The to-device messages of the service's devices (MSC2409), and
	// their device lists and key counts (MSC3202), under the stable names
	// and the unstable ones.
	ToDevice            []json.RawMessage                    `json:"to_device,omitempty"`
	MSC2409ToDevice     []json.RawMessage                    `json:"de.sorunome.msc2409.to_device,omitempty"`
	DeviceLists         *txnDeviceLists                      `json:"device_lists,omitempty"`
	MSC3202DeviceLists  *txnDeviceLists                      `json:"org.matrix.msc3202.device_lists,omitempty"`
	OTKCounts           map[string]map[string]map[string]int `json:"device_one_time_keys_count,omitempty"`
	MSC3202OTKCounts    map[string]map[string]map[string]int `json:"org.matrix.msc3202.device_one_time_keys_count,omitempty"`
	FallbackKeys        map[string]map[string][]string       `json:"device_unused_fallback_key_types,omitempty"`
	MSC3202FallbackKeys map[string]map[string][]string       `json:"org.matrix.msc3202.device_unused_fallback_key_types,omitempty"`
}

// deliver sends the pending transaction once; only a 2xx forgets it and
// moves the cursor.
func (w *worker) deliver(ctx context.Context) error {
	t := w.pending
	if err := w.send(ctx, t); err != nil {
		return fmt.Errorf("sending transaction %s: %w", t.ID, err)
	}
	if err := w.d.store.AppServiceTxnDone(ctx, w.reg.ID, t.ID, t.Pos); err != nil {
		return err
	}
	w.cursor = max(w.cursor, t.Pos)
	w.pending = nil
	w.m.sentEvents.Add(int64(t.Events))
	w.m.sentTxns.Add(1)
	w.publish()
	return nil
}

// noRedirects makes a service's 3xx an answer like any other non-2xx: a
// 302 followed would turn a transaction's PUT into a GET whose 200
// acknowledges nothing.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// statusError is a non-2xx answer.
type statusError struct {
	status int
	url    string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("PUT %s: HTTP %d", e.url, e.status)
}

// send PUTs a transaction on the path the service is known to answer on,
// falling back to the other one when it answers 404, and remembers a
// fallback that worked.
func (w *worker) send(ctx context.Context, t *Txn) error {
	err := w.put(ctx, t, w.legacy)
	var se *statusError
	if !errors.As(err, &se) || se.status != http.StatusNotFound {
		return err
	}
	if err2 := w.put(ctx, t, !w.legacy); err2 != nil {
		return errors.Join(err, err2)
	}
	w.legacy = !w.legacy
	w.log.Info("application service answers on other transaction path", "legacy_paths", w.legacy)
	if err := w.d.store.SetAppServiceLegacy(ctx, w.reg.ID, w.legacy); err != nil {
		// Not fatal: the fallback is found again on the next start.
		w.log.Warn("remembering application service path", "err", err)
	}
	return nil
}

func (w *worker) put(ctx context.Context, t *Txn, legacy bool) error {
	body := t.Body
	var target string
	if legacy {
		// The 2015 API: unprefixed path, token in the query, and events
		// carrying user_id.
		target = w.reg.URL + "/transactions/" + url.PathEscape(t.ID) + "?access_token=" + url.QueryEscape(w.reg.HSToken)
		var err error
		if body, err = legacyBody(body); err != nil {
			return err
		}
	} else {
		target = w.reg.URL + "/_matrix/app/v1/transactions/" + url.PathEscape(t.ID)
	}
	// Errors quote the URL, which may hold the hs_token: every one that
	// leaves here is redacted.
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, target, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("appservice: %w", redact.Error(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+w.reg.HSToken)
	resp, err := w.d.client.Do(req)
	if err != nil {
		return redact.Error(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &statusError{status: resp.StatusCode, url: redact.URL(target)}
	}
	return nil
}

// legacyBody adds user_id (= sender) to every event, as the 2015 API had
// it; the persisted body stays in the current format.
func legacyBody(body []byte) ([]byte, error) {
	var b map[string]json.RawMessage
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("appservice: stored transaction: %w", err)
	}
	var evs []map[string]json.RawMessage
	if err := json.Unmarshal(b["events"], &evs); err != nil {
		return nil, fmt.Errorf("appservice: stored transaction: %w", err)
	}
	for _, e := range evs {
		if _, ok := e["user_id"]; !ok && e["sender"] != nil {
			e["user_id"] = e["sender"]
		}
	}
	var err error
	if b["events"], err = json.Marshal(evs); err != nil {
		return nil, fmt.Errorf("appservice: stored transaction: %w", err)
	}
	return json.Marshal(b)
}

// interestedInUser reports whether a user is the service's own or a local
// user of its namespace (the spec limits user namespaces to local users).
func (w *worker) interestedInUser(userID string) bool {
	if !strings.HasSuffix(userID, w.localSuffix) {
		return false
	}
	return userID == "@"+w.reg.SenderLocalpart+w.localSuffix || w.reg.MatchesUser(userID)
}

// room returns why a room interests the service, computed from the store
// the first time the worker meets the room and then kept up to date from
// the member and canonical alias events it processes.
func (w *worker) room(ctx context.Context, roomID string) (*roomInterest, error) {
	if ri, ok := w.rooms[roomID]; ok {
		return ri, nil
	}
	ri := &roomInterest{byID: w.reg.MatchesRoom(roomID), members: map[string]struct{}{}}
	joined, err := w.d.store.JoinedUserIDs(ctx, roomID)
	if err != nil {
		return nil, err
	}
	for _, u := range joined {
		if w.interestedInUser(u) {
			ri.members[u] = struct{}{}
		}
	}
	if len(w.reg.Namespaces.Aliases) > 0 {
		canon, err := w.d.store.CurrentStateOfType(ctx, roomID, "m.room.canonical_alias")
		if err != nil {
			return nil, err
		}
		for _, e := range canon {
			if e.StateKey != nil && *e.StateKey == "" {
				ri.canonical = w.canonicalMatches(e)
			}
		}
		aliases, err := w.d.store.RoomAliases(ctx, roomID)
		if err != nil {
			return nil, err
		}
		for _, a := range aliases {
			if w.reg.MatchesAlias(a) {
				ri.directory = true
				break
			}
		}
	}
	w.rooms[roomID] = ri
	return ri, nil
}

func (w *worker) canonicalMatches(e rooms.Stored) bool {
	if e.RedactedBy != "" {
		return false
	}
	var ev struct {
		Content struct {
			Alias      any   `json:"alias"`
			AltAliases []any `json:"alt_aliases"`
		} `json:"content"`
	}
	if json.Unmarshal(e.JSON, &ev) != nil {
		return false
	}
	for _, a := range append([]any{ev.Content.Alias}, ev.Content.AltAliases...) {
		if s, ok := a.(string); ok && w.reg.MatchesAlias(s) {
			return true
		}
	}
	return false
}

// interesting reports whether an event interests the service, updating the
// room's interest with it: the event is sent when the room interested the
// service before or after it (a namespace user's leave is sent, and so is
// their join), or when its sender or the member it is about is of the
// namespace.
func (w *worker) interesting(ctx context.Context, e rooms.Stored) (bool, error) {
	ri, err := w.room(ctx, e.RoomID)
	if err != nil {
		return false, err
	}
	before := ri.interested()
	if e.StateKey != nil {
		switch e.Type {
		case "m.room.member":
			if w.interestedInUser(*e.StateKey) {
				if e.Membership == "join" {
					ri.members[*e.StateKey] = struct{}{}
				} else {
					delete(ri.members, *e.StateKey)
				}
				return true, nil
			}
		case "m.room.canonical_alias":
			if *e.StateKey == "" && len(w.reg.Namespaces.Aliases) > 0 {
				ri.canonical = w.canonicalMatches(e)
			}
		}
	}
	return before || ri.interested() || w.interestedInUser(e.Sender), nil
}

// ephPositions are the ephemeral streams' positions a transaction covers.
type ephPositions struct {
	typing  int64
	cursors EphemeralCursors
}

// ephemeral gathers the typing, receipt and presence changes since the
// last transaction that concern the service. Typing is a snapshot of the
// rooms that changed; receipts and presence are read by position.
func (w *worker) ephemeral(ctx context.Context) ([]json.RawMessage, ephPositions, error) {
	src := w.d.eph
	next := ephPositions{typing: w.typingPos, cursors: w.eph}
	var out []json.RawMessage
	if src.Typing != nil {
		next.typing = src.Typing.Pos()
		if next.typing != w.typingPos {
			for _, roomID := range src.Typing.ChangedSince(w.typingPos) {
				ri, err := w.room(ctx, roomID)
				if err != nil {
					return nil, next, err
				}
				if !ri.interested() {
					continue
				}
				ev, err := json.Marshal(map[string]any{
					"type": "m.typing", "room_id": roomID,
					"content": map[string]any{"user_ids": src.Typing.Typing(roomID)},
				})
				if err != nil {
					return nil, next, err
				}
				out = append(out, ev)
			}
		}
	}
	if src.Receipts != nil {
		to, err := src.Receipts.MaxPos(ctx)
		if err != nil {
			return nil, next, err
		}
		next.cursors.Receipts = to
		if to > w.eph.Receipts {
			evs, err := w.receiptEvents(ctx, w.eph.Receipts, to)
			if err != nil {
				return nil, next, err
			}
			out = append(out, evs...)
		}
	}
	if src.Presence != nil {
		to, err := src.Presence.MaxPos(ctx)
		if err != nil {
			return nil, next, err
		}
		next.cursors.Presence = to
		if to > w.eph.Presence {
			changed, err := src.Presence.Changed(ctx, w.eph.Presence, to)
			if err != nil {
				return nil, next, err
			}
			for _, st := range changed {
				ok, err := w.presenceInteresting(ctx, st.UserID)
				if err != nil {
					return nil, next, err
				}
				if ok {
					out = append(out, src.Presence.Event(st))
				}
			}
		}
	}
	return out, next, nil
}

// receiptEvents builds one m.receipt per interesting room with receipts in
// (from, to]; private receipts only of the service's own users.
func (w *worker) receiptEvents(ctx context.Context, from, to int64) ([]json.RawMessage, error) {
	changed, err := w.d.store.ReceiptRoomsBetween(ctx, from, to)
	if err != nil {
		return nil, err
	}
	var roomIDs []string
	for _, roomID := range changed {
		ri, err := w.room(ctx, roomID)
		if err != nil {
			return nil, err
		}
		if ri.interested() {
			roomIDs = append(roomIDs, roomID)
		}
	}
	if len(roomIDs) == 0 {
		return nil, nil
	}
	rs, err := w.d.eph.Receipts.Since(ctx, roomIDs, from, to)
	if err != nil {
		return nil, err
	}
	byRoom := map[string][]receipts.Receipt{}
	for _, r := range rs {
		byRoom[r.RoomID] = append(byRoom[r.RoomID], r)
	}
	var out []json.RawMessage
	for _, roomID := range roomIDs {
		// Event shows private receipts to their owner only: ask once as
		// nobody for the public ones, then as each namespace user with
		// private receipts, and merge.
		content := map[string]map[string]map[string]json.RawMessage{}
		merge := func(data json.RawMessage, ok bool) {
			var c map[string]map[string]map[string]json.RawMessage
			if !ok || json.Unmarshal(data, &c) != nil {
				return
			}
			for ev, byType := range c {
				if content[ev] == nil {
					content[ev] = map[string]map[string]json.RawMessage{}
				}
				for typ, byUser := range byType {
					if content[ev][typ] == nil {
						content[ev][typ] = map[string]json.RawMessage{}
					}
					for u, r := range byUser {
						content[ev][typ][u] = r
					}
				}
			}
		}
		list := byRoom[roomID]
		merge(receipts.Event(list, ""))
		owners := map[string]bool{}
		for _, r := range list {
			if r.Type == receipts.TypeReadPrivate && w.interestedInUser(r.UserID) && !owners[r.UserID] {
				owners[r.UserID] = true
				merge(receipts.Event(list, r.UserID))
			}
		}
		if len(content) == 0 {
			continue
		}
		ev, err := json.Marshal(map[string]any{"type": "m.receipt", "room_id": roomID, "content": content})
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// presenceInteresting: the user is of the namespace, or shares a room
// that interests the service.
func (w *worker) presenceInteresting(ctx context.Context, userID string) (bool, error) {
	if w.interestedInUser(userID) {
		return true, nil
	}
	joined, err := w.d.store.RoomsOf(ctx, userID, "join")
	if err != nil {
		return false, err
	}
	for _, roomID := range joined {
		ri, err := w.room(ctx, roomID)
		if err != nil {
			return false, err
		}
		if ri.interested() {
			return true, nil
		}
	}
	return false, nil
}

// collector exposes what is particular to each queue, read at scrape
// time; position, lag and failures are in the reader family.
type collector struct {
	d                   *Dispatcher
	pending, sent, txns *prometheus.Desc
}

func newCollector(d *Dispatcher) *collector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("homeserver_appservice_"+name, help, []string{"appservice"}, nil)
	}
	return &collector{
		d:       d,
		pending: desc("pending_txn_events", "Events in the transaction waiting to be acknowledged (0 when none)."),
		sent:    desc("sent_events_total", "Events acknowledged by the application service since start."),
		txns:    desc("sent_transactions_total", "Transactions acknowledged by the application service since start."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.sent, c.txns} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, w := range c.d.workers {
		id := w.reg.ID
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(w.m.pendingEvents.Load()), id)
		ch <- prometheus.MustNewConstMetric(c.sent, prometheus.CounterValue, float64(w.m.sentEvents.Load()), id)
		ch <- prometheus.MustNewConstMetric(c.txns, prometheus.CounterValue, float64(w.m.sentTxns.Load()), id)
	}
}
