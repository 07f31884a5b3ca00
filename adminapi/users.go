package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"homeserver/accounts"
	"homeserver/mxhttp"
)

// userStore holds the queries of this file's endpoints.
type userStore interface {
	// AdminListUsers returns a page of local users and how many match.
	AdminListUsers(ctx context.Context, q UserQuery) ([]UserRow, int, error)
	// AdminUser returns one local user; found is false for an unknown one.
	AdminUser(ctx context.Context, userID string) (u UserRow, found bool, err error)
	// AdminUserAccountData returns a user's global account data by type
	// and their room account data by room and type.
	AdminUserAccountData(ctx context.Context, userID string) (global map[string]json.RawMessage, rooms map[string]map[string]json.RawMessage, err error)
}

// ProfileIndexer is the user directory, told of each profile change an
// admin makes: a user in no room writes no member event for it to read.
type ProfileIndexer interface {
	ProfileChanged(ctx context.Context, userID string) error
}

// UserQuery selects and orders the user list.
type UserQuery struct {
	From, Limit int
	// UserID matches user IDs containing it; Name user IDs or display
	// names containing it (and then UserID is ignored, as in Synapse).
	UserID, Name string
	Guests       bool  // include guests
	Deactivated  *bool // nil: both
	Admins       *bool // nil: both
	Locked       bool  // include locked users
	// NotUserTypes excludes these types; "" stands for users without one.
	NotUserTypes []string
	// OrderBy is one of UserOrders; ties go by ascending user ID.
	OrderBy  string
	Backward bool
}

// UserOrders are the orders of the user list.
var UserOrders = []string{"name", "is_guest", "admin", "user_type", "deactivated", "shadow_banned",
	"displayname", "avatar_url", "creation_ts", "last_seen_ts", "locked"}

// UserRow is a local user as the admin API describes them.
type UserRow struct {
	UserID       string
	IsGuest      bool
	Admin        bool
	UserType     *string
	Deactivated  bool
	Erased       bool
	ShadowBanned bool
	Locked       bool
	Suspended    bool
	DisplayName  *string
	AvatarURL    *string
	AppServiceID string
	CreatedTS    int64 // ms
	LastSeenTS   int64 // ms; 0 for never
}

// userListEntry is one user of the list.
type userListEntry struct {
	Name         string  `json:"name"`
	IsGuest      bool    `json:"is_guest"`
	Admin        bool    `json:"admin"`
	UserType     *string `json:"user_type"`
	Deactivated  bool    `json:"deactivated"`
	Erased       bool    `json:"erased"`
	ShadowBanned bool    `json:"shadow_banned"`
	DisplayName  *string `json:"displayname"`
	AvatarURL    *string `json:"avatar_url"`
	CreationTS   int64   `json:"creation_ts"`
	LastSeenTS   *int64  `json:"last_seen_ts"`
	Locked       bool    `json:"locked"`
}

// userDetails is the answer of GET and PUT /v2/users/{userID}. This server
// has no third-party IDs, SSO or consent tracking, so those fields are
// always empty.
type userDetails struct {
	Name                    string  `json:"name"`
	DisplayName             *string `json:"displayname"`
	ThreePIDs               []any   `json:"threepids"`
	AvatarURL               *string `json:"avatar_url"`
	IsGuest                 bool    `json:"is_guest"`
	Admin                   bool    `json:"admin"`
	Deactivated             bool    `json:"deactivated"`
	Erased                  bool    `json:"erased"`
	ShadowBanned            bool    `json:"shadow_banned"`
	CreationTS              int64   `json:"creation_ts"`
	LastSeenTS              *int64  `json:"last_seen_ts"`
	AppServiceID            *string `json:"appservice_id"`
	ConsentServerNoticeSent *string `json:"consent_server_notice_sent"`
	ConsentVersion          *string `json:"consent_version"`
	ConsentTS               *int64  `json:"consent_ts"`
	ExternalIDs             []any   `json:"external_ids"`
	UserType                *string `json:"user_type"`
	Locked                  bool    `json:"locked"`
	Suspended               bool    `json:"suspended"`
}

func userLastSeen(ts int64) *int64 {
	if ts == 0 {
		return nil
	}
	return &ts
}

func toUserDetails(u UserRow) userDetails {
	d := userDetails{
		Name: u.UserID, DisplayName: u.DisplayName, ThreePIDs: []any{}, AvatarURL: u.AvatarURL,
		IsGuest: u.IsGuest, Admin: u.Admin, Deactivated: u.Deactivated, Erased: u.Erased,
		ShadowBanned: u.ShadowBanned, LastSeenTS: userLastSeen(u.LastSeenTS), ExternalIDs: []any{},
		UserType: u.UserType, Locked: u.Locked, Suspended: u.Suspended,
		// Synapse gives seconds here (and milliseconds in the list).
		CreationTS: u.CreatedTS / 1000,
	}
	if u.AppServiceID != "" {
		d.AppServiceID = &u.AppServiceID
	}
	return d
}

func (a *API) userRoutes(r chi.Router) {
	r.Get("/v2/users", a.listUsers(false))
	r.Get("/v3/users", a.listUsers(true))
	r.Get("/v2/users/{userID}", a.getUser)
	r.Put("/v2/users/{userID}", a.putUser)
	r.Post("/v1/deactivate/{userID}", a.deactivateUser)
	r.Post("/v1/reset_password/{userID}", a.resetPassword)
	r.Get("/v1/whois/{userID}", a.whois)
	r.Get("/v1/users/{userID}/admin", a.getServerAdmin)
	r.Put("/v1/users/{userID}/admin", a.setServerAdmin)
	r.Get("/v1/users/{userID}/joined_rooms", a.userJoinedRooms)
	r.Get("/v2/users/{userID}/devices", a.listUserDevices)
	r.Post("/v2/users/{userID}/devices", a.createUserDevice)
	r.Get("/v2/users/{userID}/devices/{deviceID}", a.getUserDevice)
	r.Put("/v2/users/{userID}/devices/{deviceID}", a.updateUserDevice)
	r.Delete("/v2/users/{userID}/devices/{deviceID}", a.deleteUserDevice)
	r.Post("/v2/users/{userID}/delete_devices", a.deleteUserDevices)
	r.Post("/v1/users/{userID}/login", a.loginAsUser)
	r.Post("/v1/users/{userID}/shadow_ban", a.shadowBan(true))
	r.Delete("/v1/users/{userID}/shadow_ban", a.shadowBan(false))
	r.Get("/v1/users/{userID}/override_ratelimit", a.getRateOverride)
	r.Post("/v1/users/{userID}/override_ratelimit", a.setRateOverride)
	r.Delete("/v1/users/{userID}/override_ratelimit", a.deleteRateOverride)
	r.Get("/v1/username_available", a.usernameAvailable)
	r.Get("/v1/users/{userID}/accountdata", a.userAccountData)
	r.Put("/v1/suspend/{userID}", a.suspendUser)
}

// userPathID reads the user ID of the path: 400 M_INVALID_PARAM for one that
// is not a user ID, and 400 with notLocal for another server's user, as
// Synapse answers each endpoint.
func (a *API) userPathID(r *http.Request, notLocal string) (string, error) {
	id := pathParam(r, "userID")
	if !strings.HasPrefix(id, "@") || !strings.Contains(id, ":") || len(id) > accounts.MaxUserIDLength {
		return "", mxhttp.InvalidParam("Invalid user id")
	}
	if !a.d.Accounts.IsLocal(id) {
		return "", mxhttp.Unknown("%s", notLocal)
	}
	return id, nil
}

// userAccount is userPathID for endpoints about an account that must exist
// (404 M_NOT_FOUND otherwise).
func (a *API) userAccount(r *http.Request, notLocal string) (accounts.Account, error) {
	id, err := a.userPathID(r, notLocal)
	if err != nil {
		return accounts.Account{}, err
	}
	acc, err := a.d.Accounts.GetAccount(r.Context(), id)
	if errors.Is(err, accounts.ErrNotFound) {
		return acc, mxhttp.NotFound("User not found")
	}
	return acc, err
}

// userQueryBool reads a boolean query parameter as Synapse does: "true" or
// "false", nil when absent.
func userQueryBool(r *http.Request, name string) (*bool, error) {
	s, set := r.URL.Query()[name]
	if !set {
		return nil, nil
	}
	switch s[0] {
	case "true":
		v := true
		return &v, nil
	case "false":
		v := false
		return &v, nil
	}
	return nil, mxhttp.InvalidParam("Boolean query parameter %q must be one of ['true', 'false']", name)
}

// listUsers serves /v2/users and /v3/users, which differ in deactivated:
// v2 includes deactivated users only when it is true, v3 filters on it
// when given.
func (a *API) listUsers(v3 bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := parseUserQuery(r, v3)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		users, total, err := a.d.Store.AdminListUsers(r.Context(), q)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		out := make([]userListEntry, 0, len(users))
		for _, u := range users {
			out = append(out, userListEntry{
				Name: u.UserID, IsGuest: u.IsGuest, Admin: u.Admin, UserType: u.UserType, Deactivated: u.Deactivated,
				Erased: u.Erased, ShadowBanned: u.ShadowBanned, DisplayName: u.DisplayName, AvatarURL: u.AvatarURL,
				CreationTS: u.CreatedTS, LastSeenTS: userLastSeen(u.LastSeenTS), Locked: u.Locked,
			})
		}
		resp := map[string]any{"users": out, "total": total}
		if q.From+q.Limit < total {
			resp["next_token"] = strconv.Itoa(q.From + len(users))
		}
		ok(w, resp)
	}
}

func parseUserQuery(r *http.Request, v3 bool) (UserQuery, error) {
	q := UserQuery{Guests: true}
	p, err := readOffsetPage(r)
	if err != nil {
		return q, err
	}
	q.From, q.Limit = p.from, p.limit
	if q.OrderBy, err = readOrderBy(r, "name", UserOrders); err != nil {
		return q, err
	}
	if q.Backward, err = readDirection(r, "f"); err != nil {
		return q, err
	}
	params := r.URL.Query()
	q.UserID, q.Name = params.Get("user_id"), params.Get("name")
	guests, err := userQueryBool(r, "guests")
	if err != nil {
		return q, err
	}
	if guests != nil {
		q.Guests = *guests
	}
	deactivated, err := userQueryBool(r, "deactivated")
	if err != nil {
		return q, err
	}
	switch {
	case v3:
		q.Deactivated = deactivated
	case deactivated == nil || !*deactivated:
		active := false
		q.Deactivated = &active
	}
	if q.Admins, err = userQueryBool(r, "admins"); err != nil {
		return q, err
	}
	locked, err := userQueryBool(r, "locked")
	if err != nil {
		return q, err
	}
	q.Locked = locked != nil && *locked
	q.NotUserTypes = params["not_user_type"]
	return q, nil
}

func (a *API) getUser(w http.ResponseWriter, r *http.Request) {
	id, err := a.userPathID(r, "Can only look up local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.writeUser(w, r, id, http.StatusOK)
}

// writeUser answers with the details of user id, or 404.
func (a *API) writeUser(w http.ResponseWriter, r *http.Request, id string, status int) {
	u, found, err := a.d.Store.AdminUser(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !found {
		a.fail(w, r, mxhttp.NotFound("User not found"))
		return
	}
	mxhttp.WriteJSON(w, status, toUserDetails(u))
}

// userChange is the body of PUT /v2/users/{userID}, each field checked for
// its JSON type as Synapse does.
type userChange struct {
	password      *string
	logoutDevices bool
	displayName   *string
	avatarURL     *string
	admin         *bool
	deactivated   *bool
	locked        *bool
	userTypeSet   bool
	userType      *string
}

func parseUserChange(r *http.Request) (userChange, error) {
	c := userChange{logoutDevices: true}
	var body map[string]json.RawMessage
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		return c, err
	}
	present := func(k string) (json.RawMessage, bool) {
		v, ok := body[k]
		return v, ok && !bytes.Equal(bytes.TrimSpace(v), []byte("null"))
	}
	boolean := func(k string, bad error) (*bool, error) {
		v, ok := present(k)
		if !ok {
			return nil, nil
		}
		var b bool
		if json.Unmarshal(v, &b) != nil {
			return nil, bad
		}
		return &b, nil
	}
	str := func(k string, bad error) (*string, error) {
		v, ok := present(k)
		if !ok {
			return nil, nil
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return nil, bad
		}
		return &s, nil
	}
	var err error
	if c.password, err = str("password", mxhttp.Unknown("Invalid password")); err != nil {
		return c, err
	}
	if c.password != nil && len(*c.password) > accounts.MaxPasswordLength {
		return c, mxhttp.Unknown("Invalid password")
	}
	logout, err := boolean("logout_devices", mxhttp.Unknown("'logout_devices' parameter is not of type boolean"))
	if err != nil {
		return c, err
	}
	if logout != nil {
		c.logoutDevices = *logout
	}
	if c.displayName, err = str("displayname", mxhttp.InvalidParam("'displayname' must be a string")); err != nil {
		return c, err
	}
	if c.avatarURL, err = str("avatar_url", mxhttp.InvalidParam("avatar_url must be a string")); err != nil {
		return c, err
	}
	if c.admin, err = boolean("admin", mxhttp.BadJSON("Param 'admin' must be a boolean, if given")); err != nil {
		return c, err
	}
	if c.deactivated, err = boolean("deactivated", mxhttp.Unknown("'deactivated' parameter is not of type boolean")); err != nil {
		return c, err
	}
	if c.locked, err = boolean("locked", mxhttp.Unknown("'locked' parameter is not of type boolean")); err != nil {
		return c, err
	}
	if c.deactivated != nil && *c.deactivated && c.locked != nil && *c.locked {
		return c, mxhttp.Unknown("An user can't be deactivated and locked")
	}
	_, c.userTypeSet = body["user_type"]
	if c.userType, err = str("user_type", mxhttp.Unknown("Invalid user type")); err != nil {
		return c, err
	}
	if c.userType != nil {
		if err := accounts.ValidUserType(*c.userType); err != nil {
			return c, err
		}
	}
	// Third-party IDs and SSO identities do not exist on this server: an
	// empty list is a no-op, anything else cannot be honoured.
	for _, k := range []string{"threepids", "external_ids"} {
		if v, ok := present(k); ok {
			var list []json.RawMessage
			if json.Unmarshal(v, &list) != nil {
				return c, mxhttp.BadJSON("%s must be a list", k)
			}
			if len(list) > 0 {
				return c, mxhttp.InvalidParam("This server does not support %s", k)
			}
		}
	}
	return c, nil
}

// putUser creates (201) or modifies (200) a local user.
func (a *API) putUser(w http.ResponseWriter, r *http.Request) {
	id, err := a.userPathID(r, "This endpoint can only be used with local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	c, err := parseUserChange(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	acc, err := a.d.Accounts.GetAccount(r.Context(), id)
	switch {
	case errors.Is(err, accounts.ErrNotFound):
		err = a.createUser(r, id, c)
		if err == nil {
			a.writeUser(w, r, id, http.StatusCreated)
			return
		}
	case err == nil:
		err = a.modifyUser(r, acc, c)
		if err == nil {
			a.writeUser(w, r, id, http.StatusOK)
			return
		}
	}
	a.fail(w, r, err)
}

func (a *API) createUser(r *http.Request, id string, c userChange) error {
	ctx := r.Context()
	req := accounts.RegisterRequest{Localpart: a.d.Accounts.Localpart(id), InhibitLogin: true}
	if c.password != nil {
		req.Password = *c.password
	}
	if c.displayName != nil {
		req.DisplayName = *c.displayName
	}
	if c.admin != nil {
		req.Admin = *c.admin
	}
	if _, err := a.d.Accounts.Register(ctx, req); err != nil {
		return err
	}
	if c.userType != nil {
		if err := a.d.Accounts.SetUserType(ctx, id, c.userType); err != nil {
			return err
		}
	}
	if c.avatarURL != nil && *c.avatarURL != "" {
		return a.setUserProfile(ctx, r, id, "avatar_url", *c.avatarURL)
	}
	return nil
}

// modifyUser applies a change in Synapse's order: profile, admin,
// password, deactivation and lock, user type.
func (a *API) modifyUser(r *http.Request, acc accounts.Account, c userChange) error {
	ctx, id := r.Context(), acc.UserID
	if c.displayName != nil {
		if err := a.setUserProfile(ctx, r, id, "displayname", *c.displayName); err != nil {
			return err
		}
	}
	if c.avatarURL != nil {
		if err := a.setUserProfile(ctx, r, id, "avatar_url", *c.avatarURL); err != nil {
			return err
		}
	}
	if c.admin != nil {
		if err := a.d.Accounts.SetAdminBy(ctx, a.requester(r), id, *c.admin); err != nil {
			return err
		}
	}
	if c.password != nil {
		if err := a.d.Accounts.ChangePassword(ctx, id, *c.password, "", c.logoutDevices); err != nil {
			return err
		}
	}
	// The lock is changed only on an active account: unlocking comes
	// before a deactivation, locking after a reactivation.
	setLock := func() error {
		if c.locked == nil || *c.locked == acc.Locked {
			return nil
		}
		return a.d.Accounts.SetLocked(ctx, a.requester(r), id, *c.locked)
	}
	if c.locked != nil && !*c.locked {
		if err := setLock(); err != nil {
			return err
		}
	}
	if c.deactivated != nil && *c.deactivated != acc.Deactivated {
		var err error
		if *c.deactivated {
			err = a.deactivateAndLeave(ctx, id, false)
		} else {
			err = a.d.Accounts.Reactivate(ctx, id)
		}
		if err != nil {
			return err
		}
	}
	if c.locked != nil && *c.locked {
		if err := setLock(); err != nil {
			return err
		}
	}
	if c.userTypeSet {
		return a.d.Accounts.SetUserType(ctx, id, c.userType)
	}
	return nil
}

// setUserProfile sets a profile field of a user ("" removes it, as Synapse's
// admin API does) and tells the rooms they are in.
func (a *API) setUserProfile(ctx context.Context, r *http.Request, id, key, value string) error {
	var raw json.RawMessage
	if value != "" {
		raw, _ = json.Marshal(value)
	}
	if err := a.d.Accounts.SetProfileField(ctx, a.requester(r), id, key, raw); err != nil {
		return err
	}
	if err := a.d.Rooms.UpdateMemberProfiles(ctx, id); err != nil {
		return err
	}
	if a.d.UserDir == nil {
		return nil
	}
	return a.d.UserDir.ProfileChanged(ctx, id)
}

// deactivate deactivates a user and takes them out of their rooms, as
// Synapse's admin deactivation does.
func (a *API) deactivateAndLeave(ctx context.Context, id string, erase bool) error {
	// Rooms are left while the account is still active: a failure then
	// leaves an account that can be deactivated again.
	joined, err := a.d.Rooms.JoinedRooms(ctx, id)
	if err != nil {
		return err
	}
	for _, roomID := range joined {
		if err := a.d.Rooms.Leave(ctx, id, roomID, ""); err != nil {
			// One room whose rules refuse the leave must not keep the
			// account alive.
			a.log.Warn("leaving room on deactivation", "user_id", id, "room_id", roomID, "err", err)
		}
	}
	return a.d.Accounts.DeactivateErase(ctx, id, erase)
}

func (a *API) deactivateUser(w http.ResponseWriter, r *http.Request) {
	acc, err := a.userAccount(r, "Can only deactivate local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body struct {
		Erase json.RawMessage `json:"erase"`
	}
	if err := mxhttp.DecodeOptionalJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	var erase bool
	if len(body.Erase) > 0 && json.Unmarshal(body.Erase, &erase) != nil {
		a.fail(w, r, mxhttp.BadJSON("Param 'erase' must be a boolean, if given"))
		return
	}
	if err := a.deactivateAndLeave(r.Context(), acc.UserID, erase); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"id_server_unbind_result": "no-support"})
}

func (a *API) resetPassword(w http.ResponseWriter, r *http.Request) {
	acc, err := a.userAccount(r, "Can only reset the password of local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body struct {
		NewPassword   *string `json:"new_password"`
		LogoutDevices *bool   `json:"logout_devices"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.NewPassword == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing params: ['new_password']"))
		return
	}
	logout := body.LogoutDevices == nil || *body.LogoutDevices
	if err := a.d.Accounts.ChangePassword(r.Context(), acc.UserID, *body.NewPassword, "", logout); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, struct{}{})
}

// whois is the client API's /admin/whois.
func (a *API) whois(w http.ResponseWriter, r *http.Request) {
	id, err := a.userPathID(r, "Can only whois a local user")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	who, err := a.d.Accounts.Whois(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, who)
}

func (a *API) getServerAdmin(w http.ResponseWriter, r *http.Request) {
	acc, err := a.userAccount(r, "Only local users can be admins of this homeserver")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]bool{"admin": acc.IsAdmin})
}

func (a *API) setServerAdmin(w http.ResponseWriter, r *http.Request) {
	id, err := a.userPathID(r, "Only local users can be admins of this homeserver")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body struct {
		Admin *bool `json:"admin"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.Admin == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing params: ['admin']"))
		return
	}
	if err := a.d.Accounts.SetAdminBy(r.Context(), a.requester(r), id, *body.Admin); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, struct{}{})
}

// userJoinedRooms lists the rooms a user is joined to; as in Synapse, a
// user the server does not know is in none.
func (a *API) userJoinedRooms(w http.ResponseWriter, r *http.Request) {
	id := pathParam(r, "userID")
	if !strings.HasPrefix(id, "@") || !strings.Contains(id, ":") {
		a.fail(w, r, mxhttp.InvalidParam("Invalid user id"))
		return
	}
	rooms, err := a.d.Rooms.JoinedRooms(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if rooms == nil {
		rooms = []string{}
	}
	ok(w, map[string]any{"joined_rooms": rooms, "total": len(rooms)})
}

// Devices.

type userDevice struct {
	DeviceID          string  `json:"device_id"`
	DisplayName       *string `json:"display_name,omitempty"`
	LastSeenIP        *string `json:"last_seen_ip"`
	LastSeenUserAgent *string `json:"last_seen_user_agent"`
	LastSeenTS        *int64  `json:"last_seen_ts"`
	UserID            string  `json:"user_id"`
	Dehydrated        bool    `json:"dehydrated"`
}

func toUserDevice(d accounts.Device) userDevice {
	out := userDevice{DeviceID: d.DeviceID, UserID: d.UserID, LastSeenTS: userLastSeen(d.LastSeenTS)}
	if d.DisplayName != "" {
		out.DisplayName = &d.DisplayName
	}
	if d.LastSeenIP != "" {
		out.LastSeenIP = &d.LastSeenIP
	}
	return out
}

func (a *API) listUserDevices(w http.ResponseWriter, r *http.Request) {
	acc, err := a.userAccount(r, "Can only lookup local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	devs, err := a.d.Accounts.ListDevices(r.Context(), acc.UserID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]userDevice, 0, len(devs))
	for _, d := range devs {
		out = append(out, toUserDevice(d))
	}
	ok(w, map[string]any{"devices": out, "total": len(out)})
}

func (a *API) createUserDevice(w http.ResponseWriter, r *http.Request) {
	acc, err := a.userAccount(r, "Can only create devices for local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body struct {
		DeviceID *string `json:"device_id"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.DeviceID == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing params: ['device_id']"))
		return
	}
	if _, err := a.d.Accounts.CreateDevice(r.Context(), acc.UserID, *body.DeviceID, nil); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, struct{}{})
}

func (a *API) getUserDevice(w http.ResponseWriter, r *http.Request) {
	acc, err := a.userAccount(r, "Can only lookup local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	d, err := a.d.Accounts.GetDevice(r.Context(), acc.UserID, pathParam(r, "deviceID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, toUserDevice(d))
}

func (a *API) updateUserDevice(w http.ResponseWriter, r *http.Request) {
	acc, err := a.userAccount(r, "Can only update devices of local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body struct {
		DisplayName *string `json:"display_name"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	deviceID := pathParam(r, "deviceID")
	if body.DisplayName == nil {
		_, err = a.d.Accounts.GetDevice(r.Context(), acc.UserID, deviceID)
	} else {
		err = a.d.Accounts.RenameDevice(r.Context(), acc.UserID, deviceID, *body.DisplayName)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, struct{}{})
}

// deleteUserDevice deletes a device; as in Synapse, deleting one that does
// not exist succeeds.
func (a *API) deleteUserDevice(w http.ResponseWriter, r *http.Request) {
	acc, err := a.userAccount(r, "Can only delete devices of local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.d.Accounts.DeleteDevices(r.Context(), acc.UserID, []string{pathParam(r, "deviceID")}); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, struct{}{})
}

func (a *API) deleteUserDevices(w http.ResponseWriter, r *http.Request) {
	acc, err := a.userAccount(r, "Can only delete devices of local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body struct {
		Devices *[]string `json:"devices"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.Devices == nil {
		a.fail(w, r, mxhttp.MissingParam("Missing params: ['devices']"))
		return
	}
	if err := a.d.Accounts.DeleteDevices(r.Context(), acc.UserID, *body.Devices); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, struct{}{})
}

// loginAsUser gives the admin an access token of the user, on a new device
// of theirs.
func (a *API) loginAsUser(w http.ResponseWriter, r *http.Request) {
	id, err := a.userPathID(r, "Only local users can be logged in as")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body struct {
		ValidUntilMS json.RawMessage `json:"valid_until_ms"`
	}
	if err := mxhttp.DecodeOptionalJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	var until int64
	if len(body.ValidUntilMS) > 0 && !bytes.Equal(body.ValidUntilMS, []byte("null")) {
		if json.Unmarshal(body.ValidUntilMS, &until) != nil || until < 0 {
			a.fail(w, r, mxhttp.Unknown("'valid_until_ms' parameter must be an int"))
			return
		}
	}
	token, err := a.d.Accounts.LoginAs(r.Context(), a.requester(r), id, until)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]string{"access_token": token})
}

func (a *API) shadowBan(banned bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := a.userPathID(r, "Only local users can be shadow-banned")
		if err == nil {
			err = a.d.Accounts.SetShadowBanned(r.Context(), id, banned)
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
		ok(w, struct{}{})
	}
}

// Rate limit overrides.

type rateOverrideJSON struct {
	MessagesPerSecond int64 `json:"messages_per_second"`
	BurstCount        int64 `json:"burst_count"`
}

func (a *API) getRateOverride(w http.ResponseWriter, r *http.Request) {
	id, err := a.userPathID(r, "Can only look up local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	o, found, err := a.d.Accounts.RateOverrideOf(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !found {
		ok(w, struct{}{})
		return
	}
	ok(w, rateOverrideJSON{MessagesPerSecond: o.MessagesPerSecond, BurstCount: o.BurstCount})
}

// userRateCount reads one field of the override: a non-negative integer,
// 0 when absent.
func userRateCount(v json.RawMessage) (int64, error) {
	if len(v) == 0 {
		return 0, nil
	}
	var n int64
	if json.Unmarshal(v, &n) != nil || n < 0 {
		return 0, mxhttp.InvalidParam("%s parameter must be a positive int", v)
	}
	return n, nil
}

func (a *API) setRateOverride(w http.ResponseWriter, r *http.Request) {
	id, err := a.userPathID(r, "Only local users can be ratelimited")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body struct {
		MessagesPerSecond json.RawMessage `json:"messages_per_second"`
		BurstCount        json.RawMessage `json:"burst_count"`
	}
	if err := mxhttp.DecodeOptionalJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	var o accounts.RateOverride
	if o.MessagesPerSecond, err = userRateCount(body.MessagesPerSecond); err == nil {
		o.BurstCount, err = userRateCount(body.BurstCount)
	}
	if err == nil {
		err = a.d.Accounts.SetRateOverride(r.Context(), id, o)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, rateOverrideJSON{MessagesPerSecond: o.MessagesPerSecond, BurstCount: o.BurstCount})
}

func (a *API) deleteRateOverride(w http.ResponseWriter, r *http.Request) {
	id, err := a.userPathID(r, "Only local users can be ratelimited")
	if err == nil {
		err = a.d.Accounts.DeleteRateOverride(r.Context(), id)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, struct{}{})
}

// usernameAvailable is the client API's /register/available, answered
// whether or not registration is open.
func (a *API) usernameAvailable(w http.ResponseWriter, r *http.Request) {
	username := r.URL.Query().Get("username")
	if username == "" {
		a.fail(w, r, mxhttp.MissingParam("Missing string query parameter 'username'"))
		return
	}
	if err := a.d.Accounts.CheckAvailable(r.Context(), username); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]bool{"available": true})
}

func (a *API) userAccountData(w http.ResponseWriter, r *http.Request) {
	acc, err := a.userAccount(r, "Can only look up local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	global, rooms, err := a.d.Store.AdminUserAccountData(r.Context(), acc.UserID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]any{"account_data": map[string]any{"global": global, "rooms": rooms}})
}

// suspendUser suspends or unsuspends a user through the account
// moderation of the accounts service, which refuses (403) to suspend
// oneself or another admin.
func (a *API) suspendUser(w http.ResponseWriter, r *http.Request) {
	acc, err := a.userAccount(r, "Can only suspend local users")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var body struct {
		Suspend *bool `json:"suspend"`
	}
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.Suspend == nil {
		a.fail(w, r, mxhttp.BadJSON("Missing suspend"))
		return
	}
	if err := a.d.Accounts.SetSuspended(r.Context(), a.requester(r), acc.UserID, *body.Suspend); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, map[string]bool{"user_" + acc.UserID + "_suspended": *body.Suspend})
}
