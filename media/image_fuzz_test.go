package media

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"log/slog"
	"testing"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
)

// fuzzMaxPixels keeps the fuzzer's images small; the limit itself is what
// is being checked, not the decoders' speed on large ones.
const fuzzMaxPixels = 64 * 64

// FuzzImage uploads arbitrary bytes as an image and asks for a thumbnail:
// nothing may panic, an image over max_image_pixels is never decoded into
// a thumbnail, and a thumbnail served is an image of the size announced,
// never larger than its original.
func FuzzImage(f *testing.F) {
	for _, seed := range fuzzImageSeeds(f) {
		f.Add(seed, uint8(32), uint8(32), true)
		f.Add(seed, uint8(2), uint8(1), false)
		f.Add(seed, uint8(0), uint8(3), true)
	}
	f.Add([]byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"), uint8(1), uint8(1), false)
	f.Add([]byte("\x89PNG\r\n\x1a\n"), uint8(8), uint8(8), false)
	f.Add([]byte("RIFF\x00\x00\x00\x00WEBPVP8 "), uint8(8), uint8(8), true)
	// One service for every input: uploads get their own media IDs, and the
	// store's writes (each synced to disk) are what limits the speed.
	s, err := New(Config{ServerName: "fuzz.test", StorePath: f.TempDir(), MaxUploadSize: 1 << 20,
		MaxImagePixels: fuzzMaxPixels, ThumbnailSizes: []ThumbnailSize{{Width: 16, Height: 16, Method: Crop}, {Width: 32, Height: 24, Method: Scale}},
		Logger: slog.New(slog.DiscardHandler)}, &memStore{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Close) // before the store's directory goes
	f.Fuzz(func(t *testing.T, data []byte, w, h uint8, crop bool) {
		ctx := context.Background()
		m, err := s.Upload(ctx, Upload{UserID: "@u:fuzz.test", ContentType: "image/png", Body: bytes.NewReader(data), Length: int64(len(data))})
		if err != nil {
			t.Fatalf("upload of %d bytes: %v", len(data), err)
		}
		method := Scale
		if crop {
			method = Crop
		}
		served, err := s.Thumbnail(ctx, m.Origin, m.MediaID, int(w)+1, int(h)+1, method, Fetch{})
		if err != nil {
			return
		}
		defer served.File.Close()
		if int64(m.Width)*int64(m.Height) > fuzzMaxPixels {
			t.Fatalf("%dx%d image thumbnailed despite the %d-pixel limit", m.Width, m.Height, fuzzMaxPixels)
		}
		cfg, _, err := image.DecodeConfig(served.File)
		if err != nil {
			t.Fatalf("served thumbnail (%s) does not decode: %v", served.ContentType, err)
		}
		if cfg.Width != served.Width || cfg.Height != served.Height {
			t.Fatalf("thumbnail announced %dx%d, is %dx%d", served.Width, served.Height, cfg.Width, cfg.Height)
		}
		if served.Width > m.Width || served.Height > m.Height {
			t.Fatalf("%dx%d thumbnail of a %dx%d image", served.Width, served.Height, m.Width, m.Height)
		}
	})
}

// fuzzImageSeeds are small valid images in every format image.Decode knows
// here, with transparency, palettes and 16-bit colour.
func fuzzImageSeeds(f *testing.F) [][]byte {
	f.Helper()
	nrgba := image.NewNRGBA(image.Rect(0, 0, 7, 5))
	for i := range nrgba.Pix {
		nrgba.Pix[i] = byte(i * 37)
	}
	gray16 := image.NewGray16(image.Rect(0, 0, 3, 9))
	gray16.SetGray16(1, 1, color.Gray16{Y: 0xffff})
	paletted := image.NewPaletted(image.Rect(0, 0, 4, 4), color.Palette{color.Transparent, color.White})
	paletted.SetColorIndex(2, 2, 1)
	tall := image.NewRGBA(image.Rect(0, 0, 1, 2*fuzzMaxPixels)) // over the pixel limit

	var seeds [][]byte
	add := func(enc func(*bytes.Buffer) error) {
		var b bytes.Buffer
		if err := enc(&b); err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b.Bytes())
	}
	add(func(b *bytes.Buffer) error { return png.Encode(b, nrgba) })
	add(func(b *bytes.Buffer) error { return png.Encode(b, gray16) })
	add(func(b *bytes.Buffer) error { return png.Encode(b, paletted) })
	add(func(b *bytes.Buffer) error { return png.Encode(b, tall) })
	add(func(b *bytes.Buffer) error { return jpeg.Encode(b, nrgba, &jpeg.Options{Quality: 50}) })
	add(func(b *bytes.Buffer) error { return gif.Encode(b, paletted, nil) })
	add(func(b *bytes.Buffer) error { return bmp.Encode(b, nrgba) })
	add(func(b *bytes.Buffer) error { return tiff.Encode(b, nrgba, &tiff.Options{Compression: tiff.Deflate}) })
	return seeds
}
