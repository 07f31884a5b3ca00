package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
	"homeserver/push"
)

func (a *API) pushRoutes(r chi.Router) {
	r.Get("/pushrules/", a.getAllPushRules)
	r.Get("/pushrules", a.getAllPushRules)
	r.Get("/pushrules/{scope}/", a.getPushRulesScope)
	r.Get("/pushrules/{scope}", a.getPushRulesScope)
	r.Get("/pushrules/{scope}/{kind}/", a.getPushRulesKind)
	r.Get("/pushrules/{scope}/{kind}", a.getPushRulesKind)
	r.Get("/pushrules/{scope}/{kind}/{ruleID}", a.getPushRule)
	r.Put("/pushrules/{scope}/{kind}/{ruleID}", a.putPushRule)
	r.Delete("/pushrules/{scope}/{kind}/{ruleID}", a.deletePushRule)
	r.Get("/pushrules/{scope}/{kind}/{ruleID}/{attr}", a.getPushRuleAttr)
	r.Put("/pushrules/{scope}/{kind}/{ruleID}/{attr}", a.putPushRuleAttr)
	r.Get("/pushers", a.getPushers)
	r.Post("/pushers/set", a.setPusher)
	r.Get("/notifications", a.getNotifications)
}

// pushPath checks the scope (only "global" exists) and, when withKind, the
// kind.
func pushPath(r *http.Request, withKind bool) (string, error) {
	if pathParam(r, "scope") != "global" {
		return "", mxhttp.InvalidParam("Unknown push rule scope %q", pathParam(r, "scope"))
	}
	kind := pathParam(r, "kind")
	if withKind && !push.ValidKind(kind) {
		return "", mxhttp.InvalidParam("Unknown push rule kind %q", kind)
	}
	return kind, nil
}

func (a *API) getAllPushRules(w http.ResponseWriter, r *http.Request) {
	rs, err := a.push.Rules(r.Context(), requester(r).UserID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, push.MarshalRuleset(rs))
}

func (a *API) getPushRulesScope(w http.ResponseWriter, r *http.Request) {
	if _, err := pushPath(r, false); err != nil {
		a.fail(w, r, err)
		return
	}
	rs, err := a.push.Rules(r.Context(), requester(r).UserID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, rs)
}

func (a *API) getPushRulesKind(w http.ResponseWriter, r *http.Request) {
	kind, err := pushPath(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rs, err := a.push.Rules(r.Context(), requester(r).UserID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rules := rs.Kind(kind)
	if rules == nil {
		rules = []push.Rule{}
	}
	ok(w, rules)
}

func (a *API) getPushRule(w http.ResponseWriter, r *http.Request) {
	kind, err := pushPath(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rule, err := a.push.Rule(r.Context(), requester(r).UserID, kind, pathParam(r, "ruleID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, rule)
}

func (a *API) putPushRule(w http.ResponseWriter, r *http.Request) {
	kind, err := pushPath(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var req push.PutRuleRequest
	if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	if err := a.push.PutRule(r.Context(), requester(r).UserID, kind, pathParam(r, "ruleID"), q.Get("before"), q.Get("after"), req); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) deletePushRule(w http.ResponseWriter, r *http.Request) {
	kind, err := pushPath(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.push.DeleteRule(r.Context(), requester(r).UserID, kind, pathParam(r, "ruleID")); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) getPushRuleAttr(w http.ResponseWriter, r *http.Request) {
	kind, err := pushPath(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	attr := pathParam(r, "attr")
	if attr != "enabled" && attr != "actions" {
		a.fail(w, r, mxhttp.Unrecognized("Unrecognized request"))
		return
	}
	rule, err := a.push.Rule(r.Context(), requester(r).UserID, kind, pathParam(r, "ruleID"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if attr == "enabled" {
		ok(w, map[string]any{"enabled": rule.Enabled})
		return
	}
	actions := rule.Actions
	if actions == nil {
		actions = []any{}
	}
	ok(w, map[string]any{"actions": actions})
}

func (a *API) putPushRuleAttr(w http.ResponseWriter, r *http.Request) {
	kind, err := pushPath(r, true)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	user, ruleID := requester(r).UserID, pathParam(r, "ruleID")
	switch pathParam(r, "attr") {
	case "enabled":
		var body struct {
			Enabled *bool `json:"enabled"`
		}
		if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
			a.fail(w, r, err)
			return
		}
		if body.Enabled == nil {
			a.fail(w, r, mxhttp.MissingParam("Missing enabled"))
			return
		}
		err = a.push.SetEnabled(r.Context(), user, kind, ruleID, *body.Enabled)
	case "actions":
		var body struct {
			Actions []any `json:"actions"`
		}
		if err := mxhttp.DecodeJSON(r, mxhttp.DefaultBodyLimit, &body); err != nil {
			a.fail(w, r, err)
			return
		}
		err = a.push.SetActions(r.Context(), user, kind, ruleID, body.Actions)
	default:
		err = mxhttp.Unrecognized("Unrecognized request")
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

type pusherJSON struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

func (a *API) getPushers(w http.ResponseWriter, r *http.Request) {
	ps, err := a.push.Pushers(r.Context(), requester(r).UserID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]pusherJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, pusherJSON{PushKey: p.PushKey, Kind: p.Kind, AppID: p.AppID, AppDisplayName: p.AppDisplayName,
			DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag, Lang: p.Lang, Data: p.Data})
	}
	ok(w, map[string]any{"pushers": out})
}

func (a *API) setPusher(w http.ResponseWriter, r *http.Request) {
	body, err := mxhttp.ReadBody(r, mxhttp.DefaultBodyLimit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	// "kind": null deletes; an absent kind is a missing parameter.
	var probe map[string]json.RawMessage
	if err := mxhttp.Unmarshal(body, &probe); err != nil {
		a.fail(w, r, err)
		return
	}
	if _, has := probe["kind"]; !has {
		a.fail(w, r, mxhttp.MissingParam("Missing kind"))
		return
	}
	var req push.SetPusherRequest
	if err := mxhttp.Unmarshal(body, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	me := requester(r)
	if err := a.push.SetPusher(r.Context(), me.UserID, me.DeviceID, req); err != nil {
		a.fail(w, r, err)
		return
	}
	ok(w, empty)
}

func (a *API) getNotifications(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var from int64
	if s := q.Get("from"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			a.fail(w, r, mxhttp.InvalidParam("Invalid from token"))
			return
		}
		from = v
	}
	limit := 0
	if s := q.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			a.fail(w, r, mxhttp.InvalidParam("Invalid limit"))
			return
		}
		limit = v
	}
	user := requester(r).UserID
	ns, err := a.push.Notifications(r.Context(), user, from, limit, q.Get("only") == "highlight")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]map[string]any, 0, len(ns))
	for _, n := range ns {
		ev, err := a.rooms.GetEvent(r.Context(), user, n.RoomID, n.EventID)
		if err != nil {
			continue // no longer visible
		}
		out = append(out, map[string]any{
			"actions": n.Actions, "event": ev, "read": n.Read, "room_id": n.RoomID, "ts": n.TS,
		})
	}
	resp := map[string]any{"notifications": out}
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	if len(ns) == limit {
		resp["next_token"] = strconv.FormatInt(ns[len(ns)-1].ID, 10)
	}
	ok(w, resp)
}
