package media

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"log/slog"
	"testing"
	"time"
)

// png16 is a w×h PNG of 16-bit RGBA, which the decoder holds at 8 bytes a
// pixel.
func png16(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA64(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA64(x, y, color.NRGBA64{uint16(x * 97), uint16(y * 89), uint16(x ^ y), 0xffff})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pausingStore holds InsertThumbnail until told to go on, so that a test
// can look at the service while thumbnails are being written.
type pausingStore struct {
	memStore
	entered chan struct{}
	proceed chan struct{}
}

func (p *pausingStore) InsertThumbnail(ctx context.Context, t Thumbnail) error {
	select {
	case p.entered <- struct{}{}:
	default:
	}
	<-p.proceed
	return p.memStore.InsertThumbnail(ctx, t)
}

// A 16-bit image is converted to 8 bits right after decoding, and gives
// back the difference.
func TestDecodeConvertsSixteenBit(t *testing.T) {
	const budget = 64 << 20
	s, err := New(Config{ServerName: "here.test", StorePath: t.TempDir(), MaxUploadSize: 1 << 30,
		ThumbnailMemory: budget, Logger: slog.New(slog.DiscardHandler)}, &memStore{})
	if err != nil {
		t.Fatal(err)
	}
	data := png16(t, 512, 256)
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	img, release, err := s.decode(context.Background(), bytes.NewReader(data), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := img.(*image.NRGBA); !ok {
		t.Errorf("decoded a 16-bit PNG as %T, want *image.NRGBA", img)
	}
	// Held now: 4 bytes a pixel for the image, and the working bytes.
	held := int64(512 * 256 * (4 + workingBytes))
	if !s.pixels.TryAcquire(budget - held) {
		t.Fatal("more than the converted image's bytes are held")
	}
	if s.pixels.TryAcquire(1) {
		t.Fatal("the converted image's bytes are not held")
	}
	s.pixels.Release(budget - held)
	release()
	if !s.pixels.TryAcquire(budget) {
		t.Fatal("release did not give everything back")
	}
}

// The pixels of an image stay reserved until its thumbnails are written,
// not just while it is decoded: the bound covers the whole pipeline. The
// upload itself answers without waiting for them.
func TestPixelsHeldUntilThumbnailsWritten(t *testing.T) {
	const budget = 1 << 20 // less than one 512×512 16-bit image needs
	st := &pausingStore{entered: make(chan struct{}, 1), proceed: make(chan struct{})}
	s, err := New(Config{ServerName: "here.test", StorePath: t.TempDir(), MaxUploadSize: 1 << 30,
		ThumbnailMemory: budget, ThumbnailSizes: []ThumbnailSize{{Width: 32, Height: 32, Method: Crop}},
		Logger: slog.New(slog.DiscardHandler)}, st)
	if err != nil {
		t.Fatal(err)
	}
	data := png16(t, 512, 512)
	if _, err := s.Upload(context.Background(), Upload{UserID: "@a:here.test", ContentType: "image/png", Body: bytes.NewReader(data), Length: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("no thumbnail written")
	}
	if s.pixels.TryAcquire(1) {
		t.Error("the image's pixels were given back before its thumbnails were written")
	}
	close(st.proceed)
	s.Close() // waits for the worker
	if !s.pixels.TryAcquire(budget) {
		t.Error("pixels still held after the thumbnails")
	}
}
