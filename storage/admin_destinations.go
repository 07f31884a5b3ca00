package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"homeserver/federation"
)

var _ federation.DestinationStore = (*DB)(nil)

func (db *DB) RecordDelivery(ctx context.Context, destination string, eventIDs []string) error {
	return db.tx(ctx, "record_delivery", func(tx *txn) error {
		var last sql.NullInt64
		for start := 0; start < len(eventIDs); start += mediaInBatch {
			batch := eventIDs[start:min(start+mediaInBatch, len(eventIDs))]
			args := make([]any, 0, len(batch)+1)
			args = append(args, destination)
			for _, id := range batch {
				args = append(args, id)
			}
			in := numberedParams(2, len(batch))
			// Events with negative positions are outliers, never in a
			// room's timeline.
			if _, err := tx.ExecContext(ctx, `INSERT INTO federation_destination_rooms (destination, room_id, stream_ordering)
				SELECT $1, room_id, MAX(stream_pos) FROM events WHERE event_id IN (`+in+`) AND stream_pos > 0 GROUP BY room_id
				ON CONFLICT (destination, room_id) DO UPDATE SET stream_ordering = excluded.stream_ordering
				WHERE excluded.stream_ordering > federation_destination_rooms.stream_ordering`, args...); err != nil {
				return fmt.Errorf("storage: record delivery: %w", err)
			}
			var m sql.NullInt64
			if err := tx.QueryRowContext(ctx, `SELECT MAX(stream_pos) FROM events WHERE event_id IN (`+numberedParams(1, len(batch))+`) AND stream_pos > 0`, args[1:]...).Scan(&m); err != nil {
				return fmt.Errorf("storage: record delivery: %w", err)
			}
			if m.Valid && (!last.Valid || m.Int64 > last.Int64) {
				last = m
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO federation_destinations (destination, retry_last_ts, retry_interval, failure_ts, last_successful_stream_ordering)
			VALUES ($1, 0, 0, NULL, $2)
			ON CONFLICT (destination) DO UPDATE SET retry_last_ts = 0, retry_interval = 0, failure_ts = NULL,
				last_successful_stream_ordering = COALESCE(excluded.last_successful_stream_ordering, federation_destinations.last_successful_stream_ordering)`,
			destination, last)
		if err != nil {
			return fmt.Errorf("storage: record delivery: %w", err)
		}
		return nil
	})
}

func (db *DB) RecordFailure(ctx context.Context, destination string, now, interval int64) error {
	_, err := db.exec(ctx, "record_failure", `INSERT INTO federation_destinations (destination, retry_last_ts, retry_interval, failure_ts)
		VALUES ($1, $2, $3, $2)
		ON CONFLICT (destination) DO UPDATE SET retry_last_ts = excluded.retry_last_ts, retry_interval = excluded.retry_interval,
			failure_ts = COALESCE(federation_destinations.failure_ts, excluded.failure_ts)`,
		destination, now, interval)
	return err
}

func (db *DB) ResetDestination(ctx context.Context, destination string) error {
	_, err := db.exec(ctx, "reset_destination", `UPDATE federation_destinations
		SET retry_last_ts = 0, retry_interval = 0, failure_ts = NULL WHERE destination = $1`, destination)
	return err
}

const destinationColumns = `destination, retry_last_ts, retry_interval, failure_ts, last_successful_stream_ordering`

func scanDestination(sc interface{ Scan(...any) error }) (federation.Destination, error) {
	var d federation.Destination
	var failure, last sql.NullInt64
	if err := sc.Scan(&d.Name, &d.RetryLastTS, &d.RetryInterval, &failure, &last); err != nil {
		return d, err
	}
	if failure.Valid {
		d.FailureTS = &failure.Int64
	}
	if last.Valid {
		d.LastSuccessfulStreamOrdering = &last.Int64
	}
	return d, nil
}

func (db *DB) GetDestination(ctx context.Context, destination string) (federation.Destination, error) {
	defer db.observe("get_destination", time.Now())
	d, err := scanDestination(db.r.QueryRowContext(ctx, `SELECT `+destinationColumns+` FROM federation_destinations WHERE destination = $1`, destination))
	if errors.Is(err, sql.ErrNoRows) {
		return d, federation.ErrUnknownDestination
	}
	if err != nil {
		return d, fmt.Errorf("storage: get destination: %w", err)
	}
	return d, nil
}

// destinationOrderColumns are the SQL of federation.DestinationOrders;
// NULLs are coalesced because the two engines sort them differently.
var destinationOrderColumns = map[string]string{
	"destination":                     "destination",
	"retry_last_ts":                   "retry_last_ts",
	"retry_interval":                  "retry_interval",
	"failure_ts":                      "COALESCE(failure_ts, 0)",
	"last_successful_stream_ordering": "COALESCE(last_successful_stream_ordering, 0)",
}

func (db *DB) ListDestinations(ctx context.Context, q federation.DestinationQuery) ([]federation.Destination, int, error) {
	defer db.observe("list_destinations", time.Now())
	col, ok := destinationOrderColumns[q.OrderBy]
	if !ok {
		return nil, 0, fmt.Errorf("storage: list destinations: unknown order %q", q.OrderBy)
	}
	where := ""
	var args []any
	if q.Search != "" {
		args = append(args, containsPattern(q.Search))
		where = ` WHERE LOWER(destination) LIKE $1 ESCAPE '\'`
	}
	var total int
	if err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM federation_destinations`+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: list destinations: %w", err)
	}
	dir := orderDir(q.Desc)
	args = append(args, q.Limit, q.From)
	rows, err := db.r.QueryContext(ctx, `SELECT `+destinationColumns+` FROM federation_destinations`+where+
		` ORDER BY `+col+` `+dir+`, destination `+dir+
		` LIMIT $`+strconv.Itoa(len(args)-1)+` OFFSET $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: list destinations: %w", err)
	}
	defer rows.Close()
	out := []federation.Destination{}
	for rows.Next() {
		d, err := scanDestination(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("storage: list destinations: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("storage: list destinations: %w", err)
	}
	return out, total, nil
}

func (db *DB) DestinationRooms(ctx context.Context, destination string, from, limit int, desc bool) ([]federation.DestinationRoom, int, error) {
	defer db.observe("destination_rooms", time.Now())
	var total int
	if err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM federation_destination_rooms WHERE destination = $1`, destination).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("storage: destination rooms: %w", err)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT room_id, stream_ordering FROM federation_destination_rooms WHERE destination = $1
		ORDER BY room_id `+orderDir(desc)+` LIMIT $2 OFFSET $3`, destination, limit, from)
	if err != nil {
		return nil, 0, fmt.Errorf("storage: destination rooms: %w", err)
	}
	defer rows.Close()
	out := []federation.DestinationRoom{}
	for rows.Next() {
		var r federation.DestinationRoom
		if err := rows.Scan(&r.RoomID, &r.StreamOrdering); err != nil {
			return nil, 0, fmt.Errorf("storage: destination rooms: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("storage: destination rooms: %w", err)
	}
	return out, total, nil
}
