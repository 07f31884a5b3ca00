package media

import (
	"bytes"
	"context"
	"crypto/sha256"
	"image"
	"image/color"
	"image/png"
	"math"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"homeserver/mxhttp"
)

// Identicons, as Synapse served them in 2015: a deterministic picture
// made from a hash of a name, used as the default avatar of new users.
const (
	// IdenticonDefaultSize is the width and height when the request gives
	// none.
	IdenticonDefaultSize = 96
	// IdenticonMaxSize bounds each side, and so the work of one request.
	IdenticonMaxSize = 512
	// identiconGrid is the pattern's cells per side; the left half is
	// mirrored onto the right, as GitHub's identicons are.
	identiconGrid = 5
)

// Identicon returns a width×height PNG drawn from the SHA-256 of name: a
// 5×5 pattern, symmetric about its vertical axis, in one colour from the
// hash on a light background, with half a cell of margin. The same name and
// size always give the same bytes.
func Identicon(name string, width, height int) []byte {
	sum := sha256.Sum256([]byte(name))
	fg := identiconColour(sum)
	bg := color.NRGBA{R: 0xf0, G: 0xf0, B: 0xf0, A: 0xff}
	img := image.NewPaletted(image.Rect(0, 0, width, height), color.Palette{bg, fg})

	// Cells filled: bit i of the hash (after the colour bytes) fills cell
	// i of the three left columns, mirrored onto the two right ones.
	var on [identiconGrid][identiconGrid]bool
	bit := 0
	for col := 0; col < (identiconGrid+1)/2; col++ {
		for row := 0; row < identiconGrid; row++ {
			b := sum[4+bit/8]>>(bit%8)&1 == 1
			on[row][col], on[row][identiconGrid-1-col] = b, b
			bit++
		}
	}
	// The grid plus half a cell each side is six cells, centred in the
	// smaller side.
	side := min(width, height)
	x0, y0 := (width-side)/2, (height-side)/2
	cells := identiconGrid + 1
	for y := 0; y < side; y++ {
		// Position in half cells: 1..10 is the grid.
		row := (y*cells*2/side - 1) / 2
		if y*cells*2/side < 1 || row >= identiconGrid {
			continue
		}
		for x := 0; x < side; x++ {
			col := (x*cells*2/side - 1) / 2
			if x*cells*2/side < 1 || col >= identiconGrid {
				continue
			}
			if on[row][col] {
				img.SetColorIndex(x0+x, y0+y, 1)
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		// Encoding an in-memory paletted image into a buffer cannot fail.
		panic("media: encode identicon: " + err.Error())
	}
	return buf.Bytes()
}

// identiconColour picks a saturated, mid-light colour from the hash, so
// that the pattern always stands out from the background.
func identiconColour(sum [32]byte) color.NRGBA {
	hue := float64(uint16(sum[0])<<8|uint16(sum[1])) / 65536 * 6
	// HSL with saturation 0.65 and lightness 0.5, hue from the hash.
	c := 0.65
	x := c * (1 - math.Abs(math.Mod(hue, 2)-1))
	var r, g, b float64
	switch int(hue) {
	case 0:
		r, g = c, x
	case 1:
		r, g = x, c
	case 2:
		g, b = c, x
	case 3:
		g, b = x, c
	case 4:
		r, b = x, c
	default:
		r, b = c, x
	}
	m := 0.5 - c/2
	to8 := func(v float64) uint8 { return uint8((v+m)*255 + 0.5) }
	return color.NRGBA{R: to8(r), G: to8(g), B: to8(b), A: 0xff}
}

// MountIdenticons registers GET /_matrix/media/v1/identicon/{name}
// (enable_identicons). The server mounts it only when identicons are on;
// otherwise the path is unrecognised.
func (h *HTTP) MountIdenticons(r chi.Router) {
	r.Get("/_matrix/media/v1/identicon/{name}", h.identicon)
}

func (h *HTTP) identicon(w http.ResponseWriter, r *http.Request) {
	width, err := identiconSide(r, "width")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	height, err := identiconSide(r, "height")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	img := Identicon(param(r, "name"), width, height)
	Headers(w.Header(), "image/png", "")
	// The picture depends on nothing but the URL.
	w.Header().Set("Cache-Control", "public, max-age=86400, immutable")
	w.Header().Set("Content-Length", strconv.Itoa(len(img)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(img)
}

func identiconSide(r *http.Request, key string) (int, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return IdenticonDefaultSize, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > IdenticonMaxSize {
		return 0, mxhttp.InvalidParam("%s must be an integer from 1 to %d", key, IdenticonMaxSize)
	}
	return n, nil
}

// IdenticonAvatar makes userID's identicon, stores it as a new piece of
// local media uploaded by them, and returns its mxc:// URI: the default
// avatar of a new user, as Synapse once set it.
func (h *HTTP) IdenticonAvatar(ctx context.Context, userID string) (string, error) {
	img := Identicon(userID, IdenticonDefaultSize, IdenticonDefaultSize)
	m, err := h.svc.Upload(ctx, Upload{
		UserID: userID, ContentType: "image/png", Filename: "identicon.png",
		Body: bytes.NewReader(img), Length: int64(len(img)),
	})
	if err != nil {
		return "", err
	}
	return h.svc.MXC(m.MediaID), nil
}
