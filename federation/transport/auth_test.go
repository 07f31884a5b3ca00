package transport_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"homeserver/federation/transport"
	"homeserver/mxhttp"
)

func TestParseXMatrix(t *testing.T) {
	tests := []struct {
		header string
		want   transport.XMatrix // zero: an error
	}{
		{`X-Matrix origin="a.test",destination="b.test",key="ed25519:k",sig="ABC+/d"`,
			transport.XMatrix{Origin: "a.test", Destination: "b.test", Key: "ed25519:k", Sig: "ABC+/d"}},
		// Case-insensitive scheme and names, several spaces, whitespace
		// around commas, unquoted values with colons, any order.
		{"x-matrix   SIG=ABC+/d= ,\tKey=ed25519:k , Origin=a.test:8448",
			transport.XMatrix{Origin: "a.test:8448", Key: "ed25519:k", Sig: "ABC+/d="}},
		{`X-Matrix origin="[::1]:8448",key="ed25519:k",sig="a\"b\\c"`,
			transport.XMatrix{Origin: "[::1]:8448", Key: "ed25519:k", Sig: `a"b\c`}},
		{`X-Matrix origin="a.test",key="ed25519:k",signature="xyz",unknown="ignored",other=x`,
			transport.XMatrix{Origin: "a.test", Key: "ed25519:k", Sig: "xyz"}},
		{`X-Matrix origin = "a.test" ,, key="ed25519:k",sig="s",`,
			transport.XMatrix{Origin: "a.test", Key: "ed25519:k", Sig: "s"}},
		{`X-Matrix origin="a.test",key="ed25519:k"`, transport.XMatrix{}},
		{`X-Matrix origin="a.test",sig="s"`, transport.XMatrix{}},
		{`X-Matrix key="ed25519:k",sig="s"`, transport.XMatrix{}},
		{`X-Matrix origin="",key="ed25519:k",sig="s"`, transport.XMatrix{}},
		{`X-Matrix origin="bad name",key="ed25519:k",sig="s"`, transport.XMatrix{}},
		{`X-Matrix origin="a.test",key="ed25519:k",sig="s`, transport.XMatrix{}},
		{`X-Matrix origin="a.test" key="ed25519:k",sig="s"`, transport.XMatrix{}},
		{`X-Matrix origin="a.test",origin="b.test",key="ed25519:k",sig="s"`, transport.XMatrix{}},
		{`X-Matrix origin="a.test",key,sig="s"`, transport.XMatrix{}},
		{`X-Matrix origin=a"b,key="ed25519:k",sig="s"`, transport.XMatrix{}},
		{`X-Matrix o(rigin="a.test",key="ed25519:k",sig="s"`, transport.XMatrix{}},
		{`X-Matrix`, transport.XMatrix{}},
		{`X-Matrix `, transport.XMatrix{}},
		{`Bearer abc`, transport.XMatrix{}},
		{`X-Matrixorigin="a.test",key="ed25519:k",sig="s"`, transport.XMatrix{}},
		{``, transport.XMatrix{}},
	}
	for _, tt := range tests {
		got, err := transport.ParseXMatrix(tt.header)
		if tt.want == (transport.XMatrix{}) {
			if err == nil {
				t.Errorf("ParseXMatrix(%q) = %+v, want an error", tt.header, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseXMatrix(%q) = %+v, %v, want %+v", tt.header, got, err, tt.want)
		}
	}
}

func TestXMatrixString(t *testing.T) {
	x := transport.XMatrix{Origin: "a.test:8448", Destination: "[::1]", Key: `ed25519:"odd\`, Sig: "abc/+"}
	s := x.String()
	if !strings.HasPrefix(s, `X-Matrix origin="a.test:8448",destination="[::1]",key=`) {
		t.Errorf("String() = %s", s)
	}
	if got, err := transport.ParseXMatrix(s); err != nil || got != x {
		t.Errorf("round trip: %+v, %v", got, err)
	}
	x.Destination = ""
	if s := x.String(); strings.Contains(s, "destination") {
		t.Errorf("empty destination written: %s", s)
	}
}

// signedRequest builds a request with the given Authorization headers.
func signedRequest(t *testing.T, method, uri, body string, auth ...string) *http.Request {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, uri, rd)
	for _, a := range auth {
		r.Header.Add("Authorization", a)
	}
	return r
}

func TestVerifyRequest(t *testing.T) {
	origin := testKey("origin.test", 1)
	forger := testKey("origin.test", 2) // same key ID as nothing known
	forger.KeyID = origin.KeyID
	keys := keyring(origin)
	const us = "us.test"
	const uri = "/_matrix/federation/v1/send/txn1?x=%40a%3Ab"
	const body = `{"pdus":[],"edus":[{"edu_type":"m.typing","content":{"n":1}}]}`
	sign := func(key string, method, uri, dest, body string) string {
		t.Helper()
		k := origin
		if key == "forger" {
			k = forger
		}
		var content []byte
		if body != "" {
			content = []byte(body)
		}
		h, err := transport.SignRequest(k, method, uri, dest, content)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	good := sign("origin", "PUT", uri, us, body)
	x, _ := transport.ParseXMatrix(good)
	x.Destination = ""
	noDest := x.String()
	x.Key = "ed25519:unknown"
	unknownKey := x.String()
	get := sign("origin", "GET", "/_matrix/federation/v1/version", us, "")

	tests := []struct {
		name    string
		req     *http.Request
		status  int    // 0: verified
		message string // part of the error message
	}{
		{"good", signedRequest(t, "PUT", uri, body, good), 0, ""},
		{"good GET", signedRequest(t, "GET", "/_matrix/federation/v1/version", "", get), 0, ""},
		{"reformatted body", signedRequest(t, "PUT", uri, " {\n\"edus\":[{\"content\":{\"n\":1},\"edu_type\":\"m.typing\"}], \"pdus\":[]}", good), 0, ""},
		{"no destination param", signedRequest(t, "PUT", uri, body, noDest), 0, ""},
		{"second header valid", signedRequest(t, "PUT", uri, body, "X-Matrix garbage", good), 0, ""},
		{"first header valid", signedRequest(t, "PUT", uri, body, good, unknownKey), 0, ""},
		{"missing header", signedRequest(t, "PUT", uri, body), 401, "Missing"},
		{"bearer only", signedRequest(t, "PUT", uri, body, "Bearer abc"), 401, "Missing"},
		{"malformed", signedRequest(t, "PUT", uri, body, `X-Matrix origin="origin.test"`), 401, "Malformed"},
		{"wrong destination", signedRequest(t, "PUT", uri, body, sign("origin", "PUT", uri, "them.test", body)), 401, "destination"},
		{"signed for another destination", signedRequest(t, "PUT", uri, body, func() string {
			x, _ := transport.ParseXMatrix(sign("origin", "PUT", uri, "them.test", body))
			x.Destination = ""
			return x.String()
		}()), 401, "Invalid signature"},
		{"unknown key", signedRequest(t, "PUT", uri, body, unknownKey), 401, "Unknown key"},
		{"forged", signedRequest(t, "PUT", uri, body, sign("forger", "PUT", uri, us, body)), 401, "Invalid signature"},
		{"tampered body", signedRequest(t, "PUT", uri, strings.Replace(body, `"n":1`, `"n":2`, 1), good), 401, "Invalid signature"},
		{"body removed", signedRequest(t, "PUT", uri, "", good), 401, "Invalid signature"},
		{"tampered query", signedRequest(t, "PUT", strings.Replace(uri, "x=", "y=", 1), body, good), 401, "Invalid signature"},
		{"tampered method", signedRequest(t, "POST", uri, body, good), 401, "Invalid signature"},
		{"body not JSON", signedRequest(t, "PUT", uri, "{not json", good), 400, "not JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, _ := io.ReadAll(tt.req.Body)
			got, err := transport.VerifyRequest(context.Background(), tt.req, b, us, keys)
			if tt.status == 0 {
				if err != nil || got != "origin.test" {
					t.Fatalf("got %q, %v", got, err)
				}
				return
			}
			var me *mxhttp.Error
			if !errors.As(err, &me) || me.Status != tt.status || !strings.Contains(me.Message, tt.message) {
				t.Fatalf("got %q, %v; want %d %q", got, err, tt.status, tt.message)
			}
			if tt.status == 401 && me.Code != "M_UNAUTHORIZED" {
				t.Errorf("errcode %s", me.Code)
			}
		})
	}
}

func TestMiddleware(t *testing.T) {
	origin := testKey("origin.test", 1)
	const us = "us.test"
	var called int
	h := transport.Middleware(us, keyring(origin), 64)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called++
		again, _ := io.ReadAll(r.Body)
		if transport.Origin(r.Context()) != "origin.test" || string(transport.Body(r.Context())) != string(again) {
			t.Errorf("origin %q, body %q, r.Body %q", transport.Origin(r.Context()), transport.Body(r.Context()), again)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	body := `{"a":1}`
	auth, err := transport.SignRequest(origin, "PUT", "/x", us, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	large := `{"a":"` + strings.Repeat("x", 100) + `"}`
	bigAuth, _ := transport.SignRequest(origin, "PUT", "/x", us, []byte(large))
	tests := []struct {
		name    string
		body    string
		auth    string
		chunked bool
		status  int
		errcode string
	}{
		{"valid", body, auth, false, http.StatusNoContent, ""},
		{"too large", large, bigAuth, false, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{"too large chunked", large, bigAuth, true, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		{"unsigned", body, "", false, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"bad signature", `{"a":2}`, auth, false, http.StatusUnauthorized, "M_UNAUTHORIZED"},
	}
	for _, tt := range tests {
		called = 0
		r := httptest.NewRequest("PUT", "/x", strings.NewReader(tt.body))
		if tt.chunked {
			r.ContentLength = -1
		}
		if tt.auth != "" {
			r.Header.Set("Authorization", tt.auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.status {
			t.Errorf("%s: status %d, want %d (%s)", tt.name, w.Code, tt.status, w.Body)
			continue
		}
		if tt.errcode != "" {
			var e struct{ Errcode string }
			if json.Unmarshal(w.Body.Bytes(), &e); e.Errcode != tt.errcode || called != 0 {
				t.Errorf("%s: errcode %q, handler called %d times", tt.name, e.Errcode, called)
			}
		} else if called != 1 {
			t.Errorf("%s: handler called %d times", tt.name, called)
		}
	}
	if transport.Origin(context.Background()) != "" || transport.Body(context.Background()) != nil {
		t.Error("Origin/Body outside a request")
	}
}
