package media_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/image/webp"

	"homeserver/internal/testserver"
)

// request sends raw bytes with a content type (testserver.Do always says
// application/json) and decodes the answer.
func request(t testing.TB, s *testserver.Server, method, path, token, contentType string, body []byte, hdr ...string) *testserver.Response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := &testserver.Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(data, &r.JSON)
	}
	return r
}

func mustStatus(t testing.TB, r *testserver.Response, status int, errcode string) {
	t.Helper()
	if r.Status != status || r.Errcode() != errcode {
		t.Fatalf("got %d %q (%s), want %d %q", r.Status, r.Errcode(), truncate(r.Body), status, errcode)
	}
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// upload posts body and returns the media ID.
func upload(t testing.TB, s *testserver.Server, token, contentType string, body []byte, query string) string {
	t.Helper()
	r := request(t, s, "POST", "/_matrix/media/v3/upload"+query, token, contentType, body)
	mustStatus(t, r, 200, "")
	uri := r.String("content_uri")
	id, ok := strings.CutPrefix(uri, "mxc://"+testserver.ServerName+"/")
	if !ok {
		t.Fatalf("content_uri %q", uri)
	}
	return id
}

// thirds is a w×h image whose left, middle and right thirds are red, green
// and blue, so that a crop shows which part of the image it kept.
func thirds(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.NRGBA{255, 0, 0, 255}
			if x >= w/3 && x < 2*w/3 {
				c = color.NRGBA{0, 255, 0, 255}
			} else if x >= 2*w/3 {
				c = color.NRGBA{0, 0, 255, 255}
			}
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodePNG(t testing.TB, img image.Image) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encodeGIF(t testing.TB, img image.Image) []byte {
	var buf bytes.Buffer
	if err := gif.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bitWriter packs bits least significant first, as VP8L wants them.
type bitWriter struct {
	buf   []byte
	n     uint
	accum uint64
}

func (b *bitWriter) write(v uint64, bits uint) {
	b.accum |= v << b.n
	b.n += bits
	for b.n >= 8 {
		b.buf = append(b.buf, byte(b.accum))
		b.accum >>= 8
		b.n -= 8
	}
}

func (b *bitWriter) bytes() []byte {
	if b.n > 0 {
		b.buf = append(b.buf, byte(b.accum))
	}
	return b.buf
}

// solidWebP builds a lossless WebP of one colour: a VP8L stream whose five
// prefix codes each have a single symbol, so that every pixel takes 0 bits.
func solidWebP(w, h int, c color.NRGBA) []byte {
	var bw bitWriter
	bw.write(0x2f, 8)                                    // VP8L signature
	bw.write(uint64(w-1), 14)                            // image width - 1
	bw.write(uint64(h-1), 14)                            // image height - 1
	bw.write(0, 1)                                       // alpha_is_used (a hint)
	bw.write(0, 3)                                       // version
	bw.write(0, 1)                                       // no transform
	bw.write(0, 1)                                       // no colour cache
	bw.write(0, 1)                                       // no meta prefix codes
	for _, sym := range []uint8{c.G, c.R, c.B, c.A, 0} { // green, red, blue, alpha, distance
		bw.write(1, 1)           // simple code
		bw.write(0, 1)           // one symbol
		bw.write(1, 1)           // 8-bit symbol
		bw.write(uint64(sym), 8) // the symbol
	}
	data := bw.bytes()
	if len(data)%2 == 1 {
		data = append(data, 0)
	}
	var out bytes.Buffer
	out.WriteString("RIFF")
	_ = binary.Write(&out, binary.LittleEndian, uint32(4+8+len(data)))
	out.WriteString("WEBPVP8L")
	_ = binary.Write(&out, binary.LittleEndian, uint32(len(data)))
	out.Write(data)
	return out.Bytes()
}

// withOrientation inserts an EXIF APP1 segment with the given orientation
// after the SOI marker of a JPEG.
func withOrientation(jpg []byte, orientation uint16) []byte {
	var tiff bytes.Buffer
	tiff.WriteString("II*\x00")
	_ = binary.Write(&tiff, binary.LittleEndian, uint32(8)) // IFD offset
	_ = binary.Write(&tiff, binary.LittleEndian, uint16(1)) // one entry
	_ = binary.Write(&tiff, binary.LittleEndian, uint16(0x0112))
	_ = binary.Write(&tiff, binary.LittleEndian, uint16(3)) // SHORT
	_ = binary.Write(&tiff, binary.LittleEndian, uint32(1))
	_ = binary.Write(&tiff, binary.LittleEndian, orientation)
	_ = binary.Write(&tiff, binary.LittleEndian, uint16(0))
	_ = binary.Write(&tiff, binary.LittleEndian, uint32(0)) // no next IFD
	payload := append([]byte("Exif\x00\x00"), tiff.Bytes()...)
	seg := []byte{0xff, 0xe1, byte((len(payload) + 2) >> 8), byte(len(payload) + 2)}
	out := append([]byte{}, jpg[:2]...)
	out = append(out, seg...)
	out = append(out, payload...)
	return append(out, jpg[2:]...)
}

func decodeAny(t testing.TB, ct string, data []byte) image.Image {
	t.Helper()
	var img image.Image
	var err error
	switch ct {
	case "image/webp":
		img, err = webp.Decode(bytes.NewReader(data))
	default:
		img, _, err = image.Decode(bytes.NewReader(data))
	}
	if err != nil {
		t.Fatalf("decoding %s: %v", ct, err)
	}
	return img
}

// near reports whether c is close to want (lossy formats shift colours).
func near(c color.Color, want color.NRGBA) bool {
	r, g, b, _ := c.RGBA()
	d := func(a uint32, b uint8) bool { return int(a>>8)-int(b) < 60 && int(b)-int(a>>8) < 60 }
	return d(r, want.R) && d(g, want.G) && d(b, want.B)
}

func contentFiles(t testing.TB, s *testserver.Server) []string {
	t.Helper()
	var files []string
	root := filepath.Join(s.Dir, "media_store", "content")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func tmpFiles(t testing.TB, s *testserver.Server) []os.DirEntry {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Dir, "media_store", "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func TestUploadAndThumbnailEveryFormat(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	src := thirds(600, 300)
	formats := []struct {
		ct   string
		data []byte
		w, h int
	}{
		{"image/jpeg", encodeJPEG(t, src), 600, 300},
		{"image/png", encodePNG(t, src), 600, 300},
		{"image/gif", encodeGIF(t, src), 600, 300},
		{"image/webp", solidWebP(64, 48, color.NRGBA{0, 255, 0, 255}), 64, 48},
	}
	for _, f := range formats {
		t.Run(f.ct, func(t *testing.T) {
			id := upload(t, s, alice.Token, f.ct, f.data, "?filename=pic")
			// The original comes back byte for byte.
			r := request(t, s, "GET", "/_matrix/client/v1/media/download/test.local/"+id, alice.Token, "", nil)
			mustStatus(t, r, 200, "")
			if !bytes.Equal(r.Body, f.data) || r.Header.Get("Content-Type") != f.ct {
				t.Fatalf("download: %d bytes of %s", len(r.Body), r.Header.Get("Content-Type"))
			}
			// Every default size and method, then other sizes, served the
			// nearest configured one.
			sizes := []struct {
				w, h         int
				method       string
				wantW, wantH int
			}{
				{32, 32, "crop", 32, 32},
				{96, 96, "crop", 96, 96},
				{320, 240, "scale", 320, 160},
				{640, 480, "scale", 600, 300},
				{800, 600, "scale", 600, 300},
				{200, 200, "crop", 96, 96},    // none as large: the closest
				{100, 100, "scale", 320, 160}, // the closest at least as large
			}
			if f.w == 64 {
				sizes = []struct {
					w, h         int
					method       string
					wantW, wantH int
				}{
					{32, 32, "crop", 32, 32},
					{96, 96, "crop", 32, 32}, // the 96x96 one is 64x48: the aspect ratio wins
					{320, 240, "scale", 64, 48},
					{16, 16, "scale", 64, 48}, // never upscaled: a static copy of the original
				}
			}
			for _, sz := range sizes {
				path := fmt.Sprintf("/_matrix/client/v1/media/thumbnail/test.local/%s?width=%d&height=%d&method=%s", id, sz.w, sz.h, sz.method)
				r := request(t, s, "GET", path, alice.Token, "", nil)
				mustStatus(t, r, 200, "")
				ct := r.Header.Get("Content-Type")
				img := decodeAny(t, ct, r.Body)
				if b := img.Bounds(); b.Dx() != sz.wantW || b.Dy() != sz.wantH {
					t.Errorf("%dx%d %s: got %dx%d, want %dx%d", sz.w, sz.h, sz.method, b.Dx(), b.Dy(), sz.wantW, sz.wantH)
				}
				if r.Header.Get("Content-Length") != fmt.Sprint(len(r.Body)) {
					t.Errorf("Content-Length %q for %d bytes", r.Header.Get("Content-Length"), len(r.Body))
				}
				if f.w != 600 {
					continue
				}
				b := img.Bounds()
				mid := img.At(b.Dx()/2, b.Dy()/2)
				if !near(mid, color.NRGBA{0, 255, 0, 255}) {
					t.Errorf("%dx%d %s: centre %v, want green", sz.w, sz.h, sz.method, mid)
				}
				left, right := img.At(1, b.Dy()/2), img.At(b.Dx()-2, b.Dy()/2)
				switch sz.method {
				case "scale":
					// The whole image: red on the left, blue on the right.
					if !near(left, color.NRGBA{255, 0, 0, 255}) || !near(right, color.NRGBA{0, 0, 255, 255}) {
						t.Errorf("%dx%d scale: edges %v %v, want red and blue", sz.w, sz.h, left, right)
					}
				case "crop":
					// A square from the middle of a 2:1 image: the edges are
					// at 1/4 and 3/4 of the width, still red and blue, and
					// the green middle third is half the width.
					if !near(left, color.NRGBA{255, 0, 0, 255}) || !near(right, color.NRGBA{0, 0, 255, 255}) {
						t.Errorf("%dx%d crop: edges %v %v, want red and blue", sz.w, sz.h, left, right)
					}
					q := img.At(b.Dx()/4+b.Dx()/16, b.Dy()/2)
					if !near(q, color.NRGBA{0, 255, 0, 255}) {
						t.Errorf("%dx%d crop: %v at 5/16 width, want green (not centre-cropped?)", sz.w, sz.h, q)
					}
				}
			}
		})
	}
}

func TestThumbnailTransparencyAndOrientation(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")

	// A transparent PNG keeps its transparency: the thumbnail is a PNG.
	img := image.NewNRGBA(image.Rect(0, 0, 200, 100))
	for y := 0; y < 100; y++ {
		for x := 0; x < 200; x++ {
			img.SetNRGBA(x, y, color.NRGBA{255, 0, 0, uint8(x)})
		}
	}
	id := upload(t, s, alice.Token, "image/png", encodePNG(t, img), "")
	r := request(t, s, "GET", "/_matrix/client/v1/media/thumbnail/test.local/"+id+"?width=32&height=32&method=crop", alice.Token, "", nil)
	mustStatus(t, r, 200, "")
	if ct := r.Header.Get("Content-Type"); ct != "image/png" {
		t.Fatalf("transparent thumbnail is %s", ct)
	}
	if _, _, _, a := decodeAny(t, "image/png", r.Body).At(0, 0).RGBA(); a == 0xffff {
		t.Error("transparency lost")
	}
	// An opaque one becomes a JPEG.
	id = upload(t, s, alice.Token, "image/png", encodePNG(t, thirds(200, 100)), "")
	r = request(t, s, "GET", "/_matrix/client/v1/media/thumbnail/test.local/"+id+"?width=32&height=32&method=crop", alice.Token, "", nil)
	if ct := r.Header.Get("Content-Type"); ct != "image/jpeg" {
		t.Errorf("opaque thumbnail is %s", ct)
	}

	// EXIF orientation 6 (rotate 90° clockwise): a 400x200 JPEG is a
	// 200x400 picture, and thumbnails are upright. 100x100 scale is served
	// by the stored 320x240 one: 120x240.
	jpg := withOrientation(encodeJPEG(t, thirds(400, 200)), 6)
	id = upload(t, s, alice.Token, "image/jpeg", jpg, "")
	r = request(t, s, "GET", "/_matrix/client/v1/media/thumbnail/test.local/"+id+"?width=100&height=100&method=scale", alice.Token, "", nil)
	mustStatus(t, r, 200, "")
	got := decodeAny(t, "image/jpeg", r.Body)
	if b := got.Bounds(); b.Dx() != 120 || b.Dy() != 240 {
		t.Fatalf("oriented thumbnail %dx%d, want 120x240", b.Dx(), b.Dy())
	}
	// Rotated clockwise, the red left third is now at the top.
	if top := got.At(60, 2); !near(top, color.NRGBA{255, 0, 0, 255}) {
		t.Errorf("top of rotated thumbnail %v, want red", top)
	}
}

func TestDuplicateUploadsShareOneFile(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	data := []byte("the same bytes, twice")
	id1 := upload(t, s, alice.Token, "text/plain", data, "?filename=a.txt")
	id2 := upload(t, s, bob.Token, "text/plain", data, "?filename=b.txt")
	if id1 == id2 {
		t.Fatal("two uploads got one media ID")
	}
	if files := contentFiles(t, s); len(files) != 1 {
		t.Fatalf("%d content files, want 1: %q", len(files), files)
	}
	// Each keeps its own name.
	for id, name := range map[string]string{id1: "a.txt", id2: "b.txt"} {
		r := request(t, s, "GET", "/_matrix/client/v1/media/download/test.local/"+id, alice.Token, "", nil)
		if !bytes.Equal(r.Body, data) || r.Header.Get("Content-Disposition") != "inline; filename="+name {
			t.Errorf("download %s: %q, %q", id, r.Body, r.Header.Get("Content-Disposition"))
		}
	}
}

func TestAbortedUploadLeavesNothing(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n", alice.Token)
	_, _ = conn.Write(bytes.Repeat([]byte("x"), 300000))
	// Wait until the server holds a temporary file, then kill the upload.
	deadline := time.Now().Add(5 * time.Second)
	for len(tmpFiles(t, s)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(tmpFiles(t, s)) == 0 {
		t.Fatal("upload never started")
	}
	conn.Close()
	for len(tmpFiles(t, s)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(tmpFiles(t, s)); n != 0 {
		t.Fatalf("%d temporary files left", n)
	}
	if files := contentFiles(t, s); len(files) != 0 {
		t.Fatalf("content files after an aborted upload: %q", files)
	}
	// The server is fine afterwards.
	upload(t, s, alice.Token, "text/plain", []byte("ok"), "")
}

func TestLimitsAndErrors(t *testing.T) {
	s := testserver.Start(t, "max_upload_size: 1K\nrc_media_create: {per_second: 0.001, burst_count: 2}\n")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")

	// Too large, whether announced or streamed without a length.
	r := request(t, s, "POST", "/_matrix/media/v3/upload", alice.Token, "text/plain", make([]byte, 1025))
	mustStatus(t, r, 413, "M_TOO_LARGE")
	req, _ := http.NewRequest("POST", s.URL+"/_matrix/media/v3/upload", io.MultiReader(bytes.NewReader(make([]byte, 2000))))
	req.Header.Set("Authorization", "Bearer "+alice.Token)
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 || len(tmpFiles(t, s)) != 0 || len(contentFiles(t, s)) != 0 {
		t.Fatalf("chunked oversize upload: %d, files left %d/%d", resp.StatusCode, len(tmpFiles(t, s)), len(contentFiles(t, s)))
	}
	mustStatus(t, request(t, s, "POST", "/_matrix/media/v3/upload", alice.Token, "text/plain", make([]byte, 1024)), 200, "")
	cfg := request(t, s, "GET", "/_matrix/client/v1/media/config", alice.Token, "", nil)
	if cfg.JSON["m.upload.size"] != float64(1024) {
		t.Errorf("config: %s", cfg.Body)
	}

	// Uploads need a token.
	mustStatus(t, request(t, s, "POST", "/_matrix/media/v3/upload", "", "text/plain", []byte("x")), 401, "M_MISSING_TOKEN")
	mustStatus(t, request(t, s, "POST", "/_matrix/media/r0/upload", "", "text/plain", []byte("x")), 401, "M_MISSING_TOKEN")

	// A decompression bomb: a PNG header claiming 100000x100000 pixels is
	// stored but never decoded.
	var bomb bytes.Buffer
	bomb.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := []byte("IHDR\x00\x01\x86\xa0\x00\x01\x86\xa0\x08\x06\x00\x00\x00")
	_ = binary.Write(&bomb, binary.BigEndian, uint32(13))
	bomb.Write(ihdr)
	_ = binary.Write(&bomb, binary.BigEndian, crc32.ChecksumIEEE(ihdr))
	bombID := upload(t, s, alice.Token, "image/png", bomb.Bytes(), "")
	r = request(t, s, "GET", "/_matrix/client/v1/media/thumbnail/test.local/"+bombID+"?width=32&height=32", alice.Token, "", nil)
	mustStatus(t, r, 413, "M_TOO_LARGE")
	if r.String("error") != "Content is too large to thumbnail" {
		t.Errorf("bomb: %s", r.Body)
	}
	mustStatus(t, request(t, s, "GET", "/_matrix/client/v1/media/download/test.local/"+bombID, alice.Token, "", nil), 200, "")

	// Not an image (whatever it claims to be).
	textID := upload(t, s, alice.Token, "image/png", []byte("not a png"), "")
	r = request(t, s, "GET", "/_matrix/client/v1/media/thumbnail/test.local/"+textID+"?width=32&height=32", alice.Token, "", nil)
	mustStatus(t, r, 400, "M_UNKNOWN")
	if r.String("error") != "Cannot generate thumbnails for the requested content" {
		t.Errorf("non-image: %s", r.Body)
	}
	// Bad thumbnail parameters.
	for q, code := range map[string]string{
		"?height=32":                      "M_MISSING_PARAM",
		"?width=0&height=32":              "M_INVALID_PARAM",
		"?width=-5&height=32":             "M_INVALID_PARAM",
		"?width=a&height=32":              "M_INVALID_PARAM",
		"?width=32&height=32&method=warp": "M_INVALID_PARAM",
	} {
		mustStatus(t, request(t, s, "GET", "/_matrix/client/v1/media/thumbnail/test.local/"+textID+q, alice.Token, "", nil), 400, code)
	}

	// Bad media IDs and server names never reach the disk.
	long := strings.Repeat("a", 256)
	for _, p := range []string{
		"test.local/..", "test.local/..%2F..%2Fetc%2Fpasswd", "test.local/%C3%BC", "test.local/" + long,
		"test.local/a.b", "test.local/%00",
	} {
		for _, prefix := range []string{"/_matrix/media/v3/download/", "/_matrix/media/v3/thumbnail/", "/_matrix/client/v1/media/download/"} {
			r := request(t, s, "GET", prefix+p+"?width=1&height=1", alice.Token, "", nil)
			mustStatus(t, r, 400, "M_INVALID_PARAM")
			// (The client API's own check refuses NUL first.)
			if r.String("error") != "Invalid media ID" && !strings.Contains(p, "%00") {
				t.Errorf("%s%s: %s", prefix, p, r.Body)
			}
		}
	}
	r = request(t, s, "GET", "/_matrix/media/v3/download/bad_server!/abc", "", "", nil)
	mustStatus(t, r, 400, "M_INVALID_PARAM")
	// Unknown local media, and remote media (until federation fetches it).
	mustStatus(t, request(t, s, "GET", "/_matrix/media/v3/download/test.local/doesNotExist", "", "", nil), 404, "M_NOT_FOUND")
	mustStatus(t, request(t, s, "GET", "/_matrix/client/v1/media/download/other.example/abc", alice.Token, "", nil), 404, "M_NOT_FOUND")
	mustStatus(t, request(t, s, "GET", "/_matrix/client/v1/media/thumbnail/other.example/abc?width=1&height=1", alice.Token, "", nil), 404, "M_NOT_FOUND")
	// Bad filenames.
	r = request(t, s, "POST", "/_matrix/media/v3/upload?filename=a%00b", alice.Token, "text/plain", []byte("x"))
	mustStatus(t, r, 400, "M_INVALID_PARAM")

	// rc_media_create: two, then 429.
	for range 2 {
		mustStatus(t, request(t, s, "POST", "/_matrix/media/v1/create", bob.Token, "", nil), 200, "")
	}
	r = request(t, s, "POST", "/_matrix/media/v1/create", bob.Token, "", nil)
	mustStatus(t, r, 429, "M_LIMIT_EXCEEDED")
	if r.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}

	// URL previews are off: the endpoint is not offered.
	mustStatus(t, request(t, s, "GET", "/_matrix/client/v1/media/preview_url?url=https://example.org", alice.Token, "", nil), 404, "M_UNRECOGNIZED")
	mustStatus(t, request(t, s, "GET", "/_matrix/media/v3/preview_url?url=https://example.org", alice.Token, "", nil), 404, "M_UNRECOGNIZED")
}

func TestAsyncUpload(t *testing.T) {
	s := testserver.Start(t, "")
	alice := s.Register("alice", "pw")
	bob := s.Register("bob", "pw")
	r := request(t, s, "POST", "/_matrix/media/v1/create", alice.Token, "", nil)
	mustStatus(t, r, 200, "")
	uri := r.String("content_uri")
	id := strings.TrimPrefix(uri, "mxc://test.local/")
	exp, _ := r.JSON["unused_expires_at"].(float64)
	if id == uri || int64(exp) < time.Now().Add(23*time.Hour).UnixMilli() {
		t.Fatalf("create: %s", r.Body)
	}
	dl := "/_matrix/client/v1/media/download/test.local/" + id
	mustStatus(t, request(t, s, "GET", dl+"?timeout_ms=0", alice.Token, "", nil), 504, "M_NOT_YET_UPLOADED")
	mustStatus(t, request(t, s, "GET", "/_matrix/client/v1/media/thumbnail/test.local/"+id+"?width=8&height=8&timeout_ms=0", alice.Token, "", nil), 504, "M_NOT_YET_UPLOADED")

	// A download waiting for the upload gets it when it lands.
	var wg sync.WaitGroup
	var waited *testserver.Response
	wg.Add(1)
	go func() {
		defer wg.Done()
		waited = request(t, s, "GET", dl+"?timeout_ms=10000", alice.Token, "", nil)
	}()
	time.Sleep(300 * time.Millisecond)

	put := "/_matrix/media/v3/upload/test.local/" + id
	mustStatus(t, request(t, s, "PUT", put, bob.Token, "text/plain", []byte("late")), 403, "M_FORBIDDEN")
	mustStatus(t, request(t, s, "PUT", "/_matrix/media/v3/upload/test.local/unknownID", alice.Token, "text/plain", []byte("x")), 404, "M_NOT_FOUND")
	mustStatus(t, request(t, s, "PUT", "/_matrix/media/v3/upload/other.example/"+id, alice.Token, "text/plain", []byte("x")), 404, "M_NOT_FOUND")
	mustStatus(t, request(t, s, "PUT", put+"?filename=late.txt", alice.Token, "text/plain", []byte("late")), 200, "")
	mustStatus(t, request(t, s, "PUT", put, alice.Token, "text/plain", []byte("again")), 409, "M_CANNOT_OVERWRITE_MEDIA")
	wg.Wait()
	mustStatus(t, waited, 200, "")
	if string(waited.Body) != "late" || waited.Header.Get("Content-Disposition") != "inline; filename=late.txt" {
		t.Fatalf("waited download: %q %q", waited.Body, waited.Header.Get("Content-Disposition"))
	}

	// At most 5 pending uploads per user.
	for range 4 {
		mustStatus(t, request(t, s, "POST", "/_matrix/media/v1/create", bob.Token, "", nil), 200, "")
	}
	mustStatus(t, request(t, s, "POST", "/_matrix/media/v1/create", bob.Token, "", nil), 200, "")
	mustStatus(t, request(t, s, "POST", "/_matrix/media/v1/create", bob.Token, "", nil), 429, "M_LIMIT_EXCEEDED")
}

func TestAuthenticatedAndLegacyDownload(t *testing.T) {
	s := testserver.Start(t, "enable_authenticated_media: false\n")
	alice := s.Register("alice", "pw")
	data := []byte("<html><script>alert(1)</script></html>")
	id := upload(t, s, alice.Token, "text/html", data, "?filename=page.html")

	authed := "/_matrix/client/v1/media/download/test.local/" + id
	mustStatus(t, request(t, s, "GET", authed, "", "", nil), 401, "M_MISSING_TOKEN")
	mustStatus(t, request(t, s, "GET", "/_matrix/client/v1/media/config", "", "", nil), 401, "M_MISSING_TOKEN")
	mustStatus(t, request(t, s, "GET", "/_matrix/media/v3/config", "", "", nil), 401, "M_MISSING_TOKEN")
	mustStatus(t, request(t, s, "GET", "/_matrix/media/v3/config", alice.Token, "", nil), 200, "")

	for _, p := range []string{authed, "/_matrix/media/v3/download/test.local/" + id, "/_matrix/media/r0/download/test.local/" + id} {
		r := request(t, s, "GET", p, alice.Token, "", nil)
		mustStatus(t, r, 200, "")
		h := r.Header
		checks := map[string]string{
			"Content-Type":                 "text/html",
			"Content-Disposition":          "attachment; filename=page.html", // never inline HTML
			"Content-Security-Policy":      "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';",
			"Cross-Origin-Resource-Policy": "cross-origin",
			"Content-Length":               fmt.Sprint(len(data)),
		}
		for k, v := range checks {
			if h.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", p, k, h.Get(k), v)
			}
		}
		if !bytes.Equal(r.Body, data) {
			t.Errorf("%s: body %q", p, r.Body)
		}
	}
	// A file name in the path overrides the uploaded one.
	r := request(t, s, "GET", authed+"/other%20name.html", alice.Token, "", nil)
	if r.Header.Get("Content-Disposition") != `attachment; filename="other name.html"` {
		t.Errorf("override: %q", r.Header.Get("Content-Disposition"))
	}
	// Range requests.
	r = request(t, s, "GET", authed, alice.Token, "", nil, "Range", "bytes=6-13")
	if r.Status != 206 || string(r.Body) != "<script>" || r.Header.Get("Content-Length") != "8" {
		t.Errorf("range: %d %q %q", r.Status, r.Body, r.Header.Get("Content-Length"))
	}
	// Content survives a restart.
	s.Restart()
	r = request(t, s, "GET", authed, alice.Token, "", nil)
	if !bytes.Equal(r.Body, data) {
		t.Errorf("after restart: %d %q", r.Status, r.Body)
	}
}
