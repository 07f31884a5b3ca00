package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"homeserver/keybackup"
	"homeserver/mxhttp"
)

// keyBackupBodyLimit bounds the bodies of bulk key uploads, which carry many
// keys of about a kilobyte each; other bodies of the API keep the default.
const keyBackupBodyLimit = 4 << 20

func (a *API) keyBackupRoutes(r chi.Router) {
	r.Post("/room_keys/version", a.createKeyBackupVersion)
	r.Get("/room_keys/version", a.getKeyBackupVersion(false))
	r.Get("/room_keys/version/{version}", a.getKeyBackupVersion(true))
	r.Put("/room_keys/version/{version}", a.updateKeyBackupVersion)
	r.Delete("/room_keys/version/{version}", a.deleteKeyBackupVersion)
	for _, p := range []struct {
		path  string
		level keybackup.Level
		limit int64
	}{
		{"/room_keys/keys", keybackup.AllRooms, keyBackupBodyLimit},
		{"/room_keys/keys/{roomID}", keybackup.OneRoom, keyBackupBodyLimit},
		{"/room_keys/keys/{roomID}/{sessionID}", keybackup.OneSession, mxhttp.DefaultBodyLimit},
	} {
		r.Put(p.path, a.putKeyBackupKeys(p.level, p.limit))
		r.Get(p.path, a.getKeyBackupKeys(p.level))
		r.Delete(p.path, a.deleteKeyBackupKeys(p.level))
	}
}

// keyBackupScope reads the part of the backup a keys request addresses,
// and the required ?version= parameter.
func keyBackupScope(r *http.Request, level keybackup.Level) (keybackup.Scope, string, error) {
	version := r.URL.Query().Get("version")
	if version == "" {
		return keybackup.Scope{}, "", mxhttp.MissingParam("Missing version")
	}
	s := keybackup.Scope{Level: level}
	if level >= keybackup.OneRoom {
		s.RoomID = pathParam(r, "roomID")
	}
	if level == keybackup.OneSession {
		s.SessionID = pathParam(r, "sessionID")
	}
	return s, version, nil
}

func (a *API) createKeyBackupVersion(w http.ResponseWriter, r *http.Request) {
	body, err := mxhttp.ReadBody(r, mxhttp.DefaultBodyLimit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	v, err := a.keyBackup.CreateVersion(r.Context(), requester(r).UserID, body)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"version": v})
}

func (a *API) getKeyBackupVersion(byPath bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var info keybackup.VersionInfo
		var err error
		if byPath {
			info, err = a.keyBackup.GetVersion(r.Context(), requester(r).UserID, pathParam(r, "version"))
		} else {
			info, err = a.keyBackup.CurrentVersion(r.Context(), requester(r).UserID)
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
		ok(w, info)
	}
}

func (a *API) updateKeyBackupVersion(w http.ResponseWriter, r *http.Request) {
	body, err := mxhttp.ReadBody(r, mxhttp.DefaultBodyLimit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.keyBackup.UpdateVersion(r.Context(), requester(r).UserID, pathParam(r, "version"), body); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) deleteKeyBackupVersion(w http.ResponseWriter, r *http.Request) {
	if err := a.keyBackup.DeleteVersion(r.Context(), requester(r).UserID, pathParam(r, "version")); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) putKeyBackupKeys(level keybackup.Level, limit int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scope, version, err := keyBackupScope(r, level)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		body, err := mxhttp.ReadBody(r, limit)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		res, err := a.keyBackup.PutKeys(r.Context(), requester(r).UserID, version, scope, body)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		ok(w, res)
	}
}

func (a *API) getKeyBackupKeys(level keybackup.Level) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scope, version, err := keyBackupScope(r, level)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		res, err := a.keyBackup.GetKeys(r.Context(), requester(r).UserID, version, scope)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		ok(w, res)
	}
}

func (a *API) deleteKeyBackupKeys(level keybackup.Level) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scope, version, err := keyBackupScope(r, level)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		res, err := a.keyBackup.DeleteKeys(r.Context(), requester(r).UserID, version, scope)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		ok(w, res)
	}
}
