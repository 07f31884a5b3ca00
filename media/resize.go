package media

import (
	"bufio"
	"encoding/binary"
	"image"
	"image/color"
	"io"
	"math"
	"runtime"
	"sync"

	"github.com/disintegration/imaging"
)

// EXIF orientations (TIFF tag 0x0112): how the stored pixels are to be
// turned to show the picture upright.
const (
	orientNormal     = 1
	orientFlipH      = 2
	orientRotate180  = 3
	orientFlipV      = 4
	orientTranspose  = 5
	orientRotate270  = 6
	orientTransverse = 7
	orientRotate90   = 8
)

// readOrientation returns the EXIF orientation of a JPEG, or orientNormal
// when r is no JPEG or has none (or a malformed one). It reads only the
// markers before the first scan.
func readOrientation(r io.Reader) int {
	br := bufio.NewReader(r)
	var soi [2]byte
	if _, err := io.ReadFull(br, soi[:]); err != nil || soi != [2]byte{0xff, 0xd8} {
		return orientNormal
	}
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil || hdr[0] != 0xff {
			return orientNormal
		}
		marker, size := hdr[1], int(binary.BigEndian.Uint16(hdr[2:]))
		if marker == 0xda || marker == 0xd9 || size < 2 { // start of scan, end of image
			return orientNormal
		}
		if marker != 0xe1 { // not APP1
			if _, err := br.Discard(size - 2); err != nil {
				return orientNormal
			}
			continue
		}
		seg := make([]byte, size-2)
		if _, err := io.ReadFull(br, seg); err != nil {
			return orientNormal
		}
		if o, ok := exifOrientation(seg); ok {
			return o
		}
		// Another APP1 (XMP) may come before or after the EXIF one.
	}
}

// exifOrientation reads the orientation tag of IFD0 in an APP1 segment;
// ok is false when the segment is not EXIF.
func exifOrientation(seg []byte) (int, bool) {
	const header = "Exif\x00\x00"
	if len(seg) < len(header)+8 || string(seg[:len(header)]) != header {
		return 0, false
	}
	tiff := seg[len(header):]
	var bo binary.ByteOrder
	switch string(tiff[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return orientNormal, true
	}
	ifd := int(bo.Uint32(tiff[4:8]))
	if ifd < 8 || ifd+2 > len(tiff) {
		return orientNormal, true
	}
	n := int(bo.Uint16(tiff[ifd:]))
	for i := range n {
		e := ifd + 2 + 12*i
		if e+12 > len(tiff) {
			break
		}
		if bo.Uint16(tiff[e:]) != 0x0112 {
			continue
		}
		if v := int(bo.Uint16(tiff[e+8:])); v >= orientNormal && v <= orientRotate90 {
			return v, true
		}
		break
	}
	return orientNormal, true
}

// orientedSize is the size of a w×h image shown upright.
func orientedSize(w, h, orientation int) (int, int) {
	if orientation >= orientTranspose {
		return h, w
	}
	return w, h
}

// orient turns img upright (as imaging's AutoOrientation does).
func orient(img image.Image, orientation int) image.Image {
	switch orientation {
	case orientFlipH:
		return imaging.FlipH(img)
	case orientRotate180:
		return imaging.Rotate180(img)
	case orientFlipV:
		return imaging.FlipV(img)
	case orientTranspose:
		return imaging.Transpose(img)
	case orientRotate270:
		return imaging.Rotate270(img)
	case orientTransverse:
		return imaging.Transverse(img)
	case orientRotate90:
		return imaging.Rotate90(img)
	}
	return img
}

// source is a decoded original being made into thumbnails, with the
// smaller copies made of it so far: the original is decoded once, and each
// thumbnail is resampled from the smallest copy still at least twice its
// size.
type source struct {
	raw         image.Image // as decoded, not yet oriented
	orientation int
	w, h        int           // upright size
	upright     image.Image   // raw turned upright, made only when needed
	shrunk      []image.Image // upright box-filtered copies
}

func newSource(raw image.Image, orientation int) *source {
	b := raw.Bounds()
	w, h := orientedSize(b.Dx(), b.Dy(), orientation)
	return &source{raw: raw, orientation: orientation, w: w, h: h}
}

// render makes the tw×th thumbnail (see TargetSize).
func (s *source) render(tw, th int, method string) *image.NRGBA {
	f := max(float64(tw)/float64(s.w), float64(th)/float64(s.h))
	return render(s.base(f), tw, th, method)
}

// base returns an upright copy of the image for a thumbnail f times its
// size: as small as integer box filtering gets it while staying at least
// 1.5 (about 2) times larger than the thumbnail. A resampling filter costs
// tens of operations per source pixel whatever the reduction, the box
// filter one addition: it does the bulk of a large reduction, and the
// quality filter the last factor of 1.5 to 2.5.
func (s *source) base(f float64) image.Image {
	var from image.Image
	fromScale := 1.0
	for _, c := range s.shrunk {
		if sc := float64(c.Bounds().Dx()) / float64(s.w); sc >= 1.5*f && sc < fromScale {
			from, fromScale = c, sc
		}
	}
	// Rounded, so that a reduction just over 4 times (1000 pixels of
	// 4000) is still halved first: fromScale/k is then at least 1.5f.
	k := int(math.Round(fromScale / (2 * f)))
	if k < 2 {
		if from != nil {
			return from
		}
		if s.upright == nil {
			s.upright = orient(s.raw, s.orientation)
		}
		return s.upright
	}
	var out image.Image
	if from == nil {
		// Shrink before turning: turning the small copy is cheaper.
		out = orient(boxShrink(s.raw, k), s.orientation)
	} else {
		out = boxShrink(from, k)
	}
	s.shrunk = append(s.shrunk, out)
	return out
}

// boxShrink returns img reduced k times in each dimension, each pixel the
// average of a k×k block (the blocks at the right and bottom edges may be
// smaller).
func boxShrink(img image.Image, k int) *image.NRGBA {
	if y, ok := img.(*image.YCbCr); ok {
		if hs, vs, ok := subsampling(y.SubsampleRatio); ok {
			return shrinkYCbCr(y, k, hs, vs)
		}
	}
	n, ok := img.(*image.NRGBA)
	if !ok {
		n = imaging.Clone(img)
	}
	return shrinkNRGBA(n, k)
}

// subsampling returns the horizontal and vertical chroma subsampling.
func subsampling(r image.YCbCrSubsampleRatio) (hs, vs int, ok bool) {
	switch r {
	case image.YCbCrSubsampleRatio444:
		return 1, 1, true
	case image.YCbCrSubsampleRatio422:
		return 2, 1, true
	case image.YCbCrSubsampleRatio420:
		return 2, 2, true
	case image.YCbCrSubsampleRatio440:
		return 1, 2, true
	case image.YCbCrSubsampleRatio411:
		return 4, 1, true
	case image.YCbCrSubsampleRatio410:
		return 4, 2, true
	}
	return 0, 0, false
}

// parallelRows runs band over [0, n) split into one band per CPU: the
// box filters are memory-bound loops that split cleanly by output row.
func parallelRows(n int, band func(lo, hi int)) {
	parts := min(runtime.GOMAXPROCS(0), max(1, n/16))
	if parts <= 1 {
		band(0, n)
		return
	}
	var wg sync.WaitGroup
	for p := range parts {
		lo, hi := n*p/parts, n*(p+1)/parts
		wg.Go(func() { band(lo, hi) })
	}
	wg.Wait()
}

// shrinkYCbCr box-filters a decoded JPEG's planes directly, without first
// converting its 12 million pixels to RGBA: averaging commutes with the
// (affine) YCbCr to RGB conversion, so only the averages are converted.
func shrinkYCbCr(src *image.YCbCr, k, hs, vs int) *image.NRGBA {
	r := src.Rect
	w, h := r.Dx(), r.Dy()
	ow, oh := (w+k-1)/k, (h+k-1)/k
	dst := image.NewNRGBA(image.Rect(0, 0, ow, oh))
	// Chroma sample columns of each output column, in the image's
	// coordinates as COffset computes them.
	cx0, cx1 := make([]int, ow), make([]int, ow)
	for ox := range ow {
		x0, x1 := r.Min.X+ox*k, r.Min.X+min((ox+1)*k, w)
		cx0[ox], cx1[ox] = x0/hs-r.Min.X/hs, (x1-1)/hs-r.Min.X/hs
	}
	parallelRows(oh, func(lo, hi int) {
		ys := make([]uint64, ow)
		cbs := make([]uint64, ow)
		crs := make([]uint64, ow)
		for oy := lo; oy < hi; oy++ {
			clear(ys)
			clear(cbs)
			clear(crs)
			y0, y1 := oy*k, min((oy+1)*k, h)
			for y := y0; y < y1; y++ {
				row := src.Y[y*src.YStride : y*src.YStride+w]
				if k == 2 { // the common halving, without the inner loop
					for ox := range w / 2 {
						ys[ox] += uint64(row[2*ox]) + uint64(row[2*ox+1])
					}
					if w%2 == 1 {
						ys[ow-1] += uint64(row[w-1])
					}
					continue
				}
				x := 0
				for ox := range ys {
					end := min(x+k, w)
					var sum uint64
					for ; x < end; x++ {
						sum += uint64(row[x])
					}
					ys[ox] += sum
				}
			}
			cy0, cy1 := (r.Min.Y+y0)/vs-r.Min.Y/vs, (r.Min.Y+y1-1)/vs-r.Min.Y/vs
			for cy := cy0; cy <= cy1; cy++ {
				cb, cr := src.Cb[cy*src.CStride:], src.Cr[cy*src.CStride:]
				for ox := range cbs {
					var sb, sr uint64
					for cx := cx0[ox]; cx <= cx1[ox]; cx++ {
						sb += uint64(cb[cx])
						sr += uint64(cr[cx])
					}
					cbs[ox] += sb
					crs[ox] += sr
				}
			}
			out := dst.Pix[oy*dst.Stride : oy*dst.Stride+4*ow]
			for ox := range ys {
				n := uint64((min((ox+1)*k, w) - ox*k) * (y1 - y0))
				cn := uint64((cx1[ox] - cx0[ox] + 1) * (cy1 - cy0 + 1))
				cr, cg, cb := color.YCbCrToRGB(uint8((ys[ox]+n/2)/n), uint8((cbs[ox]+cn/2)/cn), uint8((crs[ox]+cn/2)/cn))
				out[4*ox], out[4*ox+1], out[4*ox+2], out[4*ox+3] = cr, cg, cb, 0xff
			}
		}
	})
	return dst
}

// shrinkNRGBA box-filters non-premultiplied pixels, weighting each colour
// by its alpha so that transparent pixels' colours do not bleed.
func shrinkNRGBA(src *image.NRGBA, k int) *image.NRGBA {
	r := src.Rect
	w, h := r.Dx(), r.Dy()
	ow, oh := (w+k-1)/k, (h+k-1)/k
	dst := image.NewNRGBA(image.Rect(0, 0, ow, oh))
	parallelRows(oh, func(lo, hi int) {
		sums := make([]uint64, 4*ow)
		for oy := lo; oy < hi; oy++ {
			clear(sums)
			y0, y1 := oy*k, min((oy+1)*k, h)
			for y := y0; y < y1; y++ {
				row := src.Pix[y*src.Stride : y*src.Stride+4*w]
				for ox := range ow {
					var sr, sg, sb, sa uint64
					px := row[4*ox*k : 4*min((ox+1)*k, w)]
					for i := 0; i+3 < len(px); i += 4 {
						a := uint64(px[i+3])
						sr += uint64(px[i]) * a
						sg += uint64(px[i+1]) * a
						sb += uint64(px[i+2]) * a
						sa += a
					}
					s := sums[4*ox : 4*ox+4]
					s[0] += sr
					s[1] += sg
					s[2] += sb
					s[3] += sa
				}
			}
			out := dst.Pix[oy*dst.Stride : oy*dst.Stride+4*ow]
			for ox := range ow {
				s := sums[4*ox : 4*ox+4]
				if s[3] == 0 {
					continue // fully transparent: stays zero
				}
				n := uint64((min((ox+1)*k, w) - ox*k) * (y1 - y0))
				out[4*ox] = uint8((s[0] + s[3]/2) / s[3])
				out[4*ox+1] = uint8((s[1] + s[3]/2) / s[3])
				out[4*ox+2] = uint8((s[2] + s[3]/2) / s[3])
				out[4*ox+3] = uint8((s[3] + n/2) / n)
			}
		}
	})
	return dst
}
