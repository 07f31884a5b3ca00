package media_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"homeserver/internal/testserver"
)

func TestUploadQuota(t *testing.T) {
	s := testserver.Start(t, "media_upload_limits:\n  - time_period: 1h\n    max_size: 1K\n  - time_period: 1d\n    max_size: 10K\n")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	const up = "/_matrix/media/v3/upload"

	mustStatus(t, request(t, s, "POST", up, alice.Token, "text/plain", make([]byte, 600)), 200, "")
	// 600 + 600 > 1K: refused as the spec says for quotas, 403 M_FORBIDDEN.
	mustStatus(t, request(t, s, "POST", up, alice.Token, "text/plain", make([]byte, 600)), 403, "M_FORBIDDEN")
	// Others have their own quota.
	mustStatus(t, request(t, s, "POST", up, bob.Token, "text/plain", make([]byte, 1000)), 200, "")
	// What is left can still be used.
	mustStatus(t, request(t, s, "POST", up, alice.Token, "text/plain", make([]byte, 424)), 200, "")

	// Without a Content-Length the quota applies while reading.
	req, _ := http.NewRequest("POST", s.URL+up, io.MultiReader(bytes.NewReader(make([]byte, 200))))
	req.Header.Set("Authorization", "Bearer "+bob.Token)
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("streamed upload over quota: %d", resp.StatusCode)
	}
	// Alice is exactly at her quota: even one byte is refused, on the
	// create-then-PUT path too.
	mustStatus(t, request(t, s, "POST", up, alice.Token, "text/plain", []byte("x")), 403, "M_FORBIDDEN")
	c := request(t, s, "POST", "/_matrix/media/v1/create", alice.Token, "", nil)
	mustStatus(t, c, 200, "")
	u, _ := url.Parse(c.String("content_uri"))
	mustStatus(t, request(t, s, "PUT", "/_matrix/media/v3/upload/"+u.Host+u.Path, alice.Token, "text/plain", []byte("x")), 403, "M_FORBIDDEN")
}

func TestPreviewURLDisabled(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	for _, p := range []string{"/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url", "/_matrix/media/r0/preview_url"} {
		mustStatus(t, request(t, s, "GET", p+"?url=https%3A%2F%2Fexample.org%2F", alice.Token, "", nil), 404, "M_UNRECOGNIZED")
	}
}

func TestPreviewURLEnabled(t *testing.T) {
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<title>Hello</title>`)
	}))
	defer page.Close()
	const enable = "url_preview_enabled: true\nurl_preview_ip_range_blacklist: ['127.0.0.0/8', '::1/128']\n"
	q := "?url=" + url.QueryEscape(page.URL) + "&ts=1700000000000"

	s := testserver.Start(t, enable)
	alice := s.Register("alice", "pw")
	mustStatus(t, request(t, s, "GET", "/_matrix/client/v1/media/preview_url"+q, "", "", nil), 401, "M_MISSING_TOKEN")
	r := request(t, s, "GET", "/_matrix/client/v1/media/preview_url"+q, alice.Token, "", nil)
	mustStatus(t, r, 403, "M_UNKNOWN")
	mustStatus(t, request(t, s, "GET", "/_matrix/media/v3/preview_url?url=ftp%3A%2F%2Fx", alice.Token, "", nil), 400, "M_INVALID_PARAM")
	mustStatus(t, request(t, s, "GET", "/_matrix/media/v3/preview_url", alice.Token, "", nil), 400, "M_MISSING_PARAM")

	s2 := testserver.Start(t, enable+"url_preview_ip_range_whitelist: ['127.0.0.1']\n")
	bob := s2.Register("bob", "pw")
	for _, p := range []string{"/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url", "/_matrix/media/r0/preview_url"} {
		r := request(t, s2, "GET", p+q, bob.Token, "", nil)
		mustStatus(t, r, 200, "")
		if r.JSON["og:title"] != "Hello" {
			t.Errorf("%s: %s", p, r.Body)
		}
	}
}
