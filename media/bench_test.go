package media_test

import (
	"crypto/rand"
	"fmt"
	"image"
	"testing"

	"homeserver/internal/testserver"
)

// BenchmarkUpload measures POST /_matrix/media/v3/upload of 8 MiB of random
// (non-image) bytes over a loopback socket: hashing, writing, fsync, rename
// and the database row. Each iteration's bytes differ, so none deduplicate.
func BenchmarkUpload(b *testing.B) {
	s := testserver.Start(b, "")
	alice := s.Register("alice", "pw")
	const size = 8 << 20
	data := make([]byte, size)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		_, _ = rand.Read(data[:64])
		b.StartTimer()
		r := request(b, s, "POST", "/_matrix/media/v3/upload", alice.Token, "application/octet-stream", data)
		if r.Status != 200 {
			b.Fatalf("upload: %d %s", r.Status, r.Body)
		}
	}
}

// photo is a 4000×3000 (12-megapixel) picture with gradients, so that its
// JPEG is of realistic size (not a flat colour).
func photo() image.Image {
	img := image.NewYCbCr(image.Rect(0, 0, 4000, 3000), image.YCbCrSubsampleRatio420)
	for y := 0; y < 3000; y++ {
		for x := 0; x < 4000; x++ {
			img.Y[y*img.YStride+x] = uint8((x*7 + y*3) ^ (x * y >> 6))
		}
	}
	for y := 0; y < 1500; y++ {
		for x := 0; x < 2000; x++ {
			img.Cb[y*img.CStride+x] = uint8(x / 8)
			img.Cr[y*img.CStride+x] = uint8(y / 6)
		}
	}
	return img
}

// BenchmarkThumbnail12MP measures thumbnails of a 12-megapixel JPEG:
// "upload" is the upload itself, which also makes the five default sizes;
// "first" asks each time for a size not made yet (decode, resize, encode,
// store); "cached" asks again for one already made.
func BenchmarkThumbnail12MP(b *testing.B) {
	s := testserver.Start(b, "")
	alice := s.Register("alice", "pw")
	jpg := encodeJPEG(b, photo())
	b.Logf("12 MP JPEG: %d bytes", len(jpg))
	var id string
	b.Run("upload", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			id = upload(b, s, alice.Token, "image/jpeg", jpg, "")
		}
	})
	get := func(b *testing.B, w, h int) {
		r := request(b, s, "GET", fmt.Sprintf("/_matrix/media/v3/thumbnail/test.local/%s?width=%d&height=%d&method=crop", id, w, h), "", "", nil)
		if r.Status != 200 {
			b.Fatalf("thumbnail: %d %s", r.Status, r.Body)
		}
	}
	n := 0
	b.Run("first", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			n++
			get(b, 1000+n, 700+n)
		}
	})
	get(b, 1000, 700)
	b.Run("cached", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			get(b, 1000, 700)
		}
	})
}
