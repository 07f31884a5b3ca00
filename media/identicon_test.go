package media

import (
	"bytes"
	"image/png"
	"testing"
)

func TestIdenticonSymmetricAndDeterministic(t *testing.T) {
	for _, name := range []string{"@alice:example.org", "bob", ""} {
		b := Identicon(name, 120, 120)
		if !bytes.Equal(b, Identicon(name, 120, 120)) {
			t.Fatalf("%q: not deterministic", name)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		colours := map[[4]uint32]bool{}
		for y := range 120 {
			for x := range 120 {
				r, g, bl, a := img.At(x, y).RGBA()
				colours[[4]uint32{r, g, bl, a}] = true
				r2, g2, b2, a2 := img.At(119-x, y).RGBA()
				if r != r2 || g != g2 || bl != b2 || a != a2 {
					t.Fatalf("%q: not symmetric at (%d, %d)", name, x, y)
				}
			}
		}
		// The margin is background; the pattern has some cells on in
		// all but a 1-in-2^15 case.
		if len(colours) != 2 {
			t.Fatalf("%q: %d colours", name, len(colours))
		}
	}
	if img, err := png.Decode(bytes.NewReader(Identicon("x", 1, 1))); err != nil || img.Bounds().Dx() != 1 {
		t.Fatalf("1x1: %v", err)
	}
	if img, err := png.Decode(bytes.NewReader(Identicon("x", IdenticonMaxSize, 7))); err != nil || img.Bounds().Dx() != IdenticonMaxSize {
		t.Fatalf("wide: %v", err)
	}
}
