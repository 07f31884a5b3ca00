package adminapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"homeserver/accounts"
	"homeserver/media"
	"homeserver/mxhttp"
)

// mediaStore holds the queries of this file's endpoints.
type mediaStore interface {
	// ListUserMedia returns a page of a user's media and how many there are.
	ListUserMedia(ctx context.Context, q media.UserMediaQuery) ([]media.Metadata, int, error)
	// MediaUsage returns a page of users' media statistics and how many
	// users match.
	MediaUsage(ctx context.Context, q media.UsageQuery) ([]media.Usage, int, error)
}

// MediaAdmin is what the admin API asks of the media repository
// (*media.Service).
type MediaAdmin interface {
	Info(ctx context.Context, origin, mediaID string) (media.Metadata, error)
	SetQuarantine(ctx context.Context, origin, mediaID, admin string) error
	SetProtected(ctx context.Context, mediaID string, safe bool) error
	QuarantineRoom(ctx context.Context, roomID, admin string) (int, error)
	QuarantineUser(ctx context.Context, userID, admin string) (int, error)
	Delete(ctx context.Context, origin, mediaID string) ([]string, error)
	DeleteLocal(ctx context.Context, mediaIDs []string) ([]string, error)
	DeleteOld(ctx context.Context, beforeTS, sizeGT int64, keepProfiles bool) ([]string, error)
	PurgeCache(ctx context.Context, beforeTS int64) (int, error)
}

var _ MediaAdmin = (*media.Service)(nil)

func (a *API) mediaRoutes(r chi.Router) {
	r.Get("/v1/media/{serverName}/{mediaID}", a.mediaInfo)
	r.Delete("/v1/media/{serverName}/{mediaID}", a.deleteMedia)
	r.Post("/v1/media/quarantine/{serverName}/{mediaID}", a.quarantineMedia(true))
	r.Post("/v1/media/unquarantine/{serverName}/{mediaID}", a.quarantineMedia(false))
	r.Post("/v1/media/protect/{mediaID}", a.protectMedia(true))
	r.Post("/v1/media/unprotect/{mediaID}", a.protectMedia(false))
	r.Post("/v1/room/{roomID}/media/quarantine", a.quarantineRoomMedia)
	// The deprecated path of the same, still served by Synapse.
	r.Post("/v1/quarantine_media/{roomID}", a.quarantineRoomMedia)
	r.Post("/v1/user/{userID}/media/quarantine", a.quarantineUserMedia)
	r.Post("/v1/media/delete", a.deleteOldMedia)
	r.Post("/v1/media/{serverName}/delete", a.deleteOldMedia)
	r.Get("/v1/users/{userID}/media", a.listUserMedia)
	r.Delete("/v1/users/{userID}/media", a.deleteUserMedia)
	r.Get("/v1/statistics/users/media", a.mediaStatistics)
	r.Post("/v1/purge_media_cache", a.purgeMediaCache)
}

// nullable is v, or JSON null for the zero value (Synapse's NULL columns).
func nullable[T comparable](v T) any {
	var zero T
	if v == zero {
		return nil
	}
	return v
}

func (a *API) mediaInfo(w http.ResponseWriter, r *http.Request) {
	m, err := a.d.Media.Info(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{"media_info": map[string]any{
		"media_origin":         m.Origin,
		"user_id":              nullable(m.UserID),
		"media_id":             m.MediaID,
		"media_type":           m.ContentType,
		"media_length":         m.Size,
		"upload_name":          nullable(m.UploadName),
		"created_ts":           m.CreatedTS,
		"last_access_ts":       nullable(m.LastAccessTS),
		"quarantined_by":       nullable(m.QuarantinedBy),
		"safe_from_quarantine": m.SafeFromQuarantine,
		"authenticated":        m.Authenticated,
		"sha256":               nullable(m.SHA256),
	}})
}

func (a *API) quarantineMedia(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		by := ""
		if on {
			by = a.requester(r).UserID
		}
		if err := a.d.Media.SetQuarantine(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaID"), by); err != nil {
			a.fail(w, r, err)
			return
		}
		ok(w, struct{}{})
	}
}

func (a *API) protectMedia(safe bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := a.d.Media.SetProtected(r.Context(), pathParam(r, "mediaID"), safe); err != nil {
			a.fail(w, r, err)
			return
		}
		ok(w, struct{}{})
	}
}

func (a *API) quarantineRoomMedia(w http.ResponseWriter, r *http.Request) {
	n, err := a.d.Media.QuarantineRoom(r.Context(), pathParam(r, "roomID"), a.requester(r).UserID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]int{"num_quarantined": n})
}

func (a *API) quarantineUserMedia(w http.ResponseWriter, r *http.Request) {
	userID, err := a.localUser(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	n, err := a.d.Media.QuarantineUser(r.Context(), userID, a.requester(r).UserID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]int{"num_quarantined": n})
}

// localUser returns the userID of the path: 400 when it is not local, 404
// when there is no such account, as Synapse answers.
func (a *API) localUser(r *http.Request) (string, error) {
	userID := pathParam(r, "userID")
	if !a.d.Accounts.IsLocal(userID) {
		return "", mxhttp.Unknown("Can only look up local users")
	}
	if _, err := a.d.Accounts.GetAccount(r.Context(), userID); errors.Is(err, accounts.ErrNotFound) {
		return "", mxhttp.NotFound("Unknown user")
	} else if err != nil {
		return "", err
	}
	return userID, nil
}

func deletedMedia(w http.ResponseWriter, ids []string) {
	ok(w, map[string]any{"deleted_media": ids, "total": len(ids)})
}

func (a *API) deleteMedia(w http.ResponseWriter, r *http.Request) {
	ids, err := a.d.Media.Delete(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	deletedMedia(w, ids)
}

func (a *API) deleteOldMedia(w http.ResponseWriter, r *http.Request) {
	// The admin is local: their server name is this server's.
	if chi.URLParam(r, "serverName") != "" && pathParam(r, "serverName") != serverOfUser(a.requester(r).UserID) {
		a.fail(w, r, mxhttp.Unknown("Can only delete local media"))
		return
	}
	before, given, err := readNonNegative(r, "before_ts")
	if err == nil && !given {
		err = mxhttp.MissingParam("Missing required integer query parameter before_ts")
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	sizeGT, _, err := readNonNegative(r, "size_gt")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	keep := true
	if v := r.URL.Query().Get("keep_profiles"); v != "" {
		if keep, err = strconv.ParseBool(v); err != nil {
			a.fail(w, r, mxhttp.InvalidParam("Boolean query parameter keep_profiles must be true or false"))
			return
		}
	}
	ids, err := a.d.Media.DeleteOld(r.Context(), before, sizeGT, keep)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	deletedMedia(w, ids)
}

// userMediaQuery reads the user and the page of the user media endpoints.
func (a *API) userMediaQuery(r *http.Request) (media.UserMediaQuery, offsetPage, error) {
	userID, err := a.localUser(r)
	if err != nil {
		return media.UserMediaQuery{}, offsetPage{}, err
	}
	p, err := readOffsetPage(r)
	if err != nil {
		return media.UserMediaQuery{}, p, err
	}
	order, err := readOrderBy(r, "created_ts", media.UserMediaOrders)
	if err != nil {
		return media.UserMediaQuery{}, p, err
	}
	desc, err := readDirection(r, "f")
	if err != nil {
		return media.UserMediaQuery{}, p, err
	}
	return media.UserMediaQuery{Origin: serverOfUser(userID), UserID: userID, From: p.from, Limit: p.limit, OrderBy: order, Desc: desc}, p, nil
}

// serverOfUser returns the server name of a user ID.
func serverOfUser(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

func (a *API) listUserMedia(w http.ResponseWriter, r *http.Request) {
	q, p, err := a.userMediaQuery(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	list, total, err := a.d.Store.ListUserMedia(r.Context(), q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]map[string]any, len(list))
	for i, m := range list {
		out[i] = map[string]any{
			"media_id":             m.MediaID,
			"media_type":           m.ContentType,
			"media_length":         m.Size,
			"upload_name":          nullable(m.UploadName),
			"created_ts":           m.CreatedTS,
			"last_access_ts":       nullable(m.LastAccessTS),
			"quarantined_by":       nullable(m.QuarantinedBy),
			"safe_from_quarantine": m.SafeFromQuarantine,
		}
	}
	resp := map[string]any{"media": out, "total": total}
	if next, more := p.next(len(list), total); more {
		resp["next_token"] = next
	}
	ok(w, resp)
}

func (a *API) deleteUserMedia(w http.ResponseWriter, r *http.Request) {
	q, _, err := a.userMediaQuery(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	list, _, err := a.d.Store.ListUserMedia(r.Context(), q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ids := make([]string, len(list))
	for i, m := range list {
		ids[i] = m.MediaID
	}
	deleted, err := a.d.Media.DeleteLocal(r.Context(), ids)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	deletedMedia(w, deleted)
}

func (a *API) mediaStatistics(w http.ResponseWriter, r *http.Request) {
	p, err := readOffsetPage(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	q := media.UsageQuery{From: p.from, Limit: p.limit}
	if q.OrderBy, err = readOrderBy(r, "user_id", media.UsageOrders); err != nil {
		a.fail(w, r, err)
		return
	}
	if q.Desc, err = readDirection(r, "f"); err != nil {
		a.fail(w, r, err)
		return
	}
	if q.FromTS, _, err = readNonNegative(r, "from_ts"); err != nil {
		a.fail(w, r, err)
		return
	}
	var until bool
	if q.UntilTS, until, err = readNonNegative(r, "until_ts"); err != nil {
		a.fail(w, r, err)
		return
	}
	if until && q.UntilTS < q.FromTS {
		a.fail(w, r, mxhttp.InvalidParam("Query parameter until_ts must be greater than from_ts."))
		return
	}
	if vs, given := r.URL.Query()["search_term"]; given {
		if vs[0] == "" {
			a.fail(w, r, mxhttp.InvalidParam("Query parameter search_term cannot be empty."))
			return
		}
		q.SearchTerm = vs[0]
	}
	q.Origin = serverOfUser(a.requester(r).UserID)
	users, total, err := a.d.Store.MediaUsage(r.Context(), q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]map[string]any, len(users))
	for i, u := range users {
		out[i] = map[string]any{"user_id": u.UserID, "displayname": u.DisplayName,
			"media_count": u.MediaCount, "media_length": u.MediaLength}
	}
	resp := map[string]any{"users": out, "total": total}
	if next, more := p.next(len(users), total); more {
		resp["next_token"] = next
	}
	ok(w, resp)
}

func (a *API) purgeMediaCache(w http.ResponseWriter, r *http.Request) {
	before, given, err := readNonNegative(r, "before_ts")
	if err == nil && !given {
		err = mxhttp.MissingParam("Missing required integer query parameter before_ts")
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	n, err := a.d.Media.PurgeCache(r.Context(), before)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]int{"deleted": n})
}
