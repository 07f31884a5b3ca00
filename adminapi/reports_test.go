package adminapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

const reportsPath = mrdBase + "/v1/event_reports"

// reportEntries lists the reasons of a page of event reports.
func reportEntries(t *testing.T, r *testserver.Response) []string {
	t.Helper()
	list, ok := r.JSON["event_reports"].([]any)
	if !ok {
		t.Fatalf("no event_reports: %s", r.Body)
	}
	var out []string
	for _, e := range list {
		out = append(out, e.(map[string]any)["reason"].(string))
	}
	return out
}

func TestAdminEventReports(t *testing.T) {
	s := testserver.Start(t, "")
	admin := s.Register("admin", "pw")
	mrdMakeAdmin(t, s, admin)
	bob := s.Register("bob", "pw")
	carol := s.Register("carol", "pw")
	room := s.CreateRoom(bob, map[string]any{"preset": "public_chat", "name": "Report Room", "room_alias_name": "reported"})
	s.Join(carol, room)
	e1 := s.SendText(bob, room, "first")
	e2 := s.SendText(bob, room, "second")
	e3 := s.SendText(carol, room, "third")
	report := func(u testserver.User, eventID string, body map[string]any) {
		s.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/report/"+url.PathEscape(eventID)), u.Token, body)
		time.Sleep(3 * time.Millisecond) // distinct received_ts
	}
	report(carol, e1, map[string]any{"reason": "spam", "score": -100})
	report(carol, e2, map[string]any{"reason": "rude"})
	report(bob, e3, map[string]any{"reason": "off topic", "score": -50})
	// Reports of rooms and users are not event reports.
	s.MustDo(http.StatusOK, "POST", testserver.RoomPath(room, "/report"), carol.Token, map[string]any{"reason": "room"})
	s.MustDo(http.StatusOK, "POST", "/_matrix/client/v3/users/"+url.PathEscape(bob.ID)+"/report", carol.Token, map[string]any{"reason": "user"})

	r := s.MustDo(http.StatusOK, "GET", reportsPath, admin.Token, nil)
	if got := reportEntries(t, r); fmt.Sprint(got) != "[off topic rude spam]" || r.JSON["total"] != float64(3) || r.JSON["next_token"] != nil {
		t.Fatalf("list, most recent first: %v: %s", got, r.Body)
	}
	latest := r.JSON["event_reports"].([]any)[2].(map[string]any)
	want := map[string]any{
		"event_id": e1, "room_id": room, "name": "Report Room", "canonical_alias": "#reported:test.local",
		"user_id": carol.ID, "sender": bob.ID, "reason": "spam", "score": float64(-100),
	}
	for k, v := range want {
		if latest[k] != v {
			t.Errorf("%s = %v, want %v", k, latest[k], v)
		}
	}
	if ts, _ := latest["received_ts"].(float64); ts <= 0 {
		t.Errorf("received_ts = %v", latest["received_ts"])
	}
	id, _ := latest["id"].(string)
	if id == "" {
		t.Fatalf("no id: %v", latest)
	}

	for q, want := range map[string]string{
		"?dir=f":                    "[spam rude off topic]",
		"?limit=1":                  "[off topic]",
		"?from=1&limit=1":           "[rude]",
		"?user_id=carol":            "[rude spam]",
		"?room_id=" + room[1:6]:     "[off topic rude spam]",
		"?room_id=nosuchroom":       "[]",
		"?sender_user_id=" + bob.ID: "[rude spam]",
	} {
		r := s.MustDo(http.StatusOK, "GET", reportsPath+q, admin.Token, nil)
		if got := fmt.Sprint(reportEntries(t, r)); got != want {
			t.Errorf("%s: %s, want %s", q, got, want)
		}
	}
	r = s.MustDo(http.StatusOK, "GET", reportsPath+"?from=1&limit=1", admin.Token, nil)
	if r.JSON["next_token"] != float64(2) || r.JSON["total"] != float64(3) {
		t.Errorf("page 2: %s", r.Body)
	}
	r = s.MustDo(http.StatusOK, "GET", reportsPath+"?user_id=carol", admin.Token, nil)
	if r.JSON["total"] != float64(2) {
		t.Errorf("total of a filtered list: %s", r.Body)
	}

	one := s.MustDo(http.StatusOK, "GET", reportsPath+"/"+id, admin.Token, nil)
	ev, _ := one.JSON["event_json"].(map[string]any)
	content, _ := ev["content"].(map[string]any)
	if one.JSON["id"] != id || one.JSON["reason"] != "spam" || one.JSON["name"] != "Report Room" ||
		ev["type"] != "m.room.message" || ev["sender"] != bob.ID || content["body"] != "first" {
		t.Fatalf("report details: %s", one.Body)
	}

	for _, q := range []string{"?from=-1", "?limit=x", "?dir=up"} {
		mrdWantErr(t, s.Do("GET", reportsPath+q, admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	}
	mrdWantErr(t, s.Do("GET", reportsPath+"/not%20an%20id", admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	mrdWantErr(t, s.Do("DELETE", reportsPath+"/not%20an%20id", admin.Token, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	mrdWantErr(t, s.Do("GET", reportsPath+"/nosuchreport", admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, s.Do("GET", reportsPath, bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	mrdWantErr(t, s.Do("GET", reportsPath+"/"+id, bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")
	mrdWantErr(t, s.Do("DELETE", reportsPath+"/"+id, bob.Token, nil), http.StatusForbidden, "M_FORBIDDEN")

	s.MustDo(http.StatusOK, "DELETE", reportsPath+"/"+id, admin.Token, nil)
	mrdWantErr(t, s.Do("GET", reportsPath+"/"+id, admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	mrdWantErr(t, s.Do("DELETE", reportsPath+"/"+id, admin.Token, nil), http.StatusNotFound, "M_NOT_FOUND")
	r = s.MustDo(http.StatusOK, "GET", reportsPath, admin.Token, nil)
	if got := reportEntries(t, r); fmt.Sprint(got) != "[off topic rude]" || r.JSON["total"] != float64(2) {
		t.Fatalf("after delete: %s", r.Body)
	}
}
