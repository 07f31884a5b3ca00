package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"homeserver/mxhttp"
)

// Ref names one media ID.
type Ref struct{ Origin, MediaID string }

// AdminStore is the SQL of the server admins' operations on the
// repository. The store given to New implements it when the server has an
// admin API (storage does); Service finds it with a type assertion so that
// the many stores of tests need not grow these methods.
type AdminStore interface {
	// TouchMedia records that the media was served at ts.
	TouchMedia(ctx context.Context, origin, mediaID string, ts int64) error
	// SetMediaQuarantine quarantines the media in the name of by, or lifts
	// its quarantine when by is ""; false when the media is unknown.
	SetMediaQuarantine(ctx context.Context, origin, mediaID, by string) (bool, error)
	// SetMediaSafe protects the media from quarantine or lifts the
	// protection; false when the media is unknown.
	SetMediaSafe(ctx context.Context, origin, mediaID string, safe bool) (bool, error)
	// QuarantineMediaRefs quarantines the known, unprotected media of refs
	// and counts them.
	QuarantineMediaRefs(ctx context.Context, refs []Ref, by string) (int, error)
	// QuarantineUserMedia quarantines the unprotected media of origin that
	// userID uploaded and counts them.
	QuarantineUserMedia(ctx context.Context, origin, userID, by string) (int, error)
	// RoomEventsWithMedia returns the JSON of the room's events that
	// mention an mxc URI; ErrNotFound when the room is unknown.
	RoomEventsWithMedia(ctx context.Context, roomID string) ([]json.RawMessage, error)
	// ProfileMediaURIs returns the avatars of users and rooms.
	ProfileMediaURIs(ctx context.Context) ([]string, error)
	// OldMedia returns the uploaded, unprotected media of origin last
	// served (or, if never, created) before beforeTS and larger than
	// sizeGT bytes.
	OldMedia(ctx context.Context, origin string, beforeTS, sizeGT int64) ([]string, error)
	// CachedMediaBefore returns the media of other origins than local
	// last served (or, if never, fetched) before beforeTS.
	CachedMediaBefore(ctx context.Context, local string, beforeTS int64) ([]Ref, error)
	// DeleteMedia removes the media IDs of origin and their thumbnails,
	// returning the IDs it removed and the content hashes that no media
	// or thumbnail references any more.
	DeleteMedia(ctx context.Context, origin string, mediaIDs []string) (deleted, unreferenced []string, err error)
}

// UserMediaQuery selects and orders the media of one user (the admin
// API's list of a user's media).
type UserMediaQuery struct {
	Origin, UserID string
	From, Limit    int
	// OrderBy is one of UserMediaOrders; Desc reverses it.
	OrderBy string
	Desc    bool
}

// UserMediaOrders are the orders of a user's media list.
var UserMediaOrders = []string{"media_id", "upload_name", "created_ts", "last_access_ts",
	"media_length", "media_type", "quarantined_by", "safe_from_quarantine"}

// UsageQuery selects and orders users by the local media they uploaded.
type UsageQuery struct {
	Origin      string
	From, Limit int
	// OrderBy is one of UsageOrders; Desc reverses it.
	OrderBy string
	Desc    bool
	// FromTS and UntilTS bound the creation time of the media counted
	// (UntilTS 0: no bound); SearchTerm, when set, must be part of the
	// user's localpart or display name.
	FromTS, UntilTS int64
	SearchTerm      string
}

// UsageOrders are the orders of the media statistics of users.
var UsageOrders = []string{"user_id", "displayname", "media_length", "media_count"}

// Usage is one user's media statistics.
type Usage struct {
	UserID      string
	DisplayName *string
	MediaCount  int64
	MediaLength int64
}

func (s *Service) adminStore() (AdminStore, error) {
	a, ok := s.store.(AdminStore)
	if !ok {
		return nil, errors.New("media: the store has no admin operations")
	}
	return a, nil
}

// accessResolution is how stale a recorded last access may get before a
// download records a new one: downloads then rarely write.
const accessResolution = time.Minute

// touch records that m is being served.
func (s *Service) touch(ctx context.Context, m Metadata) {
	a, ok := s.store.(AdminStore)
	now := s.nowMS()
	if !ok || now-m.LastAccessTS < accessResolution.Milliseconds() {
		return
	}
	if err := a.TouchMedia(ctx, m.Origin, m.MediaID, now); err != nil {
		s.log.Warn("recording a media access", "origin", m.Origin, "media_id", m.MediaID, "err", err)
	}
}

// Info returns what is known of a local or cached remote media ID.
func (s *Service) Info(ctx context.Context, origin, mediaID string) (Metadata, error) {
	m, err := s.store.GetMedia(ctx, origin, mediaID)
	if errors.Is(err, ErrNotFound) {
		return Metadata{}, errNotFound()
	}
	return m, err
}

// SetQuarantine quarantines one local or cached remote media ID in the
// name of admin, or lifts its quarantine when admin is "".
func (s *Service) SetQuarantine(ctx context.Context, origin, mediaID, admin string) error {
	a, err := s.adminStore()
	if err != nil {
		return err
	}
	found, err := a.SetMediaQuarantine(ctx, origin, mediaID, admin)
	if err == nil && !found {
		return errNotFound()
	}
	return err
}

// SetProtected protects a local media ID from quarantine, or lifts it.
func (s *Service) SetProtected(ctx context.Context, mediaID string, safe bool) error {
	a, err := s.adminStore()
	if err != nil {
		return err
	}
	found, err := a.SetMediaSafe(ctx, s.cfg.ServerName, mediaID, safe)
	if err == nil && !found {
		return errNotFound()
	}
	return err
}

// QuarantineRoom quarantines the unprotected media that the room's events
// point at (content.url and content.info.thumbnail_url, as Synapse
// looks), and counts them.
func (s *Service) QuarantineRoom(ctx context.Context, roomID, admin string) (int, error) {
	a, err := s.adminStore()
	if err != nil {
		return 0, err
	}
	events, err := a.RoomEventsWithMedia(ctx, roomID)
	if errors.Is(err, ErrNotFound) {
		return 0, mxhttp.NotFound("Unknown room")
	}
	if err != nil {
		return 0, err
	}
	seen := map[Ref]bool{}
	var refs []Ref
	for _, raw := range events {
		var ev struct {
			Content struct {
				URL  any `json:"url"`
				Info struct {
					ThumbnailURL any `json:"thumbnail_url"`
				} `json:"info"`
			} `json:"content"`
		}
		if json.Unmarshal(raw, &ev) != nil {
			continue
		}
		for _, v := range []any{ev.Content.URL, ev.Content.Info.ThumbnailURL} {
			uri, _ := v.(string)
			if r, ok := ParseMXC(uri); ok && !seen[r] {
				seen[r] = true
				refs = append(refs, r)
			}
		}
	}
	if len(refs) == 0 {
		return 0, nil
	}
	return a.QuarantineMediaRefs(ctx, refs, admin)
}

// QuarantineUser quarantines the unprotected media a local user uploaded
// and counts them.
func (s *Service) QuarantineUser(ctx context.Context, userID, admin string) (int, error) {
	a, err := s.adminStore()
	if err != nil {
		return 0, err
	}
	return a.QuarantineUserMedia(ctx, s.cfg.ServerName, userID, admin)
}

// ParseMXC splits an mxc:// URI into its origin and media ID.
func ParseMXC(uri string) (Ref, bool) {
	rest, ok := strings.CutPrefix(uri, "mxc://")
	if !ok {
		return Ref{}, false
	}
	origin, id, ok := strings.Cut(rest, "/")
	if !ok || !validServerName(origin) || !ValidMediaID(id) {
		return Ref{}, false
	}
	return Ref{Origin: origin, MediaID: id}, true
}

// Delete deletes one local media ID: its thumbnails, its record, and its
// bytes unless other media share them.
func (s *Service) Delete(ctx context.Context, origin, mediaID string) ([]string, error) {
	if origin != s.cfg.ServerName {
		return nil, mxhttp.Unknown("Can only delete local media")
	}
	if _, err := s.Info(ctx, origin, mediaID); err != nil {
		return nil, err
	}
	return s.DeleteLocal(ctx, []string{mediaID})
}

// DeleteLocal deletes local media IDs as Delete does, and returns those
// it deleted.
func (s *Service) DeleteLocal(ctx context.Context, mediaIDs []string) ([]string, error) {
	return s.remove(ctx, s.cfg.ServerName, mediaIDs)
}

// DeleteOld deletes the unprotected local media last served (or, if
// never, uploaded) before beforeTS and larger than sizeGT bytes, keeping
// users' and rooms' avatars when keepProfiles is set.
func (s *Service) DeleteOld(ctx context.Context, beforeTS, sizeGT int64, keepProfiles bool) ([]string, error) {
	a, err := s.adminStore()
	if err != nil {
		return nil, err
	}
	ids, err := a.OldMedia(ctx, s.cfg.ServerName, beforeTS, sizeGT)
	if err != nil || len(ids) == 0 {
		return []string{}, err
	}
	if keepProfiles {
		uris, err := a.ProfileMediaURIs(ctx)
		if err != nil {
			return nil, err
		}
		keep := map[string]bool{}
		for _, u := range uris {
			if r, ok := ParseMXC(u); ok && r.Origin == s.cfg.ServerName {
				keep[r.MediaID] = true
			}
		}
		deletable := ids[:0]
		for _, id := range ids {
			if !keep[id] {
				deletable = append(deletable, id)
			}
		}
		ids = deletable
	}
	return s.remove(ctx, s.cfg.ServerName, ids)
}

// PurgeCache deletes the cached copies of other servers' media last
// served (or, if never, fetched) before beforeTS, and counts them. They
// are fetched again when next asked for.
func (s *Service) PurgeCache(ctx context.Context, beforeTS int64) (int, error) {
	a, err := s.adminStore()
	if err != nil {
		return 0, err
	}
	refs, err := a.CachedMediaBefore(ctx, s.cfg.ServerName, beforeTS)
	if err != nil {
		return 0, err
	}
	byOrigin := map[string][]string{}
	for _, r := range refs {
		byOrigin[r.Origin] = append(byOrigin[r.Origin], r.MediaID)
	}
	n := 0
	for origin, ids := range byOrigin {
		deleted, err := s.remove(ctx, origin, ids)
		n += len(deleted)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// remove deletes media records and thumbnails, then the files no record
// points at any more. A file is removed after its last record, so a
// crash in between leaves an unreferenced file, never a record without
// its file.
func (s *Service) remove(ctx context.Context, origin string, mediaIDs []string) ([]string, error) {
	a, err := s.adminStore()
	if err != nil {
		return nil, err
	}
	if len(mediaIDs) == 0 {
		return []string{}, nil
	}
	deleted, unreferenced, err := a.DeleteMedia(ctx, origin, mediaIDs)
	if err != nil {
		return nil, err
	}
	for _, sum := range unreferenced {
		p, err := s.files.path(sum)
		if err != nil {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return deleted, fmt.Errorf("media: removing content %s: %w", sum, err)
		}
	}
	if deleted == nil {
		deleted = []string{}
	}
	return deleted, nil
}
