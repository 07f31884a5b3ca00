package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"homeserver/media"
)

var _ media.AdminStore = (*DB)(nil)

// mediaInBatch bounds the values of one IN list (SQLite allows 32766 variables;
// smaller statements keep the writer's transactions short too).
const mediaInBatch = 500

// numberedParams returns "$first, $first+1, ..." for n values.
func numberedParams(first, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(first+i))
	}
	return b.String()
}

// containsPattern returns a LIKE pattern matching term anywhere, with its
// wildcards escaped (ESCAPE '\'), lower-cased for LOWER(column) LIKE:
// SQLite's LIKE ignores ASCII case and PostgreSQL's does not.
func containsPattern(term string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(term)) + "%"
}

func (db *DB) TouchMedia(ctx context.Context, origin, mediaID string, ts int64) error {
	_, err := db.exec(ctx, "touch_media", `UPDATE media SET last_access_ts = $1 WHERE origin = $2 AND media_id = $3`, ts, origin, mediaID)
	return err
}

func (db *DB) SetMediaQuarantine(ctx context.Context, origin, mediaID, by string) (bool, error) {
	var v any
	if by != "" {
		v = by
	}
	res, err := db.exec(ctx, "set_media_quarantine", `UPDATE media SET quarantined_by = $1 WHERE origin = $2 AND media_id = $3`, v, origin, mediaID)
	return changedAny(res, err)
}

func (db *DB) SetMediaSafe(ctx context.Context, origin, mediaID string, safe bool) (bool, error) {
	res, err := db.exec(ctx, "set_media_safe", `UPDATE media SET safe_from_quarantine = $1 WHERE origin = $2 AND media_id = $3`, safe, origin, mediaID)
	return changedAny(res, err)
}

func changedAny(res sql.Result, err error) (bool, error) {
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("storage: rows affected: %w", err)
	}
	return n > 0, nil
}

func (db *DB) QuarantineMediaRefs(ctx context.Context, refs []media.Ref, by string) (int, error) {
	n := 0
	err := db.tx(ctx, "quarantine_media_refs", func(tx *txn) error {
		for _, r := range refs {
			res, err := tx.ExecContext(ctx, `UPDATE media SET quarantined_by = $1
				WHERE origin = $2 AND media_id = $3 AND safe_from_quarantine = FALSE`, by, r.Origin, r.MediaID)
			if err != nil {
				return fmt.Errorf("storage: quarantine media: %w", err)
			}
			c, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("storage: quarantine media: %w", err)
			}
			n += int(c)
		}
		return nil
	})
	return n, err
}

func (db *DB) QuarantineUserMedia(ctx context.Context, origin, userID, by string) (int, error) {
	res, err := db.exec(ctx, "quarantine_user_media", `UPDATE media SET quarantined_by = $1
		WHERE origin = $2 AND user_id = $3 AND safe_from_quarantine = FALSE`, by, origin, userID)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("storage: quarantine user media: %w", err)
	}
	return int(n), nil
}

func (db *DB) RoomEventsWithMedia(ctx context.Context, roomID string) ([]json.RawMessage, error) {
	defer db.observe("room_events_with_media", time.Now())
	var one int
	err := db.r.QueryRowContext(ctx, `SELECT 1 FROM rooms WHERE room_id = $1`, roomID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, media.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: room events with media: %w", err)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT json FROM events WHERE room_id = $1 AND json LIKE '%mxc://%'`, roomID)
	if err != nil {
		return nil, fmt.Errorf("storage: room events with media: %w", err)
	}
	defer rows.Close()
	var out []json.RawMessage
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("storage: room events with media: %w", err)
		}
		out = append(out, json.RawMessage(s))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: room events with media: %w", err)
	}
	return out, nil
}

func (db *DB) ProfileMediaURIs(ctx context.Context) ([]string, error) {
	defer db.observe("profile_media_uris", time.Now())
	var out []string
	err := db.readStrings(ctx, &out, `SELECT avatar_url FROM profiles WHERE avatar_url LIKE 'mxc://%'`)
	if err != nil {
		return nil, fmt.Errorf("storage: profile media: %w", err)
	}
	var events []string
	err = db.readStrings(ctx, &events, `SELECT e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.type = 'm.room.avatar' AND c.state_key = ''`)
	if err != nil {
		return nil, fmt.Errorf("storage: room avatars: %w", err)
	}
	for _, raw := range events {
		var ev struct {
			Content struct {
				URL any `json:"url"`
			} `json:"content"`
		}
		if json.Unmarshal([]byte(raw), &ev) == nil {
			if u, ok := ev.Content.URL.(string); ok {
				out = append(out, u)
			}
		}
	}
	return out, nil
}

// readStrings appends the one text column of query's rows to out.
func (db *DB) readStrings(ctx context.Context, out *[]string, query string, args ...any) error {
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return err
		}
		*out = append(*out, s)
	}
	return rows.Err()
}

func (db *DB) OldMedia(ctx context.Context, origin string, beforeTS, sizeGT int64) ([]string, error) {
	defer db.observe("old_media", time.Now())
	var out []string
	err := db.readStrings(ctx, &out, `SELECT media_id FROM media
		WHERE origin = $1 AND safe_from_quarantine = FALSE AND uploaded_ts > 0
		AND COALESCE(last_access_ts, created_ts) < $2 AND media_length > $3
		ORDER BY media_id`, origin, beforeTS, sizeGT)
	if err != nil {
		return nil, fmt.Errorf("storage: old media: %w", err)
	}
	return out, nil
}

func (db *DB) CachedMediaBefore(ctx context.Context, local string, beforeTS int64) ([]media.Ref, error) {
	defer db.observe("cached_media_before", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT origin, media_id FROM media
		WHERE origin <> $1 AND COALESCE(last_access_ts, created_ts) < $2`, local, beforeTS)
	if err != nil {
		return nil, fmt.Errorf("storage: cached media: %w", err)
	}
	defer rows.Close()
	var out []media.Ref
	for rows.Next() {
		var r media.Ref
		if err := rows.Scan(&r.Origin, &r.MediaID); err != nil {
			return nil, fmt.Errorf("storage: cached media: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: cached media: %w", err)
	}
	return out, nil
}

func (db *DB) DeleteMedia(ctx context.Context, origin string, mediaIDs []string) (deleted, unreferenced []string, err error) {
	err = db.tx(ctx, "delete_media", func(tx *txn) error {
		deleted, unreferenced = nil, nil
		sums, gone := map[string]bool{}, map[string]bool{}
		for start := 0; start < len(mediaIDs); start += mediaInBatch {
			batch := mediaIDs[start:min(start+mediaInBatch, len(mediaIDs))]
			args := make([]any, 0, len(batch)+1)
			args = append(args, origin)
			for _, id := range batch {
				args = append(args, id)
			}
			in := numberedParams(2, len(batch))
			rows, err := tx.QueryContext(ctx, `SELECT sha256 FROM media WHERE origin = $1 AND media_id IN (`+in+`)
				UNION SELECT sha256 FROM media_thumbnails WHERE origin = $1 AND media_id IN (`+in+`)`, args...)
			if err != nil {
				return fmt.Errorf("storage: delete media: %w", err)
			}
			for rows.Next() {
				var s string
				if err := rows.Scan(&s); err != nil {
					rows.Close()
					return fmt.Errorf("storage: delete media: %w", err)
				}
				if s != "" {
					sums[s] = true
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("storage: delete media: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM media_thumbnails WHERE origin = $1 AND media_id IN (`+in+`)`, args...); err != nil {
				return fmt.Errorf("storage: delete thumbnails: %w", err)
			}
			rows, err = tx.QueryContext(ctx, `DELETE FROM media WHERE origin = $1 AND media_id IN (`+in+`) RETURNING media_id`, args...)
			if err != nil {
				return fmt.Errorf("storage: delete media: %w", err)
			}
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					rows.Close()
					return fmt.Errorf("storage: delete media: %w", err)
				}
				gone[id] = true
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("storage: delete media: %w", err)
			}
		}
		// In the order asked for: RETURNING's order is the engine's.
		for _, id := range mediaIDs {
			if gone[id] {
				deleted = append(deleted, id)
				delete(gone, id)
			}
		}
		for s := range sums {
			var one int
			err := tx.QueryRowContext(ctx, `SELECT 1 FROM media WHERE sha256 = $1
				UNION ALL SELECT 1 FROM media_thumbnails WHERE sha256 = $1 LIMIT 1`, s).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				unreferenced = append(unreferenced, s)
				continue
			}
			if err != nil {
				return fmt.Errorf("storage: delete media: %w", err)
			}
		}
		return nil
	})
	return deleted, unreferenced, err
}

// mediaOrderColumns are the SQL of media.UserMediaOrders; NULLs are
// coalesced because the two engines sort them differently.
var mediaOrderColumns = map[string]string{
	"media_id":             "media_id",
	"upload_name":          "upload_name",
	"created_ts":           "created_ts",
	"last_access_ts":       "COALESCE(last_access_ts, 0)",
	"media_length":         "media_length",
	"media_type":           "content_type",
	"quarantined_by":       "COALESCE(quarantined_by, '')",
	"safe_from_quarantine": "safe_from_quarantine",
}

// ListUserMedia returns a page of the media a user uploaded, and how many
// there are in all.
func (db *DB) ListUserMedia(ctx context.Context, q media.UserMediaQuery) ([]media.Metadata, int, error) {
	defer db.observe("list_user_media", time.Now())
	col, ok := mediaOrderColumns[q.OrderBy]
	if !ok {
		return nil, 0, fmt.Errorf("storage: list user media: unknown order %q", q.OrderBy)
	}
	dir := orderDir(q.Desc)
	var total int
	if err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM media WHERE origin = $1 AND user_id = $2`, q.Origin, q.UserID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: list user media: %w", err)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT media_id, content_type, upload_name, media_length, sha256, created_ts, uploaded_ts,
			last_access_ts, quarantined_by, safe_from_quarantine
		FROM media WHERE origin = $1 AND user_id = $2
		ORDER BY `+col+` `+dir+`, media_id `+dir+` LIMIT $3 OFFSET $4`, q.Origin, q.UserID, q.Limit, q.From)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: list user media: %w", err)
	}
	defer rows.Close()
	out := []media.Metadata{}
	for rows.Next() {
		m := media.Metadata{Origin: q.Origin, UserID: q.UserID}
		var access sql.NullInt64
		var by sql.NullString
		if err := rows.Scan(&m.MediaID, &m.ContentType, &m.UploadName, &m.Size, &m.SHA256, &m.CreatedTS, &m.UploadedTS,
			&access, &by, &m.SafeFromQuarantine); err != nil {
			return nil, 0, fmt.Errorf("storage: list user media: %w", err)
		}
		m.LastAccessTS, m.QuarantinedBy = access.Int64, by.String
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("storage: list user media: %w", err)
	}
	return out, total, nil
}

func orderDir(desc bool) string {
	if desc {
		return "DESC"
	}
	return "ASC"
}

var usageOrderColumns = map[string]string{
	"user_id":      "m.user_id",
	"displayname":  "COALESCE(p.displayname, '')",
	"media_length": "media_length",
	"media_count":  "media_count",
}

// MediaUsage returns a page of local users with the count and size of the
// media they uploaded, and how many such users there are in all.
func (db *DB) MediaUsage(ctx context.Context, q media.UsageQuery) ([]media.Usage, int, error) {
	defer db.observe("media_usage", time.Now())
	col, ok := usageOrderColumns[q.OrderBy]
	if !ok {
		return nil, 0, fmt.Errorf("storage: media usage: unknown order %q", q.OrderBy)
	}
	where := `m.origin = $1 AND m.created_ts >= $2`
	args := []any{q.Origin, q.FromTS}
	if q.UntilTS > 0 {
		args = append(args, q.UntilTS)
		where += ` AND m.created_ts <= $` + strconv.Itoa(len(args))
	}
	if q.SearchTerm != "" {
		args = append(args, containsPattern(q.SearchTerm))
		n := strconv.Itoa(len(args))
		where += ` AND (LOWER(u.localpart) LIKE $` + n + ` ESCAPE '\' OR LOWER(p.displayname) LIKE $` + n + ` ESCAPE '\')`
	}
	from := ` FROM media m JOIN users u ON u.user_id = m.user_id LEFT JOIN profiles p ON p.user_id = m.user_id
		WHERE ` + where + ` GROUP BY m.user_id, p.displayname`
	var total int
	if err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT m.user_id`+from+`) t`, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: media usage: %w", err)
	}
	dir := orderDir(q.Desc)
	args = append(args, q.Limit, q.From)
	rows, err := db.r.QueryContext(ctx, `SELECT m.user_id, p.displayname, COUNT(*) AS media_count, COALESCE(SUM(m.media_length), 0) AS media_length`+
		from+` ORDER BY `+col+` `+dir+`, m.user_id `+dir+
		` LIMIT $`+strconv.Itoa(len(args)-1)+` OFFSET $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: media usage: %w", err)
	}
	defer rows.Close()
	out := []media.Usage{}
	for rows.Next() {
		var u media.Usage
		var name sql.NullString
		if err := rows.Scan(&u.UserID, &name, &u.MediaCount, &u.MediaLength); err != nil {
			return nil, 0, fmt.Errorf("storage: media usage: %w", err)
		}
		if name.Valid {
			u.DisplayName = &name.String
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("storage: media usage: %w", err)
	}
	return out, total, nil
}
