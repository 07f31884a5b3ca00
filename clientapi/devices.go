package clientapi

import (
	"encoding/json"
	"net/http"

	"homeserver/accounts"
	"homeserver/mxhttp"
)

type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  string  `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64   `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d accounts.Device) deviceJSON {
	out := deviceJSON{DeviceID: d.DeviceID, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
	if d.DisplayName != "" {
		out.DisplayName = &d.DisplayName
	}
	return out
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	devs, err := a.accounts.ListDevices(r.Context(), requester(r).UserID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]deviceJSON, 0, len(devs))
	for _, d := range devs {
		out = append(out, toDeviceJSON(d))
	}
	ok(w, map[string]any{"devices": out})
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := a.accounts.GetDevice(r.Context(), requester(r).UserID, pathParam(r, "deviceID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, toDeviceJSON(d))
}

type updateDeviceRequest struct {
	DisplayName *string `json:"display_name"`
}

func (a *API) updateDevice(w http.ResponseWriter, r *http.Request) {
	var req updateDeviceRequest
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	me, id := requester(r), pathParam(r, "deviceID")
	if me.AppServiceID != "" {
		// Application services create their users' devices (1.17).
		if ok, retry := a.allow(r, a.rcLoginAccount, me.UserID); !ok {
			a.fail(w, r, mxhttp.LimitExceeded(retry))
			return
		}
		created, err := a.accounts.CreateDevice(r.Context(), me.UserID, id, req.DisplayName)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if created {
			mxhttp.WriteJSON(w, http.StatusCreated, empty)
			return
		}
		ok(w, empty)
		return
	}
	var err error
	if req.DisplayName == nil {
		_, err = a.accounts.GetDevice(r.Context(), me.UserID, id)
	} else {
		err = a.accounts.RenameDevice(r.Context(), me.UserID, id, *req.DisplayName)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

type deleteDeviceRequest struct {
	Auth json.RawMessage `json:"auth"`
}

func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request) {
	var req deleteDeviceRequest
	if err := mxhttp.DecodeOptionalJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.deviceDeletionAuth(r, req.Auth); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.accounts.DeleteDevices(r.Context(), requester(r).UserID, []string{pathParam(r, "deviceID")}); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) deleteDevices(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Auth    json.RawMessage `json:"auth"`
		Devices *[]string       `json:"devices"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Devices == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing devices"))
		return
	}
	if err := a.deviceDeletionAuth(r, req.Auth); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.accounts.DeleteDevices(r.Context(), requester(r).UserID, *req.Devices); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

// deviceDeletionAuth asks a client for its password before deleting
// devices; an application service manages its users' devices without
// (Matrix 1.17).
func (a *API) deviceDeletionAuth(r *http.Request, auth json.RawMessage) error {
	if requester(r).AppServiceID != "" {
		return nil
	}
	return a.checkPasswordUIA(r, auth)
}
