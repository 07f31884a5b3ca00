package media_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"image"
	"image/png"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"homeserver/internal/testserver"
	"homeserver/media"
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

// photo is a 4000×3000 (12-megapixel) picture with gradients and noise,
// whose JPEG at quality 90 is about 4.5 MiB, as a camera's.
func photo() image.Image { return media.NoisyPhoto(4000, 3000, 1) }

// configuredSizes are the default thumbnail_sizes, as requests.
var configuredSizes = []string{"width=32&height=32&method=crop", "width=96&height=96&method=crop",
	"width=320&height=240&method=scale", "width=640&height=480&method=scale", "width=800&height=600&method=scale"}

// getConfigured asks for every configured thumbnail of id: each is then
// made (or waited for) and stored, so nothing is left running behind.
func getConfigured(b *testing.B, s *testserver.Server, token, id string) {
	for _, q := range configuredSizes {
		r := request(b, s, "GET", "/_matrix/client/v1/media/thumbnail/test.local/"+id+"?"+q, token, "", nil)
		if r.Status != 200 {
			b.Fatalf("thumbnail %s: %d %s", q, r.Status, truncate(r.Body))
		}
	}
}

// BenchmarkUploadJPEG measures the upload of a 12-megapixel 4.5 MiB JPEG
// with the default thumbnail_sizes: "bytes" uploads as many random bytes
// (stored only: the floor), "jpeg" is the time until the upload answers,
// "jpeg+thumbnails" until then and all five thumbnails are fetched. Each
// iteration's bytes differ (a trailer after the JPEG's end), so none
// deduplicates; after each "jpeg" iteration the clock stops while its
// thumbnails are fetched, so that none is still being made when the next
// upload starts.
func BenchmarkUploadJPEG(b *testing.B) {
	s := testserver.Start(b, "")
	alice := s.Register("alice", "pw")
	jpg := encodeJPEG(b, photo())
	b.Logf("JPEG: %d bytes", len(jpg))
	random := make([]byte, len(jpg))
	_, _ = rand.Read(random)
	body := append(slices.Clip(jpg), make([]byte, 16)...)
	vary := func(p []byte) { _, _ = rand.Read(p[len(p)-16:]) }
	b.Run("bytes", func(b *testing.B) {
		b.SetBytes(int64(len(random)))
		for b.Loop() {
			vary(random)
			upload(b, s, alice.Token, "application/octet-stream", random, "")
		}
	})
	b.Run("jpeg", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for i := 0; i < b.N; i++ {
			vary(body)
			id := upload(b, s, alice.Token, "image/jpeg", body, "")
			b.StopTimer()
			getConfigured(b, s, alice.Token, id)
			b.StartTimer()
		}
	})
	b.Run("jpeg+thumbnails", func(b *testing.B) {
		for b.Loop() {
			vary(body)
			getConfigured(b, s, alice.Token, upload(b, s, alice.Token, "image/jpeg", body, ""))
		}
	})
}

// BenchmarkThumbnail12MP measures thumbnails of a 12-megapixel JPEG:
// "upload" is the upload itself (which made the five default sizes before
// answering, before they were made in the background);
// "first" asks each time for a size not made yet (decode, resize, encode,
// store); "cached" asks again for one already made.
func BenchmarkThumbnail12MP(b *testing.B) {
	s := testserver.Start(b, "dynamic_thumbnails: true\nrc_media_thumbnail: {per_second: 0, burst_count: 0}\n")
	alice := s.Register("alice", "pw")
	jpg := encodeJPEG(b, photo())
	b.Logf("12 MP JPEG: %d bytes", len(jpg))
	var id string
	b.Run("upload", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			id = upload(b, s, alice.Token, "image/jpeg", jpg, "")
			b.StopTimer()
			getConfigured(b, s, alice.Token, id) // nothing left running
			b.StartTimer()
		}
	})
	get := func(b *testing.B, w, h int) {
		r := request(b, s, "GET", fmt.Sprintf("/_matrix/client/v1/media/thumbnail/test.local/%s?width=%d&height=%d&method=crop", id, w, h), alice.Token, "", nil)
		if r.Status != 200 {
			b.Fatalf("thumbnail: %d %s", r.Status, r.Body)
		}
	}
	n := 0
	b.Run("first", func(b *testing.B) {
		cpu := cpuTime()
		for i := 0; i < b.N; i++ {
			n++
			get(b, 1000+n, 700+n)
		}
		b.ReportMetric(float64((cpuTime()-cpu).Milliseconds())/float64(b.N), "cpu-ms/op")
	})
	get(b, 1000, 700)
	b.Run("cached", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			get(b, 1000, 700)
		}
	})
}

// cpuTime is the CPU time the process (server and client) has used: on a
// machine shared with other work it moves less than the wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS makes the kernel forget the process's peak resident size
// (Linux: clear_refs 5), after giving freed memory back.
func resetPeakRSS(b *testing.B) {
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Skipf("cannot reset the peak RSS: %v", err)
	}
}

// peakRSS is the process's peak resident size since resetPeakRSS, in MB.
func peakRSS(b *testing.B) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// BenchmarkConcurrent16BitPNG measures the peak resident size of the whole
// process (test client and server) while 8 clients at once upload a
// 5792×5792 16-bit PNG (33.5 megapixels, just under max_image_pixels, 8
// bytes a pixel decoded, a 255 KiB file), then while 8 clients at once ask
// for thumbnails of 8 new sizes of it (dynamic_thumbnails on, so that each
// decodes the original). Run it alone: the peak is the process's.
func BenchmarkConcurrent16BitPNG(b *testing.B) {
	const side, clients = 5792, 8
	s := testserver.Start(b, "dynamic_thumbnails: true\nrc_media_thumbnail: {per_second: 0, burst_count: 0}\n")
	// The requests queue for the pixel budget: they take longer than the
	// test client's usual timeout.
	s.Client.Timeout = 10 * time.Minute
	alice := s.Register("alice", "pw")
	src := image.NewNRGBA64(image.Rect(0, 0, side, side))
	for i := 0; i < len(src.Pix); i += 8 {
		copy(src.Pix[i:], []byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xff, 0xff})
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, src); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	src = nil
	b.Logf("16-bit PNG: %d×%d, %d bytes", side, side, len(data))
	all := func(f func(i int)) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for i := range clients {
			wg.Go(func() { f(i) })
		}
		wg.Wait()
		return time.Since(start)
	}
	var uploadMB, thumbMB float64
	var uploadTime, thumbTime time.Duration
	for n := range b.N {
		ids := make([]string, clients)
		resetPeakRSS(b)
		uploadTime += all(func(i int) { ids[i] = upload(b, s, alice.Token, "image/png", data, "") })
		uploadMB = max(uploadMB, peakRSS(b))
		resetPeakRSS(b)
		thumbTime += all(func(i int) {
			w := 1000 + 10*n*clients + i
			r := request(b, s, "GET", fmt.Sprintf("/_matrix/client/v1/media/thumbnail/test.local/%s?width=%d&height=%d&method=scale", ids[0], w, w), alice.Token, "", nil)
			if r.Status != 200 {
				b.Errorf("thumbnail: %d %s", r.Status, truncate(r.Body))
			}
		})
		thumbMB = max(thumbMB, peakRSS(b))
	}
	b.ReportMetric(uploadMB, "MB-peak-RSS-uploads")
	b.ReportMetric(thumbMB, "MB-peak-RSS-thumbnails")
	b.ReportMetric(uploadTime.Seconds()/float64(b.N), "s-uploads")
	b.ReportMetric(thumbTime.Seconds()/float64(b.N), "s-thumbnails")
}
