package media_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"homeserver/internal/fedtest"
	"homeserver/internal/testserver"
)

// Without dynamic_thumbnails, requests of any size are served the nearest
// configured thumbnail: nothing new is decoded or stored.
func TestThumbnailSizesBounded(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	id := upload(t, s, alice.Token, "image/jpeg", encodeJPEG(t, thirds(900, 600)), "")
	thumbnailsMade(t, s, alice.Token, id)
	before := len(contentFiles(t, s))
	configured := map[[2]int]bool{{32, 32}: true, {96, 96}: true, {320, 213}: true, {640, 427}: true, {800, 533}: true}
	for i := range 20 {
		method := "scale"
		if i%2 == 0 {
			method = "crop"
		}
		w, h := 37+41*i, 29+23*i
		r := request(t, s, "GET", fmt.Sprintf("/_matrix/client/v1/media/thumbnail/test.local/%s?width=%d&height=%d&method=%s", id, w, h, method), alice.Token, "", nil)
		mustStatus(t, r, 200, "")
		b := decodeAny(t, r.Header.Get("Content-Type"), r.Body).Bounds()
		if !configured[[2]int{b.Dx(), b.Dy()}] {
			t.Errorf("%dx%d %s: got %dx%d, not a configured size", w, h, method, b.Dx(), b.Dy())
		}
	}
	if after := len(contentFiles(t, s)); after != before {
		t.Errorf("20 thumbnail requests stored %d files", after-before)
	}
}

// With dynamic_thumbnails, the requested size is made, kept, and the
// making is rate-limited per requester; stored sizes are always served.
func TestDynamicThumbnails(t *testing.T) {
	s := testserver.Start(t, "dynamic_thumbnails: true\nrc_media_thumbnail: {per_second: 0.001, burst_count: 3}\n")
	alice, bob := s.Register("alice", "pw"), s.Register("bob", "pw")
	id := upload(t, s, alice.Token, "image/jpeg", encodeJPEG(t, thirds(900, 600)), "")
	path := func(w, h int) string {
		return fmt.Sprintf("/_matrix/client/v1/media/thumbnail/test.local/%s?width=%d&height=%d&method=crop", id, w, h)
	}
	thumbnailsMade(t, s, alice.Token, id) // not counted: they are the upload's
	before := len(contentFiles(t, s))
	first := request(t, s, "GET", path(450, 450), alice.Token, "", nil)
	mustStatus(t, first, 200, "")
	if b := decodeAny(t, "image/jpeg", first.Body).Bounds(); b.Dx() != 450 || b.Dy() != 450 {
		t.Errorf("dynamic thumbnail %v", b)
	}
	afterFirst := len(contentFiles(t, s))
	second := request(t, s, "GET", path(450, 450), alice.Token, "", nil)
	if !bytes.Equal(first.Body, second.Body) || afterFirst != before+1 || len(contentFiles(t, s)) != afterFirst {
		t.Errorf("cached thumbnail: files %d → %d → %d, same bytes %v", before, afterFirst, len(contentFiles(t, s)), bytes.Equal(first.Body, second.Body))
	}
	mustStatus(t, request(t, s, "GET", path(451, 451), alice.Token, "", nil), 200, "")
	mustStatus(t, request(t, s, "GET", path(452, 452), alice.Token, "", nil), 200, "")
	r := request(t, s, "GET", path(453, 453), alice.Token, "", nil)
	mustStatus(t, r, 429, "M_LIMIT_EXCEEDED")
	if r.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	// What is stored is still served; another user has a budget of their own.
	mustStatus(t, request(t, s, "GET", path(450, 450), alice.Token, "", nil), 200, "")
	mustStatus(t, request(t, s, "GET", path(453, 453), bob.Token, "", nil), 200, "")
}

// setAuthenticatedMedia restarts a test server with
// enable_authenticated_media set to on.
func setAuthenticatedMedia(t *testing.T, s *testserver.Server, on bool) {
	t.Helper()
	path := filepath.Join(s.Dir, "homeserver.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	yaml := strings.ReplaceAll(string(data), "enable_authenticated_media: false\n", "")
	if !on {
		yaml += "enable_authenticated_media: false\n"
	}
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Restart()
}

// enable_authenticated_media (on by default) keeps media stored while it is
// on away from the legacy unauthenticated endpoints; media stored while it
// was off stays there.
func TestLegacyEndpointsFrozen(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	img := encodePNG(t, thirds(90, 60))
	newID := upload(t, s, alice.Token, "image/png", img, "")
	legacy := func(id string) []string {
		return []string{
			"/_matrix/media/v3/download/test.local/" + id,
			"/_matrix/media/r0/download/test.local/" + id + "/name.png",
			"/_matrix/media/v3/thumbnail/test.local/" + id + "?width=32&height=32&method=crop",
		}
	}
	for _, p := range legacy(newID) {
		mustStatus(t, request(t, s, "GET", p, "", "", nil), 404, "M_NOT_FOUND")
	}
	mustStatus(t, request(t, s, "GET", "/_matrix/client/v1/media/download/test.local/"+newID, alice.Token, "", nil), 200, "")
	mustStatus(t, request(t, s, "GET", "/_matrix/client/v1/media/thumbnail/test.local/"+newID+"?width=32&height=32&method=crop", alice.Token, "", nil), 200, "")
	// Created ahead: no waiting on the legacy endpoints either.
	r := request(t, s, "POST", "/_matrix/media/v1/create", alice.Token, "", nil)
	mustStatus(t, r, 200, "")
	pending := r.String("content_uri")[len("mxc://test.local/"):]
	mustStatus(t, request(t, s, "GET", "/_matrix/media/v3/download/test.local/"+pending+"?timeout_ms=0", "", "", nil), 404, "M_NOT_FOUND")

	// Turned off: everything is served there, and what is stored now
	// stays served when it is turned on again.
	setAuthenticatedMedia(t, s, false)
	for _, p := range legacy(newID) {
		mustStatus(t, request(t, s, "GET", p, "", "", nil), 200, "")
	}
	oldID := upload(t, s, alice.Token, "image/png", img, "?filename=old.png")
	setAuthenticatedMedia(t, s, true)
	for _, p := range legacy(oldID) {
		mustStatus(t, request(t, s, "GET", p, "", "", nil), 200, "")
	}
	r = request(t, s, "GET", legacy(oldID)[0], "", "", nil)
	if !bytes.Equal(r.Body, img) {
		t.Error("legacy download: bytes differ")
	}
	mustStatus(t, request(t, s, "GET", legacy(newID)[0], "", "", nil), 404, "M_NOT_FOUND")
}

// A federation download answered with a Location is fetched from there:
// a fake peer redirects to a plain HTTP server on loopback (which the
// test servers' empty ip_range_blacklist allows).
func TestRemoteMediaLocation(t *testing.T) {
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/signed/cat.png":
			w.Header().Set("Content-Type", "image/png")
			w.Header().Set("Content-Disposition", `inline; filename="cat.png"`)
			_, _ = w.Write(encodePNG(t, thirds(90, 60)))
		case "/hop":
			http.Redirect(w, r, "/signed/cat.png", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer cdn.Close()
	ca, err := fedtest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/federation/v1/media/download/{mediaId}", func(w http.ResponseWriter, r *http.Request) {
		loc := cdn.URL + "/signed/cat.png"
		if r.PathValue("mediaId") == "hop" {
			loc = cdn.URL + "/hop"
		}
		w.Header().Set("Content-Type", "multipart/mixed; boundary=b")
		_, _ = io.WriteString(w, "--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\nLocation: "+loc+"\r\n\r\n\r\n--b--\r\n")
	})
	cert, err := ca.TLSCertificate("peer.test")
	if err != nil {
		t.Fatal(err)
	}
	peer := httptest.NewUnstartedServer(mux)
	peer.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	peer.StartTLS()
	defer peer.Close()

	f := testserver.NewFederationWith(t, testserver.FederationOptions{CA: ca, Peers: map[string]string{"peer.test": peer.Listener.Addr().String()}}, "hs1.test")
	hs1 := f.Servers["hs1.test"]
	alice := hs1.Register("alice", "pw")
	r := request(t, hs1, "GET", "/_matrix/client/v1/media/download/peer.test/abc", alice.Token, "", nil)
	mustStatus(t, r, 200, "")
	if !bytes.Equal(r.Body, encodePNG(t, thirds(90, 60))) || r.Header.Get("Content-Type") != "image/png" || r.Header.Get("Content-Disposition") != "inline; filename=cat.png" {
		t.Errorf("download: %q %q, %d bytes", r.Header.Get("Content-Type"), r.Header.Get("Content-Disposition"), len(r.Body))
	}
	r = request(t, hs1, "GET", "/_matrix/client/v1/media/thumbnail/peer.test/abc?width=32&height=32&method=crop", alice.Token, "", nil)
	mustStatus(t, r, 200, "")
	// One hop only.
	mustStatus(t, request(t, hs1, "GET", "/_matrix/client/v1/media/download/peer.test/hop", alice.Token, "", nil), 502, "M_UNKNOWN")
}
