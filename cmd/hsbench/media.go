package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"net/url"
	"strings"
	"time"
)

// testJPEG makes a w×h JPEG of gradients with pseudo-random noise
// (quality 90), which compresses about as badly as a photograph.
func testJPEG(w, h int) ([]byte, error) {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	state := uint32(2463534242)
	noise := func() int {
		state ^= state << 13
		state ^= state >> 17
		state ^= state << 5
		return int(state%48) - 24
	}
	clamp := func(v int) uint8 { return uint8(max(0, min(255, v))) }
	for y := range h {
		for x := range w {
			img.SetRGBA(x, y, color.RGBA{clamp(x*255/w + noise()), clamp(y*255/h + noise()), clamp((x+y)%256 + noise()), 255})
		}
	}
	var buf bytes.Buffer
	err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	return buf.Bytes(), err
}

// runMedia uploads a generated 12-megapixel JPEG a few times and asks for a
// thumbnail of each, twice (first: made on demand; then cached).
func runMedia(ctx context.Context, b *Bench) (*Result, error) {
	o := b.Opt
	if o.MediaUploads < 1 {
		return nil, errors.New("media: -media-uploads must be positive")
	}
	b.logf("media: generating a 4000×3000 JPEG")
	img, err := testJPEG(4000, 3000)
	if err != nil {
		return nil, err
	}
	r := &Result{Params: map[string]string{"uploads": fmt.Sprint(o.MediaUploads), "size": fmt.Sprintf("%.1fMiB", float64(len(img))/(1<<20))}}
	users, err := b.Users(ctx, "media", 1)
	if err != nil {
		return nil, err
	}
	u := users[0]
	b.measuring(r)
	var up, first, cached []time.Duration
	p := b.progress("media", o.MediaUploads)
	defer p.Stop()
	for i := range o.MediaUploads {
		// Each upload differs by its last bytes (after EOI) so that a
		// content-addressed store still has to store and thumbnail it.
		body := append(bytes.Clone(img), []byte(fmt.Sprintf("%s-%d", b.Prefix, i))...)
		var out struct {
			URI string `json:"content_uri"`
		}
		t0 := time.Now()
		if _, err := b.C.DoRaw(ctx, "POST", "/_matrix/media/v3/upload?filename=hsbench.jpg", u.Token, "image/jpeg", body, &out); err != nil {
			return nil, err
		}
		up = append(up, time.Since(t0))
		server, id, ok := strings.Cut(strings.TrimPrefix(out.URI, "mxc://"), "/")
		if !ok {
			return nil, fmt.Errorf("upload answered content_uri %q", out.URI)
		}
		// A size unlikely to be among the server's pre-made ones.
		q := url.Values{"width": {fmt.Sprint(1000 + i)}, "height": {"700"}, "method": {"crop"}}
		path := "/_matrix/client/v1/media/thumbnail/" + url.PathEscape(server) + "/" + url.PathEscape(id) + "?" + q.Encode()
		for _, into := range []*[]time.Duration{&first, &cached} {
			t0 := time.Now()
			n, err := b.C.Do(ctx, "GET", path, u.Token, nil, nil)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				return nil, errors.New("empty thumbnail")
			}
			*into = append(*into, time.Since(t0))
		}
		p.Inc()
	}
	su, _ := Summarize(up)
	var total time.Duration
	for _, d := range up {
		total += d
	}
	r.add("upload throughput", float64(len(img))*float64(len(up))/(1<<20)/total.Seconds(), "MiB/s")
	r.add("upload p50", ms(su.P50), "ms")
	r.add("upload max", ms(su.Max), "ms")
	sf, _ := Summarize(first)
	sc, err := Summarize(cached)
	if err != nil {
		return nil, err
	}
	r.add("thumbnail first p50", ms(sf.P50), "ms")
	r.add("thumbnail first max", ms(sf.Max), "ms")
	r.add("thumbnail cached p50", ms(sc.P50), "ms")
	r.add("thumbnail cached max", ms(sc.Max), "ms")
	r.Events = len(up)
	return r, nil
}
