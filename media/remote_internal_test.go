package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/mxhttp"
	"homeserver/netguard"
)

// fakeRemote answers requests with canned responses by path prefix.
type fakeRemote struct {
	mu    sync.Mutex
	uris  []string
	reply func(uri string) (int, http.Header, string)
	err   error
}

func (f *fakeRemote) DoStream(_ context.Context, method, destination, uri string, _ any,
	read func(int, http.Header, io.Reader) error) error {
	f.mu.Lock()
	f.uris = append(f.uris, destination+uri)
	f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	st, h, body := f.reply(uri)
	return read(st, h, strings.NewReader(body))
}

func newRemoteTestService(t *testing.T, r Remote, maxSize int64) *Service {
	t.Helper()
	s, err := New(Config{ServerName: "here.test", StorePath: t.TempDir(), MaxUploadSize: maxSize,
		Logger: slog.New(slog.DiscardHandler)}, &memStore{})
	if err != nil {
		t.Fatal(err)
	}
	s.SetRemote(r)
	return s
}

const boundary = "xyz"

func multipartBody(partHeaders, content string) string {
	return "--xyz\r\nContent-Type: application/json\r\n\r\n{}\r\n--xyz\r\n" + partHeaders + "\r\n\r\n" + content + "\r\n--xyz--\r\n"
}

var multipartHeader = http.Header{"Content-Type": {"multipart/mixed; boundary=" + boundary}}

func matrixError(status int, code string) (int, http.Header, string) {
	return status, http.Header{"Content-Type": {"application/json"}}, `{"errcode":"` + code + `","error":"x"}`
}

func TestFetchRemote(t *testing.T) {
	ctx := context.Background()
	fed := "/_matrix/federation/v1/media/download/abc"
	legacy := "/_matrix/media/v3/download/there.test/abc?allow_remote=false"
	tests := []struct {
		name     string
		reply    func(uri string) (int, http.Header, string)
		err      error
		status   int    // 0: success
		code     string // of the failure
		wantURIs []string
		wantType string
		wantName string
		wantBody string
	}{
		{name: "multipart", reply: func(string) (int, http.Header, string) {
			return 200, multipartHeader, multipartBody("Content-Type: text/plain\r\nContent-Disposition: attachment; filename*=utf-8''na%C3%AFve.txt", "hello")
		}, wantURIs: []string{fed}, wantType: "text/plain", wantName: "naïve.txt", wantBody: "hello"},
		{name: "legacy fallback on M_UNRECOGNIZED", reply: func(uri string) (int, http.Header, string) {
			if uri == fed {
				return matrixError(404, "M_UNRECOGNIZED")
			}
			return 200, http.Header{"Content-Type": {"image/gif"}, "Content-Disposition": {`inline; filename="a.gif"`}}, "GIF89a"
		}, wantURIs: []string{fed, legacy}, wantType: "image/gif", wantName: "a.gif", wantBody: "GIF89a"},
		{name: "legacy fallback on 400", reply: func(uri string) (int, http.Header, string) {
			if uri == fed {
				return 400, nil, "bad"
			}
			return 200, nil, "raw"
		}, wantURIs: []string{fed, legacy}, wantType: "application/octet-stream", wantBody: "raw"},
		{name: "not found", reply: func(string) (int, http.Header, string) { return matrixError(404, "M_NOT_FOUND") },
			status: 404, code: "M_NOT_FOUND", wantURIs: []string{fed}},
		{name: "legacy not found", reply: func(uri string) (int, http.Header, string) {
			if uri == fed {
				return matrixError(404, "M_UNRECOGNIZED")
			}
			return matrixError(404, "M_NOT_FOUND")
		}, status: 404, code: "M_NOT_FOUND", wantURIs: []string{fed, legacy}},
		{name: "server error", reply: func(string) (int, http.Header, string) { return matrixError(500, "M_UNKNOWN") },
			status: 502, code: "M_UNKNOWN", wantURIs: []string{fed}},
		{name: "unreachable", err: errors.New("connection refused"), status: 502, code: "M_UNKNOWN", wantURIs: []string{fed}},
		{name: "refused destination", err: ErrNotFound, status: 404, code: "M_NOT_FOUND", wantURIs: []string{fed}},
		{name: "too large", reply: func(string) (int, http.Header, string) {
			return 200, multipartHeader, multipartBody("Content-Type: text/plain", strings.Repeat("x", 101))
		}, status: 502, code: "M_TOO_LARGE", wantURIs: []string{fed}},
		{name: "not multipart", reply: func(string) (int, http.Header, string) {
			return 200, http.Header{"Content-Type": {"text/plain"}}, "hello"
		}, status: 502, code: "M_UNKNOWN", wantURIs: []string{fed}},
		{name: "truncated multipart", reply: func(string) (int, http.Header, string) {
			return 200, multipartHeader, "--xyz\r\nContent-Type: application/json\r\n\r\n{}\r\n--xyz\r\nContent-Type: text/plain\r\n\r\nhel"
		}, status: 502, code: "M_UNKNOWN", wantURIs: []string{fed}},
		{name: "metadata not an object", reply: func(string) (int, http.Header, string) {
			return 200, multipartHeader, "--xyz\r\nContent-Type: application/json\r\n\r\nnope\r\n--xyz\r\n\r\nx\r\n--xyz--\r\n"
		}, status: 502, code: "M_UNKNOWN", wantURIs: []string{fed}},
		{name: "redirect to another scheme", reply: func(string) (int, http.Header, string) {
			return 200, multipartHeader, multipartBody("Location: ftp://cdn.example/x", "")
		}, status: 502, code: "M_UNKNOWN", wantURIs: []string{fed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &fakeRemote{reply: tt.reply, err: tt.err}
			s := newRemoteTestService(t, r, 100)
			m, file, err := s.Download(ctx, "there.test", "abc", Fetch{AllowRemote: true})
			if strings.Join(r.uris, " ") != "there.test"+strings.Join(tt.wantURIs, " there.test") {
				t.Errorf("requests %v, want %v", r.uris, tt.wantURIs)
			}
			if tt.status != 0 {
				var mx *mxhttp.Error
				if !errors.As(err, &mx) || mx.Status != tt.status || mx.Code != tt.code {
					t.Fatalf("got %v, want %d %s", err, tt.status, tt.code)
				}
				if _, err := s.store.GetMedia(ctx, "there.test", "abc"); !errors.Is(err, ErrNotFound) {
					t.Error("a failed fetch was cached")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer file.Close()
			b, _ := io.ReadAll(file)
			if string(b) != tt.wantBody || m.ContentType != tt.wantType || m.UploadName != tt.wantName || m.Origin != "there.test" || m.Size != int64(len(b)) {
				t.Errorf("got %+v %q", m, b)
			}
			// Served from the cache from now on.
			if _, f2, err := s.Download(ctx, "there.test", "abc", Fetch{AllowRemote: false}); err != nil {
				t.Errorf("cached: %v", err)
			} else {
				f2.Close()
			}
			if len(r.uris) != len(tt.wantURIs) {
				t.Errorf("the cached item was fetched again: %v", r.uris)
			}
		})
	}
}

// A Location in the content part is followed once, through the guard,
// within the redirect timeout and max_upload_size.
func TestFetchRemoteLocation(t *testing.T) {
	ctx := context.Background()
	var hits sync.Map // path → true
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Store(r.URL.Path, true)
		switch r.URL.Path {
		case "/cat.png":
			w.Header().Set("Content-Type", "image/png")
			w.Header().Set("Content-Disposition", `inline; filename="cat.png"`)
			_, _ = io.WriteString(w, "meow")
		case "/bare":
			w.Header()["Content-Type"] = nil // no sniffing: no type at all
			_, _ = io.WriteString(w, "bare")
		case "/again":
			http.Redirect(w, r, "/cat.png", http.StatusFound)
		case "/large":
			_, _ = io.WriteString(w, strings.Repeat("x", 101))
		case "/slow":
			time.Sleep(time.Second)
			_, _ = io.WriteString(w, "late")
		case "/gone":
			http.NotFound(w, r)
		}
	}))
	defer target.Close()
	port := target.Listener.Addr().(*net.TCPAddr).Port
	tests := []struct {
		name, location, part string
		block                []netip.Prefix
		status               int // 0: success
		code                 string
		wantType, wantName   string
		wantBody             string
		notHit               string // a path the target must not have served
	}{
		{name: "followed", location: target.URL + "/cat.png", wantType: "image/png", wantName: "cat.png", wantBody: "meow"},
		{name: "headers of the part", location: target.URL + "/bare", part: "Content-Type: text/plain\r\nContent-Disposition: attachment; filename=b.txt\r\n",
			wantType: "text/plain", wantName: "b.txt", wantBody: "bare"},
		{name: "no second redirect", location: target.URL + "/again", status: 502, code: "M_UNKNOWN", notHit: "/cat.png"},
		{name: "too large", location: target.URL + "/large", status: 502, code: "M_TOO_LARGE"},
		{name: "too slow", location: target.URL + "/slow", status: 502, code: "M_UNKNOWN"},
		{name: "not there", location: target.URL + "/gone", status: 502, code: "M_UNKNOWN"},
		{name: "blocked address", location: target.URL + "/cat.png?blocked", block: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, status: 502, code: "M_UNKNOWN"},
		{name: "unspecified address", location: fmt.Sprintf("http://0.0.0.0:%d/cat.png", port), status: 502, code: "M_UNKNOWN"},
		{name: "not a URL", location: "::nope", status: 502, code: "M_UNKNOWN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits.Clear()
			r := &fakeRemote{reply: func(string) (int, http.Header, string) {
				return 200, multipartHeader, multipartBody(tt.part+"Location: "+tt.location, "")
			}}
			s, err := New(Config{ServerName: "here.test", StorePath: t.TempDir(), MaxUploadSize: 100,
				RedirectGuard: netguard.New(netguard.Options{Block: tt.block}), RedirectTimeout: 300 * time.Millisecond,
				Logger: slog.New(slog.DiscardHandler)}, &memStore{})
			if err != nil {
				t.Fatal(err)
			}
			s.SetRemote(r)
			m, file, err := s.Download(ctx, "there.test", "abc", Fetch{AllowRemote: true})
			if tt.notHit != "" {
				if _, ok := hits.Load(tt.notHit); ok {
					t.Errorf("%s was fetched", tt.notHit)
				}
			}
			if tt.block != nil {
				if _, ok := hits.Load("/cat.png"); ok {
					t.Error("a blocked address was reached")
				}
			}
			if tt.status != 0 {
				var mx *mxhttp.Error
				if !errors.As(err, &mx) || mx.Status != tt.status || mx.Code != tt.code {
					t.Fatalf("got %v, want %d %s", err, tt.status, tt.code)
				}
				if _, err := s.store.GetMedia(ctx, "there.test", "abc"); !errors.Is(err, ErrNotFound) {
					t.Error("a failed fetch was cached")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer file.Close()
			b, _ := io.ReadAll(file)
			if string(b) != tt.wantBody || m.ContentType != tt.wantType || m.UploadName != tt.wantName {
				t.Errorf("got %+v %q", m, b)
			}
		})
	}
}
