package media

import "testing"

func TestTargetSize(t *testing.T) {
	tests := []struct {
		srcW, srcH, w, h int
		method           string
		wantW, wantH     int
	}{
		{600, 300, 320, 240, Scale, 320, 160},
		{600, 300, 640, 480, Scale, 600, 300}, // never upscaled
		{300, 600, 320, 240, Scale, 120, 240},
		{600, 300, 32, 32, Crop, 32, 32},
		{600, 300, 96, 96, Crop, 96, 96},
		{600, 300, 800, 600, Crop, 600, 300},
		{50, 200, 96, 96, Crop, 50, 96}, // too narrow to fill: cut, not stretched
		{4000, 3000, 1, 1, Scale, 1, 1},
		{4000, 1, 10, 10, Scale, 10, 1}, // never 0 pixels
	}
	for _, tt := range tests {
		w, h := TargetSize(tt.srcW, tt.srcH, tt.w, tt.h, tt.method)
		if w != tt.wantW || h != tt.wantH {
			t.Errorf("TargetSize(%dx%d, %dx%d, %s) = %dx%d, want %dx%d", tt.srcW, tt.srcH, tt.w, tt.h, tt.method, w, h, tt.wantW, tt.wantH)
		}
	}
}

func TestPick(t *testing.T) {
	stored := []Thumbnail{
		{Method: Crop, Width: 32, Height: 32},
		{Method: Crop, Width: 96, Height: 96},
		{Method: Scale, Width: 320, Height: 160},
		{Method: Scale, Width: 640, Height: 320},
	}
	tests := []struct {
		w, h   int
		method string
		want   int // index into stored, -1 for none
	}{
		{32, 32, Crop, 0},
		{40, 40, Crop, 1},
		{96, 96, Crop, 1},
		{97, 97, Crop, -1},
		{96, 48, Crop, -1}, // other aspect: a square crop would not do
		{100, 50, Scale, 2},
		{320, 160, Scale, 2},
		{400, 200, Scale, 3},
		{700, 350, Scale, -1},
	}
	for _, tt := range tests {
		got, ok := pick(stored, tt.w, tt.h, tt.method)
		switch {
		case tt.want < 0 && ok:
			t.Errorf("pick(%dx%d %s) = %+v, want none", tt.w, tt.h, tt.method, got)
		case tt.want >= 0 && (!ok || got != stored[tt.want]):
			t.Errorf("pick(%dx%d %s) = %+v, %v, want %+v", tt.w, tt.h, tt.method, got, ok, stored[tt.want])
		}
	}
}

func TestValidMediaID(t *testing.T) {
	for _, id := range []string{"abc", "A-b_9", newMediaID()} {
		if !ValidMediaID(id) {
			t.Errorf("ValidMediaID(%q) = false", id)
		}
	}
	long := make([]byte, 256)
	for i := range long {
		long[i] = 'a'
	}
	for _, id := range []string{"", "..", "../etc", "a/b", "a.b", "ü", "a b", "a%2F", string(long)} {
		if ValidMediaID(id) {
			t.Errorf("ValidMediaID(%q) = true", id)
		}
	}
}

func TestContentDisposition(t *testing.T) {
	tests := []struct{ ct, name, want string }{
		{"image/png", "", "inline"},
		{"image/png", "cat.png", `inline; filename=cat.png`},
		{"text/html", "x.html", `attachment; filename=x.html`},
		{"image/svg+xml", "", "attachment"},
		{"text/plain; charset=utf-8", "a b.txt", `inline; filename="a b.txt"`},
		{"application/octet-stream", "naïve.bin", `attachment; filename*=utf-8''na%C3%AFve.bin`},
		{"application/pdf", `a"b`, `attachment; filename="a\"b"`},
	}
	for _, tt := range tests {
		if got := ContentDisposition(tt.ct, tt.name); got != tt.want {
			t.Errorf("ContentDisposition(%q, %q) = %q, want %q", tt.ct, tt.name, got, tt.want)
		}
	}
}

func TestCleanContentType(t *testing.T) {
	tests := map[string]string{
		"":                          "application/octet-stream",
		"image/PNG":                 "image/png",
		"text/plain;charset=UTF-8":  "text/plain; charset=UTF-8",
		"garbage":                   "application/octet-stream",
		"text/html; charset=\"x\"y": "application/octet-stream",
	}
	for in, want := range tests {
		if got := CleanContentType(in); got != want {
			t.Errorf("CleanContentType(%q) = %q, want %q", in, got, want)
		}
	}
}
