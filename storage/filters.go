package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"homeserver/syncapi"
)

var _ syncapi.FilterStore = (*DB)(nil)

func (db *DB) CreateFilter(ctx context.Context, userID string, data []byte) (string, error) {
	var id int64
	err := db.tx(ctx, "create_filter", func(tx *txn) error {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE user_id = $1`, userID).Scan(&id); err != nil {
			return fmt.Errorf("storage: create filter: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO filters (user_id, filter_id, json) VALUES ($1, $2, $3)`, userID, id, string(data))
		if err != nil {
			return fmt.Errorf("storage: create filter: %w", err)
		}
		return nil
	})
	return strconv.FormatInt(id, 10), err
}

func (db *DB) GetFilter(ctx context.Context, userID, filterID string) ([]byte, error) {
	defer db.observe("get_filter", time.Now())
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil {
		return nil, syncapi.ErrNotFound
	}
	var js string
	err = db.r.QueryRowContext(ctx, `SELECT json FROM filters WHERE user_id = $1 AND filter_id = $2`, userID, id).Scan(&js)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, syncapi.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("storage: get filter: %w", err)
	}
	return []byte(js), nil
}
