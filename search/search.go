// Package search is server-side search (POST /search): full-text search
// of the room events a user may see, over an index of the searchable text
// of m.room.message, m.room.name and m.room.topic events that a durable
// reader of the event log keeps current (so /send pays nothing for it),
// and from which redacted events are removed.
package search

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"homeserver/filter"
	"homeserver/mxhttp"
	"homeserver/rooms"
	"homeserver/stream"
)

// readerName names the indexer among the durable readers.
const readerName = "search"

const (
	batch = 200
	// pollEvery is a safety net: new events wake the reader.
	pollEvery = 30 * time.Second
	// stepSpacing spaces the indexer's transactions under load: a burst
	// of messages is indexed in one.
	stepSpacing = 50 * time.Millisecond
	// maxWords bounds the words of a term that are searched, and
	// maxWordBytes their length, and so the size of the query.
	maxWords     = 16
	maxWordBytes = 100
	// defaultLimit and maxLimit are a page's size (filter.limit).
	defaultLimit = 10
	maxLimit     = 50
	// maxScan bounds the matches one request examines for visibility:
	// past it the page ends early, with a next_batch to go on from.
	maxScan = 1000
	// maxCount bounds the count reported (an estimate, says the spec).
	maxCount = 10000
	// maxContext bounds event_context's before_limit and after_limit.
	maxContext = 100
)

// Config configures the service.
type Config struct {
	Logger  *slog.Logger
	Hub     *stream.Hub
	Metrics *stream.Metrics
	Leaser  stream.Leaser
}

// Service is server-side search.
type Service struct {
	cfg   Config
	store Store
	rooms *rooms.Service
	log   *slog.Logger
	wake  <-chan struct{}

	// cursor is the indexer's (its goroutine alone uses it): events with
	// nothing to index move it in memory only.
	cursor stream.LazyCursor

	run stream.Runner
}

// New returns the service; Start runs its indexer.
func New(store Store, rms *rooms.Service, cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Leaser == nil {
		cfg.Leaser = stream.Local{}
	}
	s := &Service{cfg: cfg, store: store, rooms: rms, log: cfg.Logger}
	if cfg.Hub != nil {
		s.wake = cfg.Hub.Wake(stream.Events)
	}
	return s
}

// Start runs the indexer until Stop. A new indexer starts at the
// beginning of the log, so that a deployment's history is searchable.
func (s *Service) Start() {
	r := &stream.Reader{
		Name: readerName, Step: s.step, Wake: s.wake, Poll: pollEvery, Spacing: stepSpacing,
		Start:   func(context.Context) error { s.cursor.Reset(); return nil },
		Backoff: func() (time.Duration, time.Duration) { return 100 * time.Millisecond, 30 * time.Second },
		Log:     s.log, Metrics: s.cfg.Metrics,
	}
	s.run.Start(func(ctx context.Context) { r.RunLeased(ctx, s.cfg.Leaser) })
}

// Stop stops the indexer and waits for it.
func (s *Service) Stop() { s.run.Stop() }

// step indexes the events after the cursor and applies the redactions
// among them.
func (s *Service) step(ctx context.Context) (stream.Progress, error) {
	cursor, err := s.cursor.Get(ctx, func(ctx context.Context) (int64, error) {
		return s.store.SearchCursor(ctx, readerName)
	})
	if err != nil {
		return stream.Progress{}, err
	}
	evs, err := s.store.EventsAfter(ctx, cursor, batch)
	if err != nil {
		return stream.Progress{}, err
	}
	if len(evs) == 0 {
		return stream.Progress{Pos: cursor, Head: cursor}, nil
	}
	var u Update
	for _, ev := range evs {
		if ev.Type == "m.room.redaction" {
			if target := redacts(ev.JSON); target != "" {
				u.Redacted = append(u.Redacted, target)
			}
			continue
		}
		// An event redacted before the indexer reached it has nothing to
		// find.
		if ev.RedactedBy != "" {
			continue
		}
		if e, ok := entryOf(ev); ok {
			u.Put = append(u.Put, e)
		}
	}
	next := evs[len(evs)-1].Pos
	if len(u.Put) == 0 && len(u.Redacted) == 0 && !s.cursor.StoreDue(next) {
		s.cursor.Moved(next)
		return stream.Progress{More: len(evs) == batch, Pos: next, Head: next}, nil
	}
	if err := s.store.UpdateSearchIndex(ctx, readerName, u, next); err != nil {
		return stream.Progress{}, err
	}
	s.cursor.Stored(next)
	return stream.Progress{More: len(evs) == batch, Pos: next, Head: next}, nil
}

// redacts is the event a redaction redacts: content.redacts (room
// version 11 on) or the top-level redacts.
func redacts(js []byte) string {
	var r struct {
		Redacts any `json:"redacts"`
		Content struct {
			Redacts any `json:"redacts"`
		} `json:"content"`
	}
	_ = json.Unmarshal(js, &r)
	if s, ok := r.Content.Redacts.(string); ok && s != "" {
		return s
	}
	s, _ := r.Redacts.(string)
	return s
}

// entryOf returns the searchable text of an event: the body of a
// message, the name of a room name, the topic of a room topic (with the
// text/plain m.topic body when it says more).
func entryOf(ev rooms.Stored) (Entry, bool) {
	var key string
	switch {
	case ev.Type == "m.room.message" && ev.StateKey == nil:
		key = KeyBody
	case ev.Type == "m.room.name" && ev.StateKey != nil && *ev.StateKey == "":
		key = KeyName
	case ev.Type == "m.room.topic" && ev.StateKey != nil && *ev.StateKey == "":
		key = KeyTopic
	default:
		return Entry{}, false
	}
	var c struct {
		Content struct {
			Body   any `json:"body"`
			Name   any `json:"name"`
			Topic  any `json:"topic"`
			MTopic struct {
				Text []struct {
					MimeType any `json:"mimetype"`
					Body     any `json:"body"`
				} `json:"m.text"`
			} `json:"m.topic"`
		} `json:"content"`
	}
	if json.Unmarshal(ev.JSON, &c) != nil {
		return Entry{}, false
	}
	var value string
	switch key {
	case KeyBody:
		value, _ = c.Content.Body.(string)
	case KeyName:
		value, _ = c.Content.Name.(string)
	case KeyTopic:
		value, _ = c.Content.Topic.(string)
		for _, t := range c.Content.MTopic.Text {
			mime, _ := t.MimeType.(string)
			body, _ := t.Body.(string)
			if (mime == "" || mime == "text/plain") && body != "" && !strings.Contains(value, body) {
				value = strings.TrimSpace(value + "\n" + body)
				break
			}
		}
	}
	// PostgreSQL stores no NUL in text.
	value = strings.ReplaceAll(value, "\x00", "")
	if strings.TrimSpace(value) == "" {
		return Entry{}, false
	}
	return Entry{EventID: ev.EventID, RoomID: ev.RoomID, Sender: ev.Sender, Key: key, Value: value, Pos: ev.Pos, TS: ev.TS}, true
}

// keyTypes are the searchable keys and their event types.
var keyTypes = map[string]string{KeyBody: "m.room.message", KeyName: "m.room.name", KeyTopic: "m.room.topic"}

// Request is the body of POST /search.
type Request struct {
	SearchCategories *struct {
		RoomEvents *RoomEventsCriteria `json:"room_events"`
	} `json:"search_categories"`
}

// RoomEventsCriteria is search_categories.room_events.
type RoomEventsCriteria struct {
	SearchTerm   *string         `json:"search_term"`
	Keys         []string        `json:"keys"`
	Filter       json.RawMessage `json:"filter"`
	OrderBy      *string         `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    *struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

// Response is the answer to POST /search.
type Response struct {
	SearchCategories struct {
		RoomEvents *RoomEventsResult `json:"room_events,omitempty"`
	} `json:"search_categories"`
}

// RoomEventsResult is search_categories.room_events of the answer.
type RoomEventsResult struct {
	Count      int                          `json:"count"`
	Highlights []string                     `json:"highlights"`
	Results    []Result                     `json:"results"`
	State      map[string][]json.RawMessage `json:"state,omitempty"`
	Groups     map[string]map[string]*Group `json:"groups,omitempty"`
	NextBatch  string                       `json:"next_batch,omitempty"`
}

// Result is one event found.
type Result struct {
	Rank    float64              `json:"rank"`
	Result  json.RawMessage      `json:"result"`
	Context *rooms.SearchContext `json:"context,omitempty"`
}

// Group is the results of one room or sender.
type Group struct {
	Results   []string `json:"results"`
	Order     int      `json:"order"`
	NextBatch string   `json:"next_batch,omitempty"`
}

// token is a decoded next_batch: where the previous page ended, in which
// order, and the group (room_id or sender, with its value) it was scoped
// to, if any.
type token struct {
	order      string
	group, key string
	cursor     Cursor
}

func (t token) encode() string {
	raw := strings.Join([]string{"s1", t.order, t.group, t.key,
		strconv.FormatInt(t.cursor.Pos, 10), strconv.FormatUint(math.Float64bits(t.cursor.Rank), 16)}, "\n")
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func parseToken(s string) (token, error) {
	bad := mxhttp.InvalidParam("Invalid next_batch")
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return token{}, bad
	}
	parts := strings.Split(string(raw), "\n")
	if len(parts) != 6 || parts[0] != "s1" {
		return token{}, bad
	}
	t := token{order: parts[1], group: parts[2], key: parts[3]}
	if t.order != "rank" && t.order != "recent" {
		return token{}, bad
	}
	switch t.group {
	case "":
		if t.key != "" {
			return token{}, bad
		}
	case "room_id", "sender":
		if t.key == "" {
			return token{}, bad
		}
	default:
		return token{}, bad
	}
	if t.cursor.Pos, err = strconv.ParseInt(parts[4], 10, 64); err != nil {
		return token{}, bad
	}
	bits, err := strconv.ParseUint(parts[5], 16, 64)
	if err != nil {
		return token{}, bad
	}
	t.cursor.Rank = math.Float64frombits(bits)
	if math.IsNaN(t.cursor.Rank) || math.IsInf(t.cursor.Rank, 0) {
		return token{}, bad
	}
	return t, nil
}

// splitWords lower-cases a search term and cuts it into its words: runs
// of letters, digits and marks. Everything else (quotes, '*', '-',
// brackets: the full-text engines' syntax) separates words, so a term
// never reaches an engine as syntax.
func splitWords(term string) []string {
	words := strings.FieldsFunc(strings.ToLower(term), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.IsMark(r)
	})
	var out []string
	for _, w := range words {
		// A word of marks alone is no word to either engine.
		if len(w) > maxWordBytes || slices.Contains(out, w) || !strings.ContainsFunc(w, isWordRune) {
			continue
		}
		out = append(out, w)
		if len(out) == maxWords {
			break
		}
	}
	return out
}

// Search runs a search for user; nextBatch is the next_batch query
// parameter ("" for the first page).
func (s *Service) Search(ctx context.Context, user string, req Request, nextBatch string) (*Response, error) {
	if req.SearchCategories == nil {
		return nil, mxhttp.MissingParam("Missing search_categories")
	}
	resp := &Response{}
	c := req.SearchCategories.RoomEvents
	if c == nil {
		return resp, nil
	}
	if c.SearchTerm == nil {
		return nil, mxhttp.MissingParam("Missing search_term")
	}
	order := "rank"
	if c.OrderBy != nil {
		order = *c.OrderBy
	}
	if order != "rank" && order != "recent" {
		return nil, mxhttp.InvalidParam("Invalid order_by %q", order)
	}
	keys := []string{KeyBody, KeyName, KeyTopic}
	if c.Keys != nil {
		keys = nil
		for _, k := range c.Keys {
			if _, ok := keyTypes[k]; !ok {
				return nil, mxhttp.InvalidParam("Invalid key %q", k)
			}
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	var groupBy []string
	if c.Groupings != nil {
		for _, g := range c.Groupings.GroupBy {
			if g.Key != "room_id" && g.Key != "sender" {
				return nil, mxhttp.InvalidParam("Invalid group_by key %q", g.Key)
			}
			groupBy = append(groupBy, g.Key)
		}
	}
	f := &filter.RoomEventFilter{}
	if len(c.Filter) > 0 && string(c.Filter) != "null" {
		var err error
		if f, err = filter.Parse(string(c.Filter)); err != nil {
			return nil, mxhttp.BadJSON("Invalid filter: %v", err)
		}
	}
	limit := defaultLimit
	if f.Limit != nil {
		limit = min(*f.Limit, maxLimit)
	}
	var before, after int
	if ec := c.EventContext; ec != nil {
		before, after = 5, 5
		if ec.BeforeLimit != nil {
			before = *ec.BeforeLimit
		}
		if ec.AfterLimit != nil {
			after = *ec.AfterLimit
		}
		if before < 0 || after < 0 {
			return nil, mxhttp.InvalidParam("event_context limits must not be negative")
		}
		before, after = min(before, maxContext), min(after, maxContext)
	}
	var tok *token
	if nextBatch != "" {
		t, err := parseToken(nextBatch)
		if err != nil {
			return nil, err
		}
		if t.order != order {
			return nil, mxhttp.InvalidParam("next_batch is for another order_by")
		}
		tok = &t
	}

	res := &RoomEventsResult{Results: []Result{}, Highlights: []string{}}
	resp.SearchCategories.RoomEvents = res
	words := splitWords(*c.SearchTerm)
	if len(words) == 0 {
		return resp, nil
	}
	res.Highlights = words

	q, err := s.query(ctx, user, f, keys, tok)
	if err != nil {
		return nil, err
	}
	q.Words, q.Recent = words, order == "recent"
	if len(q.Rooms) == 0 || len(q.Keys) == 0 || limit == 0 {
		return resp, nil
	}
	if res.Count, err = s.store.CountSearchEvents(ctx, q, maxCount); err != nil {
		return nil, err
	}

	view := s.rooms.NewSearchView(user)
	var hits []Hit
	more := false
	var end Cursor
	n := max(2*limit, 50)
	scanned := 0
scan:
	for scanned < maxScan {
		q.Limit = n
		page, err := s.store.SearchEvents(ctx, q)
		if err != nil {
			return nil, err
		}
		for i, h := range page {
			scanned++
			end = Cursor{Rank: h.Rank, Pos: h.Event.Pos}
			if h.Event.RedactedBy != "" {
				continue
			}
			ok, err := view.CanSee(ctx, h.Event)
			if err != nil {
				return nil, err
			}
			if ok && f.Match(h.Event.RoomID, h.Event.Type, h.Event.Sender, contentOf(h.Event.JSON)) {
				hits = append(hits, h)
				if len(hits) == limit {
					more = i < len(page)-1 || len(page) == n
					break scan
				}
			}
		}
		if len(page) < n {
			more = false // the matches ran out
			break
		}
		more = true // unless the next batch says otherwise: the scan bound may end the page early
		q.After = &Cursor{Rank: end.Rank, Pos: end.Pos}
	}

	evs := make([]rooms.Stored, len(hits))
	for i, h := range hits {
		evs[i] = h.Event
	}
	rendered, err := view.ClientEvents(ctx, evs)
	if err != nil {
		return nil, err
	}
	for i, h := range hits {
		r := Result{Rank: h.Rank, Result: rendered[i]}
		if c.EventContext != nil {
			if r.Context, err = view.Context(ctx, h.Event, before, after, c.EventContext.IncludeProfile); err != nil {
				return nil, err
			}
		}
		res.Results = append(res.Results, r)
	}
	if more {
		t := token{order: order, cursor: end}
		if tok != nil {
			t.group, t.key = tok.group, tok.key
		}
		res.NextBatch = t.encode()
	}
	for _, g := range groupBy {
		groups := map[string]*Group{}
		for _, h := range hits {
			k := h.Event.RoomID
			if g == "sender" {
				k = h.Event.Sender
			}
			grp := groups[k]
			if grp == nil {
				grp = &Group{Results: []string{}, Order: len(groups) + 1}
				if more {
					grp.NextBatch = token{order: order, group: g, key: k, cursor: end}.encode()
				}
				groups[k] = grp
			}
			grp.Results = append(grp.Results, h.Event.EventID)
		}
		if res.Groups == nil {
			res.Groups = map[string]map[string]*Group{}
		}
		res.Groups[g] = groups
	}
	if c.IncludeState {
		res.State = map[string][]json.RawMessage{}
		for _, h := range hits {
			if _, done := res.State[h.Event.RoomID]; done {
				continue
			}
			st, err := s.rooms.State(ctx, user, h.Event.RoomID)
			if err != nil {
				var merr *mxhttp.Error
				if errors.As(err, &merr) {
					continue
				}
				return nil, err
			}
			res.State[h.Event.RoomID] = st
		}
	}
	return resp, nil
}

// query builds the index query: the rooms the user may search, bounded
// by the filter (with the predecessors of the rooms it names, as
// Synapse) and by a group's next_batch; the keys, bounded by the
// filter's types; the filter's senders.
func (s *Service) query(ctx context.Context, user string, f *filter.RoomEventFilter, keys []string, tok *token) (Query, error) {
	var q Query
	mine, err := s.rooms.SearchRooms(ctx, user)
	if err != nil {
		return q, err
	}
	var wanted map[string]bool
	if f.Rooms != nil {
		wanted = map[string]bool{}
		for _, r := range f.Rooms {
			wanted[r] = true
			preds, err := s.rooms.Predecessors(ctx, r)
			if err != nil {
				return q, err
			}
			for _, p := range preds {
				wanted[p] = true
			}
		}
	}
	for _, r := range mine {
		if (wanted == nil || wanted[r]) && !slices.Contains(f.NotRooms, r) &&
			(tok == nil || tok.group != "room_id" || tok.key == r) {
			q.Rooms = append(q.Rooms, r)
		}
	}
	slices.Sort(q.Rooms)
	// Predecessors' events pass the filter's rooms too.
	if f.Rooms != nil {
		fc := *f
		fc.Rooms = q.Rooms
		if fc.Rooms == nil {
			fc.Rooms = []string{}
		}
		*f = fc
	}
	types := &filter.RoomEventFilter{Types: f.Types, NotTypes: f.NotTypes}
	for _, k := range keys {
		if types.Match("", keyTypes[k], "", nil) {
			q.Keys = append(q.Keys, k)
		}
	}
	q.Senders, q.NotSenders = f.Senders, f.NotSenders
	if tok != nil && tok.group == "sender" {
		if q.Senders != nil && !slices.Contains(q.Senders, tok.key) {
			q.Senders = []string{}
		} else {
			q.Senders = []string{tok.key}
		}
	}
	if tok != nil {
		q.After = &Cursor{Rank: tok.cursor.Rank, Pos: tok.cursor.Pos}
	}
	return q, nil
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

func contentOf(js []byte) json.RawMessage {
	var p struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(js, &p)
	return p.Content
}
