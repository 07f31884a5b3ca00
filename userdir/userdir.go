// Package userdir is the user directory: the search behind
// /user_directory/search, over an index of users' IDs and display names
// that a durable reader of the event log keeps current (so that /send
// pays nothing for it), plus the local users' own profiles.
package userdir

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"homeserver/accounts"
	"homeserver/pdu"
	"homeserver/rooms"
	"homeserver/stream"
)

// readerName names the directory among the durable readers.
const readerName = "userdir"

const (
	batch = 200
	// maxWords bounds the words of a search term that are matched, and so
	// the size of the query.
	maxWords = 8
	// pollEvery bounds how long a new account with no room waits to be
	// listed: registrations write no event to wake the reader.
	pollEvery = 2 * time.Second
	// stepSpacing spaces the reader's steps under load: a burst of
	// events is read in one.
	stepSpacing = 50 * time.Millisecond
	// maxTokenBytes and maxTokens bound what one user adds to the index:
	// a remote server chooses its users' display names, and PostgreSQL
	// refuses index entries of a few kilobytes.
	maxTokenBytes = 64
	maxTokens     = 32
)

// Config is the directory's part of homeserver.yaml (Synapse's
// user_directory section).
type Config struct {
	ServerName string
	// Enabled false answers every search with no results, as Synapse.
	Enabled bool
	// SearchAllUsers makes every local user findable, not only those
	// sharing a room with the searcher or in a public room.
	SearchAllUsers bool
	// PreferLocalUsers ranks local users before remote ones.
	PreferLocalUsers bool
	Logger           *slog.Logger
	Hub              *stream.Hub
	Metrics          *stream.Metrics
	Leaser           stream.Leaser
}

// Service is the user directory.
type Service struct {
	cfg   Config
	store Store
	log   *slog.Logger
	wake  <-chan struct{}

	run stream.Runner

	// Owned by the reader's goroutine. A step that changes nothing (most
	// events are messages) only moves the cursor in memory.
	cursor        stream.LazyCursor
	lastLocalScan time.Time
}

// New returns the directory; Start runs its reader.
func New(store Store, cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Leaser == nil {
		cfg.Leaser = stream.Local{}
	}
	s := &Service{cfg: cfg, store: store, log: cfg.Logger}
	if cfg.Hub != nil {
		s.wake = cfg.Hub.Wake(stream.Events)
	}
	return s
}

// Start runs the reader until Stop. A new reader starts at the beginning
// of the log, so that a deployment's existing rooms are indexed.
func (s *Service) Start() {
	r := &stream.Reader{
		Name: readerName, Step: s.step, Wake: s.wake, Poll: pollEvery, Spacing: stepSpacing,
		// Each time this process takes the reader, another may have moved
		// the cursor.
		Start:   func(context.Context) error { s.cursor.Reset(); s.lastLocalScan = time.Time{}; return nil },
		Backoff: func() (time.Duration, time.Duration) { return 100 * time.Millisecond, 30 * time.Second },
		Log:     s.log, Metrics: s.cfg.Metrics,
	}
	s.run.Start(func(ctx context.Context) { r.RunLeased(ctx, s.cfg.Leaser) })
}

// Stop stops the reader and waits for it.
func (s *Service) Stop() { s.run.Stop() }

func (s *Service) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+s.cfg.ServerName)
}

// step indexes the events after the cursor: the rooms whose visibility
// they change and the users whose membership events they carry; then the
// local users not yet listed (new registrations).
func (s *Service) step(ctx context.Context) (stream.Progress, error) {
	cursor, err := s.cursor.Get(ctx, func(ctx context.Context) (int64, error) {
		c, _, err := s.store.ReaderCursor(ctx, readerName, stream.Events)
		return c, err
	})
	if err != nil {
		return stream.Progress{}, err
	}
	evs, err := s.store.EventsAfter(ctx, cursor, batch)
	if err != nil {
		return stream.Progress{}, err
	}
	u := Update{Public: map[string]bool{}}
	// The last membership event of each user in the batch wins.
	members := map[string]rooms.Stored{}
	var order []string
	for _, ev := range evs {
		if ev.StateKey == nil {
			continue
		}
		switch ev.Type {
		case "m.room.join_rules", "m.room.history_visibility":
			u.Public[ev.RoomID] = false
		case "m.room.member":
			if ev.Membership != "join" {
				continue
			}
			if _, seen := members[*ev.StateKey]; !seen {
				order = append(order, *ev.StateKey)
			}
			members[*ev.StateKey] = ev
		}
	}
	for room := range u.Public {
		if u.Public[room], err = s.roomIsPublic(ctx, room); err != nil {
			return stream.Progress{}, err
		}
	}
	for _, userID := range order {
		e, ok, err := s.entryFor(ctx, userID, members[userID].JSON)
		if err != nil {
			return stream.Progress{}, err
		}
		if ok {
			u.Put = append(u.Put, e)
		} else {
			u.Delete = append(u.Delete, userID)
		}
	}
	// New accounts write no event: they are looked for on the poll, not
	// after every event.
	var missing []string
	if time.Since(s.lastLocalScan) >= pollEvery {
		if missing, err = s.store.UserDirectoryLocalMissing(ctx, batch); err != nil {
			return stream.Progress{}, err
		}
		if len(missing) < batch {
			s.lastLocalScan = time.Now()
		}
	}
	for _, userID := range missing {
		e, ok, err := s.entryFor(ctx, userID, nil)
		if err != nil {
			return stream.Progress{}, err
		}
		if ok {
			u.Put = append(u.Put, e)
		}
	}
	next := int64(-1)
	if len(evs) > 0 {
		next = evs[len(evs)-1].Pos
	}
	changed := len(u.Put) > 0 || len(u.Delete) > 0 || len(u.Public) > 0
	pos := max(cursor, next)
	if changed || (next >= 0 && s.cursor.StoreDue(next)) {
		if err := s.store.UpdateUserDirectory(ctx, readerName, u, next); err != nil {
			return stream.Progress{}, err
		}
		if next >= 0 {
			s.cursor.Stored(next)
		}
	} else if next >= 0 {
		s.cursor.Moved(next)
	}
	return stream.Progress{More: len(evs) == batch || len(missing) == batch, Pos: pos, Head: pos}, nil
}

// roomIsPublic says whether anyone may see the room's members: its join
// rule is public or its history world-readable (Synapse's rule).
func (s *Service) roomIsPublic(ctx context.Context, roomID string) (bool, error) {
	st, err := s.store.CurrentState(ctx, roomID, []pdu.StateKey{{Type: "m.room.join_rules"}, {Type: "m.room.history_visibility"}})
	if err != nil {
		return false, err
	}
	for _, ev := range st {
		var e struct {
			Content struct {
				JoinRule   string `json:"join_rule"`
				Visibility string `json:"history_visibility"`
			} `json:"content"`
		}
		if json.Unmarshal(ev.JSON, &e) != nil {
			continue
		}
		if e.Content.JoinRule == "public" || e.Content.Visibility == "world_readable" {
			return true, nil
		}
	}
	return false, nil
}

// entryFor builds a user's entry: a local user's from their global
// profile (a name set in one room is not for everyone to search), a
// remote user's from their membership event. ok is false for a local
// user the directory must not list.
func (s *Service) entryFor(ctx context.Context, userID string, member []byte) (Entry, bool, error) {
	e := Entry{UserID: userID, Local: s.isLocal(userID)}
	if e.Local {
		acc, err := s.store.GetAccount(ctx, userID)
		if errors.Is(err, accounts.ErrNotFound) {
			return e, false, nil
		}
		if err != nil {
			return e, false, err
		}
		// Application services' users (their namespaces are exclusive to
		// them, and their sender) and deactivated users are left out, as
		// in Synapse.
		if acc.Deactivated || acc.AppServiceID != "" {
			return e, false, nil
		}
		p, err := s.store.GetProfile(ctx, userID)
		if err != nil && !errors.Is(err, accounts.ErrNotFound) {
			return e, false, err
		}
		if p.DisplayName != nil {
			e.DisplayName = *p.DisplayName
		}
		if p.AvatarURL != nil {
			e.AvatarURL = *p.AvatarURL
		}
	} else {
		var ev struct {
			Content struct {
				DisplayName any `json:"displayname"`
				AvatarURL   any `json:"avatar_url"`
			} `json:"content"`
		}
		_ = json.Unmarshal(member, &ev)
		// Remote servers may send anything; only strings are names.
		e.DisplayName, _ = ev.Content.DisplayName.(string)
		e.AvatarURL, _ = ev.Content.AvatarURL.(string)
	}
	e.Tokens = tokens(userID, e.DisplayName)
	e.SortKey = strings.ToLower(e.DisplayName)
	if e.SortKey == "" {
		e.SortKey = strings.ToLower(strings.TrimPrefix(localpart(userID), "@"))
	}
	return e, true, nil
}

// ProfileChanged re-reads a local user's profile into the directory at
// once, for users in no room, whose change writes no event.
func (s *Service) ProfileChanged(ctx context.Context, userID string) error {
	e, ok, err := s.entryFor(ctx, userID, nil)
	if err != nil {
		return err
	}
	u := Update{}
	if ok {
		u.Put = []Entry{e}
	} else {
		u.Delete = []string{userID}
	}
	return s.store.UpdateUserDirectory(ctx, readerName, u, -1)
}

// Result is one user found.
type Result struct {
	UserID      string  `json:"user_id"`
	DisplayName *string `json:"display_name,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// Search finds up to limit users visible to searcher whose user ID or
// display name has a word starting with each word of term; limited says
// there were more.
func (s *Service) Search(ctx context.Context, searcher, term string, limit int) ([]Result, bool, error) {
	words := splitWords(term)
	if !s.cfg.Enabled || len(words) == 0 || limit <= 0 {
		return []Result{}, false, nil
	}
	if len(words) > maxWords {
		words = words[:maxWords]
	}
	found, err := s.store.SearchUserDirectory(ctx, Query{
		Searcher: searcher, Words: words, Limit: limit,
		AllLocal: s.cfg.SearchAllUsers, PreferLocal: s.cfg.PreferLocalUsers,
	})
	if err != nil {
		return nil, false, err
	}
	limited := len(found) > limit
	if limited {
		found = found[:limit]
	}
	out := make([]Result, 0, len(found))
	for _, e := range found {
		r := Result{UserID: e.UserID}
		if e.DisplayName != "" {
			r.DisplayName = &e.DisplayName
		}
		if e.AvatarURL != "" {
			r.AvatarURL = &e.AvatarURL
		}
		out = append(out, r)
	}
	return out, limited, nil
}

func localpart(userID string) string {
	lp, _, _ := strings.Cut(userID, ":")
	return lp
}

// splitWords lower-cases s and cuts it into runs of letters and digits,
// each cut to maxTokenBytes (a longer search word then matches by its
// first maxTokenBytes, as the stored token does).
func splitWords(s string) []string {
	words := strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r)
	})
	for i, w := range words {
		words[i] = truncate(w)
	}
	return words
}

// truncate cuts w to at most maxTokenBytes, on a rune boundary.
func truncate(w string) string {
	if len(w) <= maxTokenBytes {
		return w
	}
	n := maxTokenBytes
	for n > 0 && !utf8.RuneStart(w[n]) {
		n--
	}
	return w[:n]
}

// tokens are what a user is found by: the words of the user ID (the
// localpart's and the server name's) and of the display name, and the
// whole localpart's letters and digits, so that "alicesm" finds
// "@alice.smith:x" as well as "smi" does.
func tokens(userID, displayName string) []string {
	lp := strings.TrimPrefix(localpart(userID), "@")
	// The user ID's come first, so that the cap only ever drops words of
	// a long display name.
	all := append(splitWords(userID), truncate(strings.Join(splitWords(lp), "")))
	all = append(all, splitWords(displayName)...)
	seen := map[string]bool{}
	out := all[:0]
	for _, t := range all {
		if t != "" && !seen[t] && len(out) < maxTokens {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out
}
