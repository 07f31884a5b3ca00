package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"homeserver/media"
)

var _ media.Store = (*DB)(nil)

func (db *DB) InsertMedia(ctx context.Context, m media.Metadata) error {
	_, err := db.exec(ctx, "insert_media", `INSERT INTO media
		(origin, media_id, user_id, content_type, upload_name, media_length, sha256, width, height, created_ts, uploaded_ts, expires_ts, authenticated)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		m.Origin, m.MediaID, m.UserID, m.ContentType, m.UploadName, m.Size, m.SHA256, m.Width, m.Height, m.CreatedTS, m.UploadedTS, m.ExpiresTS, m.Authenticated)
	return err
}

func (db *DB) CreatePendingMedia(ctx context.Context, m media.Metadata) error {
	m.UploadedTS = 0
	return db.InsertMedia(ctx, m)
}

func (db *DB) CompletePendingMedia(ctx context.Context, m media.Metadata) error {
	return db.tx(ctx, "complete_pending_media", func(tx *txn) error {
		res, err := tx.ExecContext(ctx, `UPDATE media SET content_type = $1, upload_name = $2, media_length = $3, sha256 = $4,
			width = $5, height = $6, uploaded_ts = $7
			WHERE origin = $8 AND media_id = $9 AND uploaded_ts = 0`,
			m.ContentType, m.UploadName, m.Size, m.SHA256, m.Width, m.Height, m.UploadedTS, m.Origin, m.MediaID)
		if err != nil {
			return fmt.Errorf("storage: complete pending media: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("storage: complete pending media: %w", err)
		} else if n == 1 {
			return nil
		}
		var uploaded int64
		err = tx.QueryRowContext(ctx, `SELECT uploaded_ts FROM media WHERE origin = $1 AND media_id = $2`, m.Origin, m.MediaID).Scan(&uploaded)
		if errors.Is(err, sql.ErrNoRows) {
			return media.ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("storage: complete pending media: %w", err)
		}
		return media.ErrAlreadyUploaded
	})
}

func (db *DB) GetMedia(ctx context.Context, origin, mediaID string) (media.Metadata, error) {
	defer db.observe("get_media", time.Now())
	m := media.Metadata{Origin: origin, MediaID: mediaID}
	var access sql.NullInt64
	var quarantinedBy sql.NullString
	err := db.r.QueryRowContext(ctx, `SELECT user_id, content_type, upload_name, media_length, sha256, width, height, created_ts, uploaded_ts, expires_ts, authenticated,
			last_access_ts, quarantined_by, safe_from_quarantine
		FROM media WHERE origin = $1 AND media_id = $2`, origin, mediaID).
		Scan(&m.UserID, &m.ContentType, &m.UploadName, &m.Size, &m.SHA256, &m.Width, &m.Height, &m.CreatedTS, &m.UploadedTS, &m.ExpiresTS, &m.Authenticated,
			&access, &quarantinedBy, &m.SafeFromQuarantine)
	m.LastAccessTS, m.QuarantinedBy = access.Int64, quarantinedBy.String
	if errors.Is(err, sql.ErrNoRows) {
		return m, media.ErrNotFound
	}
	if err != nil {
		return m, fmt.Errorf("storage: get media: %w", err)
	}
	return m, nil
}

func (db *DB) CountPendingMedia(ctx context.Context, userID string, now int64) (int, error) {
	defer db.observe("count_pending_media", time.Now())
	var n int
	err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM media WHERE user_id = $1 AND uploaded_ts = 0 AND expires_ts > $2`, userID, now).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("storage: count pending media: %w", err)
	}
	return n, nil
}

func (db *DB) ListThumbnails(ctx context.Context, origin, mediaID string) ([]media.Thumbnail, error) {
	defer db.observe("list_thumbnails", time.Now())
	rows, err := db.r.QueryContext(ctx, `SELECT method, width, height, content_type, media_length, sha256, created_ts
		FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, origin, mediaID)
	if err != nil {
		return nil, fmt.Errorf("storage: list thumbnails: %w", err)
	}
	defer rows.Close()
	var out []media.Thumbnail
	for rows.Next() {
		t := media.Thumbnail{Origin: origin, MediaID: mediaID}
		if err := rows.Scan(&t.Method, &t.Width, &t.Height, &t.ContentType, &t.Size, &t.SHA256, &t.CreatedTS); err != nil {
			return nil, fmt.Errorf("storage: list thumbnails: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: list thumbnails: %w", err)
	}
	return out, nil
}

func (db *DB) InsertThumbnail(ctx context.Context, t media.Thumbnail) error {
	_, err := db.exec(ctx, "insert_thumbnail", `INSERT INTO media_thumbnails
		(origin, media_id, method, width, height, content_type, media_length, sha256, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (origin, media_id, method, width, height) DO NOTHING`,
		t.Origin, t.MediaID, t.Method, t.Width, t.Height, t.ContentType, t.Size, t.SHA256, t.CreatedTS)
	return err
}

func (db *DB) UploadedBytesSince(ctx context.Context, userID string, since int64) (int64, error) {
	defer db.observe("uploaded_bytes_since", time.Now())
	var n int64
	err := db.r.QueryRowContext(ctx, `SELECT COALESCE(SUM(media_length), 0) FROM media
		WHERE user_id = $1 AND uploaded_ts >= $2 AND uploaded_ts > 0`, userID, since).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("storage: uploaded bytes: %w", err)
	}
	return n, nil
}
