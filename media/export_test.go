package media

import (
	"image"
	"math/rand/v2"
)

// NoisyPhoto is a w×h picture with gradients, shapes and sensor-like
// noise, so that its JPEG at quality 90 is as large as a camera's (a
// 4000×3000 one is about 4.6 MiB), and decoding it costs what a real
// photograph's does. The same seed gives the same picture.
func NoisyPhoto(w, h int, seed uint64) image.Image {
	rng := rand.New(rand.NewPCG(seed, 1))
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	for y := range h {
		for x := range w {
			v := (x*255)/w/2 + (y*255)/h/3 + ((x/97+y/61)%3)*25
			v += int(rng.IntN(37)) - 18
			img.Y[y*img.YStride+x] = uint8(min(max(v, 0), 255))
		}
	}
	cw, ch := (w+1)/2, (h+1)/2
	for y := range ch {
		for x := range cw {
			img.Cb[y*img.CStride+x] = uint8(96 + x*64/cw + rng.IntN(5))
			img.Cr[y*img.CStride+x] = uint8(160 - y*64/ch + rng.IntN(5))
		}
	}
	return img
}
