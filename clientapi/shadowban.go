package clientapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"sync"

	"homeserver/accounts"
	"homeserver/mxhttp"
	"homeserver/ratelimit"
)

// shadowBanRoutes are what a shadow-banned user believes they do while
// nobody sees it, as in Synapse: room sends, state events and invites.
var shadowBanRoutes = clientRouteMux(func(add func(method, pattern string)) {
	add(http.MethodPut, "/rooms/{roomID}/send/{eventType}/{txnID}")
	add(http.MethodPost, "/rooms/{roomID}/send/{eventType}")
	add(http.MethodPut, "/rooms/{roomID}/state/{eventType}")
	add(http.MethodPut, "/rooms/{roomID}/state/{eventType}/*")
	add(http.MethodPost, "/rooms/{roomID}/invite")
})

// shadowBanned answers, for a shadow-banned user (an admin's shadow_ban),
// the requests of shadowBanRoutes as if they had succeeded, with a made-up
// event ID, and acts on none of them. A malformed body is still refused as
// the handler would. It reports whether it answered; when it did not, the
// body is left for the handler.
func (a *API) shadowBanned(w http.ResponseWriter, r *http.Request, req *accounts.Requester) bool {
	if !req.ShadowBanned {
		return false
	}
	param, matched := matchRoute(shadowBanRoutes, r)
	if !matched {
		return false
	}
	body, err := mxhttp.ReadBody(r, mxhttp.DefaultBodyLimit)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		a.fail(w, r, err)
		return true
	}
	var content map[string]json.RawMessage
	if err := mxhttp.Unmarshal(body, &content); err != nil {
		a.fail(w, r, err)
		return true
	}
	if r.Method == http.MethodPost && param("eventType") == "" { // invite
		if _, ok := content["user_id"]; !ok {
			a.fail(w, r, mxhttp.MissingParam("Missing user_id"))
			return true
		}
		ok(w, empty)
		return true
	}
	if param("eventType") == "m.room.member" {
		// Only invites are dropped; joins, leaves and the rest go through.
		var m struct {
			Membership string `json:"membership"`
		}
		if json.Unmarshal(body, &m) != nil || m.Membership != "invite" {
			return false
		}
	}
	ok(w, map[string]string{"event_id": "$" + accounts.RandomString(43, fakeEventIDAlphabet)})
	return true
}

const fakeEventIDAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// messageOverrides are the limiters of users whose rc_message an admin
// overrode (override_ratelimit), one per distinct override.
type messageOverrides struct{ m sync.Map }

// limiter is rc_message for the requester: their override's, or nil
// (no limit) for an override of 0 messages per second.
func (o *messageOverrides) limiter(def *ratelimit.Limiter, r *http.Request) *ratelimit.Limiter {
	me := requester(r)
	if me == nil || me.MessageRate == nil {
		return def
	}
	rate := *me.MessageRate
	if rate.MessagesPerSecond == 0 {
		return nil
	}
	if l, found := o.m.Load(rate); found {
		return l.(*ratelimit.Limiter)
	}
	l, _ := o.m.LoadOrStore(rate, ratelimit.New(float64(rate.MessagesPerSecond), int(rate.BurstCount)))
	return l.(*ratelimit.Limiter)
}
