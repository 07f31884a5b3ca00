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

	"homeserver/accounts"
	"homeserver/adminapi"
)

// The admin API's queries and changes of users (adminapi/users.go and
// accounts/admin.go).

func (db *DB) SetUserType(ctx context.Context, userID string, userType *string) error {
	_, err := db.exec(ctx, "set_user_type", `UPDATE users SET user_type = $1 WHERE user_id = $2`, userType, userID)
	return err
}

func (db *DB) SetShadowBanned(ctx context.Context, userID string, banned bool) error {
	_, err := db.exec(ctx, "set_shadow_banned", `UPDATE users SET shadow_banned = $1 WHERE user_id = $2`, banned, userID)
	return err
}

func (db *DB) SetErased(ctx context.Context, userID string, erased bool) error {
	_, err := db.exec(ctx, "set_erased", `UPDATE users SET erased = $1 WHERE user_id = $2`, erased, userID)
	return err
}

func (db *DB) Reactivate(ctx context.Context, userID string) error {
	_, err := db.exec(ctx, "reactivate", `UPDATE users SET deactivated = FALSE, erased = FALSE WHERE user_id = $1`, userID)
	return err
}

func (db *DB) RateOverride(ctx context.Context, userID string) (accounts.RateOverride, error) {
	defer db.observe("rate_override", time.Now())
	var o accounts.RateOverride
	err := db.r.QueryRowContext(ctx, `SELECT messages_per_second, burst_count FROM ratelimit_override WHERE user_id = $1`, userID).
		Scan(&o.MessagesPerSecond, &o.BurstCount)
	if errors.Is(err, sql.ErrNoRows) {
		return o, accounts.ErrNotFound
	}
	if err != nil {
		return o, fmt.Errorf("storage: rate override: %w", err)
	}
	return o, nil
}

func (db *DB) SetRateOverride(ctx context.Context, userID string, o accounts.RateOverride) error {
	_, err := db.exec(ctx, "set_rate_override", `INSERT INTO ratelimit_override (user_id, messages_per_second, burst_count) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET messages_per_second = excluded.messages_per_second, burst_count = excluded.burst_count`,
		userID, o.MessagesPerSecond, o.BurstCount)
	return err
}

func (db *DB) DeleteRateOverride(ctx context.Context, userID string) error {
	_, err := db.exec(ctx, "delete_rate_override", `DELETE FROM ratelimit_override WHERE user_id = $1`, userID)
	return err
}

// adminUserColumns are the columns of an adminapi.UserRow, in scanUserRow's
// order; last_seen is the latest request of any of the user's devices.
const adminUserColumns = `u.user_id, u.is_guest, u.is_admin, u.user_type, u.deactivated, u.erased, u.shadow_banned,
	u.locked, u.suspended, p.displayname, p.avatar_url, u.appservice_id, u.created_ts,
	COALESCE((SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id), 0) AS last_seen`

func scanUserRow(s interface{ Scan(...any) error }) (adminapi.UserRow, error) {
	var u adminapi.UserRow
	var userType, name, avatar sql.NullString
	err := s.Scan(&u.UserID, &u.IsGuest, &u.Admin, &userType, &u.Deactivated, &u.Erased, &u.ShadowBanned,
		&u.Locked, &u.Suspended, &name, &avatar, &u.AppServiceID, &u.CreatedTS, &u.LastSeenTS)
	if userType.Valid {
		u.UserType = &userType.String
	}
	if name.Valid {
		u.DisplayName = &name.String
	}
	if avatar.Valid {
		u.AvatarURL = &avatar.String
	}
	return u, err
}

func (db *DB) AdminUser(ctx context.Context, userID string) (adminapi.UserRow, bool, error) {
	defer db.observe("admin_user", time.Now())
	u, err := scanUserRow(db.r.QueryRowContext(ctx, `SELECT `+adminUserColumns+`
		FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id WHERE u.user_id = $1`, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return u, false, nil
	}
	if err != nil {
		return u, false, fmt.Errorf("storage: admin user: %w", err)
	}
	return u, true, nil
}

// adminUserOrders are the SQL of adminapi.UserOrders.
var adminUserOrders = map[string]string{
	"name": "u.user_id", "is_guest": "u.is_guest", "admin": "u.is_admin", "user_type": "u.user_type",
	"deactivated": "u.deactivated", "shadow_banned": "u.shadow_banned", "displayname": "p.displayname",
	"avatar_url": "p.avatar_url", "creation_ts": "u.created_ts", "last_seen_ts": "last_seen", "locked": "u.locked",
}

// likeContains is a LIKE pattern (with ESCAPE '\') matching any text that
// contains s, case-insensitively once both sides are lowered.
func likeContains(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(s)) + "%"
}

func (db *DB) AdminListUsers(ctx context.Context, q adminapi.UserQuery) ([]adminapi.UserRow, int, error) {
	defer db.observe("admin_list_users", time.Now())
	order, known := adminUserOrders[q.OrderBy]
	if !known {
		return nil, 0, fmt.Errorf("storage: admin list users: unknown order %q", q.OrderBy)
	}
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	switch {
	case q.Name != "":
		p := arg(likeContains(q.Name))
		where = append(where, `(LOWER(u.user_id) LIKE `+p+` ESCAPE '\' OR LOWER(p.displayname) LIKE `+p+` ESCAPE '\')`)
	case q.UserID != "":
		where = append(where, `LOWER(u.user_id) LIKE `+arg(likeContains(q.UserID))+` ESCAPE '\'`)
	}
	if !q.Guests {
		where = append(where, `u.is_guest = FALSE`)
	}
	if q.Deactivated != nil {
		where = append(where, `u.deactivated = `+arg(*q.Deactivated))
	}
	if q.Admins != nil {
		where = append(where, `u.is_admin = `+arg(*q.Admins))
	}
	if !q.Locked {
		where = append(where, `u.locked = FALSE`)
	}
	if len(q.NotUserTypes) > 0 {
		var types []string
		withoutType := false
		for _, t := range q.NotUserTypes {
			if t == "" {
				withoutType = true
			} else {
				types = append(types, arg(t))
			}
		}
		if withoutType {
			where = append(where, `u.user_type IS NOT NULL`)
		}
		if len(types) > 0 {
			where = append(where, `(u.user_type IS NULL OR u.user_type NOT IN (`+strings.Join(types, ", ")+`))`)
		}
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	from := ` FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id` + cond
	var total int
	if err := db.r.QueryRowContext(ctx, `SELECT COUNT(*)`+from, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: admin list users: count: %w", err)
	}
	// NULLs sort last forwards and first backwards on both engines, as
	// PostgreSQL does by default; ties go by ascending user ID.
	dir := "ASC NULLS LAST"
	if q.Backward {
		dir = "DESC NULLS FIRST"
	}
	query := `SELECT ` + adminUserColumns + from + ` ORDER BY ` + order + ` ` + dir + `, u.user_id ASC LIMIT ` +
		arg(q.Limit) + ` OFFSET ` + arg(q.From)
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: admin list users: %w", err)
	}
	defer rows.Close()
	var out []adminapi.UserRow
	for rows.Next() {
		u, err := scanUserRow(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: admin list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("storage: admin list users: %w", err)
	}
	return out, total, nil
}

// AdminUserAccountData returns every account data of a user but deleted
// ones (whose content is {}), as Synapse's admin API shows them.
func (db *DB) AdminUserAccountData(ctx context.Context, userID string) (map[string]json.RawMessage, map[string]map[string]json.RawMessage, error) {
	defer db.observe("admin_user_account_data", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT room_id, type, content FROM account_data
		WHERE user_id = $1 AND content <> '{}' ORDER BY room_id, type`, userID)
	if err != nil {
		return nil, nil, fmt.Errorf("storage: admin user account data: %w", err)
	}
	defer rows.Close()
	global := map[string]json.RawMessage{}
	rooms := map[string]map[string]json.RawMessage{}
	for rows.Next() {
		var roomID, typ, content string
		if err := rows.Scan(&roomID, &typ, &content); err != nil {
			return nil, nil, fmt.Errorf("storage: admin user account data: %w", err)
		}
		if roomID == "" {
			global[typ] = json.RawMessage(content)
			continue
		}
		if rooms[roomID] == nil {
			rooms[roomID] = map[string]json.RawMessage{}
		}
		rooms[roomID][typ] = json.RawMessage(content)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("storage: admin user account data: %w", err)
	}
	return global, rooms, nil
}
