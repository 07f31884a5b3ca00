package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"homeserver/filter"
	"homeserver/mxhttp"
	"homeserver/pdu"
)

// FormatOptions tune the client event format.
type FormatOptions struct {
	// Legacy adds user_id (= sender), as the 2015 API did.
	Legacy bool
	// Federation serves the PDU as stored (redacted if it was), as
	// filters with event_format "federation" ask.
	Federation bool
	// Txn, when set, adds unsigned.transaction_id to the events that this
	// device sent, so that clients can match their local echo.
	Txn *TxnRef
	// WithoutRoomID leaves room_id out, as /sync's format has it (its
	// events sit under their room's ID already).
	WithoutRoomID bool
}

type pduJSON struct {
	Content        json.RawMessage `json:"content"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
}

// ClientEvents renders stored events in the client format: redacted events
// per their room version's algorithm with unsigned.redacted_because, and
// state events with prev_content.
func (s *Service) ClientEvents(ctx context.Context, evs []Stored, opts FormatOptions) ([]json.RawMessage, error) {
	versions := map[string]string{}
	var related []string
	for _, e := range evs {
		if e.RedactedBy != "" {
			related = append(related, e.RedactedBy)
		}
		if e.ReplacesState != "" {
			related = append(related, e.ReplacesState)
		}
	}
	byID := map[string]Stored{}
	if len(related) > 0 {
		rel, err := s.store.GetEvents(ctx, related)
		if err != nil {
			return nil, err
		}
		for _, r := range rel {
			byID[r.EventID] = r
		}
	}
	var txns map[string]string
	if opts.Txn != nil {
		var mine []string
		for _, e := range evs {
			if e.Sender == opts.Txn.UserID {
				mine = append(mine, e.EventID)
			}
		}
		if len(mine) > 0 {
			var err error
			if txns, err = s.store.TxnIDs(ctx, opts.Txn.UserID, opts.Txn.Scope, mine); err != nil {
				return nil, err
			}
		}
	}
	now := s.now().UnixMilli()
	out := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		b, err := s.clientEvent(ctx, e, versions, byID, now, opts, true)
		if err != nil {
			return nil, err
		}
		if txn, ok := txns[e.EventID]; ok && !opts.Federation {
			b = withTxnID(b, txn)
		}
		out = append(out, b)
	}
	return out, nil
}

func (s *Service) roomVersion(ctx context.Context, roomID string, cache map[string]string) (string, error) {
	if v, ok := cache[roomID]; ok {
		return v, nil
	}
	room, err := s.store.GetRoom(ctx, roomID)
	if err != nil {
		return "", err
	}
	cache[roomID] = room.Version
	return room.Version, nil
}

func (s *Service) clientEvent(ctx context.Context, e Stored, versions map[string]string, byID map[string]Stored, now int64, opts FormatOptions, withRelated bool) (json.RawMessage, error) {
	data := e.JSON
	if e.RedactedBy != "" {
		v, err := s.roomVersion(ctx, e.RoomID, versions)
		if err != nil {
			return nil, err
		}
		if data, err = pdu.Redact(v, data); err != nil {
			return nil, fmt.Errorf("rooms: redacting %s: %w", e.EventID, err)
		}
	}
	if opts.Federation {
		return data, nil
	}
	var p pduJSON
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("rooms: stored event %s: %w", e.EventID, err)
	}
	if len(p.Content) == 0 {
		p.Content = json.RawMessage("{}")
	}
	// From room version 12 the create event's PDU has no room_id (the room
	// ID is derived from the event's ID), but clients are owed one on
	// every event, as Synapse gives.
	roomID := p.RoomID
	if roomID == "" {
		roomID = e.RoomID
	}
	ev := map[string]any{
		"content": p.Content, "event_id": e.EventID, "origin_server_ts": p.OriginServerTS,
		"room_id": roomID, "sender": p.Sender, "type": p.Type,
	}
	if opts.WithoutRoomID && withRelated {
		delete(ev, "room_id")
	}
	if p.StateKey != nil {
		ev["state_key"] = *p.StateKey
	}
	if p.Redacts != "" {
		ev["redacts"] = p.Redacts
	}
	if opts.Legacy {
		ev["user_id"] = p.Sender
	}
	unsigned := map[string]any{"age": max(now-p.OriginServerTS, 0)}
	if withRelated {
		if prev, ok := byID[e.ReplacesState]; ok && e.ReplacesState != "" {
			var pp pduJSON
			prevData := prev.JSON
			if prev.RedactedBy != "" {
				if v, err := s.roomVersion(ctx, prev.RoomID, versions); err == nil {
					if r, err := pdu.Redact(v, prevData); err == nil {
						prevData = r
					}
				}
			}
			if json.Unmarshal(prevData, &pp) == nil {
				unsigned["replaces_state"] = prev.EventID
				unsigned["prev_content"] = pp.Content
				unsigned["prev_sender"] = pp.Sender
			}
		}
		if red, ok := byID[e.RedactedBy]; ok && e.RedactedBy != "" {
			rb, err := s.clientEvent(ctx, red, versions, byID, now, opts, false)
			if err != nil {
				return nil, err
			}
			unsigned["redacted_because"] = rb
		}
	}
	if e.ViewerMembership != "" {
		unsigned["membership"] = e.ViewerMembership
	}
	ev["unsigned"] = unsigned
	return json.Marshal(ev)
}

// Tokens of /messages and /context name a point in the room's log: "p<N>"
// is the point just after stream position N. Sync's tokens ("s<N>_...")
// are accepted too, so that prev_batch chains into /messages.

// FormatToken renders a pagination token.
func FormatToken(pos int64) string { return "p" + strconv.FormatInt(pos, 10) }

// ParseToken reads a pagination token.
func ParseToken(tok string) (int64, error) {
	if len(tok) < 2 || (tok[0] != 'p' && tok[0] != 's' && tok[0] != 't') {
		return 0, mxhttp.InvalidParam("Invalid pagination token %q", tok)
	}
	digits := tok[1:]
	if _, pos, ok := strings.Cut(digits, "_"); ok && tok[0] == 't' {
		// A topological token of /messages: its stream part (none for
		// history backfilled from other servers, below everything).
		digits = strings.TrimPrefix(pos, "-")
		if digits != pos {
			digits = "0"
		}
	}
	if i := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		digits = digits[:i]
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n < 0 {
		return 0, mxhttp.InvalidParam("Invalid pagination token %q", tok)
	}
	return n, nil
}

// roomForReader checks the room exists and returns a viewer for the user.
func (s *Service) roomForReader(ctx context.Context, user, roomID string) (*viewer, error) {
	if err := s.checkRoomID(roomID); err != nil {
		return nil, err
	}
	if _, err := s.store.GetRoom(ctx, roomID); errors.Is(err, ErrNotFound) {
		return nil, mxhttp.Forbidden("You are not allowed to view this room")
	} else if err != nil {
		return nil, err
	}
	return s.viewer(ctx, roomID, user)
}

// GetEvent returns one event the user may see.
func (s *Service) GetEvent(ctx context.Context, user, roomID, eventID string) (json.RawMessage, error) {
	return s.GetEventWith(ctx, user, roomID, eventID, FormatOptions{})
}

// GetEventWith is GetEvent in the format opts asks: with opts.Txn, the
// sending device sees its transaction ID, as in /sync.
func (s *Service) GetEventWith(ctx context.Context, user, roomID, eventID string, opts FormatOptions) (json.RawMessage, error) {
	v, err := s.roomForReader(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	e, err := s.store.GetEvent(ctx, eventID)
	if errors.Is(err, ErrNotFound) || (err == nil && (e.RoomID != roomID || !v.canSee(e))) {
		return nil, mxhttp.NotFound("Event not found")
	}
	if err != nil {
		return nil, err
	}
	e.ViewerMembership = v.membershipAt(e)
	evs, err := s.ClientEvents(ctx, []Stored{e}, opts)
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}

// stateView returns the state the user may read: the current state while
// joined (or when the room is world readable), else, for one who was joined
// once, the state when their last stay ended (by a leave, kick or ban);
// keys filters it (nil: all). One never joined sees none, even when
// invited or banned: membership alone must not reveal the room.
func (s *Service) stateView(ctx context.Context, user, roomID string, keys []pdu.StateKey) ([]Stored, error) {
	v, err := s.roomForReader(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	if v.current() == "join" || v.worldReadable() {
		return s.store.CurrentState(ctx, roomID, keys)
	}
	if end, ok := v.lastJoinEnd(); ok {
		group, err := s.store.StateGroupAt(ctx, roomID, end)
		if err != nil {
			return nil, err
		}
		return s.stateOfGroup(ctx, group, keys)
	}
	return nil, mxhttp.Forbidden("You are not allowed to view this room's state")
}

func (s *Service) stateOfGroup(ctx context.Context, group int64, keys []pdu.StateKey) ([]Stored, error) {
	entries, err := s.store.StateAt(ctx, group, keys)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.EventID
	}
	return s.store.GetEvents(ctx, ids)
}

// State returns the room state the user may read.
func (s *Service) State(ctx context.Context, user, roomID string) ([]json.RawMessage, error) {
	st, err := s.stateView(ctx, user, roomID, nil)
	if err != nil {
		return nil, err
	}
	return s.ClientEvents(ctx, st, FormatOptions{})
}

// StateEvent returns one state event the user may read.
func (s *Service) StateEvent(ctx context.Context, user, roomID, eventType, stateKey string) (json.RawMessage, error) {
	st, err := s.stateView(ctx, user, roomID, []pdu.StateKey{{Type: eventType, StateKey: stateKey}})
	if err != nil {
		return nil, err
	}
	if len(st) == 0 {
		return nil, mxhttp.NotFound("Event not found")
	}
	evs, err := s.ClientEvents(ctx, st, FormatOptions{})
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}

// MembersQuery filters /members.
type MembersQuery struct {
	At            string
	Membership    string
	NotMembership string
}

// Members returns member events of the room as the user may see them.
func (s *Service) Members(ctx context.Context, user, roomID string, q MembersQuery) ([]json.RawMessage, error) {
	var members []Stored
	var err error
	if q.At != "" {
		pos, perr := ParseToken(q.At)
		if perr != nil {
			return nil, perr
		}
		v, verr := s.roomForReader(ctx, user, roomID)
		if verr != nil {
			return nil, verr
		}
		mem := before(v.memberships, pos+1)
		if mem != "join" && !(v.current() == "join" && v.joinedAfter(pos)) && !v.worldReadable() {
			return nil, mxhttp.Forbidden("You are not allowed to view this room's members at that point")
		}
		group, gerr := s.store.StateGroupAt(ctx, roomID, pos)
		if gerr != nil {
			return nil, gerr
		}
		all, serr := s.stateOfGroup(ctx, group, nil)
		if serr != nil {
			return nil, serr
		}
		for _, e := range all {
			if e.Type == "m.room.member" {
				members = append(members, e)
			}
		}
	} else {
		v, verr := s.roomForReader(ctx, user, roomID)
		if verr != nil {
			return nil, verr
		}
		if cur := v.current(); cur == "join" || v.worldReadable() {
			members, err = s.store.CurrentStateOfType(ctx, roomID, "m.room.member")
		} else {
			var st []Stored
			st, err = s.stateView(ctx, user, roomID, nil)
			for _, e := range st {
				if e.Type == "m.room.member" {
					members = append(members, e)
				}
			}
		}
		if err != nil {
			return nil, err
		}
	}
	var kept []Stored
	for _, m := range members {
		if q.Membership != "" && m.Membership != q.Membership {
			continue
		}
		if q.NotMembership != "" && m.Membership == q.NotMembership {
			continue
		}
		kept = append(kept, m)
	}
	return s.ClientEvents(ctx, kept, FormatOptions{})
}

// MemberInfo is an entry of /joined_members; unset fields are null, as in
// Synapse.
type MemberInfo struct {
	DisplayName *string `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
}

// JoinedMembers lists the joined members with their profiles; the user must
// be joined (or the room world readable).
func (s *Service) JoinedMembers(ctx context.Context, user, roomID string) (map[string]MemberInfo, error) {
	v, err := s.roomForReader(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	if v.current() != "join" && !v.worldReadable() {
		return nil, mxhttp.Forbidden("You are not in this room")
	}
	members, err := s.store.CurrentStateOfType(ctx, roomID, "m.room.member")
	if err != nil {
		return nil, err
	}
	out := map[string]MemberInfo{}
	for _, m := range members {
		if m.Membership != "join" {
			continue
		}
		var c struct {
			Content struct {
				DisplayName *string `json:"displayname"`
				AvatarURL   *string `json:"avatar_url"`
			} `json:"content"`
		}
		_ = json.Unmarshal(m.JSON, &c)
		out[*m.StateKey] = MemberInfo{DisplayName: c.Content.DisplayName, AvatarURL: c.Content.AvatarURL}
	}
	return out, nil
}

// MessagesQuery is /messages' parameters.
type MessagesQuery struct {
	From, To string
	Backward bool
	Limit    int
	Filter   *filter.RoomEventFilter
}

// MessagesResult is /messages' answer.
type MessagesResult struct {
	Chunk []json.RawMessage `json:"chunk"`
	Start string            `json:"start"`
	End   string            `json:"end,omitempty"`
	State []json.RawMessage `json:"state,omitempty"`
}

// maxScan bounds how many events one page may skip over (invisible or
// filtered out) before answering with what it has.
const maxScan = 5000

// Messages pages through the room's history as the user may see it, in
// topological order, so that history backfilled from other servers lands
// where it belongs. Paging backwards past what this server holds fetches
// the missing history from the room's other servers within the request.
func (s *Service) Messages(ctx context.Context, user, roomID string, q MessagesQuery) (*MessagesResult, error) {
	v, err := s.roomReader(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	return s.messages(ctx, v, roomID, q)
}

// messages is Messages for the viewer v.
func (s *Service) messages(ctx context.Context, v *viewer, roomID string, q MessagesQuery) (*MessagesResult, error) {
	var err error
	from := topoMax
	if !q.Backward {
		from = topoMin
	}
	if q.From != "" {
		if from, err = s.parseTopoToken(ctx, roomID, q.From); err != nil {
			return nil, err
		}
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 10
	}
	limit = min(limit, 1000)
	// bound is exclusive backwards, inclusive forwards.
	bound := topoMin
	if !q.Backward {
		bound = topoMax
	}
	if q.To != "" {
		if bound, err = s.parseTopoToken(ctx, roomID, q.To); err != nil {
			return nil, err
		}
	}
	var page messagesPage
	if q.Backward && q.To == "" && s.remote != nil {
		page, err = s.messagesBackfilled(ctx, v, roomID, from, q, limit)
	} else {
		page, err = s.messagesPage(ctx, v, roomID, from, bound, q, limit)
	}
	if err != nil {
		return nil, err
	}
	res := &MessagesResult{Start: q.From, Chunk: []json.RawMessage{}}
	if res.Start == "" {
		// A stream token, as before topological pagination: /members?at=
		// and clients of old take it too.
		res.Start = FormatToken(0)
		if q.Backward {
			maxPos, err := s.store.MaxPos(ctx)
			if err != nil {
				return nil, err
			}
			res.Start = FormatToken(maxPos)
		}
	}
	if !page.exhausted {
		res.End = page.cursor.format()
	}
	v.annotate(page.picked)
	if res.Chunk, err = s.ClientEvents(ctx, page.picked, FormatOptions{}); err != nil {
		return nil, err
	}
	if q.Filter != nil && q.Filter.LazyLoadMembers {
		if res.State, err = s.lazyMembers(ctx, roomID, page.picked); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// messagesPage is one page of /messages as read from the database.
type messagesPage struct {
	picked    []Stored
	cursor    TopoPoint
	exhausted bool
}

// messagesPage reads up to limit events the user may see and the filter
// keeps from the cursor towards bound.
func (s *Service) messagesPage(ctx context.Context, v *viewer, roomID string, from, bound TopoPoint, q MessagesQuery, limit int) (messagesPage, error) {
	p := messagesPage{cursor: from}
	scanned := 0
	for len(p.picked) < limit && scanned < maxScan {
		batch, err := s.store.RoomEventsTopological(ctx, roomID, p.cursor, bound, !q.Backward, limit)
		if err != nil {
			return p, err
		}
		for _, e := range batch {
			scanned++
			if q.Backward {
				p.cursor = pointBefore(e)
			} else {
				p.cursor = pointAfter(e)
			}
			if v.canSee(e) && q.Filter.Match(e.RoomID, e.Type, e.Sender, contentOf(e.JSON)) {
				p.picked = append(p.picked, e)
				if len(p.picked) == limit {
					break
				}
			}
		}
		if len(batch) < limit {
			p.exhausted = len(p.picked) < limit
			break
		}
	}
	return p, nil
}

// messagesBackfilled is a backward page that does not read past a hole in
// the room's history (events this server lacks) before asking the room's
// other servers to fill it; a page that ends at a hole still unfilled when
// time runs out says there is more (an end token), so that the client
// asks again. A hole no server could fill is passed over for a while.
func (s *Service) messagesBackfilled(ctx context.Context, v *viewer, roomID string, from TopoPoint, q MessagesQuery, limit int) (messagesPage, error) {
	bctx, cancel := context.WithTimeout(ctx, backfillTime)
	defer cancel()
	page := messagesPage{cursor: from}
	for round := 0; ; round++ {
		holes, depth, err := s.topHoles(ctx, roomID, page.cursor.Depth)
		if err != nil {
			return page, err
		}
		bound := topoMin
		if len(holes) > 0 {
			if round == backfillRounds {
				return page, nil // enough for one request: the client asks again
			}
			// The missing events are below the events naming them.
			bound = TopoPoint{depth - 1, math.MaxInt64}
		}
		part, err := s.messagesPage(ctx, v, roomID, page.cursor, bound, q, limit-len(page.picked))
		if err != nil {
			return page, err
		}
		page.picked, page.cursor = append(page.picked, part.picked...), part.cursor
		if len(page.picked) == limit || bound == topoMin || !part.exhausted {
			page.exhausted = len(page.picked) < limit && part.exhausted
			return page, nil
		}
		added, err := s.backfill(bctx, roomID, holes, min(max(limit, 20), backfillBatch))
		if err != nil {
			s.log.Info("backfilling", "room_id", roomID, "err", err)
		}
		if added == 0 && bctx.Err() != nil {
			return page, nil // out of time at a hole: more may come next time
		}
	}
}

// lazyMembers returns the current member events of the senders of evs.
func (s *Service) lazyMembers(ctx context.Context, roomID string, evs []Stored) ([]json.RawMessage, error) {
	seen := map[string]bool{}
	var keys []pdu.StateKey
	for _, e := range evs {
		if !seen[e.Sender] {
			seen[e.Sender] = true
			keys = append(keys, pdu.StateKey{Type: "m.room.member", StateKey: e.Sender})
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	st, err := s.store.CurrentState(ctx, roomID, keys)
	if err != nil {
		return nil, err
	}
	return s.ClientEvents(ctx, st, FormatOptions{})
}

func contentOf(data []byte) json.RawMessage {
	var p struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(data, &p)
	return p.Content
}

// withTxnID adds unsigned.transaction_id to a rendered client event.
func withTxnID(ev json.RawMessage, txn string) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(ev, &m) != nil {
		return ev
	}
	var unsigned map[string]json.RawMessage
	_ = json.Unmarshal(m["unsigned"], &unsigned)
	if unsigned == nil {
		unsigned = map[string]json.RawMessage{}
	}
	unsigned["transaction_id"], _ = json.Marshal(txn)
	m["unsigned"], _ = json.Marshal(unsigned)
	out, err := json.Marshal(m)
	if err != nil {
		return ev
	}
	return out
}

// RoomOfEvent returns the room an event is in ("" when the event is
// unknown), for APIs that name no room.
func (s *Service) RoomOfEvent(ctx context.Context, eventID string) (string, error) {
	e, err := s.store.GetEvent(ctx, eventID)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return e.RoomID, nil
}
