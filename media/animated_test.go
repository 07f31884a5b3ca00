package media_test

import (
	"bytes"
	"image/gif"
	"testing"

	"homeserver/internal/testserver"
)

// animated=false (or absent) must never answer with an animated image, even
// when the request is as large as a GIF original; animated=true may send
// the original.
func TestAnimatedParameter(t *testing.T) {
	// Resized thumbnails of any size, so that a smaller request is resized.
	s := testserver.Start(t, "dynamic_thumbnails: true\n")
	alice := s.Register("alice", "pw")
	src := thirds(60, 30)
	data := encodeGIF(t, src)
	id := upload(t, s, alice.Token, "image/gif", data, "")
	base := "/_matrix/client/v1/media/thumbnail/test.local/" + id + "?width=600&height=300&method=scale"
	for _, q := range []string{"", "&animated=false"} {
		r := request(t, s, "GET", base+q, alice.Token, "", nil)
		mustStatus(t, r, 200, "")
		if ct := r.Header.Get("Content-Type"); ct == "image/gif" {
			t.Fatalf("animated%q: got an animated type %s", q, ct)
		}
		if img := decodeAny(t, r.Header.Get("Content-Type"), r.Body); img.Bounds().Dx() != 60 || img.Bounds().Dy() != 30 {
			t.Fatalf("animated%q: %v, want the original size", q, img.Bounds())
		}
	}
	r := request(t, s, "GET", base+"&animated=true", alice.Token, "", nil)
	mustStatus(t, r, 200, "")
	if r.Header.Get("Content-Type") != "image/gif" || !bytes.Equal(r.Body, data) {
		t.Fatalf("animated=true: %s, %d bytes", r.Header.Get("Content-Type"), len(r.Body))
	}
	if _, err := gif.DecodeAll(bytes.NewReader(r.Body)); err != nil {
		t.Fatal(err)
	}
	// Smaller requests stay static whatever the parameter says.
	small := request(t, s, "GET", "/_matrix/client/v1/media/thumbnail/test.local/"+id+"?width=20&height=10&method=scale&animated=true", alice.Token, "", nil)
	mustStatus(t, small, 200, "")
	if small.Header.Get("Content-Type") == "image/gif" {
		t.Fatal("a resized thumbnail claims to be animated")
	}
}
