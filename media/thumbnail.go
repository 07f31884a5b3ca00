package media

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/disintegration/imaging"
	_ "golang.org/x/image/webp" // registers WebP decoding with image.Decode

	"homeserver/mxhttp"
)

// Thumbnail methods.
const (
	Crop  = "crop"
	Scale = "scale"
)

// Served is content ready to send: an original or a thumbnail.
type Served struct {
	File        *os.File
	ContentType string
	Filename    string
	ModTime     time.Time
	// Width and Height are the pixel size of a thumbnail (or image).
	Width, Height int
}

// workingBytes is what resizing and encoding take per pixel of the
// original, on top of the decoded image: a resize's intermediate (4 bytes
// a pixel at most, at full height) and its result (4 at most), or an
// oriented copy (4).
const workingBytes = 8

// decodedBytes is what the decoder of an image of model m holds per pixel.
func decodedBytes(m color.Model) int64 {
	switch m {
	case color.RGBA64Model, color.NRGBA64Model:
		return 8
	case color.Gray16Model:
		return 2
	case color.GrayModel, color.AlphaModel:
		return 1
	case color.YCbCrModel:
		return 3 // 4:4:4; subsampled images take less
	}
	if _, ok := m.(color.Palette); ok {
		return 1
	}
	return 4
}

// decode decodes an image of configuration cfg (read ahead by
// image.DecodeConfig), as stored: the caller turns it upright (see
// source), after shrinking it, which is cheaper. It first reserves
// the pixels' bytes, decoded and while worked on, out of ThumbnailMemory:
// the caller holds them until the last thumbnail is written, then calls
// release. An image needing more than all of it waits to be worked on
// alone.
func (s *Service) decode(ctx context.Context, r io.Reader, cfg image.Config) (img image.Image, release func(), err error) {
	pixels := int64(cfg.Width) * int64(cfg.Height)
	decoded := decodedBytes(cfg.ColorModel)
	held := min(pixels*(decoded+workingBytes), s.cfg.ThumbnailMemory)
	if err := s.pixels.Acquire(ctx, held); err != nil {
		return nil, nil, err
	}
	img, _, err = image.Decode(r)
	if err != nil {
		s.pixels.Release(held)
		return nil, nil, err
	}
	// 16-bit colour (PNGs of 8 bytes a pixel) buys nothing in a thumbnail:
	// keep 4 bytes a pixel from now on, and give the rest back.
	switch img.(type) {
	case *image.NRGBA64, *image.RGBA64:
		img = imaging.Clone(img)
		if need := pixels * (4 + workingBytes); need < held {
			s.pixels.Release(held - need)
			held = need
		}
	}
	return img, func() { s.pixels.Release(held) }, nil
}

// TargetSize is the size of the thumbnail of a srcW×srcH image for a
// request of w×h: for scale, the image fitted within w×h; for crop, the
// image scaled to cover w×h then cropped to it. Neither ever upscales, so a
// small source gives a thumbnail smaller than asked for.
func TargetSize(srcW, srcH, w, h int, method string) (int, int) {
	fw, fh := float64(w)/float64(srcW), float64(h)/float64(srcH)
	if method == Crop {
		f := min(max(fw, fh), 1)
		sw := max(1, int(math.Round(float64(srcW)*f)))
		sh := max(1, int(math.Round(float64(srcH)*f)))
		return min(w, sw), min(h, sh)
	}
	f := min(fw, fh, 1)
	return max(1, int(math.Round(float64(srcW)*f))), max(1, int(math.Round(float64(srcH)*f)))
}

// nearest chooses, among sizes (of thumbnails made by method or not), the
// one that serves a request of w×h by method, as Synapse chooses among its
// thumbnails: those at least as large in one dimension before the others;
// for crop, the closest aspect ratio, then one at least as large in both
// dimensions, then the closest size; for scale, the closest size. Ties go
// to the earlier size.
func nearest(sizes []ThumbnailSize, w, h int, method string) (ThumbnailSize, bool) {
	type score struct{ smaller, aspect, notCovering, size int }
	less := func(a, b score) bool {
		if a.smaller != b.smaller {
			return a.smaller < b.smaller
		}
		if a.aspect != b.aspect {
			return a.aspect < b.aspect
		}
		if a.notCovering != b.notCovering {
			return a.notCovering < b.notCovering
		}
		return a.size < b.size
	}
	var best ThumbnailSize
	var bestScore score
	found := false
	for _, t := range sizes {
		if t.Method != method {
			continue
		}
		var sc score
		if t.Width < w && t.Height < h {
			sc.smaller = 1
		}
		if method == Crop {
			sc.aspect = abs(w*t.Height - h*t.Width)
			if t.Width < w || t.Height < h {
				sc.notCovering = 1
			}
		}
		sc.size = abs((w - t.Width) * (h - t.Height))
		if !found || less(sc, bestScore) {
			best, bestScore, found = t, sc, true
		}
	}
	return best, found
}

// thumbnailSizes are the sizes of m's thumbnails that thumbnail_sizes
// make (see TargetSize).
func (s *Service) thumbnailSizes(m Metadata) []ThumbnailSize {
	out := make([]ThumbnailSize, 0, len(s.cfg.ThumbnailSizes))
	for _, size := range s.cfg.ThumbnailSizes {
		tw, th := TargetSize(m.Width, m.Height, size.Width, size.Height, size.Method)
		out = append(out, ThumbnailSize{Width: tw, Height: th, Method: size.Method})
	}
	return out
}

// pick chooses the smallest stored thumbnail at least tw×th made by method
// (for crop, also of the same aspect ratio, within a pixel of rounding).
func pick(thumbs []Thumbnail, tw, th int, method string) (Thumbnail, bool) {
	var best Thumbnail
	found := false
	for _, t := range thumbs {
		if t.Method != method || t.Width < tw || t.Height < th {
			continue
		}
		if method == Crop && abs(t.Width*th-t.Height*tw) > max(t.Width, t.Height) {
			continue
		}
		if !found || t.Width*t.Height < best.Width*best.Height {
			best, found = t, true
		}
	}
	return best, found
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// render makes the tw×th thumbnail of img (see TargetSize).
func render(img image.Image, tw, th int, method string) *image.NRGBA {
	if method == Crop {
		return imaging.Fill(img, tw, th, imaging.Center, imaging.CatmullRom)
	}
	return imaging.Resize(img, tw, th, imaging.CatmullRom)
}

// encode writes a thumbnail as PNG when it has any transparency (to keep
// it) and as JPEG otherwise.
func encode(img *image.NRGBA) ([]byte, string, error) {
	var buf bytes.Buffer
	if !img.Opaque() {
		enc := png.Encoder{CompressionLevel: png.BestSpeed}
		if err := enc.Encode(&buf, img); err != nil {
			return nil, "", err
		}
		return buf.Bytes(), "image/png", nil
	}
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), "image/jpeg", nil
}

// storeThumbnail renders, encodes and records one thumbnail of m. The
// bytes are complete in the store (written aside, synced, renamed) before
// the row that serves them is inserted, so no request ever sees half a
// thumbnail.
func (s *Service) storeThumbnail(ctx context.Context, m Metadata, src *source, tw, th int, method string) (Thumbnail, error) {
	if s.hooks.render != nil {
		s.hooks.render(thumbKey{origin: m.Origin, mediaID: m.MediaID, method: method, w: tw, h: th})
	}
	out := src.render(tw, th, method)
	data, ct, err := encode(out)
	if err != nil {
		return Thumbnail{}, fmt.Errorf("media: encoding thumbnail: %w", err)
	}
	sum, err := s.files.putBytes(data)
	if err != nil {
		return Thumbnail{}, err
	}
	t := Thumbnail{
		Origin: m.Origin, MediaID: m.MediaID, Method: method,
		Width: out.Bounds().Dx(), Height: out.Bounds().Dy(),
		ContentType: ct, Size: int64(len(data)), SHA256: sum, CreatedTS: s.nowMS(),
	}
	if err := s.store.InsertThumbnail(ctx, t); err != nil {
		return Thumbnail{}, err
	}
	return t, nil
}

// thumbnailable types are served as their own thumbnail when the request
// is at least as large as the image.
var thumbnailable = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true}

// mayAnimate are the types whose originals can be animated: they are only
// served as their own thumbnail when the client asked for animation
// (animated=true), since animated=false forbids animated thumbnails.
var mayAnimate = map[string]bool{"image/gif": true, "image/webp": true, "image/apng": true}

// Thumbnail returns the nearest thumbnail of the configured sizes (with
// DynamicThumbnails, one of at least w×h), or the original image when it
// is no larger, from the cache or generated on the spot within the rate
// limit. Generated thumbnails are static; an animated original is served as
// is only when animated is set and the thumbnail would be its size.
func (s *Service) Thumbnail(ctx context.Context, origin, mediaID string, w, h int, method string, f Fetch) (Served, error) {
	return s.ThumbnailAnimated(ctx, origin, mediaID, w, h, method, false, f)
}

// ThumbnailAnimated is Thumbnail honouring the animated parameter.
func (s *Service) ThumbnailAnimated(ctx context.Context, origin, mediaID string, w, h int, method string, animated bool, f Fetch) (Served, error) {
	if method != Crop && method != Scale {
		return Served{}, mxhttp.InvalidParam("method must be crop or scale")
	}
	if w <= 0 || h <= 0 {
		return Served{}, mxhttp.InvalidParam("width and height must be positive integers")
	}
	m, err := s.get(ctx, origin, mediaID, f)
	if err != nil {
		return Served{}, err
	}
	if m.Width == 0 || m.Height == 0 {
		return Served{}, mxhttp.Unknown("Cannot generate thumbnails for the requested content")
	}
	if int64(m.Width)*int64(m.Height) > s.cfg.MaxImagePixels {
		if m.Origin != s.cfg.ServerName {
			return Served{}, &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_TOO_LARGE", Message: "Content is too large to thumbnail"}
		}
		return Served{}, mxhttp.TooLarge("Content is too large to thumbnail")
	}
	tw, th := TargetSize(m.Width, m.Height, w, h, method)
	if !s.cfg.DynamicThumbnails {
		// Only the configured sizes are ever made, so that requests cannot
		// make the server decode and store at will.
		size, ok := nearest(s.thumbnailSizes(m), w, h, method)
		if !ok {
			return Served{}, mxhttp.NotFound("No thumbnail of method %s is configured", method)
		}
		tw, th = size.Width, size.Height
	}
	ct := mediaType(m.ContentType)
	if tw == m.Width && th == m.Height && thumbnailable[ct] && (animated || !mayAnimate[ct]) {
		file, err := s.open(m)
		if err != nil {
			return Served{}, err
		}
		return Served{File: file, ContentType: m.ContentType, Filename: m.UploadName,
			ModTime: time.UnixMilli(m.UploadedTS), Width: m.Width, Height: m.Height}, nil
	}
	thumbs, err := s.store.ListThumbnails(ctx, m.Origin, m.MediaID)
	if err != nil {
		return Served{}, err
	}
	if tw != m.Width || th != m.Height {
		// A static copy at the original's size (made for an animated
		// original) stands in for the original: it answers only requests
		// that large, like the original would.
		thumbs = slices.DeleteFunc(thumbs, func(t Thumbnail) bool { return t.Width == m.Width && t.Height == m.Height })
	}
	t, ok := pick(thumbs, tw, th, method)
	if ok && (t.Width != tw || t.Height != th) && s.configured(m, tw, th, method) {
		// Every upload gets its configured sizes: this one is queued or
		// being made. It is waited for, or made, rather than answered by a
		// larger one that the client would keep.
		ok = false
	}
	if ok && (t.Width != tw || t.Height != th) {
		better, found, err := s.nearer(ctx, m, tw, th, method, &t)
		if err != nil {
			return Served{}, err
		}
		if found {
			t = better
		}
	}
	if !ok {
		if t, err = s.onDemand(ctx, m, tw, th, method, f.Requester); err != nil {
			return Served{}, err
		}
	}
	file, err := s.files.open(t.SHA256)
	if err != nil {
		return Served{}, err
	}
	return Served{File: file, ContentType: t.ContentType, Filename: thumbnailName(t.ContentType),
		ModTime: time.UnixMilli(t.CreatedTS), Width: t.Width, Height: t.Height}, nil
}

// errUndecodable marks an original that does not decode: its header
// looked like an image (probe reads no more), its data is not one.
var errUndecodable = errors.New("media: original does not decode")

// generate decodes the original and makes one thumbnail.
func (s *Service) generate(ctx context.Context, m Metadata, tw, th int, method string) (Thumbnail, error) {
	src, release, err := s.openSource(ctx, m)
	if err != nil {
		s.undecodable.note(m, err)
		return Thumbnail{}, err
	}
	defer release()
	return s.storeThumbnail(ctx, m, src, tw, th, method)
}

// openSource decodes m's original, holding its share of ThumbnailMemory
// until release.
func (s *Service) openSource(ctx context.Context, m Metadata) (*source, func(), error) {
	f, err := s.open(m)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	cannot := fmt.Errorf("%w: %w", errUndecodable, mxhttp.Unknown("Cannot generate thumbnails for the requested content"))
	cfg, format, err := image.DecodeConfig(f)
	if err != nil {
		return nil, nil, cannot
	}
	orientation := orientNormal
	if format == "jpeg" {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, nil, fmt.Errorf("media: rewinding %s: %w", m.SHA256, err)
		}
		orientation = readOrientation(f)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, nil, fmt.Errorf("media: rewinding %s: %w", m.SHA256, err)
	}
	img, release, err := s.decode(ctx, bufio.NewReaderSize(f, 64<<10), cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, err
		}
		return nil, nil, cannot
	}
	return newSource(img, orientation), release, nil
}

func thumbnailName(contentType string) string {
	if contentType == "image/png" {
		return "thumbnail.png"
	}
	return "thumbnail.jpg"
}

func mediaType(ct string) string {
	for i := 0; i < len(ct); i++ {
		if ct[i] == ';' {
			ct = ct[:i]
			break
		}
	}
	return ct
}
