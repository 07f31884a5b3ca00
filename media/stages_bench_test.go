package media

import (
	"bytes"
	"image"
	"image/jpeg"
	"testing"

	"github.com/disintegration/imaging"
)

// BenchmarkThumbnailStages splits the first thumbnail of a 12-megapixel
// JPEG (4000×3000, 4.5 MiB) into its stages, in memory: "decode" is
// image/jpeg, "decode-oriented" the whole-image decode with EXIF
// orientation the service used before (imaging.Decode); "resize/direct" is
// a 1001×701 crop resampled with Catmull-Rom from the full image, as
// before; "resize/box" the same from a box-filtered copy at twice its size
// (what the service does now); "encode" the JPEG of the result. "five/…"
// make the five default sizes from one decoded image: "before" shrinks
// once to twice the largest size (imaging's Box filter) and resamples all
// from that, "after" box-filters the YCbCr planes and resamples each size
// from the smallest copy at least twice its size, largest first.
func BenchmarkThumbnailStages(b *testing.B) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, NoisyPhoto(4000, 3000, 1), &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.Logf("JPEG: %d bytes", len(data))
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	const tw, th = 1001, 701 // as BenchmarkThumbnail12MP's "first": just over 4 times smaller
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := image.Decode(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode-oriented", func(b *testing.B) {
		for b.Loop() {
			if _, err := imaging.Decode(bytes.NewReader(data), imaging.AutoOrientation(true)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("resize/direct", func(b *testing.B) {
		for b.Loop() {
			render(img, tw, th, Crop)
		}
	})
	b.Run("resize/box", func(b *testing.B) {
		for b.Loop() {
			newSource(img, orientNormal).render(tw, th, Crop)
		}
	})
	out := newSource(img, orientNormal).render(tw, th, Crop)
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := encode(out); err != nil {
				b.Fatal(err)
			}
		}
	})
	sizes := []ThumbnailSize{{800, 600, Scale}, {640, 480, Scale}, {320, 240, Scale}, {96, 96, Crop}, {32, 32, Crop}}
	b.Run("five/before", func(b *testing.B) {
		for b.Loop() {
			small := imaging.Resize(img, 1600, 1200, imaging.Box)
			for _, sz := range sizes {
				w, h := TargetSize(4000, 3000, sz.Width, sz.Height, sz.Method)
				render(small, w, h, sz.Method)
			}
		}
	})
	b.Run("five/after", func(b *testing.B) {
		for b.Loop() {
			src := newSource(img, orientNormal)
			for _, sz := range sizes {
				w, h := TargetSize(4000, 3000, sz.Width, sz.Height, sz.Method)
				src.render(w, h, sz.Method)
			}
		}
	})
}
