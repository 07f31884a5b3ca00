package media

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
)

func newRouter(h *HTTP) http.Handler {
	r := chi.NewRouter()
	h.MountClient(r)
	return r
}

// memStore is an in-memory Store for tests of this package.
type memStore struct {
	mu    sync.Mutex
	media map[string]Metadata
}

func (m *memStore) InsertMedia(_ context.Context, md Metadata) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.media == nil {
		m.media = map[string]Metadata{}
	}
	m.media[md.Origin+"/"+md.MediaID] = md
	return nil
}
func (m *memStore) CreatePendingMedia(ctx context.Context, md Metadata) error {
	return m.InsertMedia(ctx, md)
}
func (m *memStore) CompletePendingMedia(ctx context.Context, md Metadata) error {
	return m.InsertMedia(ctx, md)
}
func (m *memStore) GetMedia(_ context.Context, origin, id string) (Metadata, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	md, ok := m.media[origin+"/"+id]
	if !ok {
		return md, ErrNotFound
	}
	return md, nil
}
func (m *memStore) CountPendingMedia(context.Context, string, int64) (int, error) { return 0, nil }
func (m *memStore) UploadedBytesSince(context.Context, string, int64) (int64, error) {
	return 0, nil
}
func (m *memStore) ListThumbnails(context.Context, string, string) ([]Thumbnail, error) {
	return nil, nil
}
func (m *memStore) InsertThumbnail(context.Context, Thumbnail) error { return nil }

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func prefixes(t *testing.T, s ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, v := range s {
		out = append(out, netip.MustParsePrefix(v))
	}
	return out
}

// defaultBlacklist is part of the list the sample configuration recommends.
var defaultBlacklist = []string{"127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fe80::/10", "fc00::/7"}

// previewService returns a service with previews on; whitelist lists
// ranges allowed despite the blacklist.
func previewService(t *testing.T, cfg PreviewConfig) (*Service, *HTTP) {
	t.Helper()
	cfg.Enabled = true
	if cfg.IPBlacklist == nil {
		cfg.IPBlacklist = prefixes(t, defaultBlacklist...)
	}
	svc, err := New(Config{ServerName: "test.local", StorePath: t.TempDir(), MaxUploadSize: 1 << 20, Preview: cfg}, &memStore{})
	if err != nil {
		t.Fatal(err)
	}
	h := NewHTTP(svc, HTTPConfig{
		Auth:   func(next http.Handler) http.Handler { return next },
		UserID: func(*http.Request) string { return "@alice:test.local" },
	})
	return svc, h
}

// get calls preview_url through the router and decodes the answer.
func get(t *testing.T, h *HTTP, rawURL string) (int, map[string]any) {
	t.Helper()
	r := newRouter(h)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(rawURL), nil)
	r.ServeHTTP(rec, req)
	var body map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &body)
	return rec.Code, body
}

const page = `<!DOCTYPE html><html><head>
<title>  The &amp; Title
</title>
<meta property="og:description" content="A description">
<meta name="description" content="ignored, og:description wins">
<meta property="og:type" content="article">
<meta property="og:url" content="https://example.org/canonical">
<meta property="og:title" content="OG title">
<meta property="og:title" content="second og:title is ignored">
<meta property="og:image:width" content="1200">
</head><body><p>Hello</p></body></html>`

func TestParseOpenGraph(t *testing.T) {
	og := parseOpenGraph([]byte(page))
	want := map[string]any{
		"og:title": "OG title", "og:description": "A description", "og:type": "article",
		"og:url": "https://example.org/canonical", "og:image:width": 1200,
	}
	if fmt.Sprint(og) != fmt.Sprint(want) {
		t.Errorf("og = %v, want %v", og, want)
	}
	og = parseOpenGraph([]byte(`<html><head><title>Plain &lt;page&gt;</title><meta name="description" content=" Desc  here "></head><body><svg><title>not this</title></svg></body>`))
	if og["og:title"] != "Plain <page>" || og["og:description"] != "Desc here" {
		t.Errorf("fallbacks: %v", og)
	}
	if og := parseOpenGraph([]byte("\xff\xfe<title>x\xffy</title>")); og["og:title"] != "x\uFFFDy" {
		t.Errorf("invalid UTF-8: %q", og["og:title"])
	}
}

func loopbackServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func TestPreviewBlockedByDefault(t *testing.T) {
	var hits atomic.Int32
	s := loopbackServer(t, func(w http.ResponseWriter, _ *http.Request) { hits.Add(1); fmt.Fprint(w, page) })
	_, h := previewService(t, PreviewConfig{})
	code, body := get(t, h, s.URL)
	if code != http.StatusForbidden || body["errcode"] != "M_UNKNOWN" || body["error"] != "IP address blocked" {
		t.Fatalf("got %d %v", code, body)
	}
	if hits.Load() != 0 {
		t.Errorf("blocked server was contacted")
	}
}

func TestPreviewWhitelisted(t *testing.T) {
	s := loopbackServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept-Language") != "fr, en;q=0.5" {
			t.Errorf("Accept-Language = %q", r.Header.Get("Accept-Language"))
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	})
	_, h := previewService(t, PreviewConfig{IPWhitelist: prefixes(t, "127.0.0.1/32"), AcceptLanguage: []string{"fr", "en;q=0.5"}})
	code, body := get(t, h, s.URL+"/article#frag")
	if code != http.StatusOK || body["og:title"] != "OG title" || body["og:description"] != "A description" {
		t.Fatalf("got %d %v", code, body)
	}
}

func TestPreviewRedirectToBlocked(t *testing.T) {
	var blockedHits atomic.Int32
	blocked := loopbackServer(t, func(w http.ResponseWriter, _ *http.Request) { blockedHits.Add(1); fmt.Fprint(w, page) })
	_, port, _ := net.SplitHostPort(blocked.Listener.Addr().String())
	// 127.0.0.2 is loopback too, but only 127.0.0.1 is whitelisted.
	target := "http://127.0.0.2:" + port + "/"
	s := loopbackServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target, http.StatusFound)
	})
	_, h := previewService(t, PreviewConfig{IPWhitelist: prefixes(t, "127.0.0.1/32")})
	code, body := get(t, h, s.URL)
	if code != http.StatusForbidden || body["error"] != "IP address blocked" {
		t.Fatalf("got %d %v", code, body)
	}
	if blockedHits.Load() != 0 {
		t.Errorf("redirect target was contacted")
	}
}

func TestPreviewEveryResolvedAddressChecked(t *testing.T) {
	s := loopbackServer(t, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, page) })
	_, port, _ := net.SplitHostPort(s.Listener.Addr().String())
	res := fakeResolver{
		"good.example":   {netip.MustParseAddr("127.0.0.1")},
		"mixed.example":  {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.1.2.3")},
		"mapped.example": {netip.MustParseAddr("::ffff:10.1.2.3")},
	}
	_, h := previewService(t, PreviewConfig{IPWhitelist: prefixes(t, "127.0.0.1/32"), Resolver: res})
	if code, body := get(t, h, "http://good.example:"+port+"/"); code != http.StatusOK || body["og:title"] != "OG title" {
		t.Errorf("good: %d %v", code, body)
	}
	for _, host := range []string{"mixed.example", "mapped.example"} {
		if code, body := get(t, h, "http://"+host+":"+port+"/"); code != http.StatusForbidden {
			t.Errorf("%s: %d %v", host, code, body)
		}
	}
	if code, body := get(t, h, "http://[::ffff:10.1.2.3]:"+port+"/"); code != http.StatusForbidden {
		t.Errorf("IPv4-mapped literal: %d %v", code, body)
	}
	if code, body := get(t, h, "http://0.0.0.0:"+port+"/"); code != http.StatusForbidden {
		t.Errorf("unspecified: %d %v", code, body)
	}
	if code, body := get(t, h, "http://nowhere.example/"); code != http.StatusBadGateway {
		t.Errorf("unresolvable: %d %v", code, body)
	}
}

func TestPreviewOversize(t *testing.T) {
	big := strings.Repeat("x", 4096)
	s := loopbackServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		if r.URL.Path == "/chunked" {
			// No Content-Length: the cap applies while reading.
			w.(http.Flusher).Flush()
		}
		fmt.Fprint(w, "<title>t</title>"+big)
	})
	_, h := previewService(t, PreviewConfig{IPWhitelist: prefixes(t, "127.0.0.1/32"), MaxSpiderSize: 1024})
	for _, p := range []string{"/length", "/chunked"} {
		code, body := get(t, h, s.URL+p)
		if code != http.StatusBadGateway || body["errcode"] != "M_TOO_LARGE" {
			t.Errorf("%s: got %d %v", p, code, body)
		}
	}
}

func TestPreviewImage(t *testing.T) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, 40, 30))); err != nil {
		t.Fatal(err)
	}
	s := loopbackServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/img.png":
			w.Header().Set("Content-Type", "image/png")
			w.Write(buf.Bytes())
		default:
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, `<title>Pic</title><meta property="og:image" content="/img.png"><meta property="og:image:width" content="999">`)
		}
	})
	svc, h := previewService(t, PreviewConfig{IPWhitelist: prefixes(t, "127.0.0.1/32")})
	for _, p := range []string{"/img.png", "/page"} {
		code, body := get(t, h, s.URL+p)
		mxc, _ := body["og:image"].(string)
		if code != http.StatusOK || !strings.HasPrefix(mxc, "mxc://test.local/") || body["og:image:type"] != "image/png" ||
			body["og:image:width"] != float64(40) || body["og:image:height"] != float64(30) || body["matrix:image:size"] != float64(buf.Len()) {
			t.Fatalf("%s: got %d %v", p, code, body)
		}
		m, f, err := svc.Download(context.Background(), "test.local", strings.TrimPrefix(mxc, "mxc://test.local/"), Fetch{})
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if m.Size != int64(buf.Len()) {
			t.Errorf("stored size %d", m.Size)
		}
	}
}

func TestPreviewURLBlacklistAndSchemes(t *testing.T) {
	s := loopbackServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/to-blocked" {
			http.Redirect(w, r, "/private/x", http.StatusFound)
			return
		}
		fmt.Fprint(w, page)
	})
	_, h := previewService(t, PreviewConfig{
		IPWhitelist:  prefixes(t, "127.0.0.1/32"),
		URLBlacklist: []map[string]string{{"hostname": "*.example.com"}, {"path": "/private/*"}, {"scheme": "http", "query": "^secret"}},
	})
	for _, u := range []string{"http://www.example.com/", s.URL + "/private/a", s.URL + "/?secret=1", s.URL + "/to-blocked"} {
		if code, body := get(t, h, u); code != http.StatusForbidden || body["error"] != "URL blocked" {
			t.Errorf("%s: got %d %v", u, code, body)
		}
	}
	if code, _ := get(t, h, s.URL+"/?public=1"); code != http.StatusOK {
		t.Errorf("allowed URL: %d", code)
	}
	for _, u := range []string{"ftp://127.0.0.1/", "file:///etc/passwd", "/relative", ""} {
		if code, body := get(t, h, u); code != http.StatusBadRequest {
			t.Errorf("%q: got %d %v", u, code, body)
		}
	}
}

func TestPreviewCache(t *testing.T) {
	var hits atomic.Int32
	s := loopbackServer(t, func(w http.ResponseWriter, _ *http.Request) { hits.Add(1); fmt.Fprint(w, page) })
	_, h := previewService(t, PreviewConfig{IPWhitelist: prefixes(t, "127.0.0.1/32"), CacheSize: 1})
	get(t, h, s.URL+"/a")
	get(t, h, s.URL+"/a")
	if hits.Load() != 1 {
		t.Errorf("hits = %d after a repeated request, want 1", hits.Load())
	}
	get(t, h, s.URL+"/b") // evicts /a
	get(t, h, s.URL+"/a")
	if hits.Load() != 3 {
		t.Errorf("hits = %d, want 3 (cache bounded to one entry)", hits.Load())
	}
}

// The quota tracker's sliding windows over what the database says was
// uploaded (quota_test.go tests quotas end to end, from outside the
// package).
func TestQuotaTrackerWindow(t *testing.T) {
	type upload struct {
		at   time.Time
		size int64
	}
	var uploads []upload
	usage := func(_ context.Context, user string, since time.Time) (int64, error) {
		var n int64
		for _, u := range uploads {
			if !u.at.Before(since) {
				n += u.size
			}
		}
		return n, nil
	}
	ctx := context.Background()
	q := newQuotaTracker([]UploadLimit{{Period: time.Hour, MaxSize: 100}, {Period: 24 * time.Hour, MaxSize: 150}}, usage)
	t0 := time.Unix(1_700_000_000, 0)
	if left, err := q.check(ctx, "@a:x", -1, t0); err != nil || left != 100 {
		t.Fatalf("fresh: %d %v", left, err)
	}
	uploads = append(uploads, upload{t0, 90})
	if _, err := q.check(ctx, "@a:x", 20, t0.Add(time.Minute)); err == nil {
		t.Error("90 + 20 > 100 accepted")
	}
	if left, err := q.check(ctx, "@a:x", 10, t0.Add(time.Minute)); err != nil || left != 10 {
		t.Errorf("within hourly quota: %d %v", left, err)
	}
	// An hour later the hourly window is free again, the daily one is not.
	if left, err := q.check(ctx, "@a:x", -1, t0.Add(time.Hour+time.Second)); err != nil || left != 60 {
		t.Errorf("after an hour: %d %v", left, err)
	}
	uploads = append(uploads, upload{t0.Add(time.Hour + time.Second), 60})
	if _, err := q.check(ctx, "@a:x", 1, t0.Add(2*time.Hour)); err == nil {
		t.Error("daily quota not applied")
	}
	if left, err := q.check(ctx, "@a:x", -1, t0.Add(25*time.Hour+2*time.Second)); err != nil || left != 100 {
		t.Errorf("after a day: %d %v", left, err)
	}
	if left, err := newQuotaTracker(nil, usage).check(ctx, "@a:x", 1<<40, t0); err != nil || left != 0 {
		t.Errorf("no limits: %d %v", left, err)
	}
}
