package media

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/disintegration/imaging"
)

// thumbStore is memStore that keeps thumbnails.
type thumbStore struct {
	memStore
	tmu    sync.Mutex
	thumbs map[string][]Thumbnail
}

func (s *thumbStore) ListThumbnails(_ context.Context, origin, mediaID string) ([]Thumbnail, error) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	return append([]Thumbnail(nil), s.thumbs[origin+"/"+mediaID]...), nil
}

func (s *thumbStore) InsertThumbnail(_ context.Context, t Thumbnail) error {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if s.thumbs == nil {
		s.thumbs = map[string][]Thumbnail{}
	}
	k := t.Origin + "/" + t.MediaID
	for _, o := range s.thumbs[k] {
		if o.Method == t.Method && o.Width == t.Width && o.Height == t.Height {
			return nil
		}
	}
	s.thumbs[k] = append(s.thumbs[k], t)
	return nil
}

// renders counts the thumbnails rendered, by key, and holds each render
// until the gate is opened.
type renders struct {
	mu      sync.Mutex
	n       map[thumbKey]int
	entered chan thumbKey
	gate    chan struct{}
}

func newRenders() *renders {
	return &renders{n: map[thumbKey]int{}, entered: make(chan thumbKey, 64), gate: make(chan struct{})}
}

func (r *renders) hook(k thumbKey) {
	r.mu.Lock()
	r.n[k]++
	r.mu.Unlock()
	r.entered <- k
	<-r.gate
}

func (r *renders) count(k thumbKey) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[k]
}

// watchdog fails the test if it is still running long after anything
// could take; it is no timing measurement.
func watchdog[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(60 * time.Second):
		t.Fatalf("%s never happened", what)
		panic("unreachable")
	}
}

func newThumbService(t *testing.T, dir string, st Store, dynamic bool, sizes ...ThumbnailSize) *Service {
	t.Helper()
	s, err := New(Config{ServerName: "here.test", StorePath: dir, MaxUploadSize: 1 << 30,
		ThumbnailSizes: sizes, DynamicThumbnails: dynamic, Logger: slog.New(slog.DiscardHandler)}, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func uploadJPEG(t *testing.T, s *Service, img image.Image) Metadata {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	m, err := s.Upload(context.Background(), Upload{UserID: "@a:here.test", ContentType: "image/jpeg", Body: &buf, Length: int64(buf.Len())})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkServed decodes a served thumbnail: a whole image of the size it
// claims, within the bounds asked.
func checkServed(t *testing.T, sv Served, maxW, maxH int) {
	t.Helper()
	defer sv.File.Close()
	img, _, err := image.Decode(sv.File)
	if err != nil {
		t.Fatalf("served thumbnail does not decode: %v", err)
	}
	if b := img.Bounds(); b.Dx() != sv.Width || b.Dy() != sv.Height || b.Dx() > maxW || b.Dy() > maxH {
		t.Fatalf("served %dx%d, announced %dx%d, asked at most %dx%d", b.Dx(), b.Dy(), sv.Width, sv.Height, maxW, maxH)
	}
}

var testSizes = []ThumbnailSize{{Width: 32, Height: 32, Method: Crop}, {Width: 320, Height: 240, Method: Scale}}

// The upload answers while its thumbnails are still being made; a request
// for one then waits for that generation and gets a whole image.
func TestUploadAnswersBeforeThumbnails(t *testing.T) {
	st := &thumbStore{}
	s := newThumbService(t, t.TempDir(), st, false, testSizes...)
	r := newRenders()
	s.hooks.render = r.hook
	uploaded := make(chan Metadata, 1)
	go func() { uploaded <- uploadJPEG(t, s, NoisyPhoto(600, 400, 2)) }()
	// The upload answers although every render is held.
	m := watchdog(t, uploaded, "the upload's answer")
	first := watchdog(t, r.entered, "a background render")
	if first.w != 320 || first.h != 213 {
		t.Errorf("first rendered %dx%d, want the largest (320x213)", first.w, first.h)
	}
	if thumbs, _ := st.ListThumbnails(context.Background(), m.Origin, m.MediaID); len(thumbs) != 0 {
		t.Fatalf("thumbnails stored before they were rendered: %v", thumbs)
	}
	type result struct {
		sv  Served
		err error
	}
	done := make(chan result, 1)
	go func() {
		sv, err := s.Thumbnail(context.Background(), m.Origin, m.MediaID, 32, 32, Crop, Fetch{})
		done <- result{sv, err}
	}()
	k32 := thumbKey{origin: m.Origin, mediaID: m.MediaID, method: Crop, w: 32, h: 32}
	for s.inflight.waiting(k32) == 0 {
		time.Sleep(time.Millisecond)
	}
	close(r.gate)
	res := watchdog(t, done, "the thumbnail request")
	if res.err != nil {
		t.Fatal(res.err)
	}
	checkServed(t, res.sv, 32, 32)
	if n := r.count(k32); n != 1 {
		t.Errorf("32x32 rendered %d times, want 1", n)
	}
}

// Requests that arrive while a thumbnail is being made, by the worker or
// by another request, share that generation.
func TestConcurrentThumbnailRequestsShareOneGeneration(t *testing.T) {
	s := newThumbService(t, t.TempDir(), &thumbStore{}, true, testSizes...)
	r := newRenders()
	s.hooks.render = r.hook
	m := uploadJPEG(t, s, NoisyPhoto(600, 400, 3))
	watchdog(t, r.entered, "a background render")
	const clients = 8
	k32 := thumbKey{origin: m.Origin, mediaID: m.MediaID, method: Crop, w: 32, h: 32}
	k100 := thumbKey{origin: m.Origin, mediaID: m.MediaID, method: Crop, w: 100, h: 100} // not configured
	errs := make(chan error, 2*clients)
	var wg sync.WaitGroup
	for range clients {
		for _, k := range []thumbKey{k32, k100} {
			wg.Go(func() {
				sv, err := s.Thumbnail(context.Background(), m.Origin, m.MediaID, k.w, k.h, Crop, Fetch{})
				if err == nil {
					checkServed(t, sv, k.w, k.h)
				}
				errs <- err
			})
		}
	}
	// Every client waits: on the worker for 32x32, on the first of them
	// (held in its render) for 100x100.
	for s.inflight.waiting(k32) < clients || s.inflight.waiting(k100) < clients-1 {
		time.Sleep(time.Millisecond)
	}
	close(r.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for _, k := range []thumbKey{k32, k100, {origin: m.Origin, mediaID: m.MediaID, method: Scale, w: 320, h: 213}} {
		if n := r.count(k); n != 1 {
			t.Errorf("%dx%d %s rendered %d times, want 1", k.w, k.h, k.method, n)
		}
	}
}

// Media whose thumbnails were never made in the background (the queue was
// full, or the server stopped first) gets them on request.
func TestThumbnailWithoutPregeneration(t *testing.T) {
	dir, st := t.TempDir(), &thumbStore{}
	before := newThumbService(t, dir, st, false) // no sizes: nothing queued
	m := uploadJPEG(t, before, NoisyPhoto(600, 400, 4))
	before.Close()
	s := newThumbService(t, dir, st, false, testSizes...)
	sv, err := s.Thumbnail(context.Background(), m.Origin, m.MediaID, 100, 100, Scale, Fetch{})
	if err != nil {
		t.Fatal(err)
	}
	if sv.Width != 320 || sv.Height != 213 {
		t.Errorf("served %dx%d, want the nearest configured size 320x213", sv.Width, sv.Height)
	}
	checkServed(t, sv, 320, 240)
}

// withOrientation returns a JPEG of img carrying an EXIF orientation.
func jpegWithOrientation(t *testing.T, img image.Image, o int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	// Exif header, big-endian TIFF, IFD0 at 8 with one entry.
	tiff := []byte("MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00")
	binary.BigEndian.PutUint16(tiff[18:], uint16(o))
	seg := append([]byte("Exif\x00\x00"), tiff...)
	app1 := []byte{0xff, 0xe1, 0, 0}
	binary.BigEndian.PutUint16(app1[2:], uint16(len(seg)+2))
	data := buf.Bytes()
	return append(append(append([]byte{}, data[:2]...), append(app1, seg...)...), data[2:]...)
}

// quadrants is a w×h image of four colours, one a quarter.
func quadrants(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	cs := []color.NRGBA{{255, 0, 0, 255}, {0, 255, 0, 255}, {0, 0, 255, 255}, {255, 255, 0, 255}}
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, cs[2*(2*y/h)+2*x/w])
		}
	}
	return img
}

// Every EXIF orientation gives the picture imaging's AutoOrientation
// gives, though the box filter runs before the turn.
func TestOrientationAfterShrink(t *testing.T) {
	for o := orientNormal; o <= orientRotate90; o++ {
		t.Run(fmt.Sprint(o), func(t *testing.T) {
			data := jpegWithOrientation(t, quadrants(96, 64), o)
			if got := readOrientation(bytes.NewReader(data)); got != o {
				t.Fatalf("readOrientation = %d", got)
			}
			want, err := imaging.Decode(bytes.NewReader(data), imaging.AutoOrientation(true))
			if err != nil {
				t.Fatal(err)
			}
			raw, _, err := image.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			src := newSource(raw, o)
			if src.w != want.Bounds().Dx() || src.h != want.Bounds().Dy() {
				t.Fatalf("upright size %dx%d, want %v", src.w, src.h, want.Bounds())
			}
			tw, th := src.w/4, src.h/4 // a box-filtered copy is used
			got := src.render(tw, th, Scale)
			ref := render(want, tw, th, Scale)
			if len(src.shrunk) == 0 {
				t.Fatal("no box-filtered copy was made")
			}
			for _, p := range []image.Point{{tw / 4, th / 4}, {3 * tw / 4, th / 4}, {tw / 4, 3 * th / 4}, {3 * tw / 4, 3 * th / 4}} {
				if !near(got.At(p.X, p.Y), ref.NRGBAAt(p.X, p.Y)) {
					t.Errorf("at %v: %v, want %v", p, got.At(p.X, p.Y), ref.At(p.X, p.Y))
				}
			}
		})
	}
}

func near(c color.Color, want color.NRGBA) bool {
	r, g, b, _ := c.RGBA()
	d := func(a uint32, b uint8) bool { return int(a>>8)-int(b) < 40 && int(b)-int(a>>8) < 40 }
	return d(r, want.R) && d(g, want.G) && d(b, want.B)
}

// The box filters average exactly, the edge blocks included, for every
// chroma subsampling, and weight colours by alpha.
func TestBoxShrink(t *testing.T) {
	for _, ratio := range []image.YCbCrSubsampleRatio{image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio422,
		image.YCbCrSubsampleRatio420, image.YCbCrSubsampleRatio440, image.YCbCrSubsampleRatio411, image.YCbCrSubsampleRatio410} {
		img := image.NewYCbCr(image.Rect(0, 0, 13, 11), ratio)
		for i := range img.Y {
			img.Y[i] = uint8(i * 7)
		}
		for i := range img.Cb {
			img.Cb[i], img.Cr[i] = 100, 150
		}
		for _, k := range []int{2, 3} {
			got := boxShrink(img, k)
			ow, oh := (13+k-1)/k, (11+k-1)/k
			if b := got.Bounds(); b.Dx() != ow || b.Dy() != oh {
				t.Fatalf("%v by %d: %v, want %dx%d", ratio, k, b, ow, oh)
			}
			for _, p := range []image.Point{{0, 0}, {ow - 1, oh - 1}, {2, 1}} {
				var sum, n int
				for y := k * p.Y; y < min(k*p.Y+k, 11); y++ {
					for x := k * p.X; x < min(k*p.X+k, 13); x++ {
						sum += int(img.Y[y*img.YStride+x])
						n++
					}
				}
				r, g, b := color.YCbCrToRGB(uint8((sum+n/2)/n), 100, 150)
				if c := got.NRGBAAt(p.X, p.Y); c != (color.NRGBA{r, g, b, 255}) {
					t.Errorf("%v by %d at %v: %v, want %v", ratio, k, p, c, color.NRGBA{r, g, b, 255})
				}
			}
		}
	}
	// Half transparent red, half opaque blue: the average is blue, half
	// covered, not purple.
	n := image.NewNRGBA(image.Rect(0, 0, 2, 1))
	n.SetNRGBA(0, 0, color.NRGBA{255, 0, 0, 0})
	n.SetNRGBA(1, 0, color.NRGBA{0, 0, 255, 255})
	if c := boxShrink(n, 2).NRGBAAt(0, 0); c != (color.NRGBA{0, 0, 255, 128}) {
		t.Errorf("alpha-weighted average %v", c)
	}
}

// An original whose header is an image's but whose data is not is found
// out by its first thumbnail, and not decoded again for every request.
func TestUndecodableRemembered(t *testing.T) {
	s := newThumbService(t, t.TempDir(), &thumbStore{}, false, testSizes...)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, NoisyPhoto(600, 400, 5), &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()[:buf.Len()/2]
	m, err := s.Upload(context.Background(), Upload{UserID: "@a:here.test", ContentType: "image/jpeg", Body: bytes.NewReader(data), Length: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	if m.Width != 600 || m.Height != 400 {
		t.Fatalf("probed %dx%d, want the header's 600x400", m.Width, m.Height)
	}
	for range 2 {
		if _, err := s.Thumbnail(context.Background(), m.Origin, m.MediaID, 32, 32, Crop, Fetch{}); err == nil {
			t.Fatal("a thumbnail of half a JPEG")
		}
	}
	if !s.undecodable.has(m) {
		t.Error("the undecodable original is not remembered")
	}
}
