package storage

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"homeserver/push"

	"homeserver/stream"
)

var _ push.Store = (*DB)(nil)

func (db *DB) PushRules(ctx context.Context, userIDs []string) (map[string][]byte, error) {
	defer db.observe("push_rules", time.Now())
	out := map[string][]byte{}
	for start := 0; start < len(userIDs); start += 500 {
		chunk := userIDs[start:min(start+500, len(userIDs))]
		in, args := inList(chunk, nil)
		rows, err := db.r.QueryContext(ctx, `SELECT user_id, rules FROM push_rules WHERE user_id IN (`+in+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("storage: push rules: %w", err)
		}
		for rows.Next() {
			var u, r string
			if err := rows.Scan(&u, &r); err != nil {
				rows.Close()
				return nil, fmt.Errorf("storage: push rules: %w", err)
			}
			out[u] = []byte(r)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("storage: push rules: %w", err)
		}
	}
	return out, nil
}

func (db *DB) SetPushRules(ctx context.Context, userID string, data []byte) error {
	_, err := db.exec(ctx, "set_push_rules", `INSERT INTO push_rules (user_id, rules) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET rules = excluded.rules`, userID, string(data))
	return err
}

// notificationRowsPerInsert bounds the rows of one multi-row INSERT on
// PostgreSQL, where each statement is a round trip: 200 rows of 9 values
// stay far below its bound-parameter limit. SQLite has no round trips but
// parses every statement text afresh for a new length, and parsing a long
// VALUES list costs more than the rows' inserts; one single-row statement,
// from the statement cache, is cheapest there.
const notificationRowsPerInsert = 200

// AddNotifications stores each event's notifications as one row (see
// push_slots.go); ns lists them event by event, as the evaluator makes them.
func (db *DB) AddNotifications(ctx context.Context, reader string, ns []push.Notification, cursor int64) error {
	rowsPer := notificationRowsPerInsert
	if db.engine != Postgres {
		rowsPer = 1
	}
	events := groupByEvent(ns)
	return db.tx(ctx, "add_notifications", func(tx *txn) error {
		if len(events) == 0 {
			return setReaderCursor(ctx, tx, reader, stream.Events, cursor)
		}
		last, err := nextStreamBlock(ctx, tx, string(stream.Notifications), int64(len(events)))
		if err != nil {
			return err
		}
		ids := make([]int64, len(events))
		for i := range ids {
			ids[i] = last - int64(len(events)) + 1 + int64(i)
		}
		if err := storeEventNotifications(ctx, tx, events, ids, rowsPer); err != nil {
			return err
		}
		return setReaderCursor(ctx, tx, reader, stream.Events, cursor)
	})
}

// unreadCondFor holds for the event row n when no read receipt of the user
// (an SQL expression) in its room covers it: an unthreaded receipt, or one
// of its thread, at or after its event.
func unreadCondFor(user string) string {
	return `NOT EXISTS (SELECT 1 FROM receipts r JOIN events e ON e.event_id = r.event_id
	WHERE r.room_id = n.room_id AND r.user_id = ` + user + ` AND r.receipt_type IN ('m.read', 'm.read.private')
	AND (r.thread_id = '' OR r.thread_id = n.thread_id) AND e.stream_pos >= n.stream_pos)`
}

// maxThreadExclusions bounds the thread receipts UnreadCounts turns into
// range exclusions; beyond it the per-row receipts check is used instead.
const maxThreadExclusions = 50

// noReceipt is a stream position before every event's.
const noReceipt = math.MinInt64

func (db *DB) UnreadCounts(ctx context.Context, userID, roomID string) (map[string]push.Counts, error) {
	defer db.observe("unread_counts", time.Now())
	return db.unreadCounts(ctx, userID, roomID)
}

// unreadCounts counts the user's unread notifications in the room by
// thread. It reads the user's read receipts in the room first (a few rows)
// and then tests only the room's notification rows after them, a range of
// the (room_id, stream_pos) key, for the user's slot, instead of checking
// every row against the receipts as unreadCondFor does.
//
// The counts are kept in memory with the receipts they were made under
// and the last row tested: while the receipts stay the same, only the rows
// after it are tested and added (the evaluator writes them in stream
// order), so a woken /sync costs the new notifications, not all the unread
// ones. The database stays the truth: a moved receipt, or notifications
// deleted by this process, counts afresh.
func (db *DB) unreadCounts(ctx context.Context, userID, roomID string) (map[string]push.Counts, error) {
	q := db.r
	rp, err := db.readReceipts(ctx, userID, roomID)
	if err != nil {
		return nil, err
	}
	unthreaded, threads := rp.unthreaded, rp.threads
	key := unreadKey{userID, roomID}
	// The generation is read first: notifications deleted from here on
	// make both the entry read and the one written stale.
	gen := db.unread.generation()
	prev := db.unread.get(key, gen, unthreaded, threads)
	// A notification is unread when it is after the unthreaded receipt and
	// after its own thread's: the thread receipts beyond the unthreaded one
	// cut ranges out.
	from := unthreaded
	if prev != nil {
		from = max(from, prev.last)
	}
	args := []any{roomID, from, userID}
	cond := `n.stream_pos > $2`
	var excl []string
	for t, pos := range threads {
		if pos > unthreaded {
			args = append(args, t, pos)
			excl = append(excl, fmt.Sprintf(`NOT (n.thread_id = $%d AND n.stream_pos <= $%d)`, len(args)-1, len(args)))
		}
	}
	if len(excl) > maxThreadExclusions {
		args = args[:3]
		cond += ` AND ` + unreadCondFor(`$3`)
	} else if len(excl) > 0 {
		cond += ` AND ` + strings.Join(excl, ` AND `)
	}
	// Every row in range is read, notifying the user or not, so that the
	// next count starts after the last of them. A user without a slot in
	// the room was never notified there: the join ends the count at once.
	rows, err := q.QueryContext(ctx, `SELECT n.thread_id,
			SUM(CASE WHEN `+slotBitCond(`n.notified`, `s.slot`)+` THEN 1 ELSE 0 END),
			SUM(CASE WHEN `+slotBitCond(`n.highlighted`, `s.slot`)+` THEN 1 ELSE 0 END),
			MAX(n.stream_pos)
		FROM push_room_slots s CROSS JOIN push_event_notifications n
		WHERE s.room_id = $1 AND s.user_id = $3 AND n.room_id = $1 AND `+cond+` GROUP BY n.thread_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: unread counts: %w", err)
	}
	defer rows.Close()
	out := map[string]push.Counts{}
	last := from
	if prev != nil {
		maps.Copy(out, prev.counts)
	}
	for rows.Next() {
		var t string
		var c push.Counts
		var pos int64
		if err := rows.Scan(&t, &c.Notifications, &c.Highlights, &pos); err != nil {
			return nil, fmt.Errorf("storage: unread counts: %w", err)
		}
		last = max(last, pos)
		if c.Notifications == 0 {
			continue
		}
		o := out[t]
		o.Notifications += c.Notifications
		o.Highlights += c.Highlights
		out[t] = o
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: unread counts: %w", err)
	}
	db.unread.put(key, &unreadEntry{unthreaded: unthreaded, threads: threads, last: last, counts: maps.Clone(out), gen: gen})
	return out, nil
}

// unreadCache keeps each (user, room)'s unread counts as last made; see
// unreadCounts.
type unreadCache struct {
	mu  sync.Mutex
	m   map[unreadKey]*unreadEntry
	gen uint64 // moved whenever this process deletes notifications
}

type unreadKey struct{ user, room string }

type unreadEntry struct {
	unthreaded int64
	threads    map[string]int64
	last       int64 // the last notification counted (or the range's start)
	counts     map[string]push.Counts
	gen        uint64
}

// maxUnreadEntries bounds the cache; it is emptied when full.
const maxUnreadEntries = 100_000

// get returns the entry made under the same receipts and in generation
// gen, if any.
func (c *unreadCache) get(k unreadKey, gen uint64, unthreaded int64, threads map[string]int64) *unreadEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[k]
	if e == nil || e.gen != gen || gen != c.gen || e.unthreaded != unthreaded || !maps.Equal(e.threads, threads) {
		return nil
	}
	return e
}

func (c *unreadCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *unreadCache) put(k unreadKey, e *unreadEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.gen != c.gen {
		return // notifications were deleted while counting
	}
	if c.m == nil || len(c.m) >= maxUnreadEntries {
		c.m = map[unreadKey]*unreadEntry{}
	}
	c.m[k] = e
}

// invalidate forgets every count: notifications were deleted.
func (c *unreadCache) invalidate() {
	c.mu.Lock()
	c.gen++
	c.m = nil
	c.mu.Unlock()
}

// notificationColumns are the event row's columns a user's notification
// is made of, with the user's slot last.
const notificationColumns = `n.id, n.room_id, n.event_id, n.stream_pos, n.ts, n.actions, n.highlighted, n.thread_id`

// scanNotifications reads the user's notifications from rows of
// notificationColumns, the slot, and with withRead whether it is unread.
func scanNotifications(rows *sql.Rows, err error, userID string, withRead bool) ([]push.Notification, error) {
	if err != nil {
		return nil, fmt.Errorf("storage: notifications: %w", err)
	}
	defer rows.Close()
	var out []push.Notification
	for rows.Next() {
		n := push.Notification{UserID: userID}
		var actions, highlighted string
		var slot int
		dest := []any{&n.ID, &n.RoomID, &n.EventID, &n.Pos, &n.TS, &actions, &highlighted, &n.ThreadID, &slot}
		var unread bool
		if withRead {
			dest = append(dest, &unread)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("storage: notifications: %w", err)
		}
		n.Actions, n.Highlight, n.Read = actionsOf(actions, slot), slotIn(highlighted, slot), withRead && !unread
		out = append(out, n)
	}
	return out, rows.Err()
}

// userSlots lists the rooms the user has a notification slot in.
func (db *DB) userSlots(ctx context.Context, userID string) (map[string]int, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT room_id, slot FROM push_room_slots WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("storage: notification slots: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var r string
		var s int
		if err := rows.Scan(&r, &s); err != nil {
			return nil, fmt.Errorf("storage: notification slots: %w", err)
		}
		out[r] = s
	}
	return out, rows.Err()
}

// Notifications pages each room the user has a slot in backwards and
// merges the pages: a scan of every event row newest first would cross
// all the server's rooms to find a user of a quiet one.
func (db *DB) Notifications(ctx context.Context, userID string, before int64, limit int, onlyHighlight bool) ([]push.Notification, error) {
	defer db.observe("notifications", time.Now())
	slots, err := db.userSlots(ctx, userID)
	if err != nil {
		return nil, err
	}
	col := `n.notified`
	if onlyHighlight {
		col = `n.highlighted`
	}
	q := `SELECT ` + notificationColumns + `, CAST($4 AS INTEGER), CASE WHEN ` + unreadCondFor(`$1`) + ` THEN TRUE ELSE FALSE END
		FROM push_event_notifications n WHERE n.room_id = $2 AND n.id < $3 AND ` + slotBitCond(col, `CAST($4 AS INTEGER)`) + `
		ORDER BY n.id DESC LIMIT $5`
	if before == 0 {
		before = math.MaxInt64
	}
	var out []push.Notification
	for room, slot := range slots {
		rows, err := db.r.QueryContext(ctx, q, userID, room, before, slot, limit)
		got, err := scanNotifications(rows, err, userID, true)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	slices.SortFunc(out, func(a, b push.Notification) int { return cmp.Compare(b.ID, a.ID) })
	return out[:min(len(out), limit)], nil
}

// NotificationsAfter reads the event rows after the given ID, which are
// few when a pusher keeps up, joined to the user's slots.
func (db *DB) NotificationsAfter(ctx context.Context, userID string, after int64, limit int) ([]push.Notification, error) {
	defer db.observe("notifications_after", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT `+notificationColumns+`, s.slot
		FROM push_event_notifications n CROSS JOIN push_room_slots s
		WHERE n.id > $2 AND s.room_id = n.room_id AND s.user_id = $1 AND `+slotBitCond(`n.notified`, `s.slot`)+`
		ORDER BY n.id LIMIT $3`, userID, after, limit)
	return scanNotifications(rows, err, userID, false)
}

func (db *DB) MaxNotificationID(ctx context.Context) (int64, error) {
	return db.streamMaxPos(ctx, string(stream.Notifications))
}

func (db *DB) RoomsNotifiedBetween(ctx context.Context, userID string, from, to int64) ([]string, error) {
	defer db.observe("rooms_notified_between", time.Now())
	// The rows between two syncs are few; the user's slots are probed
	// for each.
	return queryStrings(ctx, db.r, `SELECT DISTINCT n.room_id FROM push_event_notifications n CROSS JOIN push_room_slots s
		WHERE n.id > $2 AND n.id <= $3 AND s.room_id = n.room_id AND s.user_id = $1 AND `+slotBitCond(`n.notified`, `s.slot`),
		userID, from, to)
}

const pusherColumns = `id, user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, pushkey_ts, device_id`

func (db *DB) queryPushers(ctx context.Context, where string, args ...any) ([]push.Pusher, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+pusherColumns+` FROM pushers `+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("storage: pushers: %w", err)
	}
	defer rows.Close()
	var out []push.Pusher
	for rows.Next() {
		var p push.Pusher
		var data string
		if err := rows.Scan(&p.ID, &p.UserID, &p.AppID, &p.PushKey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName,
			&p.ProfileTag, &p.Lang, &data, &p.PushKeyTS, &p.DeviceID); err != nil {
			return nil, fmt.Errorf("storage: pushers: %w", err)
		}
		p.Data = []byte(data)
		out = append(out, p)
	}
	return out, rows.Err()
}

func (db *DB) Pushers(ctx context.Context, userID string) ([]push.Pusher, error) {
	defer db.observe("pushers", time.Now())
	return db.queryPushers(ctx, `WHERE user_id = $1`, userID)
}

func (db *DB) AllPushers(ctx context.Context) ([]push.Pusher, error) {
	defer db.observe("all_pushers", time.Now())
	return db.queryPushers(ctx, ``)
}

func pusherCursor(id int64) string { return fmt.Sprintf("pusher:%d", id) }

func (db *DB) PutPusher(ctx context.Context, p push.Pusher, appendIt bool) (int64, error) {
	var id int64
	err := db.tx(ctx, "put_pusher", func(tx *txn) error {
		if !appendIt {
			if err := deletePushers(ctx, tx, `app_id = $1 AND pushkey = $2 AND user_id <> $3`, p.AppID, p.PushKey, p.UserID); err != nil {
				return err
			}
		}
		err := tx.QueryRowContext(ctx, `SELECT id FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id = $3`,
			p.AppID, p.PushKey, p.UserID).Scan(&id)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if id, err = nextStreamPos(ctx, tx, counterPushers); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO pushers (`+pusherColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
				id, p.UserID, p.AppID, p.PushKey, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang, string(p.Data), p.PushKeyTS, p.DeviceID)
			if err != nil {
				return fmt.Errorf("storage: put pusher: %w", err)
			}
			// A new pusher starts after the notifications that exist now.
			maxID, err := streamMaxPosOn(ctx, tx, string(stream.Notifications))
			if err != nil {
				return err
			}
			return setReaderCursor(ctx, tx, pusherCursor(id), stream.Notifications, maxID)
		case err != nil:
			return fmt.Errorf("storage: put pusher: %w", err)
		}
		// The session that updates a pusher owns it from now on, as in Synapse.
		_, err = tx.ExecContext(ctx, `UPDATE pushers SET kind = $2, app_display_name = $3, device_display_name = $4,
			profile_tag = $5, lang = $6, data = $7, device_id = $8 WHERE id = $1`,
			id, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang, string(p.Data), p.DeviceID)
		if err != nil {
			return fmt.Errorf("storage: put pusher: %w", err)
		}
		return nil
	})
	return id, err
}

func deletePushers(ctx context.Context, tx *txn, where string, args ...any) error {
	rows, err := tx.QueryContext(ctx, `SELECT id FROM pushers WHERE `+where, args...)
	if err != nil {
		return fmt.Errorf("storage: delete pushers: %w", err)
	}
	var names []string
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("storage: delete pushers: %w", err)
		}
		names = append(names, pusherCursor(id))
	}
	rows.Close()
	if err := deleteReaderCursors(ctx, tx, names); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM pushers WHERE `+where, args...); err != nil {
		return fmt.Errorf("storage: delete pushers: %w", err)
	}
	return nil
}

func (db *DB) DeletePusher(ctx context.Context, appID, pushKey, userID string) error {
	return db.tx(ctx, "delete_pusher", func(tx *txn) error {
		return deletePushers(ctx, tx, `app_id = $1 AND pushkey = $2 AND user_id = $3`, appID, pushKey, userID)
	})
}

func (db *DB) DeletePushersOfOtherDevices(ctx context.Context, userID, keep string) error {
	return db.tx(ctx, "delete_pushers_of_other_devices", func(tx *txn) error {
		return deletePushers(ctx, tx, `user_id = $1 AND device_id <> $2`, userID, keep)
	})
}

func (db *DB) UnreadTotal(ctx context.Context, userID string) (int, error) {
	defer db.observe("unread_total", time.Now())
	// Each room the user was ever notified in, counted as UnreadCounts
	// counts it.
	slots, err := db.userSlots(ctx, userID)
	if err != nil {
		return 0, fmt.Errorf("storage: unread total: %w", err)
	}
	rooms := slices.Sorted(maps.Keys(slots))
	total := 0
	for _, roomID := range rooms {
		counts, err := db.unreadCounts(ctx, userID, roomID)
		if err != nil {
			return 0, fmt.Errorf("storage: unread total: %w", err)
		}
		for _, c := range counts {
			total += c.Notifications
		}
	}
	return total, nil
}

// receiptPositions are where a user's read receipts in a room stand in
// its log: the unthreaded one (noReceipt when none) and each thread's.
type receiptPositions struct {
	unthreaded int64
	threads    map[string]int64
}

// readReceipts reads the user's read receipts in the room. Which events
// they name moves the receipts stream alone, as long as those events are
// here: an answer with a receipt for an event not here yet (it may come
// over federation, and the receipt then counts) is not shared.
func (db *DB) readReceipts(ctx context.Context, userID, roomID string) (receiptPositions, error) {
	clone := func(r receiptPositions) receiptPositions {
		return receiptPositions{r.unthreaded, maps.Clone(r.threads)}
	}
	r, err := sharedRead(ctx, db, "read_receipts\x00"+userID+"\x00"+roomID, receiptsStream, clone, func() (receiptPositions, error) {
		rows, err := db.r.QueryContext(ctx, `SELECT r.thread_id, MAX(e.stream_pos), COUNT(*) - COUNT(e.stream_pos) FROM receipts r
			LEFT JOIN events e ON e.event_id = r.event_id
			WHERE r.room_id = $1 AND r.receipt_type IN ('m.read', 'm.read.private') AND r.user_id = $2
			GROUP BY r.thread_id`, roomID, userID)
		if err != nil {
			return receiptPositions{}, fmt.Errorf("storage: unread counts: %w", err)
		}
		defer rows.Close()
		out := receiptPositions{unthreaded: noReceipt, threads: map[string]int64{}}
		unresolved := false
		for rows.Next() {
			var t string
			var pos sql.NullInt64
			var missing int64
			if err := rows.Scan(&t, &pos, &missing); err != nil {
				return receiptPositions{}, fmt.Errorf("storage: unread counts: %w", err)
			}
			unresolved = unresolved || missing > 0
			switch {
			case !pos.Valid:
			case t == "":
				out.unthreaded = pos.Int64
			default:
				out.threads[t] = pos.Int64
			}
		}
		if err := rows.Err(); err != nil {
			return receiptPositions{}, fmt.Errorf("storage: unread counts: %w", err)
		}
		if unresolved {
			return out, errUnresolvedReceipt
		}
		return out, nil
	})
	if errors.Is(err, errUnresolvedReceipt) {
		return r, nil
	}
	return r, err
}

// errUnresolvedReceipt keeps an answer from being shared (readReceipts).
var errUnresolvedReceipt = errors.New("storage: a receipt names an event not here")

var receiptsStream = []stream.Name{stream.Receipts}
