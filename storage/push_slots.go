package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"homeserver/push"
)

// Notifications are stored one row per event, not one per member: a
// message in a room of N members was N rows and 3N B-tree inserts, the
// most of a big room's send cost. Each local user who was ever notified in
// a room gets a slot there (push_room_slots, fixed once given), and an
// event's row holds the slots it notified and highlighted as bit sets,
// with each distinct set of actions and the slots it was for. A user's
// unread count in a room is then a range of the room's rows tested for
// one bit, in SQL (slotBitCond).
//
// A slot set is written as lowercase hex: digit i holds slots 4i..4i+3,
// slot 4i+b in the digit's bit b, so both engines can test a bit with
// substr and LIKE.

// slotSet is a set of slots as nibbles, one per hex digit.
type slotSet []byte

func (s *slotSet) add(slot int) {
	for len(*s) <= slot/4 {
		*s = append(*s, 0)
	}
	(*s)[slot/4] |= 1 << (slot % 4)
}

func (s slotSet) String() string {
	const digits = "0123456789abcdef"
	b := make([]byte, len(s))
	for i, n := range s {
		b[i] = digits[n]
	}
	return string(b)
}

// slotIn reports whether a slot set written by slotSet.String holds slot.
func slotIn(set string, slot int) bool {
	if slot < 0 || slot/4 >= len(set) {
		return false
	}
	c := set[slot/4]
	var n byte
	switch {
	case c >= '0' && c <= '9':
		n = c - '0'
	case c >= 'a' && c <= 'f':
		n = c - 'a' + 10
	default:
		return false
	}
	return n&(1<<(slot%4)) != 0
}

// slotDigits are the hex digits with bit b set, for b = 0..3.
var slotDigits = [4]string{"13579bdf", "2367abef", "4567cdef", "89abcdef"}

// slotBitCond is SQL that holds when the slot set in column col holds the
// slot that the integer expression slot names.
func slotBitCond(col, slot string) string {
	return `(length(` + col + `) > (` + slot + `) / 4 AND (CASE (` + slot + `) % 4 WHEN 0 THEN '` + slotDigits[0] +
		`' WHEN 1 THEN '` + slotDigits[1] + `' WHEN 2 THEN '` + slotDigits[2] + `' ELSE '` + slotDigits[3] +
		`' END) LIKE '%' || substr(` + col + `, (` + slot + `) / 4 + 1, 1) || '%')`
}

// actionGroup is one set of actions of an event's notifications and the
// slots it was for.
type actionGroup struct {
	Actions json.RawMessage `json:"actions"`
	Slots   string          `json:"slots"`
}

// eventNotifications is the row of one event's notifications.
type eventNotifications struct {
	roomID, eventID, threadID string
	pos, ts                   int64
	notified, highlighted     string
	actions                   string
}

// eventRow folds one event's notifications (all of the same event) into
// its row, with slotOf giving each user's slot.
func eventRow(ns []push.Notification, slotOf func(userID string) int) (eventNotifications, error) {
	first := ns[0]
	row := eventNotifications{roomID: first.RoomID, eventID: first.EventID, threadID: first.ThreadID, pos: first.Pos, ts: first.TS}
	var notified, highlighted slotSet
	groups := map[string]*slotSet{}
	var order []string
	for _, n := range ns {
		slot := slotOf(n.UserID)
		notified.add(slot)
		if n.Highlight {
			highlighted.add(slot)
		}
		a := string(n.Actions)
		if a == "" {
			a = "[]"
		}
		g := groups[a]
		if g == nil {
			g = &slotSet{}
			groups[a] = g
			order = append(order, a)
		}
		g.add(slot)
	}
	list := make([]actionGroup, len(order))
	for i, a := range order {
		list[i] = actionGroup{Actions: json.RawMessage(a), Slots: groups[a].String()}
	}
	b, err := json.Marshal(list)
	if err != nil {
		return row, fmt.Errorf("storage: notification actions: %w", err)
	}
	row.notified, row.highlighted, row.actions = notified.String(), highlighted.String(), string(b)
	return row, nil
}

// actionsOf returns the actions of slot in an event's action groups.
func actionsOf(groups string, slot int) json.RawMessage {
	var list []actionGroup
	if json.Unmarshal([]byte(groups), &list) != nil {
		return json.RawMessage(`[]`)
	}
	for _, g := range list {
		if slotIn(g.Slots, slot) {
			return g.Actions
		}
	}
	return json.RawMessage(`[]`)
}

// groupByEvent splits notifications, which the evaluator lists event by
// event, into each event's run.
func groupByEvent(ns []push.Notification) [][]push.Notification {
	var out [][]push.Notification
	for start := 0; start < len(ns); {
		end := start + 1
		for end < len(ns) && ns[end].RoomID == ns[start].RoomID && ns[end].Pos == ns[start].Pos {
			end++
		}
		out = append(out, ns[start:end])
		start = end
	}
	return out
}

// giveSlots returns the slots of the users of events in their rooms,
// giving slots to those without, in tx. Each room's slots are read afresh:
// a few rows per member and batch, and never stale, whichever process gave
// them or purged the room meanwhile.
func giveSlots(ctx context.Context, tx *txn, events [][]push.Notification) (map[string]map[string]int, error) {
	slots := map[string]map[string]int{}
	next := map[string]int{}
	for _, ev := range events {
		room := ev[0].RoomID
		if slots[room] == nil {
			stored, n, err := roomSlots(ctx, tx, room)
			if err != nil {
				return nil, err
			}
			slots[room], next[room] = stored, n
		}
		for _, n := range ev {
			if _, ok := slots[room][n.UserID]; ok {
				continue
			}
			s := next[room]
			if _, err := tx.ExecContext(ctx, `INSERT INTO push_room_slots (room_id, user_id, slot) VALUES ($1, $2, $3)`, room, n.UserID, s); err != nil {
				return nil, fmt.Errorf("storage: notification slots: %w", err)
			}
			slots[room][n.UserID], next[room] = s, s+1
		}
	}
	return slots, nil
}

// roomSlots reads a room's slots and the next slot to give.
func roomSlots(ctx context.Context, tx *txn, roomID string) (map[string]int, int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT user_id, slot FROM push_room_slots WHERE room_id = $1`, roomID)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: notification slots: %w", err)
	}
	defer rows.Close()
	stored, next := map[string]int{}, 0
	for rows.Next() {
		var u string
		var s int
		if err := rows.Scan(&u, &s); err != nil {
			return nil, 0, fmt.Errorf("storage: notification slots: %w", err)
		}
		stored[u], next = s, max(next, s+1)
	}
	return stored, next, rows.Err()
}

// storeEventNotifications writes one row per event, the i-th with ID
// ids[i], giving slots to users without one, in rowsPer-row INSERTs.
func storeEventNotifications(ctx context.Context, tx *txn, events [][]push.Notification, ids []int64, rowsPer int) error {
	slots, err := giveSlots(ctx, tx, events)
	if err != nil {
		return err
	}
	args := make([]any, 0, 9*min(len(events), rowsPer))
	for start := 0; start < len(events); start += rowsPer {
		chunk := events[start:min(start+rowsPer, len(events))]
		args = args[:0]
		for i, ev := range chunk {
			room := slots[ev[0].RoomID]
			row, err := eventRow(ev, func(u string) int { return room[u] })
			if err != nil {
				return err
			}
			args = append(args, ids[start+i], row.roomID, row.eventID, row.pos, row.ts, row.threadID, row.notified, row.highlighted, row.actions)
		}
		if _, err := tx.ExecContext(ctx, insertEventNotificationsSQL(len(chunk)), args...); err != nil {
			return fmt.Errorf("storage: store notifications: %w", err)
		}
	}
	return nil
}

// insertEventNotificationsSQL is the INSERT of rows events' notifications.
func insertEventNotificationsSQL(rows int) string {
	var q strings.Builder
	q.WriteString(`INSERT INTO push_event_notifications
		(id, room_id, event_id, stream_pos, ts, thread_id, notified, highlighted, actions) VALUES `)
	for i := range rows {
		if i > 0 {
			q.WriteString(", ")
		}
		b := 9 * i
		fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", b+1, b+2, b+3, b+4, b+5, b+6, b+7, b+8, b+9)
	}
	// An event is evaluated once, with its cursor move: one stored
	// already is the same outcome.
	q.WriteString(` ON CONFLICT (room_id, stream_pos) DO NOTHING`)
	return q.String()
}
