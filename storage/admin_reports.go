package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"homeserver/reports"
)

// eventReportSelect reads event reports with the sender of their event and
// the events naming their room now (for its name and canonical alias).
const eventReportSelect = `SELECT r.report_id, r.reporter, r.room_id, r.event_id, r.reason, r.score, r.received_ts,
		e.sender, ne.json, ae.json`

const eventReportFrom = ` FROM reports r
	LEFT JOIN events e ON e.event_id = r.event_id
	LEFT JOIN current_state ns ON ns.room_id = r.room_id AND ns.type = 'm.room.name' AND ns.state_key = ''
	LEFT JOIN events ne ON ne.event_id = ns.event_id
	LEFT JOIN current_state cs ON cs.room_id = r.room_id AND cs.type = 'm.room.canonical_alias' AND cs.state_key = ''
	LEFT JOIN events ae ON ae.event_id = cs.event_id
	WHERE r.event_id <> ''`

type eventReportRow struct {
	r                   reports.EventReport
	score               sql.NullInt64
	sender, name, alias sql.NullString
}

func (x *eventReportRow) dest() []any {
	return []any{&x.r.ID, &x.r.Reporter, &x.r.RoomID, &x.r.EventID, &x.r.Reason, &x.score, &x.r.ReceivedTS,
		&x.sender, &x.name, &x.alias}
}

// report fills in what the joined columns say.
func (x *eventReportRow) report() reports.EventReport {
	r := x.r
	if x.score.Valid {
		v := x.score.Int64
		r.Score = &v
	}
	r.Sender = x.sender.String
	r.RoomName = stateString(x.name, "name")
	r.CanonicalAlias = stateString(x.alias, "alias")
	return r
}

// stateString returns content[key] of a state event's JSON when it is a
// non-empty string.
func stateString(raw sql.NullString, key string) *string {
	if !raw.Valid {
		return nil
	}
	var ev struct {
		Content map[string]any `json:"content"`
	}
	if json.Unmarshal([]byte(raw.String), &ev) != nil {
		return nil
	}
	if s, ok := ev.Content[key].(string); ok && s != "" {
		return &s
	}
	return nil
}

func (db *DB) EventReports(ctx context.Context, q reports.EventReportQuery) ([]reports.EventReport, int, error) {
	defer db.observe("event_reports", time.Now())
	where := ""
	var args []any
	if q.UserID != "" {
		args = append(args, containsPattern(q.UserID))
		where += ` AND LOWER(r.reporter) LIKE $` + strconv.Itoa(len(args)) + ` ESCAPE '\'`
	}
	if q.RoomID != "" {
		args = append(args, containsPattern(q.RoomID))
		where += ` AND LOWER(r.room_id) LIKE $` + strconv.Itoa(len(args)) + ` ESCAPE '\'`
	}
	if q.Sender != "" {
		args = append(args, q.Sender)
		where += ` AND e.sender = $` + strconv.Itoa(len(args))
	}
	var total int
	if err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM reports r LEFT JOIN events e ON e.event_id = r.event_id
		WHERE r.event_id <> ''`+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: event reports: %w", err)
	}
	dir := orderDir(!q.Forwards)
	args = append(args, q.Limit, q.From)
	rows, err := db.r.QueryContext(ctx, eventReportSelect+eventReportFrom+where+
		` ORDER BY r.received_ts `+dir+`, r.report_id `+dir+
		` LIMIT $`+strconv.Itoa(len(args)-1)+` OFFSET $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: event reports: %w", err)
	}
	defer rows.Close()
	out := []reports.EventReport{}
	for rows.Next() {
		var x eventReportRow
		if err := rows.Scan(x.dest()...); err != nil {
			return nil, 0, fmt.Errorf("storage: event reports: %w", err)
		}
		out = append(out, x.report())
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("storage: event reports: %w", err)
	}
	return out, total, nil
}

func (db *DB) EventReport(ctx context.Context, id string) (reports.EventReport, error) {
	defer db.observe("event_report", time.Now())
	var x eventReportRow
	var event sql.NullString
	err := db.r.QueryRowContext(ctx, eventReportSelect+`, e.json`+eventReportFrom+` AND r.report_id = $1`, id).
		Scan(append(x.dest(), &event)...)
	if errors.Is(err, sql.ErrNoRows) {
		return reports.EventReport{}, reports.ErrNotFound
	}
	if err != nil {
		return reports.EventReport{}, fmt.Errorf("storage: event report: %w", err)
	}
	r := x.report()
	if event.Valid {
		r.EventJSON = json.RawMessage(event.String)
	}
	return r, nil
}

func (db *DB) DeleteEventReport(ctx context.Context, id string) error {
	res, err := db.exec(ctx, "delete_event_report", `DELETE FROM reports WHERE report_id = $1 AND event_id <> ''`, id)
	found, err := changedAny(res, err)
	if err == nil && !found {
		return reports.ErrNotFound
	}
	return err
}
