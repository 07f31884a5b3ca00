package media_test

import (
	"fmt"
	"testing"

	"homeserver/internal/testserver"
)

// thumbnailsMade asks for each default thumbnail size of id, so that all
// are stored (made on request, or waited for while the background worker
// makes them) and nothing is being made any more.
func thumbnailsMade(t testing.TB, s *testserver.Server, token, id string) {
	t.Helper()
	for _, q := range []string{"width=32&height=32&method=crop", "width=96&height=96&method=crop",
		"width=320&height=240&method=scale", "width=640&height=480&method=scale", "width=800&height=600&method=scale"} {
		mustStatus(t, request(t, s, "GET", "/_matrix/client/v1/media/thumbnail/test.local/"+id+"?"+q, token, "", nil), 200, "")
	}
}

// Over HTTP: an upload answers, and every default thumbnail is then served
// whole and of its size, whether the background worker made it already,
// is making it, or has not started.
func TestThumbnailsAfterUpload(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	for i := range 3 {
		id := upload(t, s, alice.Token, "image/jpeg", encodeJPEG(t, thirds(1200+i, 900)), "")
		for _, sz := range []struct{ w, h, wantW, wantH int }{{800, 600, 800, 600}, {96, 96, 96, 96}, {32, 32, 32, 32}} {
			method := "scale"
			if sz.w < 100 {
				method = "crop"
			}
			r := request(t, s, "GET", fmt.Sprintf("/_matrix/client/v1/media/thumbnail/test.local/%s?width=%d&height=%d&method=%s", id, sz.w, sz.h, method), alice.Token, "", nil)
			mustStatus(t, r, 200, "")
			b := decodeAny(t, r.Header.Get("Content-Type"), r.Body).Bounds()
			if b.Dx() > sz.wantW || b.Dy() > sz.wantH || b.Dx() < sz.wantW-2 && b.Dy() < sz.wantH-2 {
				t.Errorf("%dx%d %s: got %dx%d", sz.w, sz.h, method, b.Dx(), b.Dy())
			}
		}
	}
}
