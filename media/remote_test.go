package media_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"homeserver/internal/testserver"
)

// fedUpload uploads body to s and returns its media ID.
func fedUpload(t *testing.T, s *testserver.Server, token, contentType string, body []byte, query string) string {
	t.Helper()
	r := request(t, s, "POST", "/_matrix/media/v3/upload"+query, token, contentType, body)
	mustStatus(t, r, 200, "")
	id, ok := strings.CutPrefix(r.String("content_uri"), "mxc://"+s.Config.ServerName+"/")
	if !ok {
		t.Fatalf("content_uri %q", r.String("content_uri"))
	}
	return id
}

// fedDownloads is how many federation downloads s answered with 200.
func fedDownloads(t *testing.T, s *testserver.Server) int {
	t.Helper()
	r := request(t, s, "GET", "/_synapse/metrics", "", "", nil)
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "homeserver_http_requests_total{") &&
			strings.Contains(line, `endpoint="/_matrix/federation/v1/media/download/{mediaId}"`) && strings.Contains(line, `status="200"`) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatal(err)
			}
			n += int(v)
		}
	}
	return n
}

// part is one part of a multipart answer.
type part struct {
	Header textproto.MIMEHeader
	Body   []byte
}

// parts splits a multipart/mixed answer.
func parts(t *testing.T, r *testserver.Response) []part {
	t.Helper()
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q", r.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(bytes.NewReader(r.Body), params["boundary"])
	var out []part
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, part{p.Header, b})
	}
}

func TestRemoteMedia(t *testing.T) {
	f := testserver.NewFederation(t, "", "hs1.test", "hs2.test")
	hs1, hs2 := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice, bob := hs1.Register("alice", "pw"), hs2.Register("bob", "pw")
	img := encodePNG(t, thirds(90, 60))
	id := fedUpload(t, hs1, alice.Token, "image/png", img, "?filename=cat.png")
	key2 := hs2.SigningKey()

	// The federation endpoints serve hs1's media to hs2, as multipart.
	r := f.FedDo(hs1, key2, "", "GET", "/_matrix/federation/v1/media/download/"+id, nil)
	if r.Status != 200 {
		t.Fatalf("federation download: %d %s", r.Status, truncate(r.Body))
	}
	ps := parts(t, r)
	if len(ps) != 2 || ps[0].Header.Get("Content-Type") != "application/json" || string(ps[0].Body) != "{}" {
		t.Fatalf("parts %v", ps)
	}
	if ct, cd := ps[1].Header.Get("Content-Type"), ps[1].Header.Get("Content-Disposition"); ct != "image/png" || !strings.Contains(cd, "cat.png") {
		t.Errorf("content part: %q, %q", ct, cd)
	}
	if !bytes.Equal(ps[1].Body, img) {
		t.Error("federation download: bytes differ")
	}
	r = f.FedDo(hs1, key2, "", "GET", "/_matrix/federation/v1/media/thumbnail/"+id+"?width=32&height=32&method=crop", nil)
	if r.Status != 200 {
		t.Fatalf("federation thumbnail: %d %s", r.Status, truncate(r.Body))
	}
	if ps = parts(t, r); len(ps) != 2 {
		t.Fatalf("thumbnail parts %d", len(ps))
	} else if ct := ps[1].Header.Get("Content-Type"); ct != "image/jpeg" {
		t.Errorf("thumbnail type %q", ct)
	} else if b := decodeAny(t, ct, ps[1].Body).Bounds(); b.Dx() != 32 || b.Dy() != 32 {
		t.Errorf("thumbnail %v", b)
	}
	// Errors, never 500.
	for _, tt := range []struct {
		path, auth string
		status     int
		code       string
	}{
		{"/_matrix/federation/v1/media/download/" + id, "Bearer nope", 401, "M_UNAUTHORIZED"},
		{"/_matrix/federation/v1/media/thumbnail/" + id + "?width=1&height=1", "Bearer nope", 401, "M_UNAUTHORIZED"},
		{"/_matrix/federation/v1/media/download/nosuchmedia", "", 404, "M_NOT_FOUND"},
		{"/_matrix/federation/v1/media/thumbnail/nosuchmedia?width=1&height=1", "", 404, "M_NOT_FOUND"},
		{"/_matrix/federation/v1/media/download/bad%21id", "", 400, "M_INVALID_PARAM"},
		{"/_matrix/federation/v1/media/download/" + id + "?timeout_ms=x", "", 400, "M_INVALID_PARAM"},
		{"/_matrix/federation/v1/media/thumbnail/" + id, "", 400, "M_MISSING_PARAM"},
		{"/_matrix/federation/v1/media/thumbnail/" + id + "?width=-1&height=1", "", 400, "M_INVALID_PARAM"},
		{"/_matrix/federation/v1/media/thumbnail/" + id + "?width=1&height=1&method=zoom", "", 400, "M_INVALID_PARAM"},
		{"/_matrix/federation/v1/media/thumbnail/" + id + "?width=1&height=1&animated=maybe", "", 400, "M_INVALID_PARAM"},
	} {
		r := f.FedDo(hs1, key2, tt.auth, "GET", tt.path, nil)
		if r.Status != tt.status || r.Errcode() != tt.code {
			t.Errorf("%s: %d %s, want %d %s", tt.path, r.Status, truncate(r.Body), tt.status, tt.code)
		}
	}
	if n := fedDownloads(t, hs1); n != 1 {
		t.Fatalf("%d federation downloads before any remote fetch, want 1", n)
	}

	// hs2's users download it through hs2, which fetches it once.
	dl := "/_matrix/client/v1/media/download/hs1.test/" + id
	r = request(t, hs2, "GET", dl, bob.Token, "", nil)
	mustStatus(t, r, 200, "")
	if !bytes.Equal(r.Body, img) || r.Header.Get("Content-Type") != "image/png" || !strings.Contains(r.Header.Get("Content-Disposition"), "cat.png") {
		t.Errorf("remote download: %q %q, %d bytes", r.Header.Get("Content-Type"), r.Header.Get("Content-Disposition"), len(r.Body))
	}
	// Fetched while enable_authenticated_media is on: not for the legacy
	// endpoints.
	r = request(t, hs2, "GET", "/_matrix/media/v3/download/hs1.test/"+id, "", "", nil)
	mustStatus(t, r, 404, "M_NOT_FOUND")
	r = request(t, hs2, "GET", "/_matrix/client/v1/media/thumbnail/hs1.test/"+id+"?width=30&height=30&method=scale", bob.Token, "", nil)
	mustStatus(t, r, 200, "")
	// The configured scale sizes are all larger than the image: the
	// original.
	if b := decodeAny(t, r.Header.Get("Content-Type"), r.Body).Bounds(); b.Dx() != 90 || b.Dy() != 60 {
		t.Errorf("remote thumbnail %v", b)
	}
	if n := fedDownloads(t, hs1); n != 2 {
		t.Errorf("%d federation downloads after three requests for one item, want 2", n)
	}
	r = request(t, hs2, "GET", "/_matrix/client/v1/media/download/hs1.test/nosuchmedia", bob.Token, "", nil)
	mustStatus(t, r, 404, "M_NOT_FOUND")
	r = request(t, hs2, "GET", "/_matrix/client/v1/media/download/hs1.test/"+id+"?allow_remote=false", bob.Token, "", nil)
	mustStatus(t, r, 200, "") // cached
	id2 := fedUpload(t, hs1, alice.Token, "text/plain", []byte("not cached"), "")
	r = request(t, hs2, "GET", "/_matrix/client/v1/media/download/hs1.test/"+id2+"?allow_remote=false", bob.Token, "", nil)
	mustStatus(t, r, 404, "M_NOT_FOUND")
	// The legacy endpoints fetch nothing new.
	r = request(t, hs2, "GET", "/_matrix/media/v3/download/hs1.test/"+id2, "", "", nil)
	mustStatus(t, r, 404, "M_NOT_FOUND")
	r = request(t, hs2, "GET", "/_matrix/media/v3/thumbnail/hs1.test/"+id2+"?width=32&height=32", "", "", nil)
	mustStatus(t, r, 404, "M_NOT_FOUND")
	if n := fedDownloads(t, hs1); n != 2 {
		t.Errorf("%d federation downloads after legacy requests, want 2", n)
	}

	// Twenty first requests at once: one fetch.
	before := fedDownloads(t, hs1)
	body := bytes.Repeat([]byte("concurrent "), 10000)
	id3 := fedUpload(t, hs1, alice.Token, "application/octet-stream", body, "")
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", hs2.URL+"/_matrix/client/v1/media/download/hs1.test/"+id3, nil)
			req.Header.Set("Authorization", "Bearer "+bob.Token)
			resp, err := hs2.Client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err == nil && (resp.StatusCode != 200 || !bytes.Equal(got, body)) {
				err = fmt.Errorf("status %d, %d bytes", resp.StatusCode, len(got))
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := fedDownloads(t, hs1) - before; n != 1 {
		t.Errorf("20 concurrent requests caused %d federation downloads, want 1", n)
	}

	// With hs1 gone, what hs2 cached is still served; the rest is 502.
	hs1.Stop()
	r = request(t, hs2, "GET", dl, bob.Token, "", nil)
	mustStatus(t, r, 200, "")
	if !bytes.Equal(r.Body, img) {
		t.Error("cached download: bytes differ")
	}
	r = request(t, hs2, "GET", "/_matrix/client/v1/media/thumbnail/hs1.test/"+id+"?width=16&height=16&method=crop", bob.Token, "", nil)
	mustStatus(t, r, 200, "")
	r = request(t, hs2, "GET", "/_matrix/client/v1/media/download/hs1.test/"+id2, bob.Token, "", nil)
	mustStatus(t, r, 502, "M_UNKNOWN")
	// Bad inputs are the client's fault.
	for _, p := range []string{
		"/_matrix/client/v1/media/download/hs1.test/bad%21id",
		"/_matrix/client/v1/media/download/bad%2Fserver/abc",
		"/_matrix/client/v1/media/thumbnail/hs1.test/" + id + "?width=0&height=1",
		"/_matrix/client/v1/media/download/hs1.test/" + id + "?allow_remote=perhaps",
	} {
		if r := request(t, hs2, "GET", p, bob.Token, "", nil); r.Status < 400 || r.Status > 499 {
			t.Errorf("%s: %d %s", p, r.Status, truncate(r.Body))
		}
	}
	// A name that is no server name: not found.
	r = request(t, hs2, "GET", "/_matrix/client/v1/media/download/a:b:c/abc", bob.Token, "", nil)
	mustStatus(t, r, 404, "M_NOT_FOUND")
}

func TestRemoteMediaWithoutFederation(t *testing.T) {
	f := testserver.NewFederation(t, "federation_domain_whitelist: []\n", "hs1.test", "hs2.test")
	hs1, hs2 := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice, bob := hs1.Register("alice", "pw"), hs2.Register("bob", "pw")
	id := fedUpload(t, hs1, alice.Token, "text/plain", []byte("hello"), "")
	r := request(t, hs2, "GET", "/_matrix/client/v1/media/download/hs1.test/"+id, bob.Token, "", nil)
	mustStatus(t, r, 404, "M_NOT_FOUND")
	r = request(t, hs2, "GET", "/_matrix/media/v3/download/hs1.test/"+id, "", "", nil)
	mustStatus(t, r, 404, "M_NOT_FOUND")
}

// BenchmarkRemoteMedia: a 1 MiB file of hs1 downloaded by a client of hs2
// (authenticated v1 path): the first request, which fetches it from hs1
// over federation and stores it, and the next, served from hs2's store.
func BenchmarkRemoteMedia(b *testing.B) {
	f := testserver.NewFederation(b, "", "hs1.test", "hs2.test")
	hs1, hs2 := f.Servers["hs1.test"], f.Servers["hs2.test"]
	alice, bob := hs1.Register("alice", "pw"), hs2.Register("bob", "pw")
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	var first, cached time.Duration
	for i := range b.N {
		r := request(b, hs1, "POST", "/_matrix/media/v3/upload?filename=f"+strconv.Itoa(i), alice.Token, "application/octet-stream", append(data, byte(i)))
		mustStatus(b, r, 200, "")
		path := "/_matrix/client/v1/media/download/" + strings.TrimPrefix(r.String("content_uri"), "mxc://")
		start := time.Now()
		mustStatus(b, request(b, hs2, "GET", path, bob.Token, "", nil), 200, "")
		first += time.Since(start)
		start = time.Now()
		mustStatus(b, request(b, hs2, "GET", path, bob.Token, "", nil), 200, "")
		cached += time.Since(start)
	}
	b.ReportMetric(float64(first.Microseconds())/1000/float64(b.N), "ms-first")
	b.ReportMetric(float64(cached.Microseconds())/1000/float64(b.N), "ms-cached")
}
